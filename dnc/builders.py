"""What every stage builds from params: the method, the checked params, the data, the model.

The stage functions (`dnc.stages`) and the tools around them (a served model, the tests)
build through these, so a model is built, seeded and reloaded one way only.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from dnc.config import ConfigError, Params
from dnc.config_loading import flatten
from dnc.data import (
    DatasetInfo,
    PreparedData,
    get_dataset_info,
    load_prepared,
    prepare_in_memory,
)
from dnc.data.prepare import check_meta, clean_stale
from dnc.ensemble.splitnet import SplitNet
from dnc.methods import Method, Task, get_method
from dnc.models import get_spec, styled_name
from dnc.train import checkpoint


def method_of(params: Params) -> Method:
    """The registered method `params.method` selects."""
    return get_method(params.method)


def check_params(params: Params) -> None:
    """Registry look-ups that pydantic cannot do; fail before any data is read."""
    for key, lookup, value in (
        ("model.name", get_spec, params.model.name),
        ("model.style", partial(styled_name, params.model.name), params.model.style),
        ("data.dataset", get_dataset_info, params.data.dataset),
        ("method", get_method, params.method),
    ):
        try:
            lookup(value)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    method_of(params).check(params, get_dataset_info(params.data.dataset))


def load_data(params: Params, data_dir: Path | None) -> PreparedData:
    """The prepared data in `data_dir`, checked to be made for these params (dataset, split
    seed, sizes); without `data_dir`, prepared in memory."""
    if not data_dir:
        return prepare_in_memory(params.data)
    data_dir = Path(data_dir)
    clean_stale(data_dir)  # a killed prepare's temp folder beside it
    data = load_prepared(data_dir)
    check_meta(data.meta, params.data, data_dir)
    return data


def dataset_dims(params: Params, num_classes: int, in_chans: int, image_size: int) -> DatasetInfo:
    """The info of `data.dataset` with the dimensions the data actually has."""
    info = get_dataset_info(params.data.dataset)
    return replace(info, num_classes=num_classes, in_chans=in_chans, image_size=image_size)


def build_model(params: Params, num_classes: int, in_chans: int, image_size: int) -> SplitNet:
    """The S-member SplitNet of `params`, initialised from `params.seed`."""
    dims = dataset_dims(params, num_classes, in_chans, image_size)
    return get_method("splitnet").build_model(params, dims)


def build_inference_model(
    params: Params, num_classes: int, in_chans: int, image_size: int
) -> torch.nn.Module:
    """The (seeded) model `params.method` deploys and best.pt holds."""
    dims = dataset_dims(params, num_classes, in_chans, image_size)
    return method_of(params).build_model(params, dims)


def build_task(params: Params, model: torch.nn.Module) -> Task:
    """The method's task module around `model`."""
    return method_of(params).build_task(params, model)


def load_model(
    params: Params,
    model_dir: Path,
    num_classes: int,
    in_chans: int,
    image_size: int,
    ckpt: dict | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the inference model of `params` and load `model_dir/best.pt` (or the
    already loaded `ckpt` of it) into it."""
    path = Path(model_dir) / checkpoint.BEST
    ckpt = checkpoint.load(path) if ckpt is None else ckpt
    model = build_inference_model(params, num_classes, in_chans, image_size)
    try:
        model.load_state_dict(ckpt["model_state"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise _misfit(path, ckpt, params, err) from err
    return model, ckpt


def _misfit(path: Path, ckpt: dict, params: Params, err: BaseException) -> Exception:
    """The error for a best.pt that does not fit: names the params key that differs from
    the ones it was trained with (model-shaping keys first), else the loader's reason."""
    trained = ckpt.get("meta", {}).get("params") if isinstance(ckpt, dict) else None
    if isinstance(trained, dict):
        old, new = flatten(trained), params.flat()
        shaping = ("method", "model.", "split.", "data.dataset", f"{params.method}.")
        for key in sorted(set(old) | set(new), key=lambda k: (not k.startswith(shaping), k)):
            if old.get(key) != new.get(key):
                return checkpoint.CheckpointError(
                    f"{key}: {path} was trained with {old.get(key)!r}, the params say "
                    f"{new.get(key)!r}"
                )
    why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return checkpoint.CheckpointError(f"{path}: does not fit the model of these params ({why})")
