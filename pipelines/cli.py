"""`python -m pipelines <command>`: one entry point for every orchestration command.

Each command lives in a module exposing `register(subparsers)`. Only the module of the
command being run is imported, so `stage train` never pays for importing Prefect.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module that registers it (several commands may share a module)
COMMANDS: dict[str, str] = {
    "stage": "pipelines.dvc.stages",
    "report": "pipelines.dvc.report",
    "preset": "pipelines.dvc.preset",
    "experiment": "pipelines.prefect.cli",
    "sweep": "pipelines.prefect.cli",
    "serve": "pipelines.prefect.cli",
    "compare": "pipelines.tracking.compare",
    "search": "pipelines.search.cli",  # not pipelines.search.flow: that module imports Prefect
    "runs": "pipelines.tracking.runs",
}


def build_parser(commands: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}"
    )
    for module in dict.fromkeys(COMMANDS[c] for c in commands):
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    args = build_parser(wanted).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
