"""Strict, typed configuration: `params.yaml` sections map to frozen pydantic models.

Every key is required (params.yaml is the single place defaults live), unknown keys are
rejected, and every error names the dotted key, so a typo fails before any data is read.
The dotted names (`split.factor`, `train.lr`) are the one key namespace shared by DVC
(`dvc exp run -S`), Prefect parameters, Optuna parameter names and MLflow params.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A params file or override is invalid; the message names the dotted key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DataConfig(_Section):
    dataset: str = Field(description="registry name: fashion_mnist, digits, cifar10, ...")
    # null = the dataset's default root (e.g. /usr/share/datasets/fashion-mnist).
    root: str | None
    download: bool  # only torchvision datasets, only where the internet is reachable
    val_size: int = Field(ge=0, description="training images held out to select the best epoch")
    train_size: int | None = Field(ge=1, description="cap on training images (null = all)")
    test_size: int | None = Field(ge=1, description="cap on test images (null = all)")
    # imagefolder only: images are resized to this side at prepare time (null = 224).
    image_size: int | None = Field(ge=8)
    augment: Literal["none", "standard"]
    random_erasing: float = Field(ge=0.0, le=1.0)  # cutout-style erasing probability
    num_workers: int = Field(ge=0)


class ModelConfig(_Section):
    name: str = Field(description="registered variant, e.g. small_cnn, wide_resnet28_10")
    # The family's width argument before division (WRN widen factor, ResNet base width,
    # ResNeXt cardinality, CNN channels); null = the variant's own.
    width: float | None = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)  # undivided head dropout; divided per family


class SplitConfig(_Section):
    factor: int = Field(ge=1, le=64, description="number of members S")
    ensemble: Literal["logits", "softmax", "max"]
    # Weight decay division: none (reference default), exp (wd*exp(1/S-1)), linear (wd/S).
    divide_weight_decay: Literal["none", "exp", "linear"]
    divide_dropout: bool
    execution: Literal["loop", "fused"]
    # Under torchrun: loop = data-parallel (every rank all members, a shard of each batch);
    # members = rank r trains members r, r+W, ... on the whole batch (dnc/train/distributed.py).
    placement: Literal["loop", "members"]


class TrainConfig(_Section):
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
    mixup_alpha: float = Field(ge=0)  # 0 disables mixup; drawn once per batch, shared
    label_smoothing: float = Field(ge=0, lt=1)
    amp: bool  # CUDA only; ignored on CPU
    channels_last: bool  # weights and inputs in NHWC, on any device
    device: str  # auto, cpu, cuda, cuda:1
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


class EvalConfig(_Section):
    batch_size: int = Field(ge=1)
    latency_batch_sizes: list[int] = Field(min_length=1)
    latency_repeats: int = Field(ge=1)


DEPTH_RULE = re.compile(r"^first:(\d+)$")


def _block_indices(value: Any, what: str) -> list[int]:
    """Non-negative, distinct block indices, sorted (blocks run in network order anyway)."""
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        raise ValueError(f"expected {what}")
    if len(set(value)) != len(value):
        raise ValueError(f"block indices repeat: {value}")
    return sorted(value)


def _depth_spec(value: Any) -> list[int] | str:
    # Validated per dict value, so an error names `cooperative.depths.<name>`.
    if isinstance(value, str):
        if not DEPTH_RULE.match(value):
            raise ValueError(f"expected kept block indices or 'first:K', got {value!r}")
        return value
    return _block_indices(value, "kept block indices (a list) or 'first:K'")


def _attach_spec(value: Any) -> list[int] | str:
    if isinstance(value, str):
        if value not in ("all", "auto"):
            raise ValueError(f"expected 'all', 'auto' or block indices, got {value!r}")
        return value
    return _block_indices(value, "'all', 'auto' or a list of block indices")


DepthSpec = Annotated[list[int] | str, BeforeValidator(_depth_spec)]
AttachSpec = Annotated[list[int] | str, BeforeValidator(_attach_spec)]


class CooperativeConfig(_Section):
    """Cooperative learning for cost-adaptive inference (arXiv 2312.08532)."""

    # Depth name -> the Teammate blocks it keeps (indices into `model.blocks`), or
    # "first:K" = every shape-changing block plus the first K skippable blocks of each stage.
    # The full Teammate is always there too, as depth "full".
    depths: dict[str, DepthSpec] = Field(min_length=1)
    leader_width: float = Field(gt=0)  # Leader = model.width x this, trained beside the team
    temperature: float = Field(gt=0)  # of every distillation term
    sub_ce_weight: float = Field(ge=0)  # label CE on each sub-network (0: KD only)
    sub_weight: float = Field(ge=0)  # KD Teammate -> its own sub-networks
    peer_weight: float = Field(ge=0)  # KD sub-networks <-> each other, across the two Teammates
    leader_weight: float = Field(ge=0)  # KD Leader -> the two full Teammates
    # Every KD weight ramps up linearly over this many epochs: untrained peers distilling
    # into each other from step 0 collapsed the Teammates to constant outputs.
    kd_warmup_epochs: float = Field(ge=0)
    # same_depth: A's depth d <-> B's depth d (full <-> full included); all: every A network
    # <-> every B network (each network's peer pulls are averaged).
    peers: Literal["same_depth", "all"]
    # shared: one augmented view for all three nets; per_net: Teammate A, B and the Leader
    # each get their own view (a Teammate's sub-networks always see their Teammate's view).
    views: Literal["shared", "per_net"]
    # per_depth: each sub-network keeps its own BatchNorm running statistics (weights stay
    # shared); shared: one set of statistics averaged over all depths.
    bn_stats: Literal["per_depth", "shared"]
    # Deploy the deepest sub-network whose MACs fit; null = no budget. Checked at stage start.
    budget_macs: int | None = Field(ge=1)

    @field_validator("depths")
    @classmethod
    def _check_names(cls, depths: dict[str, Any]) -> dict[str, Any]:
        for name in depths:
            if name == "full" or not name.isidentifier():
                raise ValueError(f"depth name {name!r}: use an identifier other than 'full'")
        return depths


class AuxiliaryConfig(_Section):
    """Auxiliary over-parameterisation of a compact net (arXiv 1909.02214)."""

    width_factor: float = Field(ge=1)  # auxiliary path width = member width x this
    # Compact blocks whose outputs feed the auxiliary path: all, a list of block indices, or
    # auto = every block behind learned hierarchical (stage x block) gates.
    attach: AttachSpec
    aux_weight: float = Field(ge=0)  # label CE on the auxiliary head
    kd_weight: float = Field(ge=0)  # KD auxiliary -> compact
    kd_warmup_epochs: float = Field(ge=0)  # kd_weight ramps up linearly over these epochs
    temperature: float = Field(gt=0)
    gate_penalty: float = Field(ge=0)  # auto only: cost on the mean gate (sparser structure)


class Params(_Section):
    method: Literal["splitnet", "cooperative", "auxiliary"]
    seed: int = Field(ge=0)
    data: DataConfig
    model: ModelConfig
    split: SplitConfig
    train: TrainConfig
    eval: EvalConfig
    cooperative: CooperativeConfig
    auxiliary: AuxiliaryConfig

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (`split.factor` -> 4), the namespace MLflow and Optuna use."""
        return flatten(self.model_dump(mode="json"))

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """A copy with dotted-key overrides applied and validated."""
        return params_from_dict(apply_overrides(self.model_dump(mode="json"), overrides))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted.key: leaf}; lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copy); a path through a non-section is an error."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{dotted}: unknown key (no section {part!r})")
            node = node[part]
        node[parts[-1]] = value
    return tree


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """Parse CLI `--set key=value` items; values are YAML (`3`, `0.1`, `null`, `[1, 2]`)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def params_from_dict(tree: Any) -> Params:
    """Validate a nested dict; the first error names its dotted key."""
    if not isinstance(tree, dict):
        raise ConfigError("params: expected a mapping of sections")
    try:
        return Params.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        key = _dotted(first["loc"]) or "params"
        kind = first["type"]
        message = {
            "missing": "missing key",
            "extra_forbidden": "unknown key",
        }.get(kind, first["msg"])
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{key}: {message}{more}") from None


def read_tree(path: str | Path) -> dict[str, Any]:
    """A params file as a nested dict, all sections; a missing or broken file names itself."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return tree


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read, override and validate a params file."""
    tree = read_tree(path)
    # Sections other stages own (e.g. `search`, `compare`) are not training params.
    tree = {k: v for k, v in tree.items() if k not in FOREIGN_SECTIONS}
    return params_from_dict(apply_overrides(tree, overrides or {}))


# Top-level params.yaml sections read by pipelines (DVC matrix, Optuna), not by training.
FOREIGN_SECTIONS = frozenset({"search", "compare", "tracking"})
