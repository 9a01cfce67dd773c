"""The two contracts of a method: `Task` (what the engine trains) and `Method` (what the
stages ask), plus the method registry.

A method is one module under `dnc/methods/` that defines its config section, its task
and a `Method` object registered with `@register_method`; `dnc.stages`, `dnc.evaluation`
and the pipelines ask the registry (`get_method(params.method)`) and never compare names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import torch
from pydantic import BaseModel
from torch import Tensor, nn

if TYPE_CHECKING:
    from dnc.config import Params
    from dnc.data import DatasetInfo


class Task(nn.Module):
    """A method's training module: owns the inference model, turns a batch into a loss dict.

    `training_step` returns {"loss": scalar to backprop, <part>: scalar tensors to log};
    `eval_logits` returns the logits of every evaluated output (M, B, C) - the members of
    a SplitNet - whose ensemble picks the best epoch. `num_views` is how many augmented
    views of each image the train loader must produce.
    """

    model: nn.Module
    num_views: int = 1

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        raise NotImplementedError

    def eval_logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups; the default decays every parameter of the task."""
        return [
            {
                "params": [p for p in self.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]


@runtime_checkable
class Method(Protocol):
    """What `params.method` changes: model, task, checks, evaluation, `dnc info`, labels.

    `config` is the pydantic model of the method's own params section (named like the
    method), or None; it is validated only when the method is selected, and a missing
    section means its defaults. `searchable` says whether the method divides into S
    members: the Optuna search (which divides and co-trains) may run it, and its S = 1 is
    the undivided baseline a comparison (`compare`) reports against.
    """

    name: str
    config: type[BaseModel] | None
    searchable: bool

    def check(self, params: Params, info: DatasetInfo) -> None:
        """Checks that need the architecture; ConfigError naming the key."""

    def build_model(self, params: Params, info: DatasetInfo) -> nn.Module:
        """The (seeded) inference model: what best.pt holds and evaluation loads."""

    def build_task(self, params: Params, model: nn.Module) -> Task:
        """The training module around the inference model."""

    def weight_decay(self, params: Params) -> float:
        """The weight decay training applies (after any division)."""

    def evaluate(
        self,
        params: Params,
        model: nn.Module,
        loader: Any,
        info: DatasetInfo,
        device: torch.device,
        devices: Sequence[str] | None,
    ) -> dict:
        """Test metrics, including the uniform `curve` rows and a partial `config`."""

    def info(self, params: Params, info: DatasetInfo) -> dict:
        """`dnc info` extras of this method ({} when none)."""

    def run_label(self, params: Params) -> str:
        """A short run name, e.g. `small_cnn-S2-digits`."""


_REGISTRY: dict[str, Method] = {}

M = TypeVar("M")


def register_method(cls: type[M]) -> type[M]:
    """Class decorator: register one instance of `cls` under `cls.name`."""
    method = cls()
    if not isinstance(method, Method):
        raise TypeError(f"{cls.__name__} does not implement the Method protocol")
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.config is not None and not issubclass(method.config, BaseModel):
        raise TypeError(f"{cls.__name__}.config must be a pydantic model or None")
    _REGISTRY[method.name] = method
    return cls


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as `name`; ValueError listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; choose one of: {', '.join(list_methods())}"
        ) from None


def config_error(fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning a ValueError (already naming its key) into a ConfigError."""
    from dnc.config import ConfigError

    try:
        return fn()
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
