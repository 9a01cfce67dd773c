"""One device per worker process: `--devices cuda:0,cuda:1` (or `cpu,cpu`) for sweeps and searches.

Concurrent trainings run in separate processes, never threads of one process: torch's global
RNG, its thread pool and the current CUDA device are per process, so a training run in a
pinned worker is the very run it would be alone (same weights as a sequential sweep). Worker i
gets `devices[i % len(devices)]`: a GPU through CUDA_VISIBLE_DEVICES (the training's
`train.device: auto` then sees that GPU only, as cuda:0), a CPU through a thread budget
(OMP_NUM_THREADS for a launched process, `torch.set_num_threads` in a pool worker) and no GPU.
The processes are launched by the engines themselves: Prefect's ProcessPoolTaskRunner for the
sweep, plain `python -m pipelines search` workers sharing one Optuna storage for a search.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from dnc.config import ConfigError

DEVICE = re.compile(r"^(cpu|cuda:\d+)$")


@dataclass(frozen=True)
class Pin:
    """The device of one worker process and, on CPU, its torch thread budget."""

    device: str  # cpu or cuda:<index>
    threads: int

    def env(self) -> dict[str, str]:
        """Environment variables that pin a process started with them."""
        if self.device == "cpu":
            n = str(self.threads)
            return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
        return {"CUDA_VISIBLE_DEVICES": self.device.split(":", 1)[1]}


def parse_devices(text: str | None, option: str = "--devices") -> list[str]:
    """`cuda:0,cuda:1` / `cpu,cpu` -> the list; None or empty -> []. Bad entries name `option`."""
    devices = [d.strip() for d in (text or "").split(",") if d.strip()]
    for d in devices:
        if not DEVICE.match(d):
            raise ConfigError(f"{option}: {d!r} is not cpu or cuda:<index>")
    return devices


def plan(devices: list[str], workers: int, threads: int | None = None) -> list[Pin]:
    """The pins of `workers` processes over `devices` (cycled). CPU workers share the cores
    equally unless `threads` is given."""
    if workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {workers}")
    chosen = [devices[i % len(devices)] for i in range(workers)] if devices else []
    on_cpu = max(1, sum(d == "cpu" for d in chosen))
    budget = threads or max(1, (os.cpu_count() or 1) // on_cpu)
    return [Pin(d, budget if d == "cpu" else 0) for d in chosen]


def check_train_device(train_device: str, devices: list[str]) -> None:
    """A pinned worker sees one device: the params must let it pick that one."""
    if devices and train_device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device: {train_device!r} with --devices; use auto")
    if "cpu" not in devices and train_device == "cpu" and devices:
        raise ConfigError("train.device: cpu, but --devices names GPUs; use auto")


_PIN: Pin | None = None  # this pool worker's pin (set once by `claim`)


def claim(queue: Any) -> None:
    """ProcessPoolTaskRunner initializer: take the next free pin and apply it to this process.

    Prefect replaces a worker's environment with the parent's for every task, so the pin is
    re-applied at the start of each task (`apply_pin`) as well."""
    global _PIN
    _PIN = queue.get_nowait()
    apply_pin()


def apply_pin() -> None:
    """Pin this process to its claimed device (no-op outside a pinned pool worker)."""
    if _PIN is None:
        return
    os.environ.update(_PIN.env())  # before the first CUDA call: torch reads it lazily
    if _PIN.device == "cpu":
        import torch

        torch.set_num_threads(_PIN.threads)


def pinned() -> Pin | None:
    """The pin of this process (pool workers only)."""
    return _PIN


def launch(argv: list[str], pins: list[Pin]) -> int:
    """Run `python <argv>` once per pin, each pinned through its environment, all at once;
    wait for every one. Returns the first non-zero exit status (0 when all succeed)."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, *argv], env={**os.environ, **pin.env()}) for pin in pins
    ]
    try:
        codes = [proc.wait() for proc in procs]
    except BaseException:  # interrupted: stop the workers we started (they resume later)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        raise
    return next((code for code in codes if code), 0)
