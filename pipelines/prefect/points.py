"""The points of a dnc sweep, every one validated before any task runs (no Prefect here).

A point is one configuration to train and evaluate: a product of `--grid` values, or, with
`--compare`, one (configuration, seed) of the params file's `compare` section
(`pipelines.dvc.matrix`), laid out as `dvc repro` lays it out so that the one comparison
report (`pipelines.dvc.report`) reads the sweep's outputs:

    <sweep dir>/models/<config>/seed<k>/      the run dir (best.pt, last.pt, history.json, ...)
    <sweep dir>/evaluate/<config>/seed<k>.json  its metrics, + seed<k>.predictions.npz
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnc import builders
from dnc.config import ConfigError, Params
from dnc.config_loading import load_params
from dnc.evaluation.predictions import predictions_path
from pipelines.dvc import matrix

DEFAULT_GRID: dict[str, list[Any]] = {"split.factor": [1, 2, 4]}
MODELS = "models"  # <sweep dir>/models: the run dirs of a comparison (the report's --models)
METRICS = "evaluate"  # <sweep dir>/evaluate: its metrics JSON (the report's --metrics)
REPORT = "report.md"  # <sweep dir>/report.md, beside <sweep dir>/report/


def load_config(params_path: str, overrides: dict[str, Any]) -> Params:
    """Validated params of a run; a bad value raises ConfigError naming the dotted key."""
    params = load_params(params_path, overrides)
    builders.check_params(params)
    return params


def expand_grid(
    params_path: str, overrides: dict[str, Any], grid: dict[str, list[Any]]
) -> list[tuple[dict[str, Any], Params]]:
    """Every grid point as (its overrides, validated params); the first bad one raises."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    return [(point, load_config(params_path, {**overrides, **point})) for point in points]


@dataclass(frozen=True)
class ComparisonRun:
    """One (configuration, seed) of the compare section, as a sweep point."""

    config: str
    seed: int
    point: dict[str, Any]  # the configuration's dotted keys + {"seed": k}
    params: Params  # validated: the base, the configuration, the --set overrides, the seed

    def model_dir(self, sweep_dir: Path) -> Path:
        return matrix.model_dir(Path(sweep_dir) / MODELS, self.config, self.seed)

    def metrics_path(self, sweep_dir: Path) -> Path:
        return matrix.metrics_path(Path(sweep_dir) / METRICS, self.config, self.seed)

    def row(self, sweep_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        """Its headline numbers and files (a sweep row; the comparison is in report.md)."""
        return {
            "config": self.config,
            "seed": self.seed,
            "point": self.point,
            "ensemble_acc": metrics["ensemble"]["acc"],
            "best_member_acc": max(m["acc"] for m in metrics["members"]),
            "run_dir": str(self.model_dir(sweep_dir)),
            "metrics": str(self.metrics_path(sweep_dir)),
            "predictions": str(predictions_path(self.metrics_path(sweep_dir))),
            "report": str(Path(sweep_dir) / REPORT),
        }


def expand_comparison(params_path: str, overrides: dict[str, Any]) -> list[ComparisonRun]:
    """`compare.configs` x `compare.seeds` of the params file, in DVC's matrix order; each
    point's params are the configuration's keys, then `overrides`, then the seed (as the DVC
    `run` stage merges them). The section is checked first, then every point."""
    for key in overrides:
        if key == "seed" or key.split(".")[0] == matrix.SECTION:
            # The report reads the section from the file: an override would not reach it.
            raise ConfigError(f"{key}: set by the params file's compare section (--compare)")
    comparison = matrix.parse_comparison(matrix.read_tree(params_path))
    runs = []
    for config, seed in comparison.runs():
        keys = comparison.configs[config]
        params = load_config(params_path, {**keys, **overrides, "seed": seed})
        runs.append(ComparisonRun(config, seed, {**keys, "seed": seed}, params))
    return runs
