"""`python -m pipelines {experiment,sweep,serve}`: the Prefect flows from the command line.

`experiment` and `sweep` run a flow in this process (an ephemeral Prefect server, no setup);
`serve` serves the deployments of prefect.yaml against a running `prefect server`.
Bad params exit 2 with one line naming the key, before Prefect starts or any data is read.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from dnc.config import ConfigError
from dnc.config_loading import load_params, parse_set
from dnc.io import print_json
from pipelines.common.network import apply_network_timeout
from pipelines.common.params import add_params_options, read_overrides

# Before Prefect is imported: no telemetry, and a startup timeout that survives a busy machine
# (the ephemeral server's 20 s default timed out under load).
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)


def _grid(items: list[str]) -> dict[str, list[Any]]:
    grid = parse_set(items)  # `split.factor=[1, 2, 4]`: values are YAML
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"--grid {key}: expected a list, e.g. {key}=[1, 2]")
    return grid


def run_experiment(args: argparse.Namespace) -> int:
    """Run flow dnc-experiment in this process; print its result."""
    from dnc import builders

    overrides = read_overrides(args)
    builders.check_params(load_params(args.params, overrides))  # fail before Prefect starts
    apply_network_timeout()  # Prefect reads its request timeout when it is imported
    from pipelines.prefect.flows import experiment_flow

    out = experiment_flow(
        params_path=args.params,
        overrides=overrides,
        out_dir=args.out_dir,
        data_store=args.data_store,
    )
    return _print(out)


def run_sweep(args: argparse.Namespace) -> int:
    """Run flow dnc-sweep in this process; print its result (with --compare, then the
    verdict lines of `python -m pipelines report`)."""
    if args.compare and args.grid:
        raise ConfigError("--compare: not with --grid (its points are compare.configs x seeds)")
    overrides, grid = read_overrides(args), _grid(args.grid) or None
    from pipelines.common.workers import check_train_device, parse_devices
    from pipelines.prefect.points import DEFAULT_GRID, expand_comparison, expand_grid

    devices = parse_devices(args.devices)
    if args.compare:
        configs = [r.params for r in expand_comparison(args.params, overrides)]
    else:
        configs = [p for _, p in expand_grid(args.params, overrides, grid or DEFAULT_GRID)]
    for params in configs:  # every point validated before Prefect starts
        check_train_device(params.train.device, devices)
    apply_network_timeout()  # Prefect reads its request timeout when it is imported
    from pipelines.prefect.flows import sweep_flow

    out = sweep_flow(
        params_path=args.params,
        grid=grid,
        overrides=overrides,
        max_concurrent=args.max_concurrent,
        out_dir=args.out_dir,
        data_store=args.data_store,
        devices=devices or None,
        threads=args.threads,
        compare=args.compare,
    )
    _print(out)
    if args.compare:
        from pipelines.dvc.report import print_verdicts

        report = Path(out[0]["report"])
        print_verdicts(json.loads((report.parent / "report" / "summary.json").read_text()), report)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve prefect.yaml's deployments until interrupted."""
    apply_network_timeout()
    from pipelines.prefect import deploy

    path = Path(args.prefect_yaml) if args.prefect_yaml else deploy.PREFECT_YAML
    deploy.serve(path, args.only or None, args.limit, args.poll_seconds)
    return 0


def _print(out: Any) -> int:
    if out is not None:
        print_json(out, indent=2)
    return 0


def _common(p: argparse.ArgumentParser, out_dir: str) -> None:
    add_params_options(p)
    p.add_argument("--out-dir", help=f"output folder (default: {out_dir})")
    p.add_argument("--data-store", default="data/prefect", help="prepared-data store")


def experiment(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines experiment`."""
    _common(p, "runs/<label>/<flow run name>")
    p.set_defaults(func=run_experiment)


def sweep(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines sweep`."""
    _common(p, "runs/sweep/<flow run name>")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=[V1, V2]",
        help="a swept key (repeatable; none given: split.factor=[1, 2, 4])",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="sweep the params file's compare.configs x compare.seeds instead of a grid, "
        "into models/ and evaluate/ as dvc repro does, compared by the DVC report",
    )
    p.add_argument("--max-concurrent", type=int, default=1, help="trainings at once (2 cores: 1)")
    p.add_argument(
        "--devices",
        help="one process per training, worker i pinned to device i (cycled): cuda:0,cuda:1 "
        "or cpu,cpu (default: threads of this process, one shared device)",
    )
    p.add_argument(
        "--threads", type=int, help="torch threads of each cpu worker (default: cores / workers)"
    )
    p.set_defaults(func=run_sweep)


def serve(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines serve`."""
    p.add_argument("--prefect-yaml", help="default: the project's prefect.yaml")
    p.add_argument(
        "--only", action="append", default=[], metavar="FLOW/NAME", help="serve only these"
    )
    p.add_argument("--limit", type=int, default=1, help="flow runs at once")
    p.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for runs")
    p.set_defaults(func=run_serve)
