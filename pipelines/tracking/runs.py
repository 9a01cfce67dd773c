"""`python -m pipelines runs reap`: end the MLflow runs that a killed process left RUNNING.

    python -m pipelines runs reap --stale-after 2h              # list, then end them KILLED
    python -m pipelines runs reap --stale-after 30m --dry-run   # only list them

dnc ends its own runs FINISHED, FAILED or KILLED, SIGTERM and Ctrl-C included
(`pipelines.tracking.mlflow_run`). A process that dies without running any code (SIGKILL, the OOM
killer, a machine that goes away) cannot, and its run stays RUNNING in `mlflow ui`. `reap`
ends every RUNNING run of the experiment whose last sign of life (its start, its reopening
on resume, or its last logged epoch) is older than `--stale-after`, as KILLED with a
`dnc.stop_reason` tag. Choose `--stale-after` longer than your longest epoch: a reaped run
that is in fact alive keeps logging, and resuming a reaped training (`dvc repro`, `dnc
train`, a flow) continues the same run as usual.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from dnc.config import ConfigError
from pipelines.common.errors import add_verbose
from pipelines.tracking.store import REOPENED_AT, STOP_REASON, Store

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of '90s', '30m', '2h', '1d' or '1.5h'; ConfigError naming the flag otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"--stale-after {text!r}: expected a positive duration like 30m or 2h")
    return float(match[1]) * UNITS[match[2]]


@dataclass(frozen=True)
class StaleRun:
    run_id: str
    name: str
    last_seen_ms: int


def last_seen_ms(store: Store, run) -> int:
    """The latest of the run's start, its reopening on resume and its last logged epoch."""
    seen = [run.info.start_time or 0, int(run.data.tags.get(REOPENED_AT, 0))]
    seen += [m.timestamp for m in store.client.get_metric_history(run.info.run_id, "epoch")]
    return max(seen)


def stale_runs(store: Store, experiment: str, older_than_s: float, now_ms: int) -> list[StaleRun]:
    """RUNNING runs of `experiment` with no sign of life for `older_than_s` seconds."""
    found = store.client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--experiment {experiment}: no such experiment in {store.uri}")
    runs = store.client.search_runs(
        [found.experiment_id], "attributes.status = 'RUNNING'", max_results=50000
    )
    out = []
    for run in runs:
        seen = last_seen_ms(store, run)
        if now_ms - seen > older_than_s * 1000:
            out.append(StaleRun(run.info.run_id, run.info.run_name or "", seen))
    return sorted(out, key=lambda r: r.last_seen_ms)


def reap(store: Store, runs: list[StaleRun]) -> None:
    """End each run KILLED, saying why in `dnc.stop_reason`."""
    for run in runs:
        since = _iso(run.last_seen_ms)
        store.log(run.run_id, tags={STOP_REASON: f"reaped: no sign of life since {since}"})
        store.client.set_terminated(run.run_id, "KILLED")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reap(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.stale_after)
    store = Store.connect(args.tracking_uri)
    runs = stale_runs(store, args.experiment, older_than, int(time.time() * 1000))
    for run in runs:
        print(f"{run.run_id}  {run.name}  last seen {_iso(run.last_seen_ms)}")
    if args.dry_run:
        print(f"{len(runs)} stale RUNNING run(s); --dry-run: none ended")
        return 0
    reap(store, runs)
    print(f"ended {len(runs)} stale RUNNING run(s) as KILLED")
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines runs reap`."""
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser(
        "reap",
        help="end RUNNING runs left by killed processes as KILLED",
        formatter_class=p.formatter_class,
    )
    add_verbose(r)
    r.add_argument("--stale-after", required=True, help="e.g. 30m, 2h: longer than an epoch")
    r.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "dnc",
        help="MLflow experiment name (default: $MLFLOW_EXPERIMENT_NAME or dnc)",
    )
    r.add_argument(
        "--tracking-uri",
        default=None,
        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    r.add_argument("--dry-run", action="store_true", help="list the runs, end none")
    r.set_defaults(func=_reap)
