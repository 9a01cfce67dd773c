"""Orchestration overhead of the Prefect flow: one tiny run, direct vs through dnc-experiment.

    .venv/bin/python benchmarks/flow_overhead.py [--rounds 3] [--quick]

"direct" makes the calls the flow's tasks make (runner.prepare / train / evaluate,
stages.info, the run lock, the report) with no Prefect imported; "flow" runs `dnc-experiment`.
Both use the tests' tiny digits config, into fresh folders every time (no cache hit on either
side), and the variants alternate round by round so load drift hits them alike:
- cold, ephemeral: a new process per run, i.e. `python -m pipelines experiment` with no
  server: the flow side pays `import prefect` and the ephemeral server's start;
- cold, server: the same against a running `prefect server start` (PREFECT_API_URL set);
- warm: another run in a process whose ephemeral server is up (a notebook, a sweep): the
  per-run cost of flow and task runs, logs and artifacts.
Overhead is measured, not subtracted from noisy totals: both sides time their stage work
(the task bodies: prepare, train, evaluate, FLOPs, lock, report) with one clock, and a run's
overhead is the flow's time outside that work minus the direct run's, round by round. The
training itself varies by tens of percent on a shared machine; this way it cancels out.
Also times the `prepare` task on the default Fashion-MNIST data, fresh and as a cache hit.
Tracking is off (`DNC_TRACKING=off`; MLflow's cost is benchmarks/tracking_overhead.py's).
Prefect homes are temporary and initialised by one untimed run. Writes
reports/benchmarks/flow_overhead.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The tests' tiny run: digits, small_cnn width 8, S=2, 2 epochs, CPU. Read with yaml, not
# pipelines.dvc.preset, so that importing pipelines stays inside the timed code.
TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
ENV = {
    "DNC_TRACKING": "off",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


COMPUTE = [0.0]  # seconds of stage work in the current run


@contextmanager
def stage_work() -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        COMPUTE[0] += time.perf_counter() - start


def _timed(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stage_work():
            return fn(*args, **kwargs)

    return wrapper


def time_task_bodies() -> None:
    """Clock the flow's task bodies (the engine calls `task.fn`) like the direct steps."""
    from pipelines.prefect import tasks as t

    for task in (t.prepare_data, t.train_members, t.evaluate_members, t.count_flops,
                 t.record_versions, t.write_report):  # fmt: skip
        task.fn = _timed(task.fn)


def direct_run(out: Path) -> None:
    """The calls the flow's tasks make, in order, with no Prefect imported."""
    from dnc import builders, stages
    from dnc.config_loading import load_params
    from dnc.io import write_json
    from pipelines.dvc import plots, runlock
    from pipelines.prefect.report import experiment_table
    from pipelines.tracking import runner

    params = load_params(ROOT / "params.yaml", TINY)
    builders.check_params(params)
    data, run = out / "data", out / "run"
    model, metrics_path, flops_path = run / "model", run / "metrics.json", run / "flops.json"
    with stage_work():
        runner.prepare(params, data)
    with stage_work():
        runner.train(params, data, model, entry_point="direct")
    with stage_work():
        metrics = runner.evaluate(params, data, model, metrics_path, entry_point="direct")
    with stage_work():
        flops = stages.info(params)
        write_json(flops, flops_path)
    stage_io = {
        "prepare": {"outs": [data]},
        "train": {"deps": [data], "outs": [model]},
        "evaluate": {"deps": [data, model], "outs": [metrics_path]},
        "flops": {"outs": [flops_path]},
    }
    with stage_work():
        runlock.write_run_lock(run / "run.lock.json", params, "params.yaml", TINY, stage_io, {})
    with stage_work():
        (run / "report.md").write_text(experiment_table("tiny", metrics, flops))
        rows = [{"label": c["label"], "macs": c["macs"], "acc": c["acc"], "curve": "tiny"}
                for c in metrics["curve"]]  # fmt: skip
        plots.accuracy_vs_macs(rows, run / "accuracy_vs_macs.png", "tiny")


def flow_run(out: Path) -> None:
    from pipelines.prefect.flows import experiment_flow

    experiment_flow(
        str(ROOT / "params.yaml"), TINY, out_dir=str(out / "run"), data_store=str(out / "store")
    )


def cli_run(out: Path) -> None:
    from pipelines.cli import main

    sets = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    argv = ["experiment", "--params", str(ROOT / "params.yaml"), *sets]
    main([*argv, "--out-dir", str(out / "run"), "--data-store", str(out / "store")])


def measured(fn: Any, scratch: Path) -> dict[str, float]:
    """Wall and stage-work seconds of one run into a fresh folder."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    COMPUTE[0] = 0.0
    start = time.perf_counter()
    fn(out)
    return {"wall": time.perf_counter() - start, "work": COMPUTE[0]}


def cold(kind: str, scratch: Path, env: dict[str, str]) -> dict[str, float]:
    """One run in a new process; wall time includes the interpreter's start and imports."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", kind, str(out)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return {"wall": wall, "work": json.loads(proc.stdout.strip().splitlines()[-1])["work"]}


def child(kind: str, out: Path) -> None:
    """`--child direct|cli OUT`: one run in this fresh process; its stage work as JSON."""
    if kind == "cli":
        time_task_bodies()
    result = measured(direct_run if kind == "direct" else cli_run, out)
    print(json.dumps(result))


def prepare_cache(scratch: Path) -> dict[str, float]:
    """Seconds inside the flow of the default (Fashion-MNIST) prepare: fresh, then cached."""
    from prefect import flow

    from pipelines.prefect import tasks as flow_tasks
    from pipelines.prefect.flows import load_config

    params = load_config(str(ROOT / "params.yaml"), {})
    data_dir = scratch / "fashion" / flow_tasks.data_key(params)

    @flow(name="bench-prepare")
    def prepare_only() -> float:
        start = time.perf_counter()
        flow_tasks.prepare_step(params, data_dir)
        return time.perf_counter() - start

    return {"fresh": prepare_only(), "cached": prepare_only()}


@contextmanager
def prefect_server(home: Path, env: dict[str, str]) -> Iterator[str]:
    """`prefect server start` on a free 127.0.0.1 port; yields its API URL; stops it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prefect = str(Path(sys.executable).with_name("prefect"))
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server_env = {**env, "PREFECT_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=server_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def row(name: str, direct: list[dict], flow: list[dict]) -> dict[str, Any]:
    """Median walls, and the median over rounds of the flow's extra time outside stage work."""
    extra = [
        (f["wall"] - f["work"]) - (d["wall"] - d["work"])
        for d, f in zip(direct, flow, strict=True)
    ]
    return {
        "setting": name,
        "direct_s": statistics.median(d["wall"] for d in direct),
        "flow_s": statistics.median(f["wall"] for f in flow),
        "overhead_s": statistics.median(extra),
        "overhead_range_s": f"{min(extra):.1f}..{max(extra):.1f}",
        "rounds": len(flow),
    }


def measure(rounds: int, scratch: Path) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Interleaved rounds of every variant, plus the one-off costs."""
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    os.environ.update(env)
    one_off = {"first_cli_run_fresh_home_s": cold("cli", scratch, env)["wall"]}
    import dnc.stages  # noqa: F401  (torch: both sides pay it)

    start = time.perf_counter()
    import pipelines.prefect.flows  # noqa: F401  (prefect, the flows and their tasks)

    one_off["import_prefect_and_flows_s"] = time.perf_counter() - start
    time_task_bodies()
    one_off["first_flow_in_process_s"] = measured(flow_run, scratch)["wall"]  # ephemeral start
    times: dict[str, list[dict]] = {}
    with prefect_server(scratch / "server-home", env) as url:
        server_env = {**env, "PREFECT_API_URL": url}
        for _ in range(rounds):
            for name, run in {
                "cold_direct": lambda: cold("direct", scratch, env),
                "cold_flow_ephemeral": lambda: cold("cli", scratch, env),
                "cold_flow_server": lambda: cold("cli", scratch, server_env),
                "warm_direct": lambda: measured(direct_run, scratch),
                "warm_flow": lambda: measured(flow_run, scratch),
            }.items():
                times.setdefault(name, []).append(run())
    return times, one_off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--out", type=Path, help="JSON path (default reports/benchmarks/)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update({k: os.environ.get(k, v) for k, v in ENV.items()})
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="dnc-flow-bench-") as tmp:
        times, one_off = measure(1 if args.quick else args.rounds, Path(tmp))
        cache = prepare_cache(Path(tmp))
    t = times
    rows = [
        row("cold, ephemeral server: python -m pipelines experiment", t["cold_direct"],
            t["cold_flow_ephemeral"]),
        row("cold, running prefect server (PREFECT_API_URL)", t["cold_direct"],
            t["cold_flow_server"]),
        row("warm: another run in the same process", t["warm_direct"], t["warm_flow"]),
    ]  # fmt: skip
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import report

    extra = {"runs": times, "one_off": one_off, "prepare_fashion_mnist_s": cache}
    columns = ["setting", "direct_s", "flow_s", "overhead_s", "overhead_range_s", "rounds"]
    report("flow_overhead", args, rows, columns, extra)
    print(
        f"prepare task, Fashion-MNIST (10k/5k/10k): {cache['fresh']:.2f} s fresh, "
        f"{cache['cached']:.3f} s as a cache hit; one-off: {json.dumps(one_off)}"
    )


if __name__ == "__main__":
    main()
