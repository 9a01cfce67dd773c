"""Benchmark: training throughput across processes, same total cores.

    python benchmarks/distributed.py            # full table
    python benchmarks/distributed.py --quick    # < 1 min smoke run on 2 cores

Rows (images/s of the global batch, median step over the timed steps):
- member-parallel (`split.placement: members`) at S = 2 and 4: 2 gloo processes x 1 thread,
  each running its members on the whole batch, against one process x 2 threads running all;
- data-parallel (`split.placement: loop`) at S = 2: 1 process x 1 thread (global batch B),
  2 processes x 1 thread (B/2 each + the gradient all-reduce), and 1 process x 2 threads;
- the CUDA rows (2 GPUs vs 1) when at least 2 GPUs are present, else "not measured".

A step is the engine's: co-training loss of dnc.methods.splitnet.CoTrainingTask, backward, the
placement's gradient sync, SGD step. Process groups cannot take turns inside one round, so
unlike the other benchmarks the variants run one after the other: read the figures with the
load average printed beside them. Writes reports/benchmarks/distributed[-quick].json.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import WORKLOADS, base_parser, build, report, synchronize

from dnc.methods.splitnet import CoTrainingTask
from dnc.train.distributed import DataParallel, MemberParallel, World

MODEL = "small_cnn"


def _time_steps(place: str, split: int, batch: int, steps: int, device: str, world: World | None):
    """Median seconds of one training step; `place` in single | members | data."""
    torch.manual_seed(0)
    net = build(MODEL, split)
    parallel = None
    if world is not None:
        parallel = MemberParallel(world) if place == "members" else DataParallel(world, False)
        net = parallel.place(net)
    task = CoTrainingTask(net, 0.5, 0.0).to(device)
    opt = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    chans, size = WORKLOADS[MODEL]
    local = batch // world.size if place == "data" else batch
    views = torch.randn(split, local, chans, size, size, device=device)
    targets = torch.randint(0, 10, (local,), device=device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if world is not None:
            dist.barrier()  # every rank starts the step together
        start = time.perf_counter()
        loss = task.training_step(views, targets, 1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if parallel is not None:
            parallel.sync_grads(task)
        opt.step()
        synchronize(torch.device(device))
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _worker(rank: int, size: int, port: int, cfg: dict, out: str) -> None:
    torch.set_num_threads(1)
    cuda = cfg["device"] == "cuda"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size)
    device = f"cuda:{rank}" if cuda else "cpu"
    seconds = _time_steps(
        cfg["place"], cfg["split"], cfg["batch"], cfg["steps"], device, World(rank, size, rank)
    )
    if rank == 0:
        Path(out).write_text(str(seconds))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(place: str, split: int, batch: int, steps: int, device: str) -> float:
    """Median step seconds of 2 processes x 1 thread (rank 0's figure)."""
    cfg = {"place": place, "split": split, "batch": batch, "steps": steps, "device": device}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "seconds")
        mp.spawn(_worker, args=(2, _free_port(), cfg, out), nprocs=2, join=True)
        return float(Path(out).read_text())


def _one(split: int, batch: int, steps: int, threads: int, device: str = "cpu") -> float:
    torch.set_num_threads(threads)
    return _time_steps("single", split, batch, steps, device, None)


def _row(label: str, s: int, setup: str, seconds: float | None, batch: int) -> dict:
    if seconds is None:
        return {"variant": label, "S": s, "setup": setup, "images_per_s": "not measured"}
    return {"variant": label, "S": s, "setup": setup, "images_per_s": batch / seconds}


def cpu_rows(batch: int, steps: int) -> list[dict]:
    """Member-parallel and data-parallel on CPU, 2 cores either way."""
    rows = []
    for s in (2, 4):
        one = _one(s, batch, steps, threads=2)
        two = _processes("members", s, batch, steps, "cpu")
        rows.append(_row("one process", s, "1 proc x 2 threads", one, batch))
        rows.append(_row("member-parallel", s, "2 procs x 1 thread", two, batch))
        rows[-1]["ratio"] = one / two
    single = _one(2, batch, steps, threads=1)
    rows.append(_row("data-parallel", 2, "1 proc x 1 thread", single, batch))
    for label, seconds in (
        ("2 procs x 1 thread", _processes("data", 2, batch, steps, "cpu")),
        ("1 proc x 2 threads", _one(2, batch, steps, threads=2)),
    ):
        rows.append(_row("data-parallel", 2, label, seconds, batch))
        rows[-1]["ratio"] = single / seconds
    return rows


def cuda_rows(batch: int, steps: int) -> list[dict]:
    """Member-parallel S = 2 and data-parallel on 2 GPUs vs 1; "not measured" without them."""
    have = torch.cuda.device_count() >= 2
    rows = []
    for label in ("member-parallel", "data-parallel"):
        place = "members" if label.startswith("member") else "data"
        one = _one(2, batch, steps, torch.get_num_threads(), "cuda:0") if have else None
        two = _processes(place, 2, batch, steps, "cuda") if have else None
        rows.append(_row(f"CUDA {label}", 2, "1 GPU", one, batch))
        rows.append(_row(f"CUDA {label}", 2, "2 GPUs", two, batch))
        if have:
            rows[-1]["ratio"] = one / two
    return rows


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    batch = 64 if args.quick else 128
    steps = args.rounds or (5 if args.quick else 30)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = cpu_rows(batch, steps) + cuda_rows(batch, steps)
    columns = ["variant", "S", "setup", "images_per_s", "ratio"]
    extra = {
        "workload": {"model": MODEL, "global_batch": batch, "timed_steps": steps},
        "load_average_before": load_before,
        "note": "variants run one after the other (process groups cannot interleave); "
        "ratio = the row's baseline step time / this row's",
    }
    report("distributed", args, rows, columns, extra)


if __name__ == "__main__":
    main()
