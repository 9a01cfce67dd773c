"""Resume faults: kill -9 mid-epoch resumes bit-identical; a resume with changed params fails
naming the key (unless the key is resume-safe or --restart is given); killed writers' temp
files go on the next start; an unfinished run is not evaluated as finished."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dnc.cli import main
from dnc.config import RESUME_SAFE_KEYS

ROOT = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
# Timing keys differ between any two runs; everything else must match bit for bit.
TIMING = ("train/images_per_s", "train/epoch_time_s")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params_file(path: Path, **changes) -> Path:
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**TINY, "train.epochs": 1, **changes}.items():
        section, _, leaf = key.partition(".")
        tree[section][leaf] = value
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepared digits data and a tiny run trained 1 epoch (of train.epochs = 1)."""
    base = tmp_path_factory.mktemp("resume")
    params = _params_file(base / "params.yaml")
    data, run = base / "data", base / "run"
    assert main(["prepare", "--params", str(params), "--out", str(data)]) == 0
    assert main(["train", "--params", str(params), "--data", str(data), "--out", str(run)]) == 0
    return {"base": base, "params": params, "data": data, "run": run}


def _copy(trained, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run


def _train(trained, run: Path, *extra: str) -> int:
    return main(
        ["train", "--params", str(trained["params"]), "--data", str(trained["data"]),
         "--out", str(run), *extra]
    )  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("train.lr=0.05", "train.lr"),
        ("seed=1", "seed"),
        ("split.factor=4", "split.factor"),
        ("model.width=16", "model.width"),
        ("train.cot_weight=0.1", "train.cot_weight"),
        ("data.augment=none", "data.augment"),
    ],
)
def test_changed_params_on_resume_fail_naming_the_key(trained, tmp_path, capsys, setting, key):
    run = _copy(trained, tmp_path)
    before = {p.name: _sha(p) for p in run.iterdir()}
    rc = _train(trained, run, "--set", setting, "--set", "train.epochs=2")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {key}: ") and "--restart" in err[0], err[0]
    assert {p.name: _sha(p) for p in run.iterdir()} == before  # nothing trained or written


def test_restart_starts_over_with_the_new_params(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    assert _train(trained, run, "--set", "train.lr=0.05", "--restart") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resumed_from"] == -1
    assert torch.load(run / "last.pt", weights_only=True)["params"]["train.lr"] == 0.05
    assert len(json.loads((run / "history.json").read_text())) == 1


def test_a_safe_key_extends_the_run(trained, tmp_path, capsys):
    assert "train.epochs" in RESUME_SAFE_KEYS
    run = _copy(trained, tmp_path)
    assert _train(trained, run, "--set", "train.epochs=2", "--set", "train.progress=true") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resumed_from"] == 0  # epoch 0 came from last.pt, only epoch 1 trained
    history = json.loads((run / "history.json").read_text())
    first = json.loads((trained["run"] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0.0, 1.0] and history[0] == first[0]


def test_stale_temp_files_go_on_the_next_start(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    litter = [
        run / f".best.pt.{dead}-abc",
        run / ".last.pt.x1y2z3",
        run / f".history.json.{dead}-q",
    ]
    for path in litter:
        path.write_bytes(b"")
    live = run / f".last.pt.{os.getpid()}-live"  # a live writer's file stays
    live.write_bytes(b"")
    prepared = shutil.copytree(trained["data"], tmp_path / "data")
    stale_dir = tmp_path / f".data.tmp-{dead}-deadbeef"
    stale_dir.mkdir()
    (stale_dir / "train.pt").write_bytes(b"0" * 1024)
    rc = main(
        ["train", "--params", str(trained["params"]), "--data", str(prepared), "--out", str(run)]
    )
    assert rc == 0, capsys.readouterr().err
    assert not any(p.exists() for p in [*litter, stale_dir]) and live.exists()


def test_evaluate_refuses_an_unfinished_run_unless_allowed(trained, tmp_path, capsys):
    longer = _params_file(tmp_path / "params.yaml", **{"train.epochs": 3})
    argv = ["evaluate", "--params", str(longer), "--data", str(trained["data"]),
            "--model-dir", str(trained["run"]), "--out", str(tmp_path / "m.json")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 3 epochs" in err[0] and "--allow-incomplete" in err[0]
    assert not (tmp_path / "m.json").exists()
    assert main([*argv, "--allow-incomplete"]) == 0
    training = json.loads((tmp_path / "m.json").read_text())["training"]
    assert training == {"epochs": 3, "epochs_done": 1, "complete": False}


def _subprocess_train(params: Path, data: Path, run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = (
        "import torch, sys; torch.set_num_threads(1); from dnc.cli import main; sys.exit(main())"
    )
    argv = ["train", "--params", str(params), "--data", str(data), "--out", str(run)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def _final(run: Path) -> tuple[dict, list]:
    best = torch.load(run / "best.pt", weights_only=True)["model_state"]
    history = json.loads((run / "history.json").read_text())
    return best, [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@pytest.mark.slow
def test_kill_9_mid_epoch_resumes_bit_identical(trained, tmp_path):
    params = _params_file(tmp_path / "params.yaml", **{"train.epochs": 3})
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # The uninterrupted reference trains in this process (one thread, as the subprocesses).
    argv = ["train", "--params", str(params), "--data", str(trained["data"])]
    assert main([*argv, "--out", str(reference)]) == 0
    proc = _subprocess_train(params, trained["data"], killed)
    deadline = time.monotonic() + 900
    while not (killed / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # into epoch 1
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # it had not finished: a real kill
    assert torch.load(killed / "last.pt", weights_only=True)["state"]["epoch"] < 2
    proc = _subprocess_train(params, trained["data"], killed)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-2000:]
    (ref_best, ref_history), (best, history) = _final(reference), _final(killed)
    assert history == ref_history
    assert ref_best.keys() == best.keys()
    assert all(torch.equal(ref_best[k], best[k]) for k in ref_best)
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]
