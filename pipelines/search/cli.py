"""`python -m pipelines search`: run one worker of an Optuna study (start several to share it).

`--workers N --devices cuda:0,cuda:1` (or `cpu,cpu`) starts N such workers as processes on the
study's one storage, each pinned to its device (`pipelines.common.workers`), and waits for them.

Kept apart from `pipelines.search.flow` (the Prefect flow) so the command never imports Prefect.
Bad input exits 2 with one line naming the key, before any compute.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dnc.config import ConfigError
from dnc.io import print_json
from pipelines.common.params import add_params_options, read_overrides


def run(args: argparse.Namespace) -> int:
    """Parse, run the worker (or launch the pinned workers), print a one-line JSON summary."""
    if args.workers > 1 or args.devices:
        return launch_workers(args)
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
    if "followed" in summary:  # a torchrun rank > 0: the trials it trained with rank 0
        short["followed"] = summary["followed"]
    print_json(short)  # one write: under torchrun, ranks share stdout
    return 0


# Options handed on to each launched worker unchanged (dest, flag).
_PASSED = [
    ("study", "--study"),
    ("n_trials", "--n-trials"),
    ("budget_flops", "--budget-flops"),
    ("budget_params", "--budget-params"),
    ("budget_train", "--budget-train"),
    ("budget_train_seconds", "--budget-train-seconds"),
    ("mode", "--mode"),
    ("storage", "--storage"),
    ("params", "--params"),
    ("data", "--data"),
    ("models_dir", "--models-dir"),
    ("reports_dir", "--reports-dir"),
]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one launched worker: these options, without --workers/--devices."""
    argv = ["-m", "pipelines", "search"]
    for dest, flag in _PASSED:
        if (value := getattr(args, dest)) is not None:
            argv += [flag, str(value)]
    for item in args.set:
        argv += ["--set", item]
    return argv


def launch_workers(args: argparse.Namespace) -> int:
    """N pinned worker processes of the study; the first failure's status (0: all done)."""
    from pipelines.common import workers
    from pipelines.search.run import search_overrides
    from pipelines.search.space import load_search

    devices = workers.parse_devices(args.devices)
    pins = workers.plan(devices or ["cpu"], args.workers, args.threads)
    sets = search_overrides(read_overrides(args), storage=args.storage)
    base, search = load_search(Path(args.params), sets)  # bad params: exit 2 before launching
    workers.check_train_device(base.train.device, devices)
    if search.storage.startswith("sqlite") and ":memory:" in search.storage:
        raise ConfigError("search.storage: workers in several processes need a file or server")
    return workers.launch(worker_argv(args), pins)


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
        help="trials of the study (default: search.n_trials); a candidate rejected for "
        "the inference budget takes one of them, untrained",
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
    # Outside models/ (DVC's outputs): a search must not change what `dvc status` sees.
    p.add_argument("--models-dir", default="runs/search", help="run dirs of the trials")
    p.add_argument("--reports-dir", default="reports/search", help="the study's reports")
    p.add_argument(
        "--workers", type=_positive(int), default=1, help="worker processes on the one storage"
    )
    p.add_argument(
        "--devices",
        help="worker i pinned to device i (cycled): cuda:0,cuda:1 or cpu,cpu (default: cpu "
        "when --workers > 1)",
    )
    p.add_argument("--threads", type=int, help="torch threads per cpu worker (cores / workers)")
    p.set_defaults(func=run)
