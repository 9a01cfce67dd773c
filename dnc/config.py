"""Strict, typed configuration: `params.yaml` sections map to frozen pydantic models.

Every key of the core sections is required (params.yaml is the single place their defaults
live); a method's own section is optional (its defaults sit beside the method, in
`dnc/methods/<name>.py`) and validated only when that method is selected. Unknown keys are
rejected, and every error names the dotted key, so a typo fails before any data is read.
The dotted names (`split.factor`, `train.lr`) are the one key namespace shared by DVC
(`dvc exp run -S`), Prefect parameters, Optuna parameter names and MLflow params.
This module holds the section schemas; reading a params file, `--set` overrides and the
validation that names the dotted key are in `dnc.config_loading`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigError(ValueError):
    """A params file or override is invalid; the message names the dotted key."""


class Section(BaseModel):
    """A params section: unknown keys fail, values are frozen."""

    # strict: `true` is not the int 1 (split.factor=true once meant S = 1) and "3" is not 3;
    # allow_inf_nan=False: train.lr=.inf would only surface as a diverged loss.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataConfig(Section):
    dataset: str = Field(description="registry name: fashion_mnist, digits, cifar10, ...")
    # Seeds the validation/test split only (a prepare dependency); `seed` seeds training, so
    # runs over several training seeds share one prepared split.
    split_seed: int = Field(ge=0)
    # null = the dataset's default root (e.g. /usr/share/datasets/fashion-mnist).
    root: str | None
    download: bool  # only torchvision datasets, only where the internet is reachable
    val_size: int = Field(ge=0, description="training images held out to select the best epoch")
    train_size: int | None = Field(ge=1, description="cap on training images (null = all)")
    test_size: int | None = Field(ge=1, description="cap on test images (null = all)")
    # imagefolder only: images are resized to this side at prepare time (null = 224).
    image_size: int | None = Field(ge=8)
    augment: Literal["none", "standard"]
    # AutoAugment (CIFAR-10 policy) on every member's own view, after crop and flip.
    autoaugment: bool
    random_erasing: float = Field(ge=0.0, le=1.0)  # cutout-style erasing probability
    # The erased box: [lo, hi] fraction of the area and [lo, hi] aspect ratio.
    erasing_scale: list[float] = Field(min_length=2, max_length=2)
    erasing_ratio: list[float] = Field(min_length=2, max_length=2)
    num_workers: int = Field(ge=0)

    @model_validator(mode="after")
    def _check_erasing(self) -> DataConfig:
        lo, hi = self.erasing_scale
        if not 0 < lo <= hi < 1:
            raise ValueError("erasing_scale must be [lo, hi] with 0 < lo <= hi < 1")
        lo, hi = self.erasing_ratio
        if not 0 < lo <= hi:
            raise ValueError("erasing_ratio must be [lo, hi] with 0 < lo <= hi")
        return self


class ModelConfig(Section):
    name: str = Field(description="registered variant, e.g. small_cnn, wide_resnet28_10")
    # The family's width argument before division (WRN widen factor, ResNet base width,
    # ResNeXt cardinality, CNN channels); null = the variant's own.
    width: float | None = Field(gt=0)
    # Undivided head dropout, divided per family; null = the variant's own (WRN-40-10
    # reference: 0.1, PyramidNet: ShakeDrop 0.5, others 0).
    dropout: float | None = Field(ge=0.0, lt=1.0)
    # preact: dnc's own models; reference: the reference code's twin (`<name>_ref`).
    style: Literal["preact", "reference"]

    @property
    def variant(self) -> str:
        """The registered variant built: `name` in `style` (ValueError if it has none)."""
        from dnc.models import styled_name  # lazily: the model registry imports torch

        return styled_name(self.name, self.style)


class SplitConfig(Section):
    factor: int = Field(ge=1, le=64, description="number of members S")
    ensemble: Literal["logits", "softmax", "max"]
    # Weight decay division: none (reference default), exp (wd*exp(1/S-1)), linear (wd/S).
    divide_weight_decay: Literal["none", "exp", "linear"]
    divide_dropout: bool
    execution: Literal["loop", "fused"]
    # Under torchrun: loop = data-parallel (every rank all members, a shard of each batch);
    # members = rank r trains members r, r+W, ... on the whole batch (dnc/train/distributed.py).
    placement: Literal["loop", "members"]
    # per_member: each member its own augmented view (the paper); shared: one view for all
    # (the ablation that isolates the views from the networks). Default keeps old files valid.
    views: Literal["per_member", "shared"] = "per_member"


# Device names torch accepts here; whether the device exists is checked by `check_device`.
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


class TrainConfig(Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)  # linear slow start from warmup_lr to lr
    warmup_lr: float = Field(ge=0)
    momentum: float = Field(ge=0, lt=1)
    nesterov: bool
    weight_decay: float = Field(ge=0)
    cot_weight: float = Field(ge=0)  # weight of the Jensen-Shannon co-training term
    cot_warmup_epochs: float = Field(ge=0)
    cot_warmup_per_epoch: bool  # the warm-up steps once per epoch (reference), not per step
    # Parameters spared weight decay: none | bias (reference) | norm_bias (biases + norms).
    weight_decay_exempt: Literal["none", "bias", "norm_bias"]
    # How the cosine meets min_lr: blend (rescaled to end there) | clamp (max(cos, min_lr)).
    lr_floor: Literal["blend", "clamp"]
    mixup_alpha: float = Field(ge=0)  # 0 disables mixup; drawn once per batch, shared
    label_smoothing: float = Field(ge=0, lt=1)
    amp: bool  # CUDA only; ignored on CPU
    channels_last: bool  # weights and inputs in NHWC, on any device
    device: str = Field(pattern=DEVICE_PATTERN)  # auto, cpu, cuda, cuda:1, mps
    # Data-parallel only: BatchNorm statistics over the global batch (torch: CUDA only).
    sync_bn: bool
    progress: bool

    @model_validator(mode="after")
    def _check_lr(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError("min_lr must not exceed lr")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class EvalConfig(Section):
    batch_size: int = Field(ge=1)
    latency_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    latency_repeats: int = Field(ge=1)
    # Cascade over the members (dnc/evaluation/cascade.py). Defaulted, so params files
    # written before the cascade still load: maxprob gate, no budget.
    cascade_gate: Literal["maxprob", "margin", "entropy"] = "maxprob"
    cascade_budget_macs: int | None = Field(default=None, ge=1)  # tau picked on val


def block_indices(value: Any, what: str) -> list[int]:
    """Non-negative, distinct block indices, sorted (blocks run in network order anyway)."""
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        raise ValueError(f"expected {what}")
    if len(set(value)) != len(value):
        raise ValueError(f"block indices repeat: {value}")
    return sorted(value)


class Params(Section):
    """Every section training reads; the selected method's own section (if it has one) is
    an extra attribute named like the method, validated by `params_from_dict`
    (`dnc.config_loading`)."""

    # Extra attributes are only ever the selected method's validated section:
    # `params_from_dict` rejects every other unknown key first.
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)

    method: str = Field(description="registered method: python -m dnc methods")
    seed: int = Field(ge=0, description="training seed: init, shuffling, views, dropout")
    data: DataConfig
    model: ModelConfig
    split: SplitConfig
    train: TrainConfig
    eval: EvalConfig

    @property
    def method_config(self) -> Any:
        """The selected method's validated section (None when the method has none)."""
        return (self.__pydantic_extra__ or {}).get(self.method)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (`split.factor` -> 4), the namespace MLflow and Optuna use."""
        from dnc.config_loading import flatten  # lazily: that module validates into Params

        return flatten(self.model_dump(mode="json"))

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """A copy with dotted-key overrides applied and validated."""
        from dnc.config_loading import apply_overrides, params_from_dict

        return params_from_dict(apply_overrides(self.model_dump(mode="json"), overrides))


# Keys a resumed run may change (dnc/train/checkpoint.py `check_resume`): they do not change
# what the finished run computes, only how long it runs, where, or how it reports. Every
# other key must match the interrupted run's last.pt (or `dnc train --restart`). A prefix
# ending in "." covers its whole section.
RESUME_SAFE_KEYS = (
    "train.epochs",  # extends (or shortens) a run: the schedule is per-epoch (see docs)
    "train.progress",
    "train.device",
    "data.num_workers",  # loader workers re-seed per (seed, epoch): same batches
    "data.download",
    "eval.",  # read only by evaluate
)


def resume_safe(key: str) -> bool:
    """Whether a resumed run may change `key` (see RESUME_SAFE_KEYS)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_SAFE_KEYS)
