"""Depth sub-networks: a backbone run with some of its blocks skipped, sharing its weights.

Every dnc model is `stem -> blocks -> head`, and a block marked `skippable` maps its input
to an output of the same shape, so leaving it out still gives a valid network. A *depth
plan* says which blocks a sub-network keeps; `SubNetwork` runs them with the backbone's own
modules (the same tensors, no copy), so training a sub-network trains its backbone.
Used by cooperative learning (arXiv 2312.08532), where each Teammate yields several depths.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# "first:K": every shape-changing block plus the first K skippable blocks of each stage.
DEPTH_RULE = re.compile(r"^first:(\d+)$")


FULL = "full"  # the name of the whole network among the depths


def is_skippable(block: nn.Module) -> bool:
    """True when `block` is identity-shaped (its output shape equals its input shape)."""
    return bool(getattr(block, "skippable", False))


def stages(blocks: Sequence[nn.Module]) -> list[list[int]]:
    """Block indices grouped into stages: a shape-changing block opens a new stage."""
    groups: list[list[int]] = []
    for i, block in enumerate(blocks):
        if not groups or not is_skippable(block):
            groups.append([])
        groups[-1].append(i)
    return groups


def stage_of(blocks: Sequence[nn.Module]) -> list[int]:
    """Stage index of every block."""
    out = [0] * len(blocks)
    for s, group in enumerate(stages(blocks)):
        for i in group:
            out[i] = s
    return out


def resolve_plan(blocks: Sequence[nn.Module], spec: list[int] | str, key: str) -> tuple[int, ...]:
    """Kept block indices of one depth spec; ValueError naming `key` when it cannot exist.

    `spec` is a list of kept indices or "first:K": every shape-changing block plus the
    first K skippable blocks of each stage. A plan must keep every shape-changing block.
    """
    n = len(blocks)
    if isinstance(spec, str):
        match = DEPTH_RULE.match(spec)
        if match is None:
            raise ValueError(f"{key}: expected 'first:K', got {spec!r}")
        k = int(match.group(1))
        kept = []
        for group in stages(blocks):
            skippable = [i for i in group if is_skippable(blocks[i])]
            kept += [i for i in group if not is_skippable(blocks[i])] + skippable[:k]
        return tuple(sorted(kept))
    missing = [i for i in spec if i >= n]
    if missing:
        raise ValueError(f"{key}: block {missing[0]} does not exist (blocks are 0..{n - 1})")
    required = [i for i in range(n) if not is_skippable(blocks[i]) and i not in spec]
    if required:
        fixed = [i for i in range(n) if not is_skippable(blocks[i])]
        raise ValueError(
            f"{key}: must keep block {required[0]}, which changes the shape "
            f"(every depth keeps blocks {fixed})"
        )
    return tuple(sorted(spec))


def resolve_plans(
    blocks: Sequence[nn.Module], specs: Mapping[str, list[int] | str], key: str
) -> dict[str, tuple[int, ...]]:
    """All depth plans, shallow to deep, with the full network last as `full`.

    Raises ValueError naming `key.<depth>` for a plan that cannot exist, that keeps every
    block (it would be `full` again) or that repeats another depth.
    """
    full = tuple(range(len(blocks)))
    plans: dict[str, tuple[int, ...]] = {}
    for name, spec in specs.items():
        kept = resolve_plan(blocks, spec, f"{key}.{name}")
        if kept == full:
            raise ValueError(f"{key}.{name}: keeps every block; that is depth 'full' already")
        twin = next((other for other, plan in plans.items() if plan == kept), None)
        if twin is not None:
            raise ValueError(f"{key}.{name}: keeps the same blocks as depth {twin!r}")
        plans[name] = kept
    ordered = dict(sorted(plans.items(), key=lambda item: (len(item[1]), item[1])))
    return {**ordered, FULL: full}


def depth_norms(backbone: nn.Module, kept: Sequence[int]) -> list[nn.Module]:
    """BatchNorm layers whose input changes when blocks are skipped: kept blocks and head."""
    parts = [backbone.blocks[i] for i in kept] + [backbone.head]
    return [m for part in parts for m in part.modules() if isinstance(m, _BatchNorm)]


class DepthStats(nn.Module):
    """Private BatchNorm running statistics of one sub-network; the weights stay shared.

    A block after a skipped one sees differently distributed inputs, so one set of running
    statistics mixed over all depths fits none of them. `active()` swaps these buffers
    into the shared BatchNorm layers for the duration of a sub-network's forward (training
    updates them there; evaluation reads them) and puts the originals back afterwards.
    """

    def __init__(self, norms: Sequence[nn.Module]) -> None:
        super().__init__()
        for j, bn in enumerate(norms):
            self.register_buffer(f"mean_{j}", bn.running_mean.clone())
            self.register_buffer(f"var_{j}", bn.running_var.clone())
            self.register_buffer(f"count_{j}", bn.num_batches_tracked.clone())
        self._norms = list(norms)  # a plain list: not submodules, no duplicate weights

    @contextmanager
    def active(self) -> Iterator[None]:
        """Use these statistics in the shared BatchNorm layers inside the block."""
        keys = ("running_mean", "running_var", "num_batches_tracked")
        saved = [tuple(bn._buffers[k] for k in keys) for bn in self._norms]
        for j, bn in enumerate(self._norms):
            for key, name in zip(keys, ("mean", "var", "count"), strict=True):
                bn._buffers[key] = getattr(self, f"{name}_{j}")
        try:
            yield
        finally:
            for bn, buffers in zip(self._norms, saved, strict=True):
                for key, value in zip(keys, buffers, strict=True):
                    bn._buffers[key] = value


class SubNetwork(nn.Module):
    """`backbone` with only the blocks in `kept`: its own stem, blocks and head (shared),
    with the depth's private BatchNorm statistics when given."""

    def __init__(
        self, backbone: nn.Module, kept: Sequence[int], stats: DepthStats | None = None
    ) -> None:
        super().__init__()
        self.stem = backbone.stem
        self.blocks = nn.Sequential(*(backbone.blocks[i] for i in kept))
        self.head = backbone.head
        self.kept = tuple(kept)
        self.stats = stats

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        with self.stats.active() if self.stats is not None else nullcontext():
            return self.head(self.blocks(self.stem(x)))


def forward_depths(
    backbone: nn.Module,
    x: Tensor,
    plans: Mapping[str, Sequence[int]],
    stats: Mapping[str, DepthStats] | None = None,
) -> list[Tensor]:
    """Logits of every depth plan (in order), running the shared stem once.

    `stats` maps a depth to its private BatchNorm statistics (none: the shared ones).
    """
    stem = backbone.stem(x)
    out = []
    for name, kept in plans.items():
        depth_stats = (stats or {}).get(name)
        with depth_stats.active() if depth_stats is not None else nullcontext():
            h = stem
            for i in kept:
                h = backbone.blocks[i](h)
            out.append(backbone.head(h))
    return out


def select_depth(rows: Sequence[Mapping], budget: float, key: str = "macs") -> Mapping:
    """The deepest row (highest cost) whose `key` cost fits `budget`.

    `rows` are per-depth records with a `key` entry (`macs`, or a latency in ms); raises
    ValueError naming the cheapest depth when nothing fits.
    """
    fitting = [row for row in rows if row[key] <= budget]
    if not fitting:
        cheapest = min(rows, key=lambda row: row[key])
        raise ValueError(
            f"no depth fits a budget of {budget} {key}: the cheapest, "
            f"{cheapest['name']!r}, needs {cheapest[key]}"
        )
    return max(fitting, key=lambda row: row[key])
