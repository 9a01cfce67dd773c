"""A search worker paused (SIGSTOP) mid-trial, past the heartbeat grace period, then resumed
(SIGCONT): the other worker is never stalled (no lock is held across training), it retries
the stale trial from its checkpoint and completes the study; the paused worker, once it
runs again, notices its trial was taken over and stops writing, exits 0 without a
traceback, and leaves no stale stop-reason tag on the MLflow run it no longer owns."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 8
STUDY = "paused"


def write_params(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from dnc.config_loading import apply_overrides
    from pipelines.dvc.preset import load_preset

    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = load_preset(ROOT / "presets" / "tiny.yaml")
    tree = apply_overrides(tree, {**tiny, "train.epochs": EPOCHS, "data.train_size": 512})
    tree["search"].update(
        n_trials=2, startup_trials=1, storage="sqlite:///optuna.db", pruner="none",
        heartbeat_interval=1, grace_period=3,
        budget={"macs": None, "params": None, "train_macs": None, "train_seconds": None},
        space={"split.factor": {"choices": [1, 2]}, "model.width": {"choices": [4, 8]}},
    )  # fmt: skip
    (folder / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))


def worker(folder: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DNC_TRACKING", "DNC_DEBUG")}
    env.update(
        PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db",
        DNC_ARTIFACT_ROOT=str(folder / "mlartifacts"),
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )  # fmt: skip
    cmd = [sys.executable, "-m", "pipelines", "search", "--study", STUDY]
    return subprocess.Popen(
        cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def last_epoch(run_dir: Path) -> int:
    try:
        return int(torch.load(run_dir / "last.pt", weights_only=True)["state"]["epoch"])
    except Exception:  # not there yet, or being renamed into place
        return -1


def trial_states(folder: Path) -> list[str]:
    storage = f"sqlite:///{folder}/optuna.db"
    try:
        return [t.state.name for t in optuna.load_study(study_name=STUDY, storage=storage).trials]
    except Exception:  # the study is not created yet
        return []


def holds_a_lock(folder: Path) -> bool:
    """Whether some process holds a lock on the study's or the tracking's SQLite file (an
    exclusive transaction cannot start at once)."""
    for name in ("optuna.db", "mlflow.db"):
        if not (folder / name).exists():
            continue
        db = sqlite3.connect(folder / name, timeout=0, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            db.execute("ROLLBACK")
        except sqlite3.OperationalError:  # database is locked
            return True
        finally:
            db.close()
    return False


def pause_between_transactions(proc: subprocess.Popen, folder: Path) -> None:
    """SIGSTOP `proc` at a moment it holds no SQLite lock. Paused inside a transaction (a
    heartbeat, a metric), it would lock everyone out of the file until it runs again: SQLite
    has no way round that, and it is not the fault under test."""
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.001)  # the signal is delivered, not yet acted on
        if not holds_a_lock(folder):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker always held a SQLite lock")


def test_paused_worker_is_taken_over_and_stops_writing(tmp_path, mlflow_db_template):
    write_params(tmp_path)
    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")
    trial_0 = tmp_path / "runs" / "search" / STUDY / "trial_0"
    paused = worker(tmp_path)
    deadline = time.monotonic() + 300
    while not 1 <= last_epoch(trial_0) < EPOCHS - 3:  # mid-training, the lock released
        assert paused.poll() is None, paused.communicate()[0].decode()
        assert time.monotonic() < deadline, "worker never got into training"
        time.sleep(0.05)
    pause_between_transactions(paused, tmp_path)
    try:
        other = worker(tmp_path)
        out_other = other.communicate(timeout=400)[0].decode()  # not stalled by the paused one
        other_done = time.time()
        assert other.returncode == 0, out_other
        assert last_epoch(trial_0) == EPOCHS - 1  # the retry resumed and finished trial 0
        before = {p: p.stat().st_mtime for p in trial_0.rglob("*") if p.is_file()}
    finally:
        paused.send_signal(signal.SIGCONT)
    out_paused = paused.communicate(timeout=400)[0].decode()
    assert paused.returncode == 0, out_paused
    assert "Traceback" not in out_paused, out_paused
    assert "taken over" in out_paused, out_paused
    # The woken worker wrote nothing more into the trial it no longer owns.
    after = {p: p.stat().st_mtime for p in trial_0.rglob("*") if p.is_file()}
    assert after == before and max(after.values()) <= other_done

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(trial_states(tmp_path)) == ["COMPLETE", "COMPLETE", "FAIL"]
    retry = next(t for t in study.trials if "failed_trial" in t.system_attrs)
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(
        retry.user_attrs["mlflow_run_id"]
    )
    assert run.info.status == "FINISHED"
    assert "dnc.stop_reason" not in run.data.tags, run.data.tags
