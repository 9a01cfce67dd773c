"""The tasks of the dnc flows: each wraps one side effect and calls the stage runner.

Training and evaluation go through `pipelines.tracking.runner` (tracked, entry point
"prefect"), FLOPs through `dnc.stages.info`, hashes through `pipelines.dvc.runlock`; no model
logic lives here.
Prepared data is content-addressed: `<data store>/<data_key>/`, where the key covers
params.data (with data.split_seed; not the training seed), the raw dataset files and the
prepared format. The same key is the
Prefect cache key of `prepare`, so runs and sweep points with the same data share one folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger

from dnc import stages
from dnc.config import DataConfig, Params
from dnc.data import get_dataset_info
from dnc.data.prepare import FORMAT as PREPARED_FORMAT
from dnc.io import write_json
from pipelines.common.workers import apply_pin
from pipelines.dvc import plots, runlock
from pipelines.prefect.points import METRICS, MODELS, REPORT
from pipelines.prefect.report import comparison_table, experiment_table
from pipelines.tracking import runner

ENTRY_POINT = "prefect"  # the tracking tag of runs started here
PLOT = "accuracy_vs_macs.png"


@dataclass(frozen=True)
class RunPaths:
    """Where one configuration's inputs and outputs live."""

    data: Path  # prepared data (shared, content-addressed)
    run: Path  # this configuration's folder

    @property
    def model(self) -> Path:
        return self.run / "model"

    @property
    def metrics(self) -> Path:
        return self.run / "metrics.json"

    @property
    def flops(self) -> Path:
        return self.run / "flops.json"

    @property
    def report(self) -> Path:
        return self.run / "report.md"

    @property
    def lock(self) -> Path:
        return self.run / "run.lock.json"

    @property
    def plot(self) -> Path:
        return self.run / PLOT


def run_logger() -> Any:
    """The run's logger (shipped to the Prefect API); a plain one when called via `.fn()`."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("dnc.flows")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def raw_files(cfg: DataConfig) -> list[Any]:
    """What the raw dataset is: its files' names, sizes and mtimes (a changed file = new key)."""
    root = cfg.root or get_dataset_info(cfg.dataset).default_root
    if not root:  # bundled with a package (digits: scikit-learn)
        return [cfg.dataset, importlib.metadata.version("scikit-learn")]
    path = Path(root).expanduser().absolute()
    if path.is_file():
        return [str(path), *_stat(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file())  # none if missing: prepare fails
    return [str(path), *[(str(p.relative_to(path)), *_stat(p)) for p in files]]


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def data_key(params: Params) -> str:
    """Content address of the prepared data: params.data (incl. data.split_seed) + raw files
    + format. Not the training seed: runs over seeds share one split."""
    inputs = [PREPARED_FORMAT, params.data.model_dump(mode="json")]
    return _digest([*inputs, raw_files(params.data)])[:16]


def run_label(params: Params) -> str:
    """Readable, unique folder name of a configuration: `digits-small_cnn-s2-1a2b3c4d`."""
    digest = _digest(params.model_dump(mode="json"))[:8]
    return f"{params.data.dataset}-{params.model.name}-s{params.split.factor}-{digest}"


def _prepare_cache_key(_context: Any, arguments: dict[str, Any]) -> str:
    # The folder is named by data_key; the absolute path also separates data stores.
    data_dir = Path(arguments["data_dir"]).absolute()
    return "dnc-prepare-" + _digest([data_key(arguments["params"]), str(data_dir)])


@task(name="prepare", cache_key_fn=_prepare_cache_key, persist_result=True)
def prepare_data(params: Params, data_dir: Path) -> dict[str, Any]:
    """Dataset -> hashed tensors in `data_dir`; a cache hit skips it."""
    meta = runner.prepare(params, data_dir)
    run_logger().info("prepared %s into %s: %s", meta["dataset"], data_dir, meta["counts"])
    return {"dataset": meta["dataset"], "counts": meta["counts"], "files": meta["files"]}


def is_prepared(data_dir: Path) -> bool:
    """meta.json and every file it lists are there (their hashes are checked on load)."""
    meta = data_dir / "meta.json"
    if not meta.is_file():
        return False
    return all((data_dir / name).is_file() for name in json.loads(meta.read_text())["files"])


def prepare_step(params: Params, data_dir: Path) -> dict[str, Any]:
    """Prepare (cached); redo it if the cached files were deleted, retry only downloads."""
    return prepare_data.with_options(
        refresh_cache=not is_prepared(data_dir),  # a cache hit is only as good as its files
        retries=2 if params.data.download else 0,  # the only flaky I/O: the network
    )(params, data_dir)


@task(name="train", task_run_name="train {model_dir.parent.name}")
def train_members(
    params: Params, data_dir: Path, model_dir: Path, config: str | None = None
) -> dict[str, Any]:
    """Co-train the S members into `model_dir` (resumes from its last.pt); `config`: the
    compare section's configuration, tagged on the tracked run as `dvc repro` tags it."""
    apply_pin()  # in a pinned pool worker: its device (Prefect resets the environment per task)
    result = runner.train(params, data_dir, model_dir, entry_point=ENTRY_POINT, config=config)
    return {
        "model_dir": str(model_dir),
        "best_epoch": result.state.best_epoch,
        "best_val_acc": result.state.best_value,
        "resumed_from": result.resumed_from,
    }


@task(name="evaluate", task_run_name="evaluate {metrics_path.parent.name}")
def evaluate_members(
    params: Params,
    data_dir: Path,
    trained: dict[str, Any],
    metrics_path: Path,
    config: str | None = None,
) -> dict[str, Any]:
    """Test metrics of members, ensemble and k-of-S prefixes -> `metrics_path` (and the
    per-example predictions beside it)."""
    apply_pin()
    model_dir = Path(trained["model_dir"])
    return runner.evaluate(
        params, data_dir, model_dir, metrics_path, entry_point=ENTRY_POINT, config=config
    )


@task(name="flops", task_run_name="flops {path.parent.name}")
def count_flops(params: Params, path: Path) -> dict[str, Any]:
    """Params and MACs per member, ensemble and undivided model (+ the method's extras,
    as `python -m dnc info`) -> `path`."""
    info = stages.info(params)
    write_json(info, path)
    return info


def stage_commands(params_path: str, overrides: dict[str, Any], paths: RunPaths) -> dict:
    """The `python -m pipelines stage ...` commands (what dvc.yaml runs) of this run."""
    base = ["python", "-m", "pipelines", "stage"]
    common = ["--params", params_path]
    for key, value in overrides.items():
        common += ["--set", f"{key}={json.dumps(value)}"]
    data, model = ["--data", str(paths.data)], ["--model-dir", str(paths.model)]
    return {
        "prepare": shlex.join([*base, "prepare", *common, "--out", str(paths.data)]),
        "train": shlex.join([*base, "train", *common, *data, "--out", str(paths.model)]),
        "evaluate": shlex.join(
            [*base, "evaluate", *common, *data, *model, "--out", str(paths.metrics)]
        ),
    }


@task(name="version", task_run_name="version {paths.run.name}")
def record_versions(
    params: Params, params_path: str, overrides: dict[str, Any], paths: RunPaths
) -> dict[str, Any]:
    """Hash every dep and out as `dvc repro` does -> `run.lock.json`."""
    cmd = stage_commands(params_path, overrides, paths)
    stage_io = {
        "prepare": {"cmd": cmd["prepare"], "outs": [paths.data]},
        "train": {"cmd": cmd["train"], "deps": [paths.data], "outs": [paths.model]},
        "evaluate": {
            "cmd": cmd["evaluate"],
            "deps": [paths.data, paths.model],
            "outs": [paths.metrics],
        },
        "flops": {"outs": [paths.flops]},
    }
    run = {
        "flow": runtime.flow_run.flow_name,
        "flow_run_id": runtime.flow_run.id,
        "flow_run_name": runtime.flow_run.name,
        "deployment": runtime.deployment.name,
    }
    return runlock.write_run_lock(paths.lock, params, params_path, overrides, stage_io, run)


def curve_rows(label: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Accuracy-vs-MACs points of the run (k-of-S prefixes, or depths), as one curve."""
    return [
        {
            "label": c["label"].rsplit(" of ", 1)[0],
            "macs": c["macs"],
            "acc": c["acc"],
            "curve": label,
        }
        for c in metrics["curve"]
    ]


@task(name="report", task_run_name="report {paths.run.name}")
def write_report(
    params: Params, paths: RunPaths, metrics: dict[str, Any], flops: dict[str, Any]
) -> str:
    """The members / ensemble / k-of-S table -> `report.md` (+ accuracy-vs-MACs PNG)."""
    label = run_label(params)
    markdown = experiment_table(label, metrics, flops)
    paths.report.write_text(markdown)
    plots.accuracy_vs_macs(curve_rows(label, metrics), paths.plot, f"{label}: k of S members")
    return markdown


@task(name="compare")
def write_comparison(
    rows: list[dict[str, Any]], all_metrics: list[dict[str, Any]], out_dir: Path
) -> str:
    """The sweep's rows -> `sweep.json`, `sweep.md` and a PNG; returns the markdown."""
    markdown = comparison_table(rows)
    write_json(rows, out_dir / "sweep.json")
    (out_dir / "sweep.md").write_text(markdown)
    points = [
        pt for r, m in zip(rows, all_metrics, strict=True) for pt in curve_rows(r["label"], m)
    ]
    plots.accuracy_vs_macs(points, out_dir / PLOT, "dnc-sweep: k of S members per configuration")
    return markdown


@task(name="compare", task_run_name="compare {sweep_dir.name}")
def write_dvc_report(params_path: str, sweep_dir: Path) -> str:
    """The comparison of a `--compare` sweep, by the DVC report stage's own code
    (`pipelines.dvc.report`) on the sweep's models/ and evaluate/: `report.md` and
    `report/` in `sweep_dir`; returns the markdown."""
    from pipelines.dvc.report import report

    report(Path(params_path), sweep_dir / METRICS, sweep_dir / MODELS, sweep_dir)
    return (sweep_dir / REPORT).read_text()


@task(name="publish")
def publish_artifacts(key: str, markdown: str, links: dict[str, Path]) -> None:
    """A markdown artifact plus one link artifact per output, on the flow run."""
    create_markdown_artifact(markdown, key=key, description="dnc results")
    for name, path in links.items():
        uri = Path(path).absolute().as_uri()
        create_link_artifact(uri, link_text=str(path), key=f"{key}-{name}", description=name)
