"""The stage functions: the one implementation of prepare / train / evaluate / info.

`python -m dnc`, the DVC stages, the Prefect tasks and the Optuna objective all call
these; nothing else trains or evaluates a model. What they build from params (the method,
the data, the model and its task) comes from `dnc.builders`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from dnc import preflight
from dnc.builders import (
    build_inference_model,
    build_task,
    check_params,
    load_data,
    load_model,
    method_of,
)
from dnc.config import Params
from dnc.data import make_loaders, prepare_dataset, resolve_info
from dnc.evaluation.cascade import evaluate_cascade
from dnc.evaluation.flops import cached_cost
from dnc.evaluation.predictions import predictions_path, write_predictions
from dnc.evaluation.results import validated
from dnc.io import write_json
from dnc.models import create_model, get_spec, member_config
from dnc.train import checkpoint
from dnc.train.callbacks import FitResult
from dnc.train.distributed import setup_parallel
from dnc.train.engine import fit, resolve_device


def prepare(params: Params, out_dir: Path) -> dict:
    """Dataset -> versioned, hashed tensors in `out_dir` (train/val/test + meta.json)."""
    check_params(params)
    preflight.check_writable(Path(out_dir))
    return prepare_dataset(params.data, Path(out_dir))


def train(
    params: Params,
    data_dir: Path | None,
    out_dir: Path,
    callbacks: Sequence[object] = (),
    resume: bool = True,
) -> FitResult:
    """Co-train the members; writes best.pt, last.pt and history.json into `out_dir`.

    Resumes from `out_dir/last.pt` when its params match (up to RESUME_SAFE_KEYS);
    `resume=False` (--restart) starts over, removing the previous run's files.
    Under torchrun every rank calls this; rank 0 alone writes (docs/distributed.md).
    """
    check_params(params)
    preflight.check_device(params.train.device)
    parallel = setup_parallel(params)  # None unless launched by torchrun
    main = parallel is None or parallel.is_main
    if main:
        preflight.prepare_run_dir(params, Path(out_dir), resume)
    data = load_data(params, data_dir)
    if main:
        preflight.start_run_dir(Path(out_dir), resume)
    info = data.info
    model = build_inference_model(params, info.num_classes, info.in_chans, info.image_size)
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
        shared_views=params.split.views == "shared",
    )
    if parallel is not None:
        loaders = parallel.shard(loaders)
    wd = method_of(params).weight_decay(params)
    out_dir = Path(out_dir)
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
        run_params=params.flat(),
    )
    if main:
        write_json(result.state.history, out_dir / "history.json")
    return result


def evaluate(
    params: Params,
    data_dir: Path | None,
    model_dir: Path,
    out_path: Path,
    devices: Sequence[str] | None = None,
    allow_incomplete: bool = False,
) -> dict:
    """Test-set metrics of the selected checkpoint; written to `out_path` as JSON.

    `devices` (e.g. ["cuda:0", "cuda:1"]) spreads a SplitNet's members over devices that
    run them concurrently; the first one gathers the outputs. A run that did not finish its
    epochs is refused unless `allow_incomplete` (the JSON's `training.complete` says so).
    """
    check_params(params)
    for spec in devices or [params.train.device]:
        preflight.check_device(spec, "--devices" if devices else "train.device")
    preflight.check_writable(Path(out_path), folder=False)
    best = checkpoint.load(Path(model_dir) / checkpoint.BEST)  # missing or damaged: say so
    progress = preflight.training_progress(params, Path(model_dir))
    preflight.check_complete(progress, Path(model_dir), allow_incomplete)
    data = load_data(params, data_dir)
    info = data.info
    dims = (info.num_classes, info.in_chans, info.image_size)
    model, ckpt = load_model(params, model_dir, *dims, ckpt=best)
    loaders = make_loaders(
        data, params.data, params.train.batch_size, params.eval.batch_size, 1, params.seed
    )
    device = resolve_device(devices[0] if devices else params.train.device)
    method = method_of(params)
    metrics = method.evaluate(params, model, loaders.test, info, device, devices)
    predictions = metrics.pop("predictions", None)
    metrics.pop("member_logits", None)
    stage_logits = metrics.pop("cascade_logits", None)  # the cascade's stages, already run
    cascade_of = getattr(method, "cascade_stages", None)  # optional: outputs that cascade
    if cascade_of is not None:
        shape = (info.in_chans, info.image_size, info.image_size)
        stages_, how = cascade_of(model)
        pair = (loaders.val, loaders.test)
        metrics["cascade"] = evaluate_cascade(
            stages_, how, pair, shape, device, params.eval, test_logits=stage_logits
        )
    metrics["config"] = {
        "method": params.method,
        "dataset": params.data.dataset,
        "model": params.model.variant,
        **metrics.get("config", {}),
        "seed": params.seed,
        "device": str(device),
        "flops_unit": "macs (multiply-adds)",
        "devices": list(devices or [str(device)]),
    }
    metrics["selection"] = {
        "best_epoch": ckpt["epoch"],
        "selected_on": "val/ensemble/acc",
        "val": ckpt["val"],
    }
    metrics["training"] = progress
    metrics = validated(metrics)  # the typed schema readers rely on
    if predictions is None:
        write_json(metrics, Path(out_path))
        return metrics
    # Beside the JSON: the paired tests' per-example input. Both or neither: a failed JSON
    # write (disk full) takes the predictions with it, so no half evaluation is left.
    pred_path = predictions_path(Path(out_path))
    write_predictions(pred_path, **predictions)
    try:
        write_json(metrics, Path(out_path))
    except BaseException:
        pred_path.unlink(missing_ok=True)
        raise
    return metrics


def describe_split(params: Params, split: int) -> dict:
    """Each member's width, dropout, params and MACs when `params`' model is divided into
    `split` members, and the ensemble's totals; counted on the meta device."""
    ds = resolve_info(params.data)
    m = params.model
    widths = member_config(m.variant, m.width, m.dropout, split, params.split.divide_dropout)
    # build_splitnet's members are alike (one member_config): one is built and counted.
    one = _member_cost(m.variant, widths["width"], widths["dropout"], ds.num_classes,
                       ds.in_chans, ds.image_size)  # fmt: skip
    members = [{"index": i, **widths, **one} for i in range(split)]
    total = {k: sum(x[k] for x in members) for k in ("params", "flops", "macs")}
    return {"split": split, "members": members, "ensemble": total}


@functools.lru_cache(maxsize=4096)
def _member_cost(
    variant: str, width: float, dropout: float, num_classes: int, in_chans: int, size: int
) -> dict[str, int]:
    """Params, FLOPs and MACs of one member, built on the meta device (a search or the
    planner asks for the same member again and again)."""
    with torch.device("meta"):
        net = create_model(variant, num_classes=num_classes, in_chans=in_chans,
                           image_size=size, width=width, dropout=dropout)  # fmt: skip
    return cached_cost(net, (in_chans, size, size))


def info(params: Params) -> dict:
    """Widths, params and MACs per member, for the ensemble and for the undivided model,
    from the same params (and the same functions) as training, plus the method's extras."""
    check_params(params)
    method = method_of(params)
    ds = resolve_info(params.data)
    shape = (ds.in_chans, ds.image_size, ds.image_size)
    m = params.model
    variant = m.variant

    divided = describe_split(params, params.split.factor)
    undivided = describe_split(params, 1)
    return {
        "method": params.method,
        "model": variant,
        "style": m.style,
        "family": get_spec(variant).family,
        "dataset": params.data.dataset,
        "input_shape": list(shape),
        "num_classes": ds.num_classes,
        "flops_unit": "macs = multiply-adds (torch.utils.flop_counter FLOPs / 2), as the paper",
        **divided,
        "undivided": {**undivided["members"][0], "index": None},
        "ratio_to_undivided": {
            k: divided["ensemble"][k] / undivided["ensemble"][k] for k in ("params", "macs")
        },
        "weight_decay": {
            "base": params.train.weight_decay,
            "rule": params.split.divide_weight_decay,
            "effective": method.weight_decay(params),
        },
        **method.info(params, ds),
    }
