"""`python -m pipelines search`: run one worker of an Optuna study (start several to share it).

Kept apart from `pipelines.search.flow` (the Prefect flow) so the command never imports Prefect.
Bad input exits 2 with one line naming the key, before any compute.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from dnc.config import ConfigError, parse_set


def run(args: argparse.Namespace) -> int:
    """Parse, run the worker, print a one-line JSON summary."""
    try:
        from pipelines.search.run import run_search, search_overrides  # imports torch, optuna

        overrides = search_overrides(
            parse_set(args.set),
            n_trials=args.n_trials,
            budget_flops=args.budget_flops,
            budget_params=args.budget_params,
            budget_train=args.budget_train,
            budget_train_seconds=args.budget_train_seconds,
            mode=args.mode,
            storage=args.storage,
        )
        summary = run_search(
            args.study,
            params_path=Path(args.params),
            overrides=overrides,
            data_dir=Path(args.data) if args.data else None,
            models_dir=Path(args.models_dir),
            reports_dir=Path(args.reports_dir),
        )
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    short = {k: summary[k] for k in ("study", "stop_reason", "counts", "best")}
    short["files"] = summary["files"]
    print(json.dumps(short))
    return 0


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(float(text)) if kind is int else float(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="Optuna search of split factor, width and co-training weight under a budget",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--study", required=True, help="study name (shared by its workers)")
    p.add_argument("--n-trials", type=_positive(int), help="trials of the whole study")
    p.add_argument(
        "--budget-flops",
        "--budget-macs",
        type=_positive(float),
        help="inference budget per image in MACs (multiply-adds, the paper's FLOPs), all "
        "members together; costlier configurations are rejected before training",
    )
    p.add_argument("--budget-params", type=_positive(float), help="parameter budget")
    p.add_argument(
        "--budget-train",
        type=_positive(float),
        help="training budget of the whole study in MACs (per epoch: (3 x train images + "
        "val images) x model MACs); the study stops starting trials once it is spent",
    )
    p.add_argument("--budget-train-seconds", type=_positive(float), help="same, in seconds")
    p.add_argument("--mode", choices=("single", "multi"))
    p.add_argument("--storage", help="SQLAlchemy URL (default search.storage)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", help="prepared data dir (default: prepared into data/search/STUDY)")
    p.add_argument("--models-dir", default="models/search")
    p.add_argument("--reports-dir", default="reports/search")
    p.set_defaults(func=run)
