"""Prefect flows `dnc-experiment` and `dnc-sweep`: prepare -> co-train -> evaluate + FLOPs.

A flow reads as its list of steps; each step is a task of `pipelines.prefect.tasks` that calls
the stage functions, so no model or training logic lives here. A flow's parameters are its
config: a params file plus dotted-key overrides (`split.factor`), validated in the flow body
before any task runs, so a bad value fails the run at once with the key in the message.

Outputs: prepared data in a content-addressed store shared by runs (`data/prefect/<key>/`)
and one folder per configuration: `model/` (checkpoints), `metrics.json`, `flops.json`,
`report.md`, `accuracy_vs_macs.png` and `run.lock.json` (the stages hashed as `dvc repro`
hashes them, `pipelines.dvc.runlock`). A `compare` sweep instead writes the DVC layout
(`models/<config>/seed<k>/`, `evaluate/<config>/seed<k>.json`, `pipelines.prefect.points`)
and the DVC report on it (`report.md`, `report/`).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import flow, runtime
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from dnc.config import ConfigError, Params
from dnc.evaluation.predictions import predictions_path
from pipelines.common import workers
from pipelines.common.errors import one_line
from pipelines.prefect.points import (
    DEFAULT_GRID,
    METRICS,
    MODELS,
    REPORT,
    expand_comparison,
    expand_grid,
    load_config,
)
from pipelines.prefect.tasks import (
    PLOT,
    RunPaths,
    count_flops,
    data_key,
    evaluate_members,
    prepare_step,
    publish_artifacts,
    record_versions,
    run_label,
    run_logger,
    train_members,
    write_comparison,
    write_dvc_report,
    write_report,
)

DATA_STORE = "data/prefect"
RUNS = "runs"


# -- configuration (runs in the flow body, before any task) ----------------------------------


@contextlib.contextmanager
def reason_logged() -> Iterator[None]:
    """Log a bad parameter as one ERROR line of the flow run, then fail the run with it (the
    failed state's message, shown by the UI, also names it): `prefect deployment run --watch`
    prints the run's logs but of its final state only the name."""
    try:
        yield
    except ConfigError as err:
        run_logger().error("%s", one_line(err))
        raise


# -- flows -----------------------------------------------------------------------------------


def _run_name() -> str:
    return runtime.flow_run.name or "local"  # None outside a flow run (`.fn()`)


def _paths(params: Params, run_dir: Path, data_store: str) -> RunPaths:
    return RunPaths(data=Path(data_store) / data_key(params), run=run_dir)


@flow(name="dnc-experiment", description="prepare -> co-train -> evaluate + FLOPs -> report")
def experiment_flow(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    out_dir: str | None = None,
    data_store: str = DATA_STORE,
) -> dict[str, Any]:
    """One configuration end to end, into `out_dir` (default `runs/<label>/<flow run>`)."""
    overrides = overrides or {}
    with reason_logged():
        params = load_config(params_path, overrides)  # before any task: a bad value fails here
    run_dir = Path(out_dir) if out_dir else Path(RUNS) / run_label(params) / _run_name()
    paths = _paths(params, run_dir, data_store)
    run_logger().info("%s -> %s (data %s)", run_label(params), paths.run, paths.data)
    prepare_step(params, paths.data)
    trained = train_members(params, paths.data, paths.model)
    metrics = evaluate_members(params, paths.data, trained, paths.metrics)
    flops = count_flops(params, paths.flops)
    record_versions(params, params_path, overrides, paths)
    markdown = write_report(params, paths, metrics, flops)
    outputs = {"run": paths.run, "metrics": paths.metrics, "report": paths.report}
    publish_artifacts(
        "dnc-experiment", markdown, {**outputs, "plot": paths.plot, "lock": paths.lock}
    )
    return summary(params, paths, metrics)


def task_runner(max_concurrent: int, devices: list[str], threads: int | None) -> TaskRunner:
    """Threads of this process without `devices`; with them, one pinned process per worker
    (Prefect's process pool; each worker claims its device once, `pipelines.common.workers`)."""
    if not devices:
        return ThreadPoolTaskRunner(max_workers=max_concurrent)
    pins = multiprocessing.get_context("spawn").Queue()  # the pool's start method
    for pin in workers.plan(devices, max_concurrent, threads):
        pins.put(pin)
    return ProcessPoolTaskRunner(
        max_workers=max_concurrent, initializer=workers.claim, initargs=(pins,)
    )


@flow(name="dnc-sweep", description="a grid of configurations, or the compare section x seeds")
def sweep_flow(
    params_path: str = "params.yaml",
    grid: dict[str, list[Any]] | None = None,
    overrides: dict[str, Any] | None = None,
    max_concurrent: int = 1,
    out_dir: str | None = None,
    data_store: str = DATA_STORE,
    devices: list[str] | None = None,
    threads: int | None = None,
    compare: bool = False,
) -> list[dict[str, Any]]:
    """Every grid point (default S in 1, 2, 4), `max_concurrent` trainings at a time; with
    `devices` (["cuda:0", "cuda:1"], ["cpu", "cpu"]) each in its own pinned process.
    `compare`: instead of a grid, the params file's compare.configs x compare.seeds, in the
    DVC layout, compared by the DVC report (`pipelines.prefect.points`)."""
    overrides = overrides or {}
    with reason_logged():
        if max_concurrent < 1:
            raise ConfigError(f"max_concurrent: must be >= 1, got {max_concurrent}")
        if compare and grid:
            raise ConfigError("compare: not with a grid (its points are configs x seeds)")
        if compare:
            runs = expand_comparison(params_path, overrides)  # all validated
            configs = [r.params for r in runs]
        else:
            grid_points = expand_grid(params_path, overrides, grid or DEFAULT_GRID)
            configs = [p for _, p in grid_points]
    for params in configs:
        workers.check_train_device(params.train.device, devices or [])
    sweep_dir = Path(out_dir) if out_dir else Path(RUNS) / "sweep" / _run_name()
    pool = functools.partial(task_runner, max_concurrent, devices or [], threads)
    if compare:
        all_metrics = train_and_evaluate(
            pool,
            configs,
            data_store,
            [r.model_dir(sweep_dir) for r in runs],
            [r.metrics_path(sweep_dir) for r in runs],
            [r.config for r in runs],
        )
        markdown = write_dvc_report(params_path, sweep_dir)
        publish_artifacts("dnc-sweep", markdown, report_links(sweep_dir))
        return [r.row(sweep_dir, m) for r, m in zip(runs, all_metrics, strict=True)]
    points = [pt for pt, _ in grid_points]
    paths = [_paths(p, sweep_dir / run_label(p), data_store) for p in configs]
    model_dirs, metrics_paths = [p.model for p in paths], [p.metrics for p in paths]
    all_metrics = train_and_evaluate(pool, configs, data_store, model_dirs, metrics_paths)
    rows = []
    for point, params, pth, metrics in zip(points, configs, paths, all_metrics, strict=True):
        flops = count_flops(params, pth.flops)
        record_versions(params, params_path, {**overrides, **point}, pth)
        write_report(params, pth, metrics, flops)
        rows.append(summary(params, pth, metrics, point))
    markdown = write_comparison(rows, all_metrics, sweep_dir)
    links = {"sweep": sweep_dir / "sweep.json", "plot": sweep_dir / PLOT}
    publish_artifacts("dnc-sweep", markdown, links)
    return rows


def train_and_evaluate(
    pool: Callable[[], TaskRunner],
    configs: list[Params],
    data_store: str,
    model_dirs: list[Path],
    metrics_paths: list[Path],
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Prepare once per distinct data config, then train and evaluate every configuration on
    `pool()` (started once the data is ready); each one's metrics. `names`: the compare
    section's configurations (run dirs `<config>/seed<k>`, named so in the task runs and
    tagged on the tracked runs)."""
    data_dirs = [Path(data_store) / data_key(p) for p in configs]
    for data_dir, params in dict(zip(data_dirs, configs, strict=True)).items():
        prepare_step(params, data_dir)  # once per distinct data config
    train, evaluate = train_members, evaluate_members
    if names is not None:
        train = train.with_options(task_run_name="train {model_dir.parent.name}/{model_dir.name}")
        evaluate = evaluate.with_options(
            task_run_name="evaluate {metrics_path.parent.name}/{metrics_path.stem}"
        )
    config = names or [None] * len(configs)
    with pool() as runner:
        trained = runner.map(
            train,
            {"params": configs, "data_dir": data_dirs, "model_dir": model_dirs, "config": config},
        )
        evaluated = runner.map(
            evaluate,
            {
                "params": configs,
                "data_dir": data_dirs,
                "trained": trained,  # evaluate i waits for train i
                "metrics_path": metrics_paths,
                "config": config,
            },
        )
        return evaluated.result()  # the first failure fails the run


def report_links(sweep_dir: Path) -> dict[str, Path]:
    """The link artifacts of a `--compare` sweep: its report and the report's files."""
    report_dir = sweep_dir / "report"
    return {
        "report": sweep_dir / REPORT,
        "summary": report_dir / "summary.json",
        "plot": report_dir / "plots" / PLOT,
        "models": sweep_dir / MODELS,
        "evaluate": sweep_dir / METRICS,
    }


def summary(
    params: Params, paths: RunPaths, metrics: dict[str, Any], point: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The headline numbers of one configuration (flow return value, sweep row)."""
    ens = metrics["ensemble"]
    return {
        "label": run_label(params),
        "point": point or {},  # the swept keys' values
        "split.factor": params.split.factor,
        "model.width": params.model.width,
        "ensemble_acc": ens["acc"],
        "best_member_acc": max(m["acc"] for m in metrics["members"]),
        "params": ens["params"],
        "macs": ens["macs"],
        "run_dir": str(paths.run),
        "data_dir": str(paths.data),
        "seed": params.seed,
        "predictions": str(predictions_path(paths.metrics)),  # the sweep's paired tests
    }
