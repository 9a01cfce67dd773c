"""kill -9 during `dvc repro`, then `dvc repro` again, in a real scratch DVC repo with MLflow
tracking on: a training killed mid-way resumes where it was (no epoch trained twice), an
evaluation killed while logging is logged again, and no MLflow run is left RUNNING."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EPOCHS = 6
EXPERIMENT = "faults"


def env(repo: Path) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DNC_TRACKING", "DNC_DEBUG")}
    full.update(
        PATH=f"{BIN}{os.pathsep}{full.get('PATH', '')}",
        PYTHONPATH=str(repo),
        OMP_NUM_THREADS="1",
        DVC_NO_ANALYTICS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{repo}/mlflow.db",
        DNC_ARTIFACT_ROOT=str(repo / "mlartifacts"),
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )  # fmt: skip
    return full


def sh(repo: Path, *cmd: str) -> str:
    proc = subprocess.run(
        cmd, cwd=repo, env=env(repo), capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout + proc.stderr


def write_params(repo: Path, epochs: int) -> None:
    """One configuration, one seed, `epochs` epochs of the tiny preset."""
    from dnc.config_loading import apply_overrides
    from pipelines.dvc.preset import load_preset

    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = load_preset(ROOT / "presets" / "tiny.yaml")
    tree = apply_overrides(tree, {**tiny, "split.factor": 1, "train.epochs": epochs})
    tree["compare"] = {"seeds": [0], "configs": {"base": {}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Path:
    """git + DVC repo with the project's pipeline, its `prepare` stage run and committed
    (once per module: the faults below are in the `run` stage), and an empty MLflow store."""
    sys.path.insert(0, str(ROOT))
    repo = tmp_path_factory.mktemp("template") / "repo"
    repo.mkdir()
    for folder in ("dnc", "pipelines"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    write_params(repo, EPOCHS)
    (repo / ".gitignore").write_text("__pycache__/\n/mlflow.db\n/mlartifacts/\n")
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro", "prepare")
    shutil.copyfile(mlflow_db_template, repo / "mlflow.db")  # git-ignored, as a user's
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline")
    return repo


def copy_of(prepared: Path, tmp_path: Path, epochs: int) -> Path:
    """A copy of the prepared repo training `epochs` epochs (a train param: `prepare` stays
    up to date)."""
    repo = tmp_path / "repo"
    shutil.copytree(prepared, repo, symlinks=True)
    if epochs != EPOCHS:
        write_params(repo, epochs)
    return repo


def repro_killed_when(repo: Path, target: str, ready, limit: float = 1200) -> float:
    """Start `dvc repro TARGET`, kill -9 its process group once `ready()`; the kill time."""
    proc = subprocess.Popen(
        ["dvc", "repro", target], cwd=repo, env=env(repo), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + limit
    try:
        while not ready():
            assert proc.poll() is None, "dvc repro ended before the kill"
            assert time.monotonic() < deadline, "never ready to be killed"
            time.sleep(0.05)
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return killed_at


def last_epoch(run_dir: Path) -> int:
    """The epoch of the run dir's resumable checkpoint (-1 if none is readable yet)."""
    try:
        return int(torch.load(run_dir / "last.pt", weights_only=True)["state"]["epoch"])
    except Exception:  # not written yet, or being renamed into place
        return -1


def runs(repo: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def epoch_timestamps(repo: Path, run_id: str) -> dict[int, list[float]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    out: dict[int, list[float]] = {}
    for m in client.get_metric_history(run_id, "epoch"):
        out.setdefault(m.step, []).append(m.timestamp / 1000)
    return out


def test_killed_training_resumes_and_leaves_no_run_running(prepared, tmp_path) -> None:
    repo = copy_of(prepared, tmp_path, EPOCHS)
    run_dir = repo / "models" / "base" / "seed0"
    killed_at = repro_killed_when(repo, "run@base", lambda: 1 <= last_epoch(run_dir) < EPOCHS - 2)
    done_before_kill = last_epoch(run_dir)
    assert done_before_kill >= 1  # the kill happened mid-training
    out = sh(repo, "dvc", "repro", "run@base")
    assert "Running stage 'run@base'" in out
    # Every epoch trained exactly once: those done before the kill were not trained again.
    (run,) = [r for r in runs(repo) if r.data.tags.get("dnc.entry_point") == "dvc"]
    stamps = epoch_timestamps(repo, run.info.run_id)
    assert sorted(stamps) == list(range(EPOCHS))
    assert all(len(v) == 1 for v in stamps.values()), stamps
    # Epochs before the last checkpointed one were logged before the kill (that one may have
    # been killed between its checkpoint and its log, and backfilled on resume).
    for epoch in range(done_before_kill):
        assert stamps[epoch][0] < killed_at, (epoch, stamps)
    assert last_epoch(run_dir) == EPOCHS - 1
    assert {r.info.status for r in runs(repo)} == {"FINISHED"}
    assert "up to date" in sh(repo, "dvc", "status", "run@base")


def test_evaluation_killed_while_logging_is_logged_again(prepared, tmp_path) -> None:
    repo = copy_of(prepared, tmp_path, 1)  # the kill comes after training
    metrics = repo / "reports" / "evaluate" / "base" / "seed0.json"

    def logging() -> bool:
        """The metrics file is written and the training's run reopened: logging is under way
        (the model export alone takes seconds)."""
        if not metrics.is_file():
            return False
        # Read the store's `runs` table directly: a millisecond, where an MlflowClient query
        # under load can take longer than the window it polls for.
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True, timeout=0.1)
            ) as db:
                return [row[0] for row in db.execute("SELECT status FROM runs")] == ["RUNNING"]
        except sqlite3.Error:  # the store is busy
            return False

    repro_killed_when(repo, "run@base", logging)
    (run,) = runs(repo)
    assert run.info.status == "RUNNING" and "dnc.model_uri" not in run.data.tags
    out = sh(repo, "dvc", "repro", "run@base")
    assert "Running stage 'run@base'" in out
    (run,) = runs(repo)
    assert run.info.status == "FINISHED"
    assert "test/ensemble/acc" in run.data.metrics and "dnc.model_uri" in run.data.tags
    assert "up to date" in sh(repo, "dvc", "status", "run@base")
