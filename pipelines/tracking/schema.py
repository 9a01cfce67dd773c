"""The MLflow run schema of a dnc run, as plain data (no MLflow import).

One run = one trained model: params are the dotted keys of `params.yaml`; per-epoch metrics
keep the engine's names (`train/loss`, `val/member_0/acc`, MLflow allows `/`); final test
metrics are `test/...`; tags say what was run, from which code and data, and by whom.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dnc.config import Params
from dnc.ensemble.splitnet import member_summary
from dnc.io import sha256_file
from dnc.methods import get_method

RUN_ID_KEY = "mlflow_run_id"  # TrainState.extra key: the run a resumed training continues
RUN_REF = "mlflow_run.json"  # in the run dir: the run evaluate continues (other process)
TAG = "dnc."  # prefix of dnc's own tags


def param_strings(params: Params) -> dict[str, str]:
    """Dotted key -> value as YAML (`null`, `true`, `[1, 8]`), so `--set k=v` reproduces it;
    `model.width` is the resolved width (the family's default when params leave it null)."""
    flat = params.flat()
    flat["model.width"] = resolved_width(params)
    return {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()
    }


def resolved_width(params: Params) -> float:
    """The undivided model's width: `model.width`, else its family's default."""
    summary = member_summary(
        params.model.name, params.model.width, params.model.dropout, params.split.factor
    )
    return summary["width"]


def epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The engine's epoch metrics under their own names (finite or not, floats only)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flatten an evaluation JSON (`dnc.evaluation.evaluate`, any method) into `test/...` names."""
    out: dict[str, float] = {}

    def put(prefix: str, entry: dict[str, Any]) -> None:
        for key, value in entry.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{prefix}/{key}"] = float(value)
        for batch, ms in entry.get("latency_ms", {}).items():
            out[f"{prefix}/latency_ms/b{batch}"] = float(ms)

    put("test/ensemble", result["ensemble"])
    for how, acc in result["ensemble"].get("acc_by_method", {}).items():
        out[f"test/ensemble/acc_by/{how}"] = float(acc)
    for member in result.get("members", []):
        put(f"test/member_{member['index']}", {**member, "index": None})
    for prefix in result.get("prefixes", []):
        put(f"test/k_{prefix['k']}", {**prefix, "k": None})
    for depth in result.get("depths", []):  # cooperative: Teammate depths
        put(f"test/depth_{depth['name']}", depth)
    if "leader" in result:
        put("test/leader", result["leader"])
    # The method-independent accuracy-vs-cost curve (what `compare` plots).
    for i, point in enumerate(result.get("curve", [])):
        put(f"test/curve_{i}", point)
    cascade = result.get("cascade") or {}  # per tau: acc, mean MACs, latency
    for point in cascade.get("points", []):
        put(f"test/cascade/tau_{point['tau']:g}", {**point, "tau": None})
    if cascade.get("budget"):
        put("test/cascade/budget", cascade["budget"])
    out["test/num_images"] = float(result["num_test"])
    return out


def curve_labels(result: dict[str, Any]) -> str:
    """Labels of the `test/curve_<i>` points, as a JSON list (a tag)."""
    return json.dumps([point.get("label", str(i)) for i, point in enumerate(result["curve"])])


def dvc_experiment() -> str | None:
    """The name of the `dvc exp run` experiment running this stage (DVC sets DVC_EXP_NAME)."""
    return os.environ.get("DVC_EXP_NAME") or None


def run_name(params: Params, config: str | None = None) -> str:
    """Default run name, unique per configuration and seed: `small_cnn-S2-digits-seed0`;
    a DVC configuration leads (`s4-seed0 small_cnn-S4-digits`), inside `dvc exp run` after
    the experiment's name (`bushy-kite/s4-seed0 ...`). Other methods prefix their label
    (`auxiliary-small_cnn-S1-digits`, `cooperative-small_cnn-digits`: not divided)."""
    label = get_method(params.method).run_label(params)
    name = f"{config}-seed{params.seed} {label}" if config else f"{label}-seed{params.seed}"
    exp = dvc_experiment()
    return f"{exp}/{name}" if exp else name


def config_tags(params: Params, entry_point: str, config: str | None = None) -> dict[str, str]:
    """What was trained and how to tell it apart in the UI: dataset, model, split factor,
    widths, seed, the entry point that ran it, the DVC configuration and experiment."""
    variant = params.model.variant  # the name in its style (`_ref` twin for reference)
    m = params.model
    summary = member_summary(variant, m.width, m.dropout, params.split.factor)
    tags = {
        f"{TAG}entry_point": entry_point,
        f"{TAG}method": params.method,
        f"{TAG}dataset": params.data.dataset,
        f"{TAG}model": variant,
        f"{TAG}family": str(summary["family"]),
        f"{TAG}split_factor": str(params.split.factor),
        f"{TAG}width": str(summary["width"]),
        f"{TAG}member_width": str(summary["member_width"]),
        f"{TAG}seed": str(params.seed),
    }
    if config:
        tags[f"{TAG}config"] = config
    if exp := dvc_experiment():
        tags[f"{TAG}dvc.experiment"] = exp
    return tags


def git_tags(cwd: Path = Path(__file__).parent) -> dict[str, str]:
    """Commit of the code that runs (MLflow's own source tag, shown in the UI) and whether
    the work tree differs from it; {} outside git."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
        )
        return proc.stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, f"{TAG}git_dirty": str(dirty).lower()}


def dvc_lock_md5(path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 that `dvc.lock` records for output `path` (relative to cwd), if any."""
    if not lock.is_file():
        return None
    try:
        rel = Path(path).resolve().relative_to(lock.resolve().parent).as_posix()
        # libyaml's loader where built in: dvc.lock lists every output file (~0.1 s in Python)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        stages = (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {})
    except (ValueError, yaml.YAMLError):
        return None
    for stage in stages.values():
        for out in stage.get("outs", []):
            if Path(out.get("path", "")).as_posix() == rel and "md5" in out:
                return str(out["md5"])
    return None


def data_tags(data_dir: Path | None) -> dict[str, str]:
    """Identity of the prepared data: sha256 of its meta.json (which lists every file's
    sha256) and DVC's md5 where dvc.lock has one; in-memory data has only the dataset tag."""
    if data_dir is None or not (Path(data_dir) / "meta.json").is_file():
        return {f"{TAG}data_source": "in-memory"}
    tags = {
        f"{TAG}data_source": str(data_dir),
        f"{TAG}data_sha256": sha256_file(Path(data_dir) / "meta.json"),
    }
    if md5 := dvc_lock_md5(Path(data_dir)):
        tags[f"{TAG}dvc.data_md5"] = md5
    return tags


def checkpoint_tags(model_dir: Path, best_name: str) -> dict[str, str]:
    """sha256 of the selected checkpoint and DVC's md5 of the model folder where recorded."""
    tags = {f"{TAG}run_dir": str(model_dir)}
    if (Path(model_dir) / best_name).is_file():
        tags[f"{TAG}checkpoint_sha256"] = sha256_file(Path(model_dir) / best_name)
    if md5 := dvc_lock_md5(Path(model_dir)):
        tags[f"{TAG}dvc.model_md5"] = md5
    return tags


def read_run_ref(run_dir: Path) -> dict[str, str]:
    """The `mlflow_run.json` of a run dir ({} when absent or unreadable)."""
    path = Path(run_dir) / RUN_REF
    try:
        ref = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return ref if isinstance(ref, dict) else {}
