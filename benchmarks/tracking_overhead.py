"""Cost of MLflow tracking: the same tiny run trained and evaluated untracked and tracked.

    .venv/bin/python benchmarks/tracking_overhead.py [--repeats 3] [--epochs 3]

Runs alternate (off, on, off, on, ...) in one process against one SQLite store in a temp
folder, so both see the same warm caches; the store is created (migrated) once before.
Reports medians of wall and CPU seconds, the mean time spent in each tracking hook (run
start, per-epoch log_batch, finish, evaluation logging, model export) and MLflow's one-off
costs (import, store creation). Writes
reports/benchmarks/tracking_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The tests' tiny run: digits, small_cnn width 8, S=2, 2 epochs, CPU. Read with yaml, not
# pipelines.dvc.preset, so that importing pipelines stays inside the timed code.
TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())


def import_seconds() -> float:
    """Wall seconds to import the tracking module (MLflow) in a fresh interpreter."""
    code = "import time; t = time.perf_counter(); import pipelines.tracking.mlflow_run; "
    code += "print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(out.stdout.strip().splitlines()[-1])


class Timers:
    """Wraps tracking's hooks to add up the wall seconds spent in each (per call kind)."""

    def __init__(self) -> None:
        from pipelines.tracking import mlflow_run as tracking

        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        hooks = [(tracking.TrainingRun, n) for n in ("on_fit_start", "on_epoch_end", "finish")]
        hooks += [(tracking, "log_evaluation"), (tracking, "_log_model")]
        for owner, name in hooks:
            setattr(owner, name, self._timed(name, getattr(owner, name)))

    def _timed(self, name: str, original):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed

    def mean_ms(self) -> dict[str, float]:
        return {k: 1e3 * v / self.calls[k] for k, v in self.seconds.items()}


def one_run(params, work: Path, tracked: bool, index: int) -> dict[str, float]:
    """Train + evaluate once; wall and CPU seconds of each."""
    from pipelines.tracking import runner

    os.environ["DNC_TRACKING"] = "on" if tracked else "off"
    run_dir = work / f"run-{index}-{'on' if tracked else 'off'}"
    out: dict[str, float] = {}
    for stage in ("train", "evaluate"):
        wall, cpu = time.perf_counter(), time.process_time()
        if stage == "train":
            runner.train(params, None, run_dir, entry_point="cli")
        else:
            runner.evaluate(params, None, run_dir, run_dir / "metrics.json", entry_point="cli")
        out[f"{stage}_wall_s"] = time.perf_counter() - wall
        out[f"{stage}_cpu_s"] = time.process_time() - cpu
    return out


def measure(repeats: int, epochs: int) -> dict:
    """Alternating untracked/tracked runs plus one-off costs."""
    from dnc.config_loading import load_params

    params = load_params(ROOT / "params.yaml").with_overrides({**TINY, "train.epochs": epochs})
    work = Path(tempfile.mkdtemp(prefix="dnc-tracking-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["DNC_ARTIFACT_ROOT"] = str(work / "mlartifacts")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "tracking-overhead"
    first_import = import_seconds()
    from pipelines.tracking.mlflow_run import Store

    start = time.perf_counter()
    Store.connect()  # creates and migrates the SQLite store
    create_store = time.perf_counter() - start
    timers = Timers()
    runs = {False: [], True: []}
    one_run(params, work, False, -1)  # warm-up: data, torch kernels
    for i in range(repeats):
        for tracked in (False, True):
            runs[tracked].append(one_run(params, work, tracked, i))
    return {
        "params": {**TINY, "train.epochs": epochs},
        "repeats": repeats,
        "untracked": _medians(runs[False]),
        "tracked": _medians(runs[True]),
        "hook_mean_ms": timers.mean_ms(),
        "hook_calls": timers.calls,
        "import_tracking_s": first_import,
        "create_sqlite_store_s": create_store,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
    }


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def table(result: dict) -> str:
    """Markdown table: untracked vs tracked, and the overhead in %."""
    off, on = result["untracked"], result["tracked"]
    lines = ["| stage | untracked | tracked | overhead |", "|---|---|---|---|"]
    for stage in ("train", "evaluate"):
        for kind in ("wall", "cpu"):
            key = f"{stage}_{kind}_s"
            pct = 100.0 * (on[key] - off[key]) / off[key]
            lines.append(
                f"| {stage} ({kind}) | {off[key]:.2f} s | {on[key]:.2f} s | {pct:+.1f} % |"
            )
    ms, calls = result["hook_mean_ms"], result["hook_calls"]
    lines += ["", "| tracking hook | mean wall | calls |", "|---|---|---|"]
    lines += [f"| {name} | {ms[name]:.0f} ms | {calls[name]} |" for name in ms]
    lines += [
        "",
        f"import pipelines.tracking.mlflow_run (MLflow): {result['import_tracking_s']:.2f} s; "
        f"new SQLite store (migration): {result['create_sqlite_store_s']:.2f} s",
        f"machine: {result['machine']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "reports/benchmarks/tracking_overhead.json"))
    args = parser.parse_args(argv)
    result = measure(args.repeats, args.epochs)
    print(table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
