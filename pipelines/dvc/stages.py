"""`python -m pipelines stage <prepare|train|evaluate>`: the DVC stage commands.

Each calls the one implementation in `dnc.stages`; this layer adds what the pure library
must not know about (experiment tracking). Bad input exits 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.common.errors import add_verbose
from pipelines.common.params import add_params_options, read_params


def run_prepare(args: argparse.Namespace) -> dict:
    """Prepare the dataset into `--out`."""
    from pipelines.tracking import runner  # imports torch: not for --help

    return runner.prepare(read_params(args, matrix=True), Path(args.out))


def run_train(args: argparse.Namespace) -> dict:
    """Train one configuration into `--out`; the best epoch and its validation accuracy."""
    from pipelines.tracking import runner

    params = read_params(args, matrix=True)
    result = runner.train(
        params,
        args.data and Path(args.data),
        Path(args.out),
        entry_point="dvc",
        config=args.config,
        resume=not args.restart,
    )
    return {"best_epoch": result.state.best_epoch, "best_val_acc": result.state.best_value}


def run_evaluate(args: argparse.Namespace) -> dict:
    """Evaluate a trained run dir into the metrics JSON `--out`; its ensemble accuracy."""
    from pipelines.tracking import runner

    params = read_params(args, matrix=True)
    metrics = runner.evaluate(
        params,
        args.data and Path(args.data),
        Path(args.model_dir),
        Path(args.out),
        entry_point="dvc",
        config=args.config,
        allow_incomplete=args.allow_incomplete,
    )
    return {"ensemble_acc": metrics["ensemble"]["acc"]}


def _print_result(args: argparse.Namespace) -> int:
    print(json.dumps(args.stage_func(args)))
    return 0


EXTRA_HELP = {
    "--data": "prepared data folder (default: prepare in memory)",
    "--model-dir": "the trained run dir to evaluate",
}


def add(parser: argparse.ArgumentParser) -> None:
    """The `stage` command and its three stages."""
    parser.set_defaults(func=_print_result)
    inner = parser.add_subparsers(dest="stage", required=True)
    for name, func, extra in (
        ("prepare", run_prepare, ()),
        ("train", run_train, ("--data",)),
        ("evaluate", run_evaluate, ("--data", "--model-dir")),
    ):
        p = inner.add_parser(name, help=func.__doc__, formatter_class=parser.formatter_class)
        add_params_options(p, config=name != "prepare")
        for flag in extra:
            p.add_argument(flag, required=flag == "--model-dir", help=EXTRA_HELP[flag])
        p.add_argument("--out", required=True, help="output folder (file for evaluate)")
        if name == "train":
            p.add_argument("--restart", action="store_true", help="start over (see dnc train)")
        if name == "evaluate":
            p.add_argument(
                "--allow-incomplete",
                action="store_true",
                help="evaluate a run that did not finish train.epochs (see dnc evaluate)",
            )
        add_verbose(p)
        p.set_defaults(stage_func=func)
