"""The `search:` section of params.yaml: what a study searches, under which budgets.

The searched keys are dotted params keys (`split.factor`, `model.width`, `train.cot_weight`),
so a trial's parameters are exactly the overrides `dvc exp run -S key=value` replays. Costs
are counted on the meta device (`dnc.stages.info`) in MACs, i.e. multiply-adds summed over
the S members, the unit the paper calls FLOPs.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal

import sqlalchemy
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dnc import builders, stages
from dnc.config import ConfigError, Params
from dnc.config_loading import load_params, params_from_dict
from dnc.methods import get_method

Value = int | float | str | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(_Strict):
    """One searched key: a list of `choices`, or a `low`..`high` range (ints if both are)."""

    choices: list[Value] | None = Field(default=None, min_length=1)
    # int | float keeps what YAML wrote: `low: 8` searches integers, `low: 0.0` floats.
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = Field(default=None, gt=0)  # spacing; needed by sampler: grid
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices or both low and high")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and (self.step is not None or (self.low or 0) <= 0):
            raise ValueError("log needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        """A range written with integers (`low: 8`) is searched as integers."""
        ends = (self.low, self.high, self.step or 1)
        return self.choices is None and all(isinstance(v, int) for v in ends)

    def grid(self) -> list[Value]:
        """Every value a grid visits: the choices, or low..high in `step`s."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise ValueError("a range needs a step to be gridded")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.is_int else [round(v, 12) for v in values]

    def values_for_cost(self) -> list[Value]:
        """The values the budget pre-check tries: the choices, a gridded range's points (up
        to 64), else both ends of the range (cost need not grow with every key: S)."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is not None and (self.high - self.low) / self.step < 64:
            return self.grid()
        return [int(v) for v in (self.low, self.high)] if self.is_int else [self.low, self.high]


class Budget(_Strict):
    """Inference limits reject a configuration before training; training limits end the study."""

    macs: float | None = Field(gt=0)  # inference MACs per image, all S members together
    params: float | None = Field(gt=0)  # parameters, all S members together
    # Training compute of the whole study in MACs: per epoch, (3 x training images + validation
    # images) x the model's MACs; 3 = forward + backward (about twice the forward).
    train_macs: float | None = Field(gt=0)
    train_seconds: float | None = Field(gt=0)  # summed wall seconds of all trials' training


class SearchConfig(_Strict):
    """The `search:` section (strict: unknown keys fail with their dotted name)."""

    mode: Literal["single", "multi"]  # single: max val accuracy; multi: accuracy vs MACs
    n_trials: int = Field(ge=1)  # trials of the whole study, over all its workers
    sampler: Literal["tpe", "nsga2", "random", "grid"]
    startup_trials: int = Field(ge=1)  # TPE: random trials first; NSGA-II: population size
    pruner: Literal["hyperband", "median", "none"]  # single mode only
    storage: str = Field(min_length=1)  # SQLAlchemy URL: sqlite:///optuna.db, postgresql+psycopg
    heartbeat_interval: int = Field(ge=1)  # seconds between a running trial's heartbeats
    grace_period: int = Field(ge=2)  # a trial silent this long is failed and retried
    max_retry: int = Field(ge=0)  # retries of one trial whose worker died
    budget: Budget
    space: dict[str, Dimension] = Field(min_length=1)

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, url: str) -> str:
        # The study lock exists for these two (a file lock, a PostgreSQL advisory lock).
        try:
            backend = sqlalchemy.engine.make_url(url).get_backend_name()
        except sqlalchemy.exc.ArgumentError:
            raise ValueError(f"not a SQLAlchemy URL: {url!r}") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend} is not supported; use sqlite or postgresql")
        return url

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must exceed heartbeat_interval")
        if self.sampler == "grid":
            for key, dim in self.space.items():
                if dim.choices is None and dim.step is None:
                    raise ValueError(f"sampler grid: space.{key} needs choices or a step")
        return self


def search_from_dict(tree: Any) -> SearchConfig:
    """Validate a `search:` mapping; the first error names its dotted key."""
    try:
        return SearchConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in ("search", *first["loc"]) if "function" not in str(p))
        msg = {"missing": "missing key", "extra_forbidden": "unknown key"}.get(
            first["type"], first["msg"].removeprefix("Value error, ")
        )
        raise ConfigError(f"{key}: {msg}") from None


def load_search(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[Params, SearchConfig]:
    """The base training params and the search config of a params file; `search.*`
    overrides go to the search section, every other key to training."""
    overrides = dict(overrides or {})
    mine = {k: overrides.pop(k) for k in list(overrides) if k.startswith("search.")}
    base = load_params(path, overrides)
    tree = yaml.safe_load(Path(path).read_text()).get("search")
    if not isinstance(tree, dict):
        raise ConfigError(f"search: missing section in {path}")
    for dotted, value in mine.items():
        _set_search_key(tree, dotted.removeprefix("search."), value)
    search = search_from_dict(tree)
    check_space(base, search)
    return base, search


def _set_search_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    # Space keys contain dots themselves (`space.model.width.low`): match them first, so a
    # whole dimension (`space.model.width={low: 8, high: 32}`) or one field of it is set.
    if dotted.startswith("space."):
        space = tree.setdefault("space", {})
        rest = dotted.removeprefix("space.")
        for key in sorted(space, key=len, reverse=True):  # the longest key that matches
            if rest == key:
                space[key] = value
                return
            if rest.startswith(f"{key}."):
                space[key] = {**(space[key] or {}), rest.removeprefix(f"{key}."): value}
                return
        if isinstance(value, dict):  # a new searched key, checked by check_space
            space[rest] = value
            return
        raise ConfigError(f"search.{dotted}: unknown key (not in search.space; give a mapping)")
    node, parts = tree, dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"search.{dotted}: unknown key")
        node = node[part]
    node[parts[-1]] = value


def check_space(base: Params, search: SearchConfig) -> None:
    """Every searched key exists and every end of its range is a valid params value."""
    if not get_method(base.method).searchable:
        raise ConfigError("method: the search divides and co-trains; use method: splitnet")
    known = base.flat()
    for key, dim in search.space.items():
        if key not in known or key == "seed":
            raise ConfigError(f"search.space.{key}: unknown params key (or not searchable)")
        ends = dim.choices if dim.choices is not None else [dim.low, dim.high]
        for value in ends:
            try:
                base.with_overrides({key: value})
            except ConfigError as err:
                raise ConfigError(f"search.space.{key}: {value!r} is invalid ({err})") from None


def grid(search: SearchConfig) -> list[dict[str, Value]]:
    """Every configuration of a gridded space, in a fixed order (first key slowest)."""
    keys = list(search.space)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(search.space[k].grid() for k in keys))
    ]


@functools.lru_cache(maxsize=1024)
def _cost(params_json: str) -> tuple[int, int]:
    params = params_from_dict(json.loads(params_json))
    builders.check_params(params)
    total = stages.describe_split(params, params.split.factor)["ensemble"]
    return int(total["macs"]), int(total["params"])


def inference_cost(params: Params) -> tuple[int, int]:
    """(MACs per image, parameters) of the S-member ensemble, counted on the meta device."""
    return _cost(params.model_dump_json())


def over_budget(macs: int, n_params: int, budget: Budget) -> str | None:
    """Why a configuration exceeds the inference budget, or None if it fits."""
    if budget.macs is not None and macs > budget.macs:
        return f"inference MACs {macs:,} > budget {budget.macs:,.0f}"
    if budget.params is not None and n_params > budget.params:
        return f"parameters {n_params:,} > budget {budget.params:,.0f}"
    return None


def check_feasible(base: Params, search: SearchConfig) -> None:
    """Fail before any compute when no configuration of the space fits the inference budget,
    naming the budget and the cheapest candidate. Tried: every choice of the cost keys
    (model, split factor, width), gridded ranges at every point, other ranges at both ends."""
    budget = search.budget
    if budget.macs is None and budget.params is None:
        return
    costly = ("model.name", "model.style", "split.factor", "model.width")
    cost_keys = [k for k in costly if k in search.space]
    options = [search.space[k].values_for_cost() for k in cost_keys]
    costs = []
    for combo in itertools.product(*options):
        costs.append(inference_cost(base.with_overrides(dict(zip(cost_keys, combo, strict=True)))))
        if over_budget(*costs[-1], budget) is None:
            return
    macs, n_params = min(costs)
    limits = [f"{budget.macs:,.0f} MACs" if budget.macs is not None else None]
    limits.append(f"{budget.params:,.0f} parameters" if budget.params is not None else None)
    raise ConfigError(
        f"search.budget: no configuration of the space fits {' and '.join(filter(None, limits))}"
        f"; the cheapest costs {macs:,} MACs and {n_params:,} parameters"
    )
