"""The served model as an MLflow model: pixels in, log-probabilities out.

What is served is the method's `predict`: the SplitNet ensemble of all S members
(splitnet, auxiliary) or Teammate A at the deployed depth (cooperative).

Logged with `torch.export` ("pt2", MLflow 3's default): the artifact is a graph plus weights,
so `mlflow.pytorch.load_model` needs neither dnc's code nor pickle to run it, and the batch
dimension stays dynamic. Normalisation is inside the graph, so a served model takes plain
pixels and needs no dataset statistics. `log_model` logs it to an evaluation's run and
tags its URI.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking._tracking_service import utils as mlflow_uri_state
from mlflow.types import Schema, TensorSpec
from torch import Tensor, nn

from dnc import builders
from dnc.config import Params
from dnc.data import DatasetInfo, get_dataset_info
from dnc.evaluation.cascade import CascadeModel
from dnc.methods import get_method
from pipelines.common.redact import redact
from pipelines.tracking import schema
from pipelines.tracking.store import Store


class EnsembleClassifier(nn.Module):
    """Pixels in [0, 1] (B, C, H, W) -> `model.predict` log-probabilities (B, num_classes)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model.predict((pixels - self.mean) / self.std)


def dataset_info(params: Params, data_dir: Path | None) -> DatasetInfo:
    """Shape, classes and normalisation of the data the model was trained on."""
    meta = Path(data_dir) / "meta.json" if data_dir else None
    if meta is not None and meta.is_file():
        fields = json.loads(meta.read_text())["info"]
        known = set(DatasetInfo.__dataclass_fields__)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        return DatasetInfo(**{k: v for k, v in values.items() if k in known})
    info = get_dataset_info(params.data.dataset)
    if params.data.image_size and params.data.dataset == "imagefolder":
        info = replace(info, image_size=params.data.image_size)
    return info


def load_classifier(
    params: Params, model_dir: Path, data_dir: Path | None
) -> tuple[EnsembleClassifier, DatasetInfo]:
    """The selected checkpoint of `model_dir` wrapped for serving, in eval mode on CPU."""
    info = dataset_info(params, data_dir)
    model, _ = builders.load_model(
        params, model_dir, info.num_classes, info.in_chans, info.image_size
    )
    return EnsembleClassifier(model, info.mean, info.std).eval(), info


def load_cascade_classifier(
    params: Params, model_dir: Path, data_dir: Path | None, tau: float
) -> tuple[EnsembleClassifier, DatasetInfo]:
    """The method's confidence cascade at threshold `tau`, wrapped for serving."""
    classifier, info = load_classifier(params, model_dir, data_dir)
    members, how = get_method(params.method).cascade_stages(classifier.model)
    cascade = CascadeModel([m for _, m in members], tau, how, params.eval.cascade_gate)
    return EnsembleClassifier(cascade, info.mean, info.std).eval(), info


def input_example(info: DatasetInfo, batch: int = 2) -> np.ndarray:
    """Seeded uniform pixels (batch, C, H, W); batch > 1 keeps the exported batch dynamic."""
    gen = torch.Generator().manual_seed(0)
    shape = (batch, info.in_chans, info.image_size, info.image_size)
    return torch.rand(shape, generator=gen).numpy()


def log_classifier(
    classifier: EnsembleClassifier, example: np.ndarray, name: str = "model", fmt: str = "pt2"
) -> ModelInfo:
    """Log `classifier` to the active run as model `name` (signature + input example).
    The cascade's row-dependent control flow does not export: it is logged as "pickle"."""
    with torch.no_grad():
        out = classifier(torch.from_numpy(example))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out.shape[1]))]),
    )
    return mlflow.pytorch.log_model(
        classifier,
        name=name,
        signature=signature,
        input_example=example,
        serialization_format=fmt,
        # Explicit requirements skip MLflow's ~6 s inference of them.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the block, then restore both its global URI and
    `MLFLOW_TRACKING_URI`: `set_tracking_uri` rewrites (or deletes) that variable, and MLflow's
    own scoped switch does not restore it. Reads MLflow's private global (MLflow is pinned)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow_uri_state._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_model(
    store: Store,
    run_id: str,
    params: Params,
    model_dir: Path,
    data_dir: Path | None,
    cascade_tau: float | None = None,
) -> None:
    """Log the served model through MLflow's fluent API (the only way `log_model` links a
    run) and tag its URI. A model that cannot be exported costs a warning and a
    `dnc.model_error` tag, not the evaluation already logged."""
    try:
        name, fmt = ("model", "pt2") if cascade_tau is None else ("cascade", "pickle")
        if cascade_tau is None:
            classifier, info = load_classifier(params, model_dir, data_dir)
        else:  # the cascade at the tau the validation set picked for the budget
            classifier, info = load_cascade_classifier(params, model_dir, data_dir, cascade_tau)
        with _fluent_tracking_uri(store.uri), mlflow.start_run(run_id=run_id, nested=True):
            # nested: an Optuna study's parent run may be active in this process.
            example = input_example(info)
            model = log_classifier(classifier, example, name, fmt)
    except Exception as err:
        reason = redact(f"{type(err).__name__}: {err}")[:4000]
        warnings.warn(f"tracking: model not logged to run {run_id}: {reason}", stacklevel=2)
        store.log(run_id, tags={f"{schema.TAG}model_error": reason})
        return
    store.log(run_id, tags={f"{schema.TAG}{name}_uri": model.model_uri})
