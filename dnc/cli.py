"""Command line: `dnc {info,prepare,train,evaluate,models,datasets,methods}`.

Bad input (an invalid params key, a missing file or dataset, an unreadable checkpoint)
prints one line naming the key or file and exits with status 2 before any compute is
spent; `-v` (or DNC_DEBUG=1) prints the traceback as well. A diverged training (NaN/inf
loss) exits 3; under torchrun every rank stops at the same step and rank 0 alone prints it.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnc.config import ConfigError, Params
from dnc.config_loading import load_params, parse_set
from dnc.data import PreparedDataError
from dnc.io import print_json
from dnc.train.checkpoint import CheckpointError
from dnc.train.engine import DivergenceError

# The project's own errors: each names the key or file at fault, so one line says it all.
USER_ERRORS = (ConfigError, PreparedDataError, CheckpointError, FileNotFoundError)
Formatter = argparse.ArgumentDefaultsHelpFormatter


def user_error(err: BaseException) -> str | None:
    """The one-line message of a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(err, USER_ERRORS):
        return str(err)
    if isinstance(err, OSError) and err.filename:  # e.g. permission denied, disk full
        return f"{err.filename}: {err.strerror or err}"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on device ({err})"
    return None


def run_guarded(fn: Callable[[], Any], verbose: bool = False) -> tuple[int, Any]:
    """Run `fn`; a user error becomes one line on stderr and status 2 (plus the traceback
    with `verbose` or DNC_DEBUG=1), a divergence one line and status 3. Bugs propagate."""
    try:
        return 0, fn()
    except DivergenceError as err:  # every torchrun rank raises it at once: one line, rank 0
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {err}", file=sys.stderr)
        return 3, None
    except Exception as err:  # noqa: BLE001  (filtered just below)
        message = user_error(err)
        if message is None:
            raise
        if verbose or os.environ.get("DNC_DEBUG", "") not in ("", "0"):
            traceback.print_exc(file=sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        return 2, None


def _path(value: str | None, flag: str) -> Path | None:
    """A path argument; '' is an error (Path('') is the cwd: checkpoints would land there)."""
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{flag}: empty path")
    return Path(value)


def _params(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Params:
    skip = [s for s in args.skip_sections.split(",") if s]
    return load_params(args.params, {**parse_set(args.set), **(overrides or {})}, skip)


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted key, e.g. --set split.factor=4 (repeatable)",
    )
    p.add_argument(  # also after the command; SUPPRESS keeps a `dnc -v cmd` given before it
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="tracebacks too"
    )
    p.add_argument(
        "--skip-sections",
        default="compare,search",
        help="top-level params sections other tools own (not validated here), comma-separated",
    )


def _cmd_info(args: argparse.Namespace) -> dict:
    from dnc import stages

    flags = {
        "model.name": args.model,
        "model.style": args.style,
        "split.factor": args.split,
        "data.dataset": args.dataset,
        "model.width": args.width,
        "model.dropout": args.dropout,
        "split.divide_weight_decay": args.wd_rule,
    }
    return stages.info(_params(args, {k: v for k, v in flags.items() if v is not None}))


def _cmd_prepare(args: argparse.Namespace) -> dict:
    from dnc import stages

    out = _path(args.out, "--out")
    params = _params(args)
    meta = stages.prepare(params, out)
    # After the fact: a failure must stay the only line on stderr.
    print(f"prepare: {params.data.dataset} -> {out.resolve()}", file=sys.stderr)
    return meta


def _cmd_train(args: argparse.Namespace) -> dict:
    from dnc import stages

    data, out = _path(args.data, "--data"), _path(args.out, "--out")
    result = stages.train(_params(args), data, out, resume=not args.restart)
    last = result.state.history[-1] if result.state.history else {}
    return {
        "best_epoch": result.state.best_epoch,
        "best_val_acc": result.state.best_value,
        "resumed_from": result.resumed_from,
        "last": last,
        "checkpoint": str(result.best_path),
    }


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    from dnc import stages

    metrics = stages.evaluate(
        _params(args),
        _path(args.data, "--data"),
        _path(args.model_dir, "--model-dir"),
        _path(args.out, "--out"),
        devices=args.devices and args.devices.split(","),
        allow_incomplete=args.allow_incomplete,
    )
    keys = ("ensemble", "prefixes", "curve", "deploy", "training")
    return {k: metrics[k] for k in keys if k in metrics}


def _cmd_models(args: argparse.Namespace) -> list:
    from dnc.models import get_spec, list_models

    return [
        {
            "name": n,
            "family": get_spec(n).family,
            "width": get_spec(n).default_width,
            "description": get_spec(n).description,
        }
        for n in list_models()
    ]


def _cmd_datasets(args: argparse.Namespace) -> list:
    from dnc.data import get_dataset_info, list_datasets

    return [
        {
            "name": n,
            "classes": get_dataset_info(n).num_classes,
            "root": get_dataset_info(n).default_root,
        }
        for n in list_datasets()
    ]


def _cmd_methods(args: argparse.Namespace) -> list:
    from dnc.methods import get_method, list_methods

    def section(name: str) -> dict | None:
        model = get_method(name).config
        return None if model is None else model().model_dump(mode="json")

    return [{"name": n, "section": n, "defaults": section(n)} for n in list_methods()]


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info", help="members' widths, params and MACs before training", formatter_class=Formatter
    )
    _add_params(p)
    p.add_argument("--model", help="registered model (None: params model.name)")
    p.add_argument(
        "--style", choices=["preact", "reference"], help="model style (None: params model.style)"
    )
    p.add_argument("--split", type=int, help="split factor S (None: params split.factor)")
    p.add_argument("--dataset", help="dataset (None: params data.dataset)")
    p.add_argument("--width", type=float, help="undivided width (None: params model.width)")
    p.add_argument("--dropout", type=float, help="undivided dropout (None: params)")
    p.add_argument("--wd-rule", choices=["none", "exp", "linear"], help="None: params")
    p.set_defaults(func=_cmd_info)


def _add_runs(sub: Any) -> None:
    p = sub.add_parser(
        "prepare", help="dataset -> hashed tensors (DVC prepare stage)", formatter_class=Formatter
    )
    _add_params(p)
    p.add_argument("--out", default="data/prepared", help="folder it writes")
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser(
        "train", help="co-train S members; resumes from OUT/last.pt", formatter_class=Formatter
    )
    _add_params(p)
    p.add_argument("--data", help="prepared data dir (None: prepare in memory)")
    p.add_argument("--out", required=True, help="run dir for checkpoints and history")
    p.add_argument(
        "--restart",
        "--no-resume",
        dest="restart",
        action="store_true",
        help="start over: delete OUT's checkpoints instead of resuming from OUT/last.pt "
        "(a resume with changed params, other than dnc.config.RESUME_SAFE_KEYS, fails)",
    )
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser(
        "evaluate", help="members, ensemble and k-of-S test metrics", formatter_class=Formatter
    )
    _add_params(p)
    p.add_argument("--data", help="prepared data dir (None: prepare in memory)")
    p.add_argument("--model-dir", required=True, help="run dir holding best.pt")
    p.add_argument("--out", required=True, help="metrics JSON path")
    p.add_argument(
        "--devices",
        help="members spread over these devices, run concurrently: cuda:0,cuda:1 (or cpu,cpu)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="evaluate a run that did not finish train.epochs (the JSON says training.complete)",
    )
    p.set_defaults(func=_cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The `dnc` argument parser (every --help shows the defaults)."""
    parser = argparse.ArgumentParser(
        prog="dnc", description=__doc__.splitlines()[0], formatter_class=Formatter
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print tracebacks of errors too"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info(sub)
    _add_runs(sub)
    for name, func, text in (
        ("models", _cmd_models, "list registered models"),
        ("datasets", _cmd_datasets, "list datasets"),
        ("methods", _cmd_methods, "list registered methods and their section defaults"),
    ):
        sub.add_parser(name, help=text, formatter_class=Formatter).set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dnc` and `python -m dnc`: JSON on stdout, status 0, 2 or 3."""
    args = build_parser().parse_args(argv)
    status, out = run_guarded(lambda: args.func(args), args.verbose)
    if status == 0:
        print_json(out, indent=2)
    return status
