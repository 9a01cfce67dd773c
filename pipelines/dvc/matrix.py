"""The `compare` section of params.yaml: the configurations x seeds that `dvc repro` runs.

```yaml
compare:
  seeds: [0, 1]              # training seeds; `data.split_seed` seeds the (shared) data split
  configs:                   # name -> the dotted keys this configuration changes
    base: {}                 # the sections above, as they are
    s4: {split.factor: 4}    # everything else still comes from the sections above
```

dvc.yaml's `train` and `evaluate` stages are a `matrix` over `compare.configs` (its keys)
and `compare.seeds`; each stage runs `python -m pipelines stage train --config NAME --set
seed=K`, so a configuration overrides only the keys it names and every other key,
including a `dvc exp run -S train.epochs=3`, reaches all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnc import config
from dnc.config import ConfigError, apply_overrides, params_from_dict

SECTION = "compare"
# Becomes a DVC stage suffix (`train@s4-0`) and a folder name: no `-`, `@` or `/`.
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

    def runs(self) -> list[tuple[str, int]]:
        """(configuration, seed) pairs in the order DVC's matrix expands them."""
        return [(name, seed) for name in self.configs for seed in self.seeds]


def run_name(config: str, seed: int) -> str:
    """Folder / file stem of one run: `models/<run>/`, `reports/evaluate/<run>.json`."""
    return f"{config}-seed{seed}"


def read_tree(params_path: str | Path) -> dict[str, Any]:
    """The params file as a nested dict; a missing or broken file names itself."""
    return config.read_tree(params_path)


def parse_comparison(tree: dict[str, Any]) -> Comparison:
    """Check the `compare` section's shape and that every configuration is valid params."""
    section = tree.get(SECTION)
    if not isinstance(section, dict):
        raise ConfigError(f"{SECTION}: missing key (a mapping with configs and seeds)")
    unknown = sorted(set(section) - {"configs", "seeds"})
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
    base = {k: v for k, v in tree.items() if k not in config.declared_sections()}
    base_error = _error_of(base)
    for name, overrides in configs.items():
        try:
            _check_config(base, str(name), overrides)
        except ConfigError as err:
            # A bad key of the shared sections (`dvc exp run -S +split.factr=2`) is the user's
            # key, not a configuration's: name it as typed.
            if base_error is not None and str(err).endswith(f": {base_error}"):
                raise ConfigError(base_error) from None
            raise
    return Comparison({str(k): dict(v) for k, v in configs.items()}, list(seeds))


def _error_of(tree: dict[str, Any]) -> str | None:
    """The validation error of a params tree, or None if it is valid."""
    try:
        params_from_dict(tree)
    except ConfigError as err:
        return str(err)
    return None


def _check_config(base: dict[str, Any], name: str, overrides: Any) -> None:
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
        params_from_dict(apply_overrides(base, overrides))
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
