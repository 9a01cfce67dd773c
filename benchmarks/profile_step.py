"""Where a co-training step spends its time: torch.profiler over the train_step variants.

    python benchmarks/profile_step.py                        # WRN-16-8, batch 32, S=4
    python benchmarks/profile_step.py --model small_cnn --batch 128 --split 2
    python benchmarks/profile_step.py --quick                # < 1 min smoke run

Profiles the same steps as benchmarks/train_step.py (the undivided net, the S members looped
and fused, each in its memory layout) and groups operator self time into convolution
forward, convolution backward, BatchNorm, layout copies and the rest (elementwise ops,
the loss, the optimizer's updates), so a missed target
can be read as "which kernels got slower". Writes reports/benchmarks/profile_step.json.
"""

from __future__ import annotations

from collections import defaultdict

from common import WORKLOADS, base_parser, build, report
from common import setup as setup_device
from torch.profiler import ProfilerActivity, profile
from train_step import make_step

from dnc.ensemble.fused import FusedSplitNet

GROUPS = {  # operator-name fragment -> group, first match wins
    "convolution_backward": "conv backward",
    "conv": "conv forward",
    "batch_norm": "batchnorm",
    "copy_": "layout copies",
    "contiguous": "layout copies",
}


def group_of(op: str) -> str:
    """The group an aten operator's self time is counted in."""
    name = op.lower()
    return next((g for frag, g in GROUPS.items() if frag in name), "other")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(WORKLOADS), default="wide_resnet16_8")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--split", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per variant")
    args = parser.parse_args()
    device = setup_device(args)
    if args.quick:
        args.model, args.batch, args.steps = "small_cnn", 64, 2
    variants = {
        "undivided channels-last": (build(args.model, 1), True),
        f"loop channels-last S={args.split}": (build(args.model, args.split), True),
        f"fused S={args.split}": (
            FusedSplitNet.from_splitnet(build(args.model, args.split)),
            False,
        ),
    }
    rows = []
    for label, (model, channels_last) in variants.items():
        step = make_step(
            model, args.model, args.batch, device, amp=False, channels_last=channels_last
        )
        step()  # warm-up: allocations and kernel selection stay out of the profile
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
        totals: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            self_us = (
                event.self_device_time_total
                if device.type == "cuda"
                else event.self_cpu_time_total
            )
            if event.key.startswith("aten::"):
                totals[group_of(event.key)] += self_us / 1e3 / args.steps
        total = sum(totals.values())
        row = {"model": args.model, "batch": args.batch, "variant": label, "total ms": total}
        row.update(
            {f"{g} ms": totals.get(g, 0.0) for g in sorted(set(GROUPS.values()) | {"other"})}
        )
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["vs undivided"] = row["total ms"] / base["total ms"]
        for key in [k for k in row if k.endswith(" ms") and k != "total ms"]:
            row[key.replace(" ms", " vs undivided")] = row[key] / max(base[key], 1e-9)
    groups = ["conv forward", "conv backward", "batchnorm", "layout copies", "other"]
    columns = ["variant", "total ms", "vs undivided", *[f"{g} ms" for g in groups]]
    report("profile_step", args, rows, columns, {"device": str(device), "split": args.split})


if __name__ == "__main__":
    main()
