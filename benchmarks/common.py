"""What every benchmark shares: interleaved timing, machine facts, table and JSON output.

Timing is interleaved: each round runs every variant once, in turn, and a variant's figure is
the median over rounds. On a shared machine the load drifts while a benchmark runs; taking
variants one after the other would hand the quiet minutes to some and the busy ones to
others, while interleaving spreads the drift over all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from dnc.ensemble.splitnet import SplitNet, build_splitnet
from dnc.evaluation.flops import cost
from pipelines.common.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports" / "benchmarks"


def base_parser(description: str) -> argparse.ArgumentParser:
    """Flags every benchmark takes: --quick, --device, --threads, --rounds, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a < 1 min smoke run on 2 cores")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda:0")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, help="timed rounds per variant")
    parser.add_argument("--out", type=Path, help="JSON path (default reports/benchmarks/)")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and resolve --device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock time covers the work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, enabled: bool) -> Any:
    """fp16 autocast on CUDA when enabled (as the engine's `train.amp`), else nothing."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def interleaved(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    warmup: int = 1,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process-CPU seconds per call of each variant over `rounds` interleaved
    rounds, after warm-up.

    CPU time is the load-robust figure on a shared CPU with one torch thread: time slices
    lost to other processes are not counted. With more threads it also counts threads
    spinning at barriers, and on CUDA it is only the launch cost, so read wall time there.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, min and quartile spread in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "iqr_ms": q[2] - q[0]}


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, GPU, versions, threads, load."""
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Spinning OpenMP threads on a shared CPU cost 15x (docs/performance.md): record it.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (floats to 3 significant digits)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(
    name: str,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Print the table with the command and machine, and write it all as JSON."""
    command = " ".join([Path(sys.executable).name, *sys.argv])
    info = {"benchmark": name, "command": command, "machine": machine(), **(extra or {})}
    print(table(rows, columns))
    print(f"\ncommand: {command}")
    m = info["machine"]
    print(
        f"machine: {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads, "
        f"OMP_WAIT_POLICY={m['omp_wait_policy']}), gpu: {m['gpu']}, torch {m['torch']}, "
        f"load average {m['load_average']}"
    )
    suffix = "-quick" if args.quick else ""
    path = args.out or REPORTS / f"{name}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


# Benchmark workloads: (model, channels, image size), the small CNN on 28x28 and
# the paper's WRNs on 32x32.
WORKLOADS = {
    "small_cnn": (1, 28),
    "wide_resnet16_8": (3, 32),
    "wide_resnet28_10": (3, 32),
}


def runs_channels_last(label: str, cuda: bool) -> bool:
    """Whether a benchmark variant's convolutions run channels-last: all of them on CUDA
    (inputs are NHWC there), the labelled ones, and every packed variant (FusedSplitNet packs
    NHWC; "N devices" runs a fused group per device) unless labelled NCHW."""
    if cuda or "channels-last" in label:
        return True
    packed = label.startswith("fused") or "devices" in label
    return packed and "NCHW" not in label


def build(name: str, split: int, seed: int = 0) -> SplitNet:
    """The `split`-member SplitNet of workload `name` (10 classes), seeded."""
    chans, size = WORKLOADS[name]
    torch.manual_seed(seed)
    return build_splitnet(name, split=split, num_classes=10, in_chans=chans, image_size=size)


def macs_per_image(name: str, split: int) -> int:
    """Multiply-adds of all members for one image (counted on the meta device)."""
    chans, size = WORKLOADS[name]
    with torch.device("meta"):
        net = build_splitnet(name, split=split, num_classes=10, in_chans=chans, image_size=size)
    return sum(cost(m, (chans, size, size))["macs"] for m in net.members)
