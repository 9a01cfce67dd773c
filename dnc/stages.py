"""The stage functions: the one implementation of prepare / train / evaluate / info.

`python -m dnc`, the DVC stages, the Prefect tasks and the Optuna objective all call
these; nothing else trains or evaluates a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
from dnc.evaluate import curve_rows, evaluate_cooperative, evaluate_splitnet
from dnc.flops import cost
from dnc.fused import execution_model
from dnc.io import write_json
from dnc.methods import build_cooperative_model, build_method_task, check_method
from dnc.models import divide_weight_decay, get_spec, member_config
from dnc.parallel import inference_model
from dnc.splitnet import SplitNet, build_splitnet
from dnc.tasks import CoTrainingTask, Task
from dnc.train.distributed import setup_parallel


def check_params(params: Params) -> None:
    """Registry look-ups that pydantic cannot do; fail before any data is read."""
    for key, lookup in (("model.name", get_spec), ("data.dataset", get_dataset_info)):
        value = params.model.name if key == "model.name" else params.data.dataset
        try:
            lookup(value)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    check_method(params, get_dataset_info(params.data.dataset))


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


def build_inference_model(
    params: Params, num_classes: int, in_chans: int, image_size: int
) -> torch.nn.Module:
    """The model `params.method` deploys (and best.pt holds): the SplitNet of `build_model`,
    or for cooperative the Teammates and Leader with their depth sub-networks."""
    if params.method == "cooperative":
        return build_cooperative_model(params, num_classes, in_chans, image_size)
    return build_model(params, num_classes, in_chans, image_size)


def build_task(params: Params, model: torch.nn.Module) -> Task:
    """The method's task module around `model`."""
    if params.method != "splitnet":
        return build_method_task(params, model)
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
    """Co-train the members; writes best.pt, last.pt and history.json into `out_dir`.

    Under torchrun every rank calls this; rank 0 alone writes (docs/distributed.md).
    """
    check_params(params)
    parallel = setup_parallel(params)  # None unless launched by torchrun
    data = (
        load_prepared(Path(data_dir)) if data_dir else prepare_in_memory(params.data, params.seed)
    )
    info = data.info
    model = build_inference_model(params, info.num_classes, info.in_chans, info.image_size)
    if params.method == "splitnet":  # fused: one packed net; checkpoints keep the loop layout
        model = execution_model(model, params.split.execution)
    if parallel is not None:
        model = parallel.place(model)
    task = build_task(params, model)
    loaders = make_loaders(
        data,
        params.data,
        params.train.batch_size,
        params.eval.batch_size,
        task.num_views,
        params.seed,
    )
    if parallel is not None:
        loaders = parallel.shard(loaders)
    # Cooperative nets are not divided, so their weight decay is not either.
    members = 1 if params.method == "cooperative" else params.split.factor
    wd = divide_weight_decay(params.train.weight_decay, members, params.split.divide_weight_decay)
    out_dir = Path(out_dir)
    main = parallel is None or parallel.is_main
    if main:
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
        parallel=parallel,
    )
    if main:
        write_json(result.state.history, out_dir / "history.json")
    return result


def load_model(
    params: Params, model_dir: Path, num_classes: int, in_chans: int, image_size: int
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the inference model of `params` and load `model_dir/best.pt` into it."""
    ckpt = checkpoint.load(Path(model_dir) / checkpoint.BEST)
    model = build_inference_model(params, num_classes, in_chans, image_size)
    model.load_state_dict(ckpt["model_state"])
    return model, ckpt


def evaluate(
    params: Params,
    data_dir: Path | None,
    model_dir: Path,
    out_path: Path,
    devices: Sequence[str] | None = None,
) -> dict:
    """Test-set metrics of the selected checkpoint; written to `out_path` as JSON.

    `devices` (e.g. ["cuda:0", "cuda:1"]) spreads a SplitNet's members over devices that
    run them concurrently; the first one gathers the outputs.
    """
    check_params(params)
    data = (
        load_prepared(Path(data_dir)) if data_dir else prepare_in_memory(params.data, params.seed)
    )
    info = data.info
    model, ckpt = load_model(params, model_dir, info.num_classes, info.in_chans, info.image_size)
    loaders = make_loaders(
        data, params.data, params.train.batch_size, params.eval.batch_size, 1, params.seed
    )
    device = resolve_device(devices[0] if devices else params.train.device)
    shape = (info.in_chans, info.image_size, info.image_size)
    batches, repeats = params.eval.latency_batch_sizes, params.eval.latency_repeats
    if params.method == "cooperative":
        metrics = evaluate_cooperative(model, loaders.test, device, batches, repeats)
    else:
        model = inference_model(model, devices, params.split.execution, device)
        metrics = evaluate_splitnet(model, loaders.test, shape, device, batches, repeats)
        metrics["curve"] = curve_rows(metrics["prefixes"], params.method)
    metrics["config"] = _eval_config(params, device)
    metrics["config"]["devices"] = list(devices or [str(device)])
    metrics["selection"] = {
        "best_epoch": ckpt["epoch"],
        "selected_on": "val/ensemble/acc",
        "val": ckpt["val"],
    }
    write_json(metrics, Path(out_path))
    return metrics


def _eval_config(params: Params, device: torch.device) -> dict:
    cooperative = params.method == "cooperative"  # undivided Teammates and a wider Leader
    split = 1 if cooperative else params.split.factor
    widths = member_config(
        params.model.name,
        params.model.width,
        params.model.dropout,
        split,
        params.split.divide_dropout,
    )
    return {
        "method": params.method,
        "dataset": params.data.dataset,
        "model": params.model.name,
        "split_factor": None if cooperative else split,
        **widths,
        **({"leader_width": params.cooperative.leader_width} if cooperative else {}),
        "seed": params.seed,
        "device": str(device),
        "flops_unit": "macs (multiply-adds)",
    }


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
