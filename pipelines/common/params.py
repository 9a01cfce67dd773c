"""The one `--params/--set[/--config]` option set and its reading, for every command."""

from __future__ import annotations

import argparse
from typing import Any

from dnc.config import Params
from dnc.config_loading import load_params, parse_set


def add_params_options(
    parser: argparse.ArgumentParser,
    *,
    config: bool = False,
    params_help: str = "params file",
    set_help: str = "override a dotted key, e.g. split.factor=4 (repeatable)",
) -> None:
    """`--params FILE` (default params.yaml), `--set KEY=VALUE` (repeatable) and, for the
    DVC stages, `--config NAME` (a configuration of the params file's compare section)."""
    parser.add_argument("--params", default="params.yaml", help=params_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    if config:
        parser.add_argument(
            "--config", help="a configuration of the compare section (the DVC matrix)"
        )


def read_overrides(args: argparse.Namespace, *, matrix: bool = False) -> dict[str, Any]:
    """The dotted overrides of the command line: `--config`'s keys first, `--set` on top.
    `matrix`: check the params file's whole compare section (the DVC stages do, so a broken
    configuration fails the first stage, before any compute)."""
    overrides: dict[str, Any] = {}
    if matrix:
        from pipelines.dvc.matrix import config_overrides

        overrides = config_overrides(args.params, getattr(args, "config", None))
    return {**overrides, **parse_set(args.set)}


def read_params(args: argparse.Namespace, *, matrix: bool = False) -> Params:
    """The validated params of `--params` with the command line's overrides."""
    return load_params(args.params, read_overrides(args, matrix=matrix))
