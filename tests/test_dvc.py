"""dvc.yaml in a real DVC repo (git init, dvc init, tiny params on digits, 2 configurations):
repro, a no-op second repro, what a param change re-runs, `dvc exp run -S`, the metrics,
params and plots commands, and push / clone / pull to a local remote with no training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnc.config_loading import apply_overrides
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's dvc and python


def _settings() -> dict[str, str]:
    """What the tests' DVC and git commands run with, on top of this process's environment."""
    return dict(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),  # the repo copy's own dnc/ and pipelines/ come first (cwd)
        DVC_NO_ANALYTICS="1",
        DNC_TRACKING="off",  # MLflow tracking is tested elsewhere
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )  # fmt: skip


def sh(cwd: Path, *cmd: str) -> str:
    """Run a command in `cwd`; fail the test with its output if it fails."""
    env = {**os.environ, **_settings()}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    """Stages a `dvc repro` / `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def tiny_params() -> dict:
    """The committed params.yaml shrunk to digits, with two configurations and one seed."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree = apply_overrides(
        tree, {**TINY, "data.train_size": 256, "split.factor": 1, "train.epochs": 1}
    )
    tree["compare"] = {"seeds": [0], "configs": {"base": {}, "s2": {"split.factor": 2}}}
    return tree


@pytest.fixture()
def dvc(dvc_here):
    """`dvc ARGS` in `cwd`, in this process, with `_settings` set."""
    return lambda cwd, *args: dvc_here(cwd, *args, env=_settings())


@pytest.fixture()
def repo(tmp_path: Path, dvc) -> Path:
    """A git + DVC repo holding the project's pipeline, code and DVC config."""
    repo = tmp_path / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("dnc", "pipelines"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (repo / ".gitignore").write_text("__pycache__/\n/dvc_plots/\n")
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    # The documented per-machine override: the remote moves, .dvc/config stays as committed.
    dvc(repo, "remote", "modify", "--local", "local", "url", str(tmp_path / "remote"))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline")
    return repo


def test_committed_dvc_config_is_offline_with_an_outside_remote() -> None:
    from configobj import ConfigObj  # DVC's own config reader

    cfg = ConfigObj(str(ROOT / ".dvc" / "config"))
    assert cfg["core"]["analytics"] == "false" and cfg["core"]["check_update"] == "false"
    url = cfg[f'remote "{cfg["core"]["remote"]}"']["url"]
    assert url.startswith("~/") or not Path(url).resolve().is_relative_to(ROOT)


@pytest.mark.slow
def test_pipeline_end_to_end(repo: Path, tmp_path: Path, dvc) -> None:
    stages = {"prepare", "run@base", "run@s2"}  # one process per configuration, all seeds
    assert ran(dvc(repo, "repro")) == stages | {"report"}
    for path in (
        "models/s2/seed0/best.pt",
        "reports/evaluate/s2/seed0.json",
        "reports/evaluate/s2/seed0.predictions.npz",
        "reports/report/plots/reliability.png",
        "reports/report.md",
        "reports/report/plots/accuracy_vs_macs.png",
        "reports/report/summary.json",
    ):
        assert (repo / path).is_file(), path
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "repro")

    # Nothing changed: nothing runs.
    assert ran(dvc(repo, "repro")) == set()
    # A train param changes train and evaluate (and so report, below), not prepare.
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("lr: 0.1", "lr: 0.05"))
    assert ran(dvc(repo, "repro", "--dry")) == stages - {"prepare"}
    (repo / "params.yaml").write_text(params)

    # -S of a key no configuration sets reaches both; of one `s2` sets, only `base`.
    out = dvc(repo, "exp", "run", "-S", "split.factor=4", "-S", "train.lr=0.05")
    assert ran(out) == stages - {"prepare"} | {"report"}
    base = yaml.safe_load((repo / "reports/evaluate/base/seed0.json").read_text())
    s2 = yaml.safe_load((repo / "reports/evaluate/s2/seed0.json").read_text())
    assert (base["config"]["split_factor"], s2["config"]["split_factor"]) == (4, 2)
    assert (
        yaml.safe_load((repo / "models/s2/seed0/params.json").read_text())["train"]["lr"] == 0.05
    )
    assert "train.lr" in dvc(repo, "exp", "show", "--csv")
    assert "split.factor" in dvc(repo, "params", "diff")
    assert "reports/report/summary.json" in dvc(repo, "metrics", "diff")
    dvc(repo, "plots", "diff", "HEAD", "-o", "diff_plots")
    html = (repo / "diff_plots" / "index.html").read_text()
    for rev in ("workspace", "HEAD"):  # both revisions' PNGs, next to the page: no CDN
        image = f"static/{rev}_reports_report_plots_accuracy_vs_macs.png"
        assert image in html and (repo / "diff_plots" / image).is_file()

    # Push, then a fresh clone pulls data and checkpoints and has nothing to train.
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "exp")
    dvc(repo, "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, "remote", "modify", "--local", "local", "url", str(tmp_path / "remote"))
    dvc(clone, "pull")
    assert (clone / "models/base/seed0/best.pt").is_file()
    assert (clone / "reports/evaluate/base/seed0.predictions.npz").is_file()
    assert "up to date" in dvc(clone, "status")
    assert ran(dvc(clone, "repro")) == set()
