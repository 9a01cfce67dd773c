"""The `compare` section of params.yaml: the configurations x seeds that `dvc repro` runs.

```yaml
compare:
  seeds: [0, 1, 2]           # training seeds; `data.split_seed` seeds the (shared) data split
  baseline: s1               # what every row is tested against (default: see below)
  configs:                   # name -> the dotted keys this configuration changes
    base: {}                 # the sections above, as they are
    s4: {split.factor: 4}    # everything else still comes from the sections above
```

dvc.yaml's `run` stage is a `matrix` over `compare.configs` (its keys): one process per
configuration, `python -m pipelines stage run --config NAME`, trains and evaluates every seed
of `compare.seeds` (`models/NAME/seed<k>/`, `reports/evaluate/NAME/seed<k>.json` and its
`.predictions.npz`), so a configuration overrides only the keys it names and every other key,
including a `dvc exp run -S train.epochs=3`, reaches all of them.

`baseline` defaults to the undivided network at the same budget: the first configuration
that trains the `splitnet` method with `split.factor: 1` and the base `model.width` (`s1` in
params.yaml); with none, the report shows no verdicts. An unknown name fails at load time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnc import config_loading
from dnc.config import ConfigError, Params
from dnc.config_loading import apply_overrides, params_from_dict
from dnc.methods import get_method

SECTION = "compare"
# Becomes a DVC stage suffix (`run@s4`) and a folder name: no `-`, `@` or `/`.
NAME = re.compile(r"^[A-Za-z0-9_]+$")
# The only data keys read at training time; every other data key (incl. `data.split_seed`)
# is read by the shared prepare stage, once for all configurations, so a
# configuration that changed one would silently train on data prepared for the base.
TRAINING_DATA_KEYS = frozenset(
    {
        "data.augment",
        "data.autoaugment",
        "data.random_erasing",
        "data.erasing_scale",
        "data.erasing_ratio",
        "data.num_workers",
    }
)


@dataclass(frozen=True)
class Comparison:
    """Configurations (name -> dotted overrides) and the seeds each one is trained with."""

    configs: dict[str, dict[str, Any]]
    seeds: list[int]
    baseline: str | None = None  # the configuration every other is tested against

    def runs(self) -> list[tuple[str, int]]:
        """(configuration, seed) pairs in the order DVC's matrix expands them."""
        return [(name, seed) for name in self.configs for seed in self.seeds]


def run_name(config: str, seed: int) -> str:
    """A run's name in messages and MLflow: `<config>-seed<k>`."""
    return f"{config}-seed{seed}"


def model_dir(models: str | Path, config: str, seed: int) -> Path:
    """The run dir of (config, seed): `models/<config>/seed<k>/`."""
    return Path(models) / config / f"seed{seed}"


def metrics_path(metrics: str | Path, config: str, seed: int) -> Path:
    """The metrics JSON of (config, seed): `reports/evaluate/<config>/seed<k>.json`."""
    return Path(metrics) / config / f"seed{seed}.json"


def read_tree(params_path: str | Path) -> dict[str, Any]:
    """The params file as a nested dict; a missing or broken file names itself."""
    return config_loading.read_tree(params_path)


def parse_comparison(tree: dict[str, Any]) -> Comparison:
    """Check the `compare` section's shape and that every configuration is valid params."""
    section = tree.get(SECTION)
    if not isinstance(section, dict):
        raise ConfigError(f"{SECTION}: missing key (a mapping with configs and seeds)")
    unknown = sorted(set(section) - {"configs", "seeds", "baseline"})
    if unknown:
        raise ConfigError(f"{SECTION}.{unknown[0]}: unknown key")
    seeds = section.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{SECTION}.seeds: expected a non-empty list of distinct ints >= 0")
    configs = section.get("configs")
    if not isinstance(configs, dict) or not configs:
        raise ConfigError(f"{SECTION}.configs: expected a mapping name -> {{dotted.key: value}}")
    base = {k: v for k, v in tree.items() if k not in config_loading.declared_sections()}
    base_error = _error_of(base)
    resolved: dict[str, Params] = {}
    for name, overrides in configs.items():
        try:
            resolved[str(name)] = _check_config(base, str(name), overrides)
        except ConfigError as err:
            # A bad key of the shared sections (`dvc exp run -S +split.factr=2`) is the user's
            # key, not a configuration's: name it as typed.
            if base_error is not None and str(err).endswith(f": {base_error}"):
                raise ConfigError(base_error) from None
            raise
    width = (base.get("model") or {}).get("width")
    baseline = _baseline(section.get("baseline"), resolved, width)
    return Comparison({str(k): dict(v) for k, v in configs.items()}, list(seeds), baseline)


def _error_of(tree: dict[str, Any]) -> str | None:
    """The validation error of a params tree, or None if it is valid."""
    try:
        params_from_dict(tree)
    except ConfigError as err:
        return str(err)
    return None


def _baseline(name: Any, resolved: dict[str, Params], width: Any) -> str | None:
    """The named baseline (checked), else the undivided splitnet at the base width."""
    if name is not None:
        if str(name) not in resolved:
            known = ", ".join(resolved)
            raise ConfigError(
                f"{SECTION}.baseline: unknown configuration {name!r} (known: {known})"
            )
        return str(name)
    for name_, p in resolved.items():
        # A method that divides into S members (the one the search divides) at S = 1 is the
        # undivided network; equal budget: s1, not the narrower s1_w16.
        if get_method(p.method).searchable and p.split.factor == 1 and p.model.width == width:
            return name_
    return None


def _check_config(base: dict[str, Any], name: str, overrides: Any) -> Params:
    where = f"{SECTION}.configs.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: name must be letters, digits or _ (it names stages)")
    if overrides is None:
        raise ConfigError(f"{where}: expected a mapping (use {{}} for the base params)")
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted.key: value")
    for key in overrides:
        if key == "seed":  # each stage's --set seed=K would override it
            raise ConfigError(f"{where}.seed: set by compare.seeds for every configuration")
        if key == "data" or (key.startswith("data.") and key not in TRAINING_DATA_KEYS):
            raise ConfigError(
                f"{where}.{key}: prepared once for all configurations; set it in the data section"
            )
    try:
        return params_from_dict(apply_overrides(base, overrides))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load_comparison(params_path: str | Path) -> Comparison:
    """The validated `compare` section of a params file."""
    return parse_comparison(read_tree(params_path))


def config_overrides(params_path: str | Path, name: str | None) -> dict[str, Any]:
    """The dotted overrides of configuration `name` ({} for None); checks the whole section
    first, so a broken configuration fails whichever stage runs first, before any compute."""
    tree = read_tree(params_path)
    if SECTION not in tree:
        if name is None:
            return {}
        raise ConfigError(f"{SECTION}: missing key (needed by --config {name})")
    comparison = parse_comparison(tree)
    if name is None:
        return {}
    if name not in comparison.configs:
        known = ", ".join(comparison.configs)
        raise ConfigError(f"{SECTION}.configs.{name}: unknown configuration (known: {known})")
    return comparison.configs[name]
