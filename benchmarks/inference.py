"""Benchmark 2: inference latency (batch 1) and throughput (batch 100) of the big net,
S members looped, S members fused, members spread over devices, and every k-of-S prefix.

    python benchmarks/inference.py             # full table
    python benchmarks/inference.py --quick     # < 1 min smoke run on 2 cores
    python benchmarks/inference.py --devices cuda:0,cuda:1   # also the multi-device path

The model is the ensemble forward `predict(x, k)` (members' logits averaged), as dnc
evaluates it; fp16 autocast + channels-last inputs on CUDA unless --no-amp.
Writes reports/benchmarks/inference.json.
"""

from __future__ import annotations

import argparse

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
from torch import nn

from dnc.ensemble.fused import FusedSplitNet
from dnc.ensemble.parallel import ParallelSplitNet, parse_devices

CPU_MODELS = ["small_cnn", "wide_resnet16_8"]
CUDA_MODELS = ["small_cnn", "wide_resnet16_8", "wide_resnet28_10"]


def forward_fn(model: nn.Module, k: int, x: torch.Tensor, amp: bool):
    """A closure running the k-member ensemble prediction on `x` without autograd."""
    device = x.device

    @torch.inference_mode()
    def run() -> None:
        with autocast(device, amp):
            model.predict(x, k)

    return run


def variants(
    name: str, split: int, device: torch.device, devices: list[torch.device] | None
) -> dict[str, tuple[nn.Module, int]]:
    """label -> (model, k): the big net, then every k-of-S prefix looped, fused, spread."""
    out: dict[str, tuple[nn.Module, int]] = {"undivided": (build(name, 1).eval().to(device), 1)}
    if device.type == "cpu":  # what channels-last alone buys (fused uses it on CPU)
        undivided = build(name, 1).eval().to(memory_format=torch.channels_last)
        out["undivided channels-last"] = (undivided, 1)
    net = build(name, split).eval()
    fused = FusedSplitNet.from_splitnet(net).eval().to(device)
    parallel = ParallelSplitNet(net, devices, "fused").eval() if devices else None
    net = net.to(device)
    for k in range(split, 0, -1):
        out[f"loop k={k}"] = (net, k)
        out[f"fused k={k}"] = (fused, k)
        if parallel is not None:
            out[f"{len(devices)} devices k={k}"] = (parallel, k)
    return out


def measure(
    name: str, split: int, batch: int, args: argparse.Namespace, device: torch.device
) -> list[dict]:
    """Rows of one model and batch size."""
    chans, size = WORKLOADS[name]
    amp = device.type == "cuda" and not args.no_amp
    x = torch.randn(batch, chans, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    devices = parse_devices(args.devices) if args.devices else None
    models = variants(name, split, device, devices)
    fns = {label: forward_fn(model, k, x, amp) for label, (model, k) in models.items()}
    heavy = name != "small_cnn" and device.type == "cpu"  # seconds per batch-100 forward
    rounds = args.rounds or (5 if args.quick else 30 if batch == 1 else 4 if heavy else 10)
    times, cpu_times = interleaved(fns, rounds, device, warmup=2)
    base = summarize(times["undivided"])["median_ms"]
    base_cpu = summarize(cpu_times["undivided"])["median_ms"]
    base_cl = summarize(times.get("undivided channels-last", times["undivided"]))["median_ms"]
    rows = []
    for label, seconds in times.items():
        k, undivided = models[label][1], label.startswith("undivided")
        # fused packs channels-last: on CPU compare it with the channels-last undivided net
        same = base_cl if runs_channels_last(label, device.type == "cuda") else base
        stats, cpu = summarize(seconds), summarize(cpu_times[label])["median_ms"]
        rows.append(
            {
                "model": name,
                "S": split,
                "batch": batch,
                "variant": label,
                "k": k,
                "MMACs/img": macs_per_image(name, 1 if undivided else split)
                * (1 if undivided else k / split)
                / 1e6,
                "latency ms": stats["median_ms"],
                "IQR ms": stats["iqr_ms"],
                "vs undivided": stats["median_ms"] / base,
                "vs same layout": stats["median_ms"] / same,
                "img/s": batch * 1e3 / stats["median_ms"],
                "CPU ms": cpu,
                "CPU vs undivided": cpu / base_cpu,
            }
        )
    return rows


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(WORKLOADS))
    parser.add_argument("--split", type=int, default=4, help="members S (default 4)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 100])
    parser.add_argument("--devices", help="also members spread over these, e.g. cpu,cpu")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    args = parser.parse_args()
    device = setup_device(args)
    default = ["small_cnn"] if args.quick else CUDA_MODELS if device.type == "cuda" else CPU_MODELS
    rows = []
    for name in args.models or default:
        for batch in args.batches:
            rows += measure(name, args.split, batch, args, device)
    columns = ["model", "batch", "variant", "MMACs/img", "latency ms", "IQR ms"]
    columns += ["vs undivided", "vs same layout", "img/s"]
    if device.type == "cpu":  # the load-robust figure with --threads 1 (common.interleaved)
        columns += ["CPU ms", "CPU vs undivided"]
    amp = device.type == "cuda" and not args.no_amp
    report("inference", args, rows, columns, {"device": str(device), "amp": amp})


if __name__ == "__main__":
    main()
