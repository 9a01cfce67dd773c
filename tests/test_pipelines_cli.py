"""The one `python -m pipelines` tree: lazy --help, defaults shown, one error policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from dnc.config import ConfigError
from pipelines.cli import COMMANDS, build_parser, main
from pipelines.common.errors import run_command
from pipelines.common.format import si

HEAVY = ("torch", "mlflow", "prefect", "optuna")


def _imported_by(argv: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        "from pipelines.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["search", "--help"], ["stage", "train", "--help"], ["serve", "--help"]]
)
@pytest.mark.integration
def test_help_imports_no_heavy_library(argv):
    assert _imported_by(argv) == []


def test_every_command_builds_and_shows_its_defaults(capsys):
    for name in COMMANDS:
        build_parser(name)  # each command's module imports and registers its options
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: params.yaml)", "(default: data/prefect)", "(default: 1)"):
        assert shown in text


def _raise(err: BaseException):
    def func(args):
        raise err

    return func


def _args(verbose: bool = False):
    import argparse

    return argparse.Namespace(verbose=verbose)


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (ConfigError("split.factr: unknown key"), "error: split.factr: unknown key"),
        (
            FileNotFoundError(2, "No such file or directory", "/x/p.yaml"),
            "error: /x/p.yaml: No such file or directory",
        ),
        (
            PermissionError(13, "Permission denied", "/root/out"),
            "error: /root/out: Permission denied",
        ),
    ],
)
def test_user_error_is_one_line_and_exit_2(err, line, capsys, monkeypatch):
    monkeypatch.delenv("DNC_DEBUG", raising=False)
    assert run_command(_raise(err), _args()) == 2
    assert capsys.readouterr().err == line + "\n"


def test_verbose_or_dnc_debug_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv("DNC_DEBUG", raising=False)
    assert run_command(_raise(ConfigError("train.lr: bad")), _args(verbose=True)) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("error: train.lr: bad\n")
    monkeypatch.setenv("DNC_DEBUG", "1")
    assert run_command(_raise(ConfigError("train.lr: bad")), _args()) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("err", [RuntimeError("a bug"), KeyError("x"), OSError("no path")])
def test_unexpected_error_is_not_disguised(err):
    with pytest.raises(type(err)):
        run_command(_raise(err), _args())


def test_cli_missing_params_file_exits_2_and_v_shows_traceback(tmp_path, cli_here):
    argv = ["report", "--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")]
    rc, quiet = cli_here(argv, {}, ROOT, unset=("DNC_DEBUG",))
    assert rc == 2
    lines = quiet.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.yaml" in lines[0]
    rc, loud = cli_here([*argv, "-v"], {}, ROOT)
    assert rc == 2 and "Traceback" in loud


def test_si_matches_hand_computed_strings():
    assert si(12345) == "12.35k"
    assert si(2.5e9) == "2.50G"
    assert si(-2000) == "-2.00k"
    assert si(1_500_000, digits=None) == "1.5M"
    assert si(512) == "512"
    assert si(0.5) == "0.5"
