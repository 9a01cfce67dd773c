"""The stage functions: the one implementation of prepare / train / evaluate / info.

`python -m dnc`, the DVC stages, the Prefect tasks and the Optuna objective all call
these; nothing else trains or evaluates a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dnc import checkpoint
from dnc.config import ConfigError, Params
from dnc.data import (
    get_dataset_info,
    load_prepared,
    make_loaders,
    prepare_dataset,
    prepare_in_memory,
)
from dnc.engine import FitResult, fit, resolve_device
from dnc.evaluate import evaluate_splitnet
from dnc.flops import cost
from dnc.models import divide_weight_decay, get_spec, member_config
from dnc.splitnet import SplitNet, build_splitnet
from dnc.tasks import CoTrainingTask, Task


def check_params(params: Params) -> None:
    """Registry look-ups that pydantic cannot do; fail before any data is read."""
    for key, lookup in (("model.name", get_spec), ("data.dataset", get_dataset_info)):
        value = params.model.name if key == "model.name" else params.data.dataset
        try:
            lookup(value)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temp file + rename) so no stage leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def prepare(params: Params, out_dir: Path) -> dict:
    """Dataset -> versioned, hashed tensors in `out_dir` (train/val/test + meta.json)."""
    check_params(params)
    return prepare_dataset(params.data, Path(out_dir), params.seed)


def build_model(params: Params, num_classes: int, in_chans: int, image_size: int) -> SplitNet:
    """The S-member SplitNet of `params`, initialised from `params.seed`."""
    torch.manual_seed(params.seed)
    return build_splitnet(
        params.model.name,
        split=params.split.factor,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        width=params.model.width,
        dropout=params.model.dropout,
        divide_dropout=params.split.divide_dropout,
        ensemble=params.split.ensemble,
    )


def build_task(params: Params, model: SplitNet) -> Task:
    """The method's task module around `model`."""
    t = params.train
    return CoTrainingTask(
        model, t.cot_weight, t.cot_warmup_epochs, t.mixup_alpha, t.label_smoothing
    )


def train(
    params: Params,
    data_dir: Path | None,
    out_dir: Path,
    callbacks: Sequence[object] = (),
    resume: bool = True,
) -> FitResult:
    """Co-train the members; writes best.pt, last.pt and history.json into `out_dir`."""
    check_params(params)
    data = (
        load_prepared(Path(data_dir)) if data_dir else prepare_in_memory(params.data, params.seed)
    )
    info = data.info
    model = build_model(params, info.num_classes, info.in_chans, info.image_size)
    task = build_task(params, model)
    loaders = make_loaders(
        data,
        params.data,
        params.train.batch_size,
        params.eval.batch_size,
        task.num_views,
        params.seed,
    )
    wd = divide_weight_decay(
        params.train.weight_decay, params.split.factor, params.split.divide_weight_decay
    )
    out_dir = Path(out_dir)
    write_json(params.model_dump(mode="json"), out_dir / "params.json")
    result = fit(
        task,
        loaders,
        params.train,
        out_dir,
        seed=params.seed,
        weight_decay=wd,
        ensemble=params.split.ensemble,
        callbacks=callbacks,
        resume=resume,
        best_meta={"params": params.model_dump(mode="json")},
    )
    write_json(result.state.history, out_dir / "history.json")
    return result


def load_model(
    params: Params, model_dir: Path, num_classes: int, in_chans: int, image_size: int
) -> tuple[SplitNet, dict]:
    """Rebuild the SplitNet of `params` and load `model_dir/best.pt` into it."""
    ckpt = checkpoint.load(Path(model_dir) / checkpoint.BEST)
    model = build_model(params, num_classes, in_chans, image_size)
    model.load_state_dict(ckpt["model_state"])
    return model, ckpt


def evaluate(params: Params, data_dir: Path | None, model_dir: Path, out_path: Path) -> dict:
    """Test-set metrics of the selected checkpoint; written to `out_path` as JSON."""
    check_params(params)
    data = (
        load_prepared(Path(data_dir)) if data_dir else prepare_in_memory(params.data, params.seed)
    )
    info = data.info
    model, ckpt = load_model(params, model_dir, info.num_classes, info.in_chans, info.image_size)
    loaders = make_loaders(
        data, params.data, params.train.batch_size, params.eval.batch_size, 1, params.seed
    )
    device = resolve_device(params.train.device)
    shape = (info.in_chans, info.image_size, info.image_size)
    metrics = evaluate_splitnet(
        model,
        loaders.test,
        shape,
        device,
        params.eval.latency_batch_sizes,
        params.eval.latency_repeats,
    )
    metrics["config"] = {
        "method": params.method,
        "dataset": params.data.dataset,
        "model": params.model.name,
        "split_factor": params.split.factor,
        **member_config(
            params.model.name,
            params.model.width,
            params.model.dropout,
            params.split.factor,
            params.split.divide_dropout,
        ),
        "seed": params.seed,
        "device": str(device),
        "flops_unit": "macs (multiply-adds)",
    }
    metrics["selection"] = {
        "best_epoch": ckpt["epoch"],
        "selected_on": "val/ensemble/acc",
        "val": ckpt["val"],
    }
    write_json(metrics, Path(out_path))
    return metrics


def info(
    name: str,
    split: int,
    dataset: str,
    width: float | None = None,
    dropout: float = 0.0,
    wd_rule: str = "none",
) -> dict:
    """Widths, params and MACs per member, for the ensemble and for the undivided model."""
    spec = get_spec(name)
    ds = get_dataset_info(dataset)
    shape = (ds.in_chans, ds.image_size, ds.image_size)

    def describe(s: int) -> dict:
        with torch.device("meta"):
            net = build_splitnet(
                name,
                split=s,
                num_classes=ds.num_classes,
                in_chans=ds.in_chans,
                image_size=ds.image_size,
                width=width,
                dropout=dropout,
            )
        members = [
            {"index": i, **member_config(name, width, dropout, s), **cost(m, shape)}
            for i, m in enumerate(net.members)
        ]
        total = {k: sum(m[k] for m in members) for k in ("params", "flops", "macs")}
        return {"split": s, "members": members, "ensemble": total}

    divided, undivided = describe(split), describe(1)
    return {
        "model": name,
        "family": spec.family,
        "dataset": dataset,
        "input_shape": list(shape),
        "num_classes": ds.num_classes,
        "flops_unit": "macs = multiply-adds (torch.utils.flop_counter FLOPs / 2), as the paper",
        **divided,
        "undivided": {**undivided["members"][0], "index": None},
        "ratio_to_undivided": {
            k: divided["ensemble"][k] / undivided["ensemble"][k] for k in ("params", "macs")
        },
        "weight_decay": {
            "base": spec.base_weight_decay,
            "rule": wd_rule,
            "effective": divide_weight_decay(spec.base_weight_decay, split, wd_rule),
        },
    }
