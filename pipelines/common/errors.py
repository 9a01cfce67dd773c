"""The one error policy of every `python -m pipelines` command.

An error the user can fix (a bad key or value, a missing file, an unreachable tracking store)
is one line on stderr and exit status 2, before any compute where possible; `-v` or
`DNC_DEBUG=1` adds its traceback. Anything else is a bug or a real failure and propagates
with its traceback, never disguised as a bad setting.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from dnc.config import ConfigError
from pipelines.common.redact import redact

USAGE_EXIT = 2


def debug_enabled(args: argparse.Namespace | None = None) -> bool:
    """`-v`/`--verbose` on the command line, or `DNC_DEBUG` set to anything but 0/empty."""
    if args is not None and getattr(args, "verbose", False):
        return True
    return os.environ.get("DNC_DEBUG", "").strip() not in ("", "0")


def is_user_error(err: BaseException) -> bool:
    """A mistake in the command's input: a config error (tracking and search errors are
    ConfigErrors), a missing file, or an OS error that names its path."""
    if isinstance(err, ConfigError | FileNotFoundError):
        return True
    return isinstance(err, OSError) and err.filename is not None


def one_line(err: BaseException) -> str:
    """`error: <message>`, the first line of it; the exception's name if it has no message.
    Credentials (a tracking or storage URL's password) are masked."""
    text = redact(str(err)).strip()
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = redact(f"{err.filename}: {err.strerror}")
    return f"error: {text.splitlines()[0] if text else type(err).__name__}"


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """`func(args)` as an exit status: 0 (or what it returns), 2 with one line for a user
    error; other exceptions propagate unchanged."""
    try:
        return int(func(args) or 0)
    except Exception as err:
        if not is_user_error(err):
            raise
        if debug_enabled(args):
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(one_line(err), file=sys.stderr)
        return USAGE_EXIT


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` on a (sub)command parser; SUPPRESS keeps a `-v` given earlier."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error (or set DNC_DEBUG=1)",
    )
