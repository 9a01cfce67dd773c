"""Benchmark 1: one co-training step, undivided vs S members looped vs fused, equal FLOPs.

    python benchmarks/train_step.py            # full table (CPU: WRN batches reduced)
    python benchmarks/train_step.py --quick    # < 1 min smoke run on 2 cores
    python benchmarks/train_step.py --vmap --compile   # also torch.func.vmap / torch.compile

A step is what `dnc.train.engine.train_one_epoch` does per batch: S views in, the co-training
loss (sum of CE + JS), backward, SGD step; AMP and channels-last inputs on CUDA as the
engine's `train.amp` / `train.channels_last`. Writes reports/benchmarks/train_step.json.
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import (
    WORKLOADS,
    autocast,
    base_parser,
    build,
    interleaved,
    macs_per_image,
    report,
    runs_channels_last,
    summarize,
)
from common import setup as setup_device
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from dnc.ensemble.fused import FusedSplitNet
from dnc.methods.splitnet import CoTrainingTask

# Batch per workload on CPU: 128 everywhere is ~25 s (WRN-16-8) and ~80 s (WRN-28-10) per
# step on 2 cores, so the WRN rows use smaller batches there (noted in the table).
CPU_BATCH = {"small_cnn": 128, "wide_resnet16_8": 16, "wide_resnet28_10": 8}
QUICK = {"small_cnn": 128, "wide_resnet16_8": 4}


class VmapSplitNet(nn.Module):
    """The members as stacked weights run by `vmap(functional_call)`: the alternative to
    packing that docs/performance.md measured (BatchNorm buffers are stacked too)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(members)
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(params[n].detach()) for n in self.names)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[name])
        self.base = (copy.deepcopy(members[0]).to("meta"),)  # tuple: not a submodule
        self.split_factor = len(members)

    def forward(self, views: Tensor) -> Tensor:
        """(S, B, C, H, W) -> logits (S, B, classes)."""
        params = dict(zip(self.names, self.stacked, strict=True))
        buffers = {n: getattr(self, f"buffer{i}") for i, n in enumerate(self.buffer_names)}

        def member(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.base[0], (p, b), (x,))

        return vmap(member)(params, buffers, views)


def make_step(
    model: nn.Module,
    name: str,
    batch: int,
    device: torch.device,
    amp: bool,
    channels_last: bool = False,
):
    """A closure running one engine-equivalent co-training step of `model`.

    Inputs are channels-last on CUDA (as the engine does) or when `channels_last`, which
    also converts the weights (the engine leaves CPU runs in NCHW).
    """
    chans, size = WORKLOADS[name]
    split = model.split_factor
    task = CoTrainingTask(model, cot_weight=0.5, cot_warmup_epochs=0).to(device)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        task.param_groups(5e-4), lr=0.01, momentum=0.9, nesterov=True
    )  # lr small: timing only, the weights must not blow up over the rounds
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    views = torch.randn(split, batch, chans, size, size, device=device)
    if device.type == "cuda" or channels_last:  # the engine's channels-last per view
        views = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        views = views.view(split, batch, chans, size, size)
    targets = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with autocast(device, amp):
            loss = task.training_step(views, targets, epoch=1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def variants(name: str, splits: list[int], args: argparse.Namespace) -> dict[str, nn.Module]:
    """label -> model: the undivided net, then per S the loop, fused and optional others."""
    out: dict[str, nn.Module] = {"undivided": build(name, 1)}
    if args.device_type == "cpu":  # what channels-last alone buys (fused uses it on CPU)
        out["undivided channels-last"] = build(name, 1)
    for split in splits:
        net = build(name, split)
        out[f"loop S={split}"] = net
        if args.device_type == "cpu":
            out[f"loop channels-last S={split}"] = copy.deepcopy(net)
        out[f"fused S={split}"] = FusedSplitNet.from_splitnet(net)  # channels-last inside
        if args.device_type == "cpu":  # the packing alone, against the NCHW undivided net
            out[f"fused NCHW S={split}"] = FusedSplitNet.from_splitnet(net, channels_last=False)
        if args.vmap:
            out[f"vmap S={split}"] = VmapSplitNet(list(copy.deepcopy(net).members))
        if args.compile:
            compiled = FusedSplitNet.from_splitnet(net)
            compiled.packed.compile()
            out[f"fused+compile S={split}"] = compiled
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(WORKLOADS))
    parser.add_argument("--splits", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--batch", type=int, help="one batch for every model (default 128)")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    parser.add_argument("--vmap", action="store_true", help="also time torch.func.vmap")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    device = setup_device(args)
    args.device_type = device.type
    cuda = device.type == "cuda"
    batches = QUICK if args.quick else ({m: 128 for m in WORKLOADS} if cuda else CPU_BATCH)
    models = args.models or list(batches)
    rounds = args.rounds or (3 if args.quick else 10 if cuda else 5)
    amp = cuda and not args.no_amp
    rows = []
    for name in models:
        batch = args.batch or batches[name]
        steps = {
            label: make_step(model, name, batch, device, amp, "channels-last" in label)
            for label, model in variants(name, args.splits, args).items()
        }
        rounds_here = rounds if name == "small_cnn" or cuda else max(2, rounds // 2)
        times, cpu_times = interleaved(steps, rounds_here, device)
        base = summarize(times["undivided"])["median_ms"]
        base_cpu = summarize(cpu_times["undivided"])["median_ms"]
        base_cl = summarize(times.get("undivided channels-last", times["undivided"]))
        base_macs = macs_per_image(name, 1)
        for label, seconds in times.items():
            # fused packs channels-last (FusedSplitNet); on CPU compare it with the
            # undivided net in the same layout, NCHW variants with the NCHW one.
            same = base_cl["median_ms"] if runs_channels_last(label, cuda) else base
            split = int(label.rsplit("=", 1)[1]) if "=" in label else 1
            stats, cpu = summarize(seconds), summarize(cpu_times[label])["median_ms"]
            macs = macs_per_image(name, split)
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "variant": label,
                    "S": split,
                    "MMACs/img": macs / 1e6,
                    "MACs vs undivided": macs / base_macs,
                    "step ms": stats["median_ms"],
                    "IQR ms": stats["iqr_ms"],
                    "vs undivided": stats["median_ms"] / base,
                    "vs same layout": stats["median_ms"] / same,
                    "CPU ms": cpu,
                    "CPU vs undivided": cpu / base_cpu,
                    "img/s": batch * 1e3 / stats["median_ms"],
                    "rounds": len(seconds),
                }
            )
    columns = ["model", "batch", "variant", "MMACs/img", "MACs vs undivided", "step ms"]
    columns += ["IQR ms", "vs undivided", "vs same layout", "img/s"]
    if device.type == "cpu":  # the load-robust figure with --threads 1 (common.interleaved)
        columns += ["CPU ms", "CPU vs undivided"]
    report("train_step", args, rows, columns, {"device": str(device), "amp": amp})


if __name__ == "__main__":
    main()
