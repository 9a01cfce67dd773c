"""`python -m pipelines stage <prepare|train|evaluate>`: the DVC stage commands.

Each calls the one implementation in `dnc.stages`; this layer adds what the pure library
must not know about (experiment tracking). Bad input exits 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnc.config import ConfigError, Params, load_params, parse_set
from pipelines.dvc.matrix import config_overrides
from pipelines.tracking import runner


def _params(args: argparse.Namespace) -> Params:
    # A `compare` configuration's keys first (the DVC matrix), then --set on top; the whole
    # compare section is checked here, so a broken one fails the first stage.
    overrides = config_overrides(args.params, getattr(args, "config", None))
    return load_params(args.params, {**overrides, **parse_set(args.set)})


def run_prepare(args: argparse.Namespace) -> dict:
    return runner.prepare(_params(args), Path(args.out))


def run_train(args: argparse.Namespace) -> dict:
    params = _params(args)
    result = runner.train(params, args.data and Path(args.data), Path(args.out), entry_point="dvc")
    return {"best_epoch": result.state.best_epoch, "best_val_acc": result.state.best_value}


def run_evaluate(args: argparse.Namespace) -> dict:
    params = _params(args)
    metrics = runner.evaluate(
        params,
        args.data and Path(args.data),
        Path(args.model_dir),
        Path(args.out),
        entry_point="dvc",
    )
    return {"ensemble_acc": metrics["ensemble"]["acc"]}


def _dispatch(args: argparse.Namespace) -> int:
    try:
        out = args.stage_func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.set_defaults(func=_dispatch)
    inner = stage.add_subparsers(dest="stage", required=True)
    for name, func, extra in (
        ("prepare", run_prepare, ()),
        ("train", run_train, ("--data", "--config")),
        ("evaluate", run_evaluate, ("--data", "--model-dir", "--config")),
    ):
        p = inner.add_parser(name)
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        for flag in extra:
            p.add_argument(flag)
        p.add_argument("--out", required=True)
        p.set_defaults(stage_func=func)
