"""The bad-input table: every case exits 2 with one line naming the key, file or variable,
before any training, and leaves no output behind.

Each case runs `python -m dnc` in-process (`dnc.cli.main(argv)`), so torch is imported once
for the whole table. A case that started training would show up as a written run folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from dnc.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny params file, prepared digits data and a trained tiny run, shared by the table."""
    base = tmp_path_factory.mktemp("bad-inputs")
    params = base / "params.yaml"
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**TINY, "train.epochs": 1}.items():
        section, _, leaf = key.partition(".")
        tree[section][leaf] = value
    params.write_text(yaml.safe_dump(tree))
    data = base / "data"
    assert main(["prepare", "--params", str(params), "--out", str(data)]) == 0
    run = base / "run"
    assert main(["train", "--params", str(params), "--data", str(data), "--out", str(run)]) == 0
    return {"base": base, "params": params, "data": data, "run": run, "tree": tree}


def _variant(world, name: str, edit) -> Path:
    """A copy of the tiny params file with `edit(tree)` applied."""
    tree = yaml.safe_load(world["params"].read_text())
    edit(tree)
    path = world["base"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree) if not isinstance(tree, str) else tree)
    return path


def _copy_data(world, name: str) -> Path:
    """A fresh copy of the prepared data (each case damages its own copy once)."""
    dst = world["base"] / f"data-{name}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(world["data"], dst)
    return dst


def _copy_run(world, name: str) -> Path:
    dst = world["base"] / f"run-{name}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(world["run"], dst)
    return dst


# (id, --set overrides, what the one line must name). Train with these must fail at load time.
SET_CASES = [
    ("factor-zero", ["split.factor=0"], "split.factor"),
    ("factor-negative", ["split.factor=-1"], "split.factor"),
    ("factor-bool", ["split.factor=true"], "split.factor"),
    ("factor-float", ["split.factor=2.5"], "split.factor"),
    ("factor-text", ["split.factor=abc"], "split.factor"),
    ("factor-huge", ["split.factor=65"], "split.factor"),
    ("unknown-key", ["split.factr=2"], "split.factr"),
    ("unknown-section", ["tracking.uri=x"], "tracking"),
    ("lr-inf", ["train.lr=.inf"], "train.lr"),
    ("lr-nan", ["train.lr=.nan"], "train.lr"),
    ("lr-negative", ["train.lr=-0.1"], "train.lr"),
    ("lr-zero", ["train.lr=0"], "train.lr"),
    ("epochs-zero", ["train.epochs=0"], "train.epochs"),
    ("epochs-bool", ["train.epochs=true"], "train.epochs"),
    ("batch-zero", ["train.batch_size=0"], "train.batch_size"),
    ("momentum-one", ["train.momentum=1.0"], "train.momentum"),
    ("min-lr-above-lr", ["train.min_lr=1.0"], "train"),
    ("nesterov-no-momentum", ["train.momentum=0", "train.nesterov=true"], "train"),
    ("device-gpu0", ["train.device=gpu0"], "train.device"),
    ("device-cuda-index", ["train.device=cuda:7"], "train.device"),
    ("wd-negative", ["train.weight_decay=-1"], "train.weight_decay"),
    ("cot-negative", ["train.cot_weight=-0.5"], "train.cot_weight"),
    ("smoothing-one", ["train.label_smoothing=1.0"], "train.label_smoothing"),
    ("mixup-negative", ["train.mixup_alpha=-1"], "train.mixup_alpha"),
    ("warmup-negative", ["train.warmup_epochs=-1"], "train.warmup_epochs"),
    ("latency-zero", ["eval.latency_batch_sizes=[0]"], "eval.latency_batch_sizes"),
    ("latency-negative", ["eval.latency_batch_sizes=[-5]"], "eval.latency_batch_sizes"),
    ("latency-empty", ["eval.latency_batch_sizes=[]"], "eval.latency_batch_sizes"),
    ("latency-repeats-zero", ["eval.latency_repeats=0"], "eval.latency_repeats"),
    ("eval-batch-zero", ["eval.batch_size=0"], "eval.batch_size"),
    ("dataset-unknown", ["data.dataset=nope"], "data.dataset"),
    ("val-size-negative", ["data.val_size=-1"], "data.val_size"),
    ("val-size-too-large", ["data.val_size=100000"], "data.val_size"),
    ("train-size-zero", ["data.train_size=0"], "data.train_size"),
    ("augment-unknown", ["data.augment=fancy"], "data.augment"),
    ("erasing-above-one", ["data.random_erasing=1.5"], "data.random_erasing"),
    ("workers-negative", ["data.num_workers=-1"], "data.num_workers"),
    ("model-unknown", ["model.name=nope"], "model.name"),
    ("width-zero", ["model.width=0"], "model.width"),
    ("width-negative", ["model.width=-8"], "model.width"),
    ("dropout-one", ["model.dropout=1.0"], "model.dropout"),
    ("ensemble-unknown", ["split.ensemble=median"], "split.ensemble"),
    ("wd-rule-unknown", ["split.divide_weight_decay=cubic"], "split.divide_weight_decay"),
    ("execution-unknown", ["split.execution=parallel"], "split.execution"),
    ("method-unknown", ["method=nope"], "method"),
    ("seed-text", ["seed=abc"], "seed"),
    ("seed-bool", ["seed=true"], "seed"),
    ("split-seed-negative", ["data.split_seed=-1"], "data.split_seed"),
    ("split-seed-float", ["data.split_seed=1.5"], "data.split_seed"),
    ("epochs-float", ["train.epochs=2.5"], "train.epochs"),
    ("factor-quoted", ["split.factor='2'"], "split.factor"),
    ("width-inf", ["model.width=.inf"], "model.width"),
    ("cot-nan", ["train.cot_weight=.nan"], "train.cot_weight"),
    ("device-empty", ["train.device=''"], "train.device"),
    ("device-cuda-text", ["train.device=cuda:x"], "train.device"),
    ("latency-bool", ["eval.latency_batch_sizes=[1, true]"], "eval.latency_batch_sizes"),
    ("amp-text", ["train.amp=yes please"], "train.amp"),
    ("set-bad-yaml", ["train.lr=[1,"], "train.lr"),
    ("set-no-equals", ["train.lr"], "train.lr"),
    ("set-empty-key", ["=1"], "--set"),
    ("set-section-scalar", ["data=5"], "data"),
]


@pytest.mark.parametrize(
    ("sets", "names"), [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES]
)
def test_bad_override_exits_2_before_training(world, capsys, tmp_path, sets, names):
    out = tmp_path / "run"
    rc = _cli(world, "train", *sets, out=out)
    _assert_clean_failure(rc, capsys, names)
    assert not out.exists(), "a run folder was written: compute started"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_fails_at_load(world, capsys, tmp_path):
    out = tmp_path / "run"
    rc = _cli(world, "train", "train.device=cuda", data=False, out=out)
    _assert_clean_failure(rc, capsys, "train.device")
    assert not out.exists()


def _params_file_cases(world) -> dict[str, tuple[Path, str]]:
    base = world["base"]
    bad_yaml = base / "bad-yaml.yaml"
    bad_yaml.write_text("train: [1,\n")
    as_list = base / "list.yaml"
    as_list.write_text("- 1\n- 2\n")
    empty = base / "empty.yaml"
    empty.write_text("")

    def drop_lr(tree):
        del tree["train"]["lr"]

    return {
        "missing-file": (base / "nope.yaml", "nope.yaml"),
        "invalid-yaml": (bad_yaml, "bad-yaml.yaml"),
        "top-level-list": (as_list, "list.yaml"),
        "empty-file": (empty, "empty.yaml"),
        "missing-key": (_variant(world, "no-lr", drop_lr), "train.lr"),
    }


@pytest.mark.parametrize(
    "case", ["missing-file", "invalid-yaml", "top-level-list", "empty-file", "missing-key"]
)
def test_bad_params_file(world, capsys, tmp_path, case):
    path, names = _params_file_cases(world)[case]
    out = tmp_path / "run"
    rc = main(["train", "--params", str(path), "--data", str(world["data"]), "--out", str(out)])
    _assert_clean_failure(rc, capsys, names)
    assert not out.exists()


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _data_cases(world) -> dict[str, tuple[Path, str]]:
    missing = world["base"] / "no-data"
    corrupted = _copy_data(world, "corrupted")
    _corrupt(corrupted / "train.pt")
    no_meta = _copy_data(world, "no-meta")
    (no_meta / "meta.json").unlink(missing_ok=True)
    truncated = _copy_data(world, "truncated")
    (truncated / "val.pt").write_bytes(b"")
    return {
        "data-missing": (missing, "no-data"),
        "data-corrupted": (corrupted, "train.pt"),
        "data-no-meta": (no_meta, "meta.json"),
        "data-truncated": (truncated, "val.pt"),
    }


@pytest.mark.parametrize(
    "case", ["data-missing", "data-corrupted", "data-no-meta", "data-truncated"]
)
def test_bad_prepared_data(world, capsys, tmp_path, case):
    data, names = _data_cases(world)[case]
    out = tmp_path / "run"
    rc = main(["train", "--params", str(world["params"]), "--data", str(data), "--out", str(out)])
    _assert_clean_failure(rc, capsys, names)
    assert not out.exists()


@pytest.mark.parametrize(
    ("sets", "names"),
    [
        (["data.dataset=fashion_mnist"], "data.dataset"),
        (["data.val_size=100"], "data.val_size"),
        (["data.test_size=100"], "data.test_size"),
        (["data.split_seed=7"], "data.split_seed"),
    ],
    ids=["other-dataset", "other-val-size", "other-test-size", "other-split-seed"],
)
def test_data_prepared_for_other_params(world, capsys, tmp_path, sets, names):
    out = tmp_path / "run"
    argv = ["train", "--params", str(world["params"]), "--data", str(world["data"])]
    for s in sets:
        argv += ["--set", s]
    rc = main([*argv, "--out", str(out)])
    _assert_clean_failure(rc, capsys, names)
    assert not out.exists()


def _corrupt_meta(world) -> Path:
    bad = _copy_data(world, "bad-meta")
    (bad / "meta.json").write_text("{not json")
    return bad


def _pickled_split(world) -> Path:
    """A train.pt holding a pickle payload, with meta.json's hash updated to match it."""
    data = _copy_data(world, "pickled")

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    (data / "train.pt").write_bytes(pickle.dumps({"images": Payload()}))
    meta = json.loads((data / "meta.json").read_text())
    digest = hashlib.sha256((data / "train.pt").read_bytes()).hexdigest()
    meta["files"]["train.pt"]["sha256"] = digest
    (data / "meta.json").write_text(json.dumps(meta))
    return data


@pytest.mark.parametrize("case", ["meta-not-json", "split-pickle"])
def test_bad_prepared_files(world, capsys, tmp_path, case):
    data = _corrupt_meta(world) if case == "meta-not-json" else _pickled_split(world)
    out = tmp_path / "run"
    rc = main(["train", "--params", str(world["params"]), "--data", str(data), "--out", str(out)])
    _assert_clean_failure(rc, capsys, "meta.json" if case == "meta-not-json" else "train.pt")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--data"])
def test_train_empty_path(world, capsys, tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)  # '' would be the cwd
    argv = {"--data": str(world["data"]), "--out": str(tmp_path / "run"), flag: ""}
    rc = main(["train", "--params", str(world["params"]), *[x for kv in argv.items() for x in kv]])
    _assert_clean_failure(rc, capsys, flag)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--out", "--model-dir"])
def test_evaluate_empty_path(world, capsys, tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)  # '' would be the cwd
    argv = {"--data": str(world["data"]), "--model-dir": str(world["run"]), "--out": "m.json"}
    argv[flag] = ""
    rc = main(
        ["evaluate", "--params", str(world["params"]), *[x for kv in argv.items() for x in kv]]
    )
    _assert_clean_failure(rc, capsys, flag)
    assert list(tmp_path.iterdir()) == []


def test_out_empty_string(world, capsys):
    rc = main(
        ["train", "--params", str(world["params"]), "--data", str(world["data"]), "--out", ""]
    )
    _assert_clean_failure(rc, capsys, "--out")


def test_out_under_a_file(world, capsys):
    blocker = world["base"] / "a-file"
    blocker.write_text("x")
    rc = _cli(world, "train", out=blocker / "run")
    _assert_clean_failure(rc, capsys, "a-file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_out_read_only(world, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = _cli(world, "train", out=ro / "run")
    finally:
        ro.chmod(0o755)
    _assert_clean_failure(rc, capsys, "ro")
    assert not (ro / "run").exists()


def _eval_cases(world) -> dict[str, tuple[Path, str]]:
    missing = world["base"] / "no-run"
    corrupted = _copy_run(world, "corrupted")
    _corrupt(corrupted / "best.pt")
    pickled = _copy_run(world, "pickle")
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    (pickled / "best.pt").write_bytes(pickle.dumps({"model_state": Payload()}))
    return {
        "run-missing": (missing, "no-run"),
        "best-corrupted": (corrupted, "best.pt"),
        "best-pickle": (pickled, "best.pt"),
    }


@pytest.mark.parametrize("case", ["run-missing", "best-corrupted", "best-pickle"])
def test_bad_model_dir(world, capsys, tmp_path, case):
    run, names = _eval_cases(world)[case]
    out = tmp_path / "metrics.json"
    rc = _cli(world, "evaluate", model_dir=run, out=out)
    captured = capsys.readouterr()
    out_text, err_text = captured.out, captured.err
    _assert_clean_failure(rc, capsys, names, err_text)
    assert "payload ran" not in out_text
    assert not out.exists()


def test_checkpoint_of_other_split_factor(world, capsys, tmp_path):
    out = tmp_path / "metrics.json"
    rc = _cli(world, "evaluate", "split.factor=4", model_dir=world["run"], out=out)
    _assert_clean_failure(rc, capsys, "split.factor")
    assert not out.exists()


@pytest.mark.parametrize(
    ("sets", "names"),
    [
        (["train.epochs=3"], "train.epochs"),  # trained 1 of 3 epochs: refused
        (["data.split_seed=5"], "data.split_seed"),
        (["data.dataset=fashion_mnist"], "data.dataset"),
        (["eval.latency_batch_sizes=[0]"], "eval.latency_batch_sizes"),
        (["train.device=cuda:7"], "train.device"),
    ],
    ids=["incomplete-run", "other-split-seed", "other-dataset", "latency-zero", "device-cuda-7"],
)
def test_evaluate_refuses_before_compute(world, capsys, tmp_path, sets, names):
    out = tmp_path / "metrics.json"
    rc = _cli(world, "evaluate", *sets, model_dir=world["run"], out=out)
    _assert_clean_failure(rc, capsys, names)
    assert not out.exists()


def test_evaluate_out_is_a_folder(world, capsys, tmp_path):
    rc = _cli(world, "evaluate", model_dir=world["run"], out=tmp_path)
    _assert_clean_failure(rc, capsys, str(tmp_path))


def test_disk_full_names_the_file(world, capsys, tmp_path, monkeypatch):
    """ENOSPC while writing the metrics JSON: one line naming it, no temp file left."""
    out = tmp_path / "metrics.json"
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".metrics.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    rc = _cli(world, "evaluate", model_dir=world["run"], out=out)
    _assert_clean_failure(rc, capsys, str(out))
    assert list(tmp_path.iterdir()) == []


def test_info_unknown_model(capsys):
    _assert_clean_failure(main(["info", "--model", "nope"]), capsys, "nope")


def _assert_clean_failure(rc: int, capsys, names: str, err: str | None = None) -> None:
    err = (capsys.readouterr().err if err is None else err).strip()
    assert rc == 2, f"exit {rc}, stderr: {err[-500:]}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err[-1500:]}"
    assert lines[0].startswith("error: "), lines[0]
    assert names in lines[0], f"{names!r} not named in: {lines[0]}"


def _cli(world, command: str, *sets: str, data: bool = True, **paths: Path) -> int:
    """`dnc <command> --params <world's> [--data <world's>] [--set S]... --<flag> <path>...`
    (a flag's `_` is a `-`: model_dir -> --model-dir)."""
    argv = [command, "--params", str(world["params"])]
    argv += ["--data", str(world["data"])] if data else []
    argv += [x for s in sets for x in ("--set", s)]
    argv += [x for flag, path in paths.items() for x in (f"--{flag.replace('_', '-')}", str(path))]
    return main(argv)


@pytest.mark.parametrize(
    ("sets", "out_name", "names"),
    [
        (["data.val_size=100000"], "prepared", "data.val_size"),
        (["data.dataset=imagefolder", "data.root=/nonexistent-root"], "prepared", "nonexistent"),
        (["data.split_seed=-3"], "prepared", "data.split_seed"),
        ([], "", "--out"),
    ],
    ids=["val-size-too-large", "imagefolder-missing-root", "split-seed-negative", "out-empty"],
)
def test_bad_prepare(world, capsys, tmp_path, monkeypatch, sets, out_name, names):
    monkeypatch.chdir(tmp_path)
    argv = ["prepare", "--params", str(world["params"]), "--out", out_name]
    for s in sets:
        argv += ["--set", s]
    _assert_clean_failure(main(argv), capsys, names)
    assert list(tmp_path.iterdir()) == []
