"""`run_search`: one worker of a study, from params to reports (what the CLI and the Prefect
flow call). Start it in several processes or on several machines to work a study in parallel.

Outputs: trials in `runs/search/<study>/trial_<n>/`, prepared data in `data/search/<study>/`
(unless `data_dir` is given), reports in `reports/search/<study>/`, trials as nested MLflow
runs under the study's parent run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from dnc.config import ConfigError, Params
from pipelines.search import ranks
from pipelines.search.objective import Objective
from pipelines.search.report import write_reports
from pipelines.search.space import Budget, SearchConfig, check_feasible, load_search
from pipelines.search.study import Study, is_retry, open_study, run_worker, tally
from pipelines.tracking import runner
from pipelines.tracking.base import get_tracker

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PARENT_KEY = "mlflow_parent_run_id"


def search_overrides(
    sets: dict[str, Any] | None = None,
    *,
    n_trials: int | None = None,
    budget_flops: float | None = None,
    budget_params: float | None = None,
    budget_train: float | None = None,
    budget_train_seconds: float | None = None,
    mode: str | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Command-line options as dotted `search.*` overrides on top of `--set` ones."""
    given = {
        "search.n_trials": n_trials,
        "search.budget.macs": budget_flops,
        "search.budget.params": budget_params,
        "search.budget.train_macs": budget_train,
        "search.budget.train_seconds": budget_train_seconds,
        "search.mode": mode,
        "search.storage": storage,
    }
    return {**(sets or {}), **{k: v for k, v in given.items() if v is not None}}


def training_budget(budget: Budget) -> Callable[[list[FrozenTrial]], str | None]:
    """Why the study's training budget is spent (None while some is left)."""

    def spent(trials: list[FrozenTrial]) -> str | None:
        ran = [t for t in trials if t.state != TrialState.WAITING]  # retries copy attrs
        macs = sum(t.user_attrs.get("train_macs", 0.0) for t in ran)
        seconds = sum(t.user_attrs.get("train_seconds", 0.0) for t in ran)
        if budget.train_macs is not None and macs >= budget.train_macs:
            return f"training budget spent: {macs:.4g} of {budget.train_macs:.4g} MACs"
        if budget.train_seconds is not None and seconds >= budget.train_seconds:
            return f"training budget spent: {seconds:.1f} of {budget.train_seconds:g} s"
        return None

    return spent


def prepare_data(base: Params, data_dir: Path, owned: bool) -> int:
    """Prepare the study's data once (fixed split: trials vary only their training seed);
    returns the number of validation images. A given `data_dir` must match the params."""
    meta_path = data_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    matches = meta is not None and meta.get("config") == base.data.model_dump(mode="json")
    if not matches:
        if not owned:
            raise ConfigError(f"--data {data_dir}: not prepared from these data params")
        meta = runner.prepare(base, data_dir)
    return int(meta["counts"]["val"])


def _storage_shown(url: str) -> str:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def open_parent_run(study: optuna.Study, search: SearchConfig) -> str | None:
    """The study's parent run (created once, its id kept in the study), RUNNING."""
    tracker = get_tracker()
    if tracker is None:
        return None
    tags = {
        "dnc.entry_point": "optuna",
        "dnc.study": study.study_name,
        "dnc.search_mode": search.mode,
        "dnc.optuna_storage": _storage_shown(search.storage),
    }
    space = {
        f"search.space.{k}": json.dumps(d.model_dump(exclude_none=True))
        for k, d in search.space.items()
    }
    params = {"search.mode": search.mode, **space}
    known = study.user_attrs.get(PARENT_KEY)
    run_id = tracker.open_study_run(study.study_name, tags, params, known)
    if known is None:
        study.set_user_attr(PARENT_KEY, run_id)
    return run_id


def close_parent_run(run_id: str | None, summary: dict[str, Any], files: list[Path]) -> None:
    """Attach the reports to the parent run; ended once no trial is left to run."""
    tracker = get_tracker() if run_id is not None else None
    if tracker is None or run_id is None:
        return
    counts = summary["counts"]
    metrics = {f"search/{k}": float(v) for k, v in counts.items()}
    metrics["search/train_macs"] = summary["budget"]["training"]["macs_spent"]
    if summary["best"]:
        metrics["search/best/val_acc"] = summary["best"][0]["val_acc"]
    idle = counts["waiting"] + counts["running"] == 0
    tracker.close_study_run(
        run_id, metrics, files, idle or summary["stop_reason"].startswith("train")
    )


def run_search(
    study: str,
    *,
    params_path: Path = Path("params.yaml"),
    overrides: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    models_dir: Path = Path("runs/search"),
    reports_dir: Path = Path("reports/search"),
    seeds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Work the study until no trial is left or the training budget is spent; write the
    reports. `seeds` are trial points run first (the planner's proposals), then the
    sampler takes over. Bad input raises ConfigError (naming the key) before any compute."""
    if not STUDY_NAME.match(study):
        raise ConfigError(f"--study {study!r}: use letters, digits, '.', '_' and '-'")
    params_path = Path(params_path)
    base, search = load_search(params_path, overrides)
    if base.data.val_size < 1:
        raise ConfigError("data.val_size: the search selects on validation accuracy; set > 0")
    check_feasible(base, search)
    ranks.join(base)  # under torchrun: rank 0 samples, every rank trains (search.ranks)
    if ranks.is_follower():
        return ranks.follow(study)
    try:
        return _work(
            study, base, search, params_path, data_dir, models_dir, reports_dir, seeds or []
        )
    finally:
        ranks.release()


def _work(
    study: str,
    base: Params,
    search: SearchConfig,
    params_path: Path,
    data_dir: Path | None,
    models_dir: Path,
    reports_dir: Path,
    seeds: list[dict[str, Any]],
) -> dict[str, Any]:
    owned = data_dir is None
    data_dir = Path(data_dir) if data_dir else Path("data/search") / study
    setup: dict[str, Any] = {}

    def once(optuna_study: optuna.Study) -> None:  # under the study lock
        setup["n_val"] = prepare_data(base, data_dir, owned)
        setup["parent"] = open_parent_run(optuna_study, search)

    opened = open_study(study, base, search, once, seeds)
    objective = Objective(
        study, base, search, data_dir, Path(models_dir), setup["n_val"], setup["parent"]
    )
    reason = run_worker(opened, objective, training_budget(search.budget))
    return finish(opened, params_path, Path(reports_dir) / study, reason, setup["parent"])


def finish(
    opened: Study, params_path: Path, out_dir: Path, reason: str, parent: str | None
) -> dict[str, Any]:
    """Reports of the study as it stands now (any worker may write them)."""
    study = opened.load()
    trials = study.get_trials(deepcopy=False)
    ran = [t for t in trials if t.state != TrialState.WAITING]
    b = opened.search.budget
    summary = {
        "study": opened.name,
        "mode": opened.search.mode,
        "storage": _storage_shown(opened.search.storage),
        "n_trials": sum(not is_retry(t) for t in trials),  # slots (a grid may have fewer)
        "stop_reason": reason,
        "counts": tally(trials),
        "budget": {
            "unit": "MACs = multiply-adds (the paper's FLOPs), all S members",
            "inference": {"macs": b.macs, "params": b.params},
            "training": {
                "macs": b.train_macs,
                "macs_spent": sum(t.user_attrs.get("train_macs", 0.0) for t in ran),
                "seconds": b.train_seconds,
                "seconds_spent": sum(t.user_attrs.get("train_seconds", 0.0) for t in ran),
                "definition": "per epoch (3 x training images + validation images) x MACs",
            },
        },
    }
    summary = write_reports(study, opened.search, opened.base, params_path, out_dir, summary)
    files = [Path(p) for k, p in summary["files"].items()]
    close_parent_run(parent, summary, files)
    return summary
