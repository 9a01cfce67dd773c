"""Fused execution: the S members of a SplitNet run as one packed network.

Packing (the Packed-Ensembles trick): every layer of the S identically shaped members is
stacked into one layer over S * C channels, member s owning channel block s. A convolution
becomes a grouped convolution with S times the groups, BatchNorm a BatchNorm over S * C
channels (per-channel statistics, so running stats match exactly) and a linear layer a
batched matmul; parameter-free layers (ReLU, pooling, dropout, flatten) and the members'
own block code run unchanged on packed tensors. One forward/backward then issues one
kernel per layer instead of S, with the same arithmetic: the fused model is the loop
model up to float rounding (tests/test_fused.py). docs/performance.md has the measurements
that chose this over `torch.func.vmap`.

Checkpoints always hold the loop layout (`members.<i>.<param>`): `state_dict` unpacks and
`load_state_dict` packs, so a checkpoint written by either execution loads into both.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from dnc.ensemble.packed import PackedLeaf, UnsupportedModuleError, pack_modules
from dnc.ensemble.splitnet import SplitNet
from dnc.train.losses import EnsembleHow, ensemble_log_probs

__all__ = ["FusedSplitNet", "UnsupportedModuleError", "execution_model", "fuse"]


class FusedSplitNet(nn.Module):
    """S members packed into one network; the same interface as `SplitNet` bar `members`.

    `forward(x, k)` returns logits (k, B, C) of the first k members, as `SplitNet` does;
    use `to_splitnet()` for the S ordinary member modules.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        ensemble: EnsembleHow = "logits",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("FusedSplitNet needs at least one member")
        self.split = len(members)
        self.ensemble = ensemble
        # Grouped convolutions whose groups have odd channel counts (23, 46, ...) run up to
        # 2x faster in channels-last on CPU (oneDNN); cuDNN prefers it too (see
        # docs/performance.md), so packed activations and weights are channels-last.
        self.channels_last = channels_last
        self.packed = pack_modules(list(members))
        if channels_last:
            self.packed.to(memory_format=torch.channels_last)
        self._leaves = [m for m in self.packed.modules() if isinstance(m, PackedLeaf)]
        # A weightless (meta-device) copy of one member: the blueprint `to_splitnet` fills.
        self._blueprint = (_meta_copy(members[0]),)  # a tuple, so not a registered submodule
        self.register_state_dict_post_hook(_unpack_state_hook)
        self.register_load_state_dict_pre_hook(_pack_state_hook)

    @classmethod
    def from_splitnet(
        cls, net: SplitNet, verify: bool = True, channels_last: bool = True
    ) -> FusedSplitNet:
        """Pack `net`'s members (weights copied); `verify` checks equal outputs in eval mode."""
        fused = cls(list(net.members), net.ensemble, channels_last)
        if verify:
            _check_same_outputs(net, fused)
        return fused

    @property
    def split_factor(self) -> int:
        return self.split

    def forward(self, x: Tensor, k: int | None = None) -> Tensor:
        """Logits (k, B, C) of the first k members (default all).

        `x` is one batch (B, C, H, W) shared by every member or one view per member
        (S, B, C, H, W), the co-training input.
        """
        k = k or self.split
        if not 1 <= k <= self.split or (x.dim() == 5 and x.shape[0] < k):
            raise ValueError(f"k must be in 1..{self.split} (and views >= k), got {k}")
        # (k, B, C, H, W): one view per member; a shared batch is expanded without a copy
        views = x[:k] if x.dim() == 5 else x.unsqueeze(0).expand(k, *x.shape)
        batch = views.shape[1]
        packed = views.transpose(0, 1).reshape(batch, -1, *views.shape[3:])  # (B, k*C, H, W)
        if self.channels_last:
            packed = packed.contiguous(memory_format=torch.channels_last)
        out = self.packed(packed) if k == self.split else self._run_prefix(packed, k)
        return out.view(batch, k, -1).transpose(0, 1)  # (k, B, C_out)

    def _run_prefix(self, packed: Tensor, k: int) -> Tensor:
        """The packed net restricted to its first k members: (B, k*C_in, ...) -> (B, k*C_out)."""
        for leaf in self._leaves:
            leaf.active = k
        try:
            return self.packed(packed)  # (B, k*C_out)
        finally:
            for leaf in self._leaves:
                leaf.active = self.split

    def predict(self, x: Tensor, k: int | None = None) -> Tensor:
        """Ensemble log-probabilities (B, C) of the first k members."""
        return ensemble_log_probs(self(x, k), self.ensemble)

    def member_tensors(self, packed: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Packed tensors keyed like `packed.state_dict()` -> loop keys `members.<i>.<name>`.

        Works for anything shaped like the parameters, e.g. their gradients.
        """
        out: dict[str, Tensor] = {}
        for path, leaf in self.packed.named_modules():
            if not isinstance(leaf, PackedLeaf):
                continue
            for name in leaf.member_layout:
                key = f"{path}.{name}" if path else name
                if key in packed:
                    for i, part in enumerate(leaf.unpack(name, packed[key])):
                        out[f"members.{i}.{key}"] = part
        # member-major order, as SplitNet.state_dict() lists its keys
        return dict(sorted(out.items(), key=lambda item: int(item[0].split(".")[1])))

    def packed_tensors(self, members: dict[str, Tensor]) -> dict[str, Tensor]:
        """Inverse of `member_tensors`; consumes the member keys it packs from `members`."""
        out: dict[str, Tensor] = {}
        for path, leaf in self.packed.named_modules():
            if not isinstance(leaf, PackedLeaf):
                continue
            for name in leaf.member_layout:
                key = f"{path}.{name}" if path else name
                keys = [f"members.{i}.{key}" for i in range(self.split)]
                if all(k in members for k in keys):
                    out[key] = leaf.pack(name, [members.pop(k) for k in keys])
        return out

    def to_splitnet(self) -> SplitNet:
        """Export: a loop SplitNet of S ordinary members holding copies of these weights."""
        blueprint = self._blueprint[0]
        param = next(self.packed.parameters())
        members = [
            copy.deepcopy(blueprint).to_empty(device=param.device) for _ in range(self.split)
        ]
        net = SplitNet(members, self.ensemble).to(param.dtype)
        net.load_state_dict(self.state_dict())
        return net.train(self.training)


def _unpack_state_hook(
    module: FusedSplitNet, state: dict[str, Tensor], prefix: str, local_metadata: dict
) -> None:
    # state_dict(): replace `<prefix>packed.*` entries by the loop layout `<prefix>members.*`.
    inner = prefix + "packed."
    packed = {k[len(inner) :]: state.pop(k) for k in list(state) if k.startswith(inner)}
    for key, value in module.member_tensors(packed).items():
        state[prefix + key] = value


def _pack_state_hook(
    module: FusedSplitNet,
    state: dict[str, Tensor],
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    # load_state_dict(): pack loop-layout entries; leftovers stay and are reported unexpected.
    outer = prefix + "members."
    members = {k[len(prefix) :]: state.pop(k) for k in list(state) if k.startswith(outer)}
    for key, value in module.packed_tensors(members).items():
        state[prefix + "packed." + key] = value
    for key, value in members.items():
        state[prefix + key] = value


def _meta_copy(module: nn.Module) -> nn.Module:
    """Deep copy of `module` whose parameters and buffers live on the meta device."""
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


@torch.no_grad()
def _check_same_outputs(net: SplitNet, fused: FusedSplitNet) -> None:
    """Raise UnsupportedModuleError when packing changed what the members compute.

    Packing assumes the members' forward code is channel-agnostic (no channel shuffles,
    no concatenation along channels); this catches a family that is not.
    """
    input_size = getattr(net.members[0], "input_size", None)
    param = next(net.parameters())
    if input_size is None or param.device.type == "meta":
        return
    x = torch.randn(2, *input_size, device=param.device, dtype=param.dtype)
    modes = net.training, fused.training
    net.eval(), fused.eval()
    try:
        want, got = net(x), fused(x)
    finally:
        net.train(modes[0]), fused.train(modes[1])
    scale = want.abs().max().clamp_min(1.0)
    if not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(scale)):
        raise UnsupportedModuleError("packed outputs differ from the members' outputs")


def fuse(net: SplitNet, verify: bool = True) -> FusedSplitNet:
    """`FusedSplitNet.from_splitnet(net, verify)`."""
    return FusedSplitNet.from_splitnet(net, verify)


def execution_model(net: SplitNet, execution: str) -> SplitNet | FusedSplitNet:
    """The module that trains: `net` for `loop` (or S = 1), its packed form for `fused`.

    A family that cannot be packed falls back to the loop with a warning.
    """
    if execution == "loop" or net.split_factor == 1:
        return net
    if execution != "fused":
        raise ValueError(f"split.execution: unknown execution {execution!r}")
    try:
        return fuse(net)
    except UnsupportedModuleError as err:
        warnings.warn(f"split.execution=fused unsupported ({err}); running the loop", stacklevel=2)
        return net
