"""`dnc-pipelines` / `python -m pipelines <command>`: every orchestration command in one tree.

Only the module of the command being run is imported (each registers its own options), so
`--help` and `stage train` never pay for importing Prefect, MLflow, Optuna or torch. Every
command shares one error policy (`pipelines.common.errors`): a user error is one line and
exit 2 (`-v` or DNC_DEBUG=1 for the traceback); anything else propagates.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.common.errors import add_verbose, run_command


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default in `--help`; a default of None says in its help text
    what happens instead (e.g. "default: search.storage")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.required or action.default in (None, False, [], argparse.SUPPRESS)
        if silent or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


@dataclass(frozen=True)
class Command:
    help: str
    # "module:function": function(parser) adds the options and sets `func`
    target: str


COMMANDS: dict[str, Command] = {
    "stage": Command("run one pipeline stage (what dvc.yaml calls)", "pipelines.dvc.stages:add"),
    "report": Command(
        "table + plots of every configuration (DVC report stage)", "pipelines.dvc.report:add"
    ),
    "preset": Command("write a recipe from presets/ into params.yaml", "pipelines.dvc.preset:add"),
    "experiment": Command(
        "flow dnc-experiment: prepare, train, evaluate, report", "pipelines.prefect.cli:experiment"
    ),
    "sweep": Command(
        "flow dnc-sweep: a grid or the compare section, compared", "pipelines.prefect.cli:sweep"
    ),
    "serve": Command(
        "serve prefect.yaml's deployments (needs a Prefect server)", "pipelines.prefect.cli:serve"
    ),
    "search": Command(
        "Optuna search of split factor, width and co-training weight under a budget",
        "pipelines.search.cli:add",
    ),
    "plan": Command(
        "budget planner: fit a power law to finished runs, predict the best (S, width)",
        "pipelines.search.plan_cli:add",
    ),
    "runs": Command(
        "housekeeping of dnc's MLflow runs (reap stale RUNNING)", "pipelines.tracking.runs:add"
    ),
    "ui": Command(
        "the MLflow UI on the tracking store (one light server on 127.0.0.1)",
        "pipelines.tracking.ui:add",
    ),
    "compare": Command(
        "table + accuracy-vs-MACs plot of an MLflow experiment", "pipelines.tracking.compare:add"
    ),
}


def command_of(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; only the `wanted` command's module is imported to fill in its options."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the traceback of an error"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}"
    )
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.help, description=command.help, formatter_class=HelpFormatter
        )
        add_verbose(p)
        if name == wanted:
            module, _, function = command.target.partition(":")
            getattr(importlib.import_module(module), function)(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the command under the one error policy, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = command_of(argv)
    args = build_parser(wanted if wanted in COMMANDS else None).parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
