"""One device per worker: pins, and a process-pool sweep equal to the sequential one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT, SEARCH, TINY

from dnc.config import ConfigError
from dnc.train import checkpoint
from pipelines.common import workers

QUICK = {**TINY, "data.train_size": 300, "train.epochs": 2}


def test_devices_parse_and_bad_entries_name_the_option():
    assert workers.parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert workers.parse_devices(None) == []
    with pytest.raises(ConfigError, match="--devices: 'gpu0'"):
        workers.parse_devices("cpu,gpu0")


def test_plan_cycles_devices_and_splits_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    pins = workers.plan(["cuda:0", "cuda:1"], 3)
    assert [p.device for p in pins] == ["cuda:0", "cuda:1", "cuda:0"]
    assert pins[1].env() == {"CUDA_VISIBLE_DEVICES": "1"}
    cpu = workers.plan(["cpu"], 4)
    assert [p.threads for p in cpu] == [2, 2, 2, 2]  # 8 cores / 4 workers
    assert cpu[0].env() == {
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
    }
    assert workers.plan(["cpu", "cpu"], 2, threads=1)[0].threads == 1


def test_a_pinned_worker_needs_train_device_auto():
    workers.check_train_device("cuda:1", [])  # no pins: anything goes
    with pytest.raises(ConfigError, match="train.device"):
        workers.check_train_device("cuda:1", ["cuda:0"])
    with pytest.raises(ConfigError, match="train.device"):
        workers.check_train_device("cpu", ["cuda:0", "cuda:1"])


def _sweep(tmp: Path, **kwargs) -> dict[str, dict]:
    from pipelines.prefect import flows

    state = flows.sweep_flow(
        params_path=str(ROOT / "params.yaml"),
        grid={"split.factor": [1, 2]},
        overrides=QUICK,
        out_dir=str(tmp / "sweep"),
        data_store=str(tmp / "store"),
        return_state=True,
        **kwargs,
    )
    assert state.is_completed(), state.message
    return {
        row["label"]: checkpoint.load(Path(row["run_dir"]) / "model" / checkpoint.BEST)
        for row in state.result()
    }


@pytest.mark.slow
def test_pinned_process_sweep_gives_the_sequential_weights(prefect_server, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sequential reference on one thread, as each pinned worker
    try:
        alone = _sweep(tmp_path / "alone", max_concurrent=1)
    finally:
        torch.set_num_threads(threads)
    pinned = _sweep(tmp_path / "pinned", max_concurrent=2, devices=["cpu", "cpu"], threads=1)
    assert sorted(alone) == sorted(pinned) and len(alone) == 2
    for label, best in alone.items():
        other = pinned[label]["model_state"]
        assert best["epoch"] == pinned[label]["epoch"]
        for key, value in best["model_state"].items():
            assert torch.equal(value, other[key]), f"{label}: {key}"


# --- searches: pinned worker processes, and a search under torchrun --------------------------


def _search_params(folder: Path, **search: object) -> Path:
    """The committed params.yaml, tiny 1-2 epoch trials on 512 images, a small search."""
    import yaml

    from dnc.config_loading import apply_overrides

    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    trial = {**TINY, "train.epochs": 2, "data.train_size": 512}
    tree = apply_overrides(tree, trial)
    tree["search"].update({**SEARCH, **search})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _study(folder: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "DNC_TRACKING": "off", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_search_workers_are_pinned_processes_on_one_storage(tmp_path, monkeypatch, capfd):
    from optuna.trial import TrialState

    from pipelines.cli import main

    _search_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DNC_TRACKING", "off")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    argv = ["search", "--study", "pinned", "--params", "params.yaml", "--workers", "2"]
    assert main([*argv, "--devices", "cpu,cpu", "--threads", "1"]) == 0
    summaries = [line for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert len(summaries) == 2  # two worker processes, one summary line each
    trials = _study(tmp_path, "pinned").get_trials()
    # Exactly n_trials finished between the two workers (Hyperband may prune one), each
    # slot once, each into its own folder: two processes sharing one SQLite study.
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(trials) == 3 and all(t.state in finished for t in trials)
    assert sorted(t.user_attrs["trial"] for t in trials) == [0, 1, 2]
    dirs = sorted(p.name for p in (tmp_path / "runs" / "search" / "pinned").iterdir())
    assert dirs == ["trial_0", "trial_1", "trial_2"]


@pytest.mark.slow
def test_search_under_torchrun_trains_each_trial_on_every_rank(tmp_path):
    import hashlib
    import json
    import subprocess
    import sys

    _search_params(tmp_path, n_trials=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "pipelines", "search", "--study", "ddp", "--params", "params.yaml"]
    out = subprocess.run(
        cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    followed = next(x["followed"] for x in lines if "followed" in x)  # rank 1's summary
    trials = _study(tmp_path, "ddp").get_trials()
    assert sorted(f["number"] for f in followed) == sorted(t.number for t in trials)
    states = {t.number: t.state.name.lower() for t in trials}  # complete / pruned
    for entry in followed:  # rank 1 trained exactly the params rank 0 sampled and saved
        saved = tmp_path / "runs" / "search" / "ddp" / f"trial_{entry['number']}"
        text = json.dumps(json.loads((saved / "params.json").read_text()), sort_keys=True)
        assert entry["params"] == hashlib.sha256(text.encode()).hexdigest()
        # ... and stopped where rank 0 stopped: a pruned trial is pruned on every rank
        assert entry["outcome"] == states[entry["number"]], entry


def test_bad_devices_exit_2_before_any_worker_starts(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    _search_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--study", "bad", "--params", "params.yaml", "--workers", "2"]
    assert main([*argv, "--devices", "cpu,gpu0"]) == 2
    assert "--devices: 'gpu0'" in capsys.readouterr().err
    assert main([*argv, "--devices", "cuda:0", "--set", "train.device=cuda:1"]) == 2
    assert "train.device" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()  # nothing was started
    sweep = ["sweep", "--params", str(ROOT / "params.yaml"), "--devices", "cuda:0,cuda:1"]
    assert main([*sweep, "--set", "train.device=cpu"]) == 2
    assert "train.device" in capsys.readouterr().err
