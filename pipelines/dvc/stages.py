"""`python -m pipelines stage <prepare|train|evaluate>`: the DVC stage commands.

Each calls the one implementation in `dnc.stages`; this layer adds what the pure library
must not know about (experiment tracking). Bad input exits 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dnc.io import print_json
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
    out = Path(args.out)
    # `--out` is a persistent DVC output (dvc.yaml): after a kill, `dvc repro` resumes from
    # its last.pt; a folder of other params (`dvc exp run -S ...`) is trained afresh.
    resume = runner.resumable(out, params) and not args.restart
    result = runner.train(
        params,
        args.data and Path(args.data),
        out,
        entry_point="dvc",
        config=args.config,
        resume=resume,
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


def run_config(args: argparse.Namespace) -> dict:
    """Train and evaluate every seed of configuration `--config` in this one process.

    The DVC `run` stage: one process per configuration pays for importing torch and the
    tracker once, not once per seed and stage. Writes `--models/seed<k>/` (the run dirs) and
    `--metrics/seed<k>.json` with its `.predictions.npz`; returns each seed's accuracies.
    """
    from dnc.config_loading import load_params
    from pipelines.common.params import read_overrides
    from pipelines.dvc.matrix import load_comparison
    from pipelines.tracking import runner

    overrides = read_overrides(args, matrix=True)  # checks the whole compare section first
    seeds = load_comparison(args.params).seeds
    runs = {k: load_params(args.params, {**overrides, "seed": k}) for k in seeds}  # all checked
    out = {}
    for seed, params in runs.items():
        model_dir = Path(args.models) / f"seed{seed}"
        data = args.data and Path(args.data)
        # models/<config> is a persistent DVC output: a killed run resumes from last.pt.
        resume = runner.resumable(model_dir, params) and not args.restart
        result = runner.train(
            params, data, model_dir, entry_point="dvc", config=args.config, resume=resume
        )
        metrics = runner.evaluate(
            params,
            data,
            model_dir,
            Path(args.metrics) / f"seed{seed}.json",
            entry_point="dvc",
            config=args.config,
        )
        out[f"seed{seed}"] = {
            "best_val_acc": result.state.best_value,
            "ensemble_acc": metrics["ensemble"]["acc"],
        }
    return out


def _print_result(args: argparse.Namespace) -> int:
    print_json(args.stage_func(args))
    return 0


EXTRA_HELP = {
    "--data": "prepared data folder (default: prepare in memory)",
    "--model-dir": "the trained run dir to evaluate",
    "--models": "writes MODELS/seed<k>/, one run dir per seed of compare.seeds",
    "--metrics": "writes METRICS/seed<k>.json and seed<k>.predictions.npz",
}


def add(parser: argparse.ArgumentParser) -> None:
    """The `stage` command and its three stages."""
    parser.set_defaults(func=_print_result)
    inner = parser.add_subparsers(dest="stage", required=True)
    for name, func, extra in (
        ("prepare", run_prepare, ()),
        ("train", run_train, ("--data",)),
        ("evaluate", run_evaluate, ("--data", "--model-dir")),
        ("run", run_config, ("--data", "--models", "--metrics")),
    ):
        first = (func.__doc__ or "").splitlines()[0]
        p = inner.add_parser(name, help=first, formatter_class=parser.formatter_class)
        add_params_options(p, config=name != "prepare")
        for flag in extra:
            need = flag in ("--model-dir", "--models", "--metrics")
            p.add_argument(flag, required=need, help=EXTRA_HELP[flag])
        if name != "run":
            p.add_argument("--out", required=True, help="output folder (file for evaluate)")
        if name in ("train", "run"):
            p.add_argument("--restart", action="store_true", help="start over (see dnc train)")
        if name == "evaluate":
            p.add_argument(
                "--allow-incomplete",
                action="store_true",
                help="evaluate a run that did not finish train.epochs (see dnc evaluate)",
            )
        add_verbose(p)
        p.set_defaults(stage_func=func)
