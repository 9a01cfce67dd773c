"""`python -m pipelines search`: run one worker of an Optuna study (start several to share it).

Kept apart from `pipelines.search.flow` (the Prefect flow) so the command never imports Prefect.
Bad input exits 2 with one line naming the key, before any compute.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from dnc.config import ConfigError
from pipelines.common.params import add_params_options, read_overrides


def run(args: argparse.Namespace) -> int:
    """Parse, run the worker, print a one-line JSON summary."""
    from pipelines.search.run import run_search, search_overrides  # imports torch, optuna

    overrides = search_overrides(
        read_overrides(args),
        n_trials=args.n_trials,
        budget_flops=args.budget_flops,
        budget_params=args.budget_params,
        budget_train=args.budget_train,
        budget_train_seconds=args.budget_train_seconds,
        mode=args.mode,
        storage=args.storage,
    )
    seeds = None
    if args.plan:  # the planner's proposals first (enqueued), then TPE
        from pipelines.search.plan_cli import seeds_for_search
        from pipelines.search.space import load_search

        _, search = load_search(Path(args.params), overrides)
        if search.budget.macs is None:
            raise ConfigError("--plan: needs an inference budget (--budget-macs)")
        seeds = seeds_for_search(args.plan, Path(args.params), search.budget.macs)
    summary = run_search(
        args.study,
        seeds=seeds,
        params_path=Path(args.params),
        overrides=overrides,
        data_dir=Path(args.data) if args.data else None,
        models_dir=Path(args.models_dir),
        reports_dir=Path(args.reports_dir),
    )
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


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines search`."""
    p.description = (__doc__ or "").splitlines()[0]
    p.add_argument("--study", required=True, help="study name (shared by its workers)")
    p.add_argument(
        "--n-trials",
        type=_positive(int),
        help="trials of the study (default: search.n_trials)",
    )
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
    p.add_argument("--mode", choices=("single", "multi"), help="default: search.mode")
    p.add_argument(
        "--plan",
        metavar="RUNS",
        help="seed the study with the budget planner's proposals fitted to these finished "
        "runs (a folder of evaluate metrics JSONs) before the sampler takes over",
    )
    p.add_argument("--storage", help="SQLAlchemy URL (default: search.storage)")
    add_params_options(p)
    p.add_argument("--data", help="prepared data dir (default: prepared into data/search/STUDY)")
    p.add_argument("--models-dir", default="models/search", help="run dirs of the trials")
    p.add_argument("--reports-dir", default="reports/search", help="the study's reports")
    p.set_defaults(func=run)
