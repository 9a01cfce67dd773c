"""DVC as its users drive it: what a bad `-S` says, what `dvc status` sees, where ad-hoc
runs and searches write, what the report says it ran on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pipelines.cli import build_parser, main

DVC = shutil.which("dvc") or str(Path(__import__("sys").executable).parent / "dvc")


def dvc_out_prefixes() -> list[str]:
    """The folders/files dvc.yaml's stages write (templated parts cut off)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            outs.append(path.split("$")[0])
    return outs


def test_bad_exp_run_key_is_named_as_typed(tmp_path, capsys):
    """`dvc exp run -S '+split.factr=2'` writes `split: {factr: 2}`; the stage names that
    key (not `compare.configs.base: ...`), exit 2, before writing anything."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["split"]["factr"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    out = tmp_path / "models" / "s4" / "seed0"
    args = ["stage", "train", "--params", str(params), "--config", "s4", "--set", "seed=0"]
    assert main([*args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: split.factr: unknown key\n"
    assert not out.exists()


def test_a_broken_configuration_is_still_named(tmp_path, capsys):
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["compare"]["configs"]["s4"] = {"split.factr": 4}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    args = ["stage", "train", "--params", str(params), "--config", "base", "--out", "x"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: compare.configs.s4: split.factr:")


def test_search_writes_outside_dvc_outputs():
    parser = build_parser("search")
    sub = next(a for a in parser._actions if a.dest == "command").choices["search"]
    models_dir = sub.get_default("models_dir")
    assert not any(f"{models_dir}/".startswith(prefix) for prefix in dvc_out_prefixes())
    assert models_dir.startswith("runs/")


def test_docs_run_ad_hoc_commands_outside_dvc_outputs():
    """Every `--out`/`--model-dir`/`--models-dir` in the README and docs that is not a
    dvc.yaml stage command writes outside the stages' outputs (`runs/` for ad-hoc runs)."""
    prefixes = [p for p in dvc_out_prefixes() if p.rstrip("/") not in ("data/prepared",)]
    flag = re.compile(r"--(?:out|model-dir|models-dir)[ =](\S+)")
    bad = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if "pipelines stage" in line and "--config" in line:  # a stage's own command
                continue
            for path in flag.findall(line):
                if any(path.startswith(p) for p in prefixes):
                    bad.append(f"{doc.name}:{n}: {path}")
    assert not bad, bad


@pytest.mark.skipif(not Path(DVC).exists(), reason="dvc not installed")
@pytest.mark.integration
def test_dvc_sees_only_the_matrix_outputs_inside_models():
    """A search or an ad-hoc run left in models/ does not change the report's dependency,
    nor does the bytecode Python writes beside `dnc/`, a directory the stages depend on."""
    paths = [
        "models/search/study/trial_0",
        "models/s2/best.pt",
        "models/base/seed0/best.pt",
        "models/s4/seed1/history.json",
        "dnc/__pycache__/cli.cpython-311.pyc",
        "dnc/data/__pycache__/views.cpython-311.pyc",
        "dnc/data/views.py",
    ]
    proc = subprocess.run(
        [DVC, "check-ignore", "--non-matching", "--details", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # `<file>:<line>:<pattern>\t<path>`; `::\t<path>` matches nothing, `!...` re-includes.
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    ignored = {path for rule, path in rows if rule.split(":", 2)[-1][:1] not in ("", "!")}
    assert ignored == {
        "models/search/study/trial_0",
        "models/s2/best.pt",
        "dnc/__pycache__/cli.cpython-311.pyc",
        "dnc/data/__pycache__/views.cpython-311.pyc",
    }, proc.stdout


def test_report_says_which_cpu_and_torch(tmp_path):
    from pipelines.common.machine import cpu_model, platform_line

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    import torch

    assert f"torch {torch.__version__.split('+')[0]}" in platform_line()
