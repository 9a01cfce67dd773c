"""Command line: `python -m dnc {info,prepare,train,evaluate,models,datasets}`.

Bad input (an invalid params key, a missing file or dataset) prints one line naming the
key or file and exits with status 2 before any compute is spent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnc.config import ConfigError, Params, load_params, parse_set


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, parse_set(args.set))


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted key, e.g. --set split.factor=4 (repeatable)",
    )


def _cmd_info(args: argparse.Namespace) -> dict:
    from dnc import stages

    if args.model is None:  # take model and dataset from params
        from dnc.data import get_dataset_info
        from dnc.methods import method_info

        p = _params(args)
        return {
            "method": p.method,
            **stages.info(
                p.model.name,
                args.split or p.split.factor,
                p.data.dataset,
                p.model.width,
                p.model.dropout,
                p.split.divide_weight_decay,
            ),
            **method_info(p, get_dataset_info(p.data.dataset)),
        }
    return stages.info(
        args.model, args.split or 1, args.dataset, args.width, args.dropout, args.wd_rule
    )


def _cmd_prepare(args: argparse.Namespace) -> dict:
    from dnc import stages

    return stages.prepare(_params(args), Path(args.out))


def _cmd_train(args: argparse.Namespace) -> dict:
    from dnc import stages
    from dnc.train.distributed import exit_on_divergence

    with exit_on_divergence():  # under torchrun: one message from rank 0, every rank exits 3
        result = stages.train(
            _params(args), args.data and Path(args.data), Path(args.out), resume=not args.no_resume
        )
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
        args.data and Path(args.data),
        Path(args.model_dir),
        Path(args.out),
        devices=args.devices and args.devices.split(","),
    )
    return {k: metrics[k] for k in ("ensemble", "prefixes", "curve", "deploy") if k in metrics}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dnc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="members' widths, params and MACs before training")
    _add_params(p)
    p.add_argument("--model", help="registered model (default: params model.name)")
    p.add_argument("--split", type=int, help="split factor S")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--width", type=float, help="undivided width (default: the variant's)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--wd-rule", default="none", choices=["none", "exp", "linear"])
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("prepare", help="dataset -> hashed tensors (DVC prepare stage)")
    _add_params(p)
    p.add_argument("--out", default="data/prepared")
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("train", help="co-train S members; resumes from OUT/last.pt")
    _add_params(p)
    p.add_argument("--data", help="prepared data dir (default: prepare in memory)")
    p.add_argument("--out", required=True, help="run dir for checkpoints and history")
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/last.pt")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("evaluate", help="members, ensemble and k-of-S test metrics")
    _add_params(p)
    p.add_argument("--data", help="prepared data dir (default: prepare in memory)")
    p.add_argument("--model-dir", required=True, help="run dir holding best.pt")
    p.add_argument("--out", required=True, help="metrics JSON path")
    p.add_argument(
        "--devices",
        help="members spread over these devices, run concurrently: cuda:0,cuda:1 (or cpu,cpu)",
    )
    p.set_defaults(func=_cmd_evaluate)
    sub.add_parser("models", help="list registered models").set_defaults(func=_cmd_models)
    sub.add_parser("datasets", help="list datasets").set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
