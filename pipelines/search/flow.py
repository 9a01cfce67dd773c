"""Prefect flow `dnc-search`: one worker of an Optuna study, as a flow run.

The deployment (prefect.yaml) points at `pipelines/search/flow.py:search_flow`; its parameters
are the `python -m pipelines search` options, with `params_path` and an `overrides` mapping
of dotted keys as in the other flows (for `--params` and `--set`). Run several flow runs (or
CLI workers) on the same study and storage to work it in parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.search.run import run_search, search_overrides


@task(name="run-study-worker", cache_policy=NO_CACHE)
def run_study_worker(study: str, params: str, overrides: dict[str, Any], **dirs: str) -> dict:
    """Work the study until no trial is left or the training budget is spent."""
    paths = {k: Path(v) if v else None for k, v in dirs.items()}
    return run_search(study, params_path=Path(params), overrides=overrides, **paths)


@flow(name="dnc-search")
def search_flow(
    study: str,
    n_trials: int | None = None,
    budget_flops: float | None = None,
    budget_params: float | None = None,
    budget_train: float | None = None,
    budget_train_seconds: float | None = None,
    mode: Literal["single", "multi"] | None = None,
    storage: str | None = None,
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    data: str | None = None,
    models_dir: str = "runs/search",
    reports_dir: str = "reports/search",
) -> dict:
    """Search split factor, width and co-training weight under the given budgets
    (MACs = multiply-adds); returns the study summary (counts, budgets, best).
    `overrides` are dotted keys as for the other flows, `search.*` ones included."""
    overrides = search_overrides(
        overrides,
        n_trials=n_trials,
        budget_flops=budget_flops,
        budget_params=budget_params,
        budget_train=budget_train,
        budget_train_seconds=budget_train_seconds,
        mode=mode,
        storage=storage,
    )
    dirs = {"data_dir": data, "models_dir": models_dir, "reports_dir": reports_dir}
    return run_study_worker(study, params_path, overrides, **dirs)
