"""Training on several processes under torchrun: data-parallel and member-parallel.

`torchrun --nproc-per-node N -m dnc train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; then
`setup_parallel` joins the process group (nccl on CUDA, gloo on CPU) and returns one of:

- `DataParallel` (`split.placement: loop`): every rank holds every member and takes a
  contiguous 1/W shard of each global batch, cut *after* the batch's views were drawn from
  their seeded generators, so the shards' union is the single-process batch. Gradients are
  averaged by one explicit all-reduce of all gradients flattened, not by DDP: the engine
  calls `Task.training_step`, not a module's forward, which DDP needs to hook, and wrapping
  `task.model` would rename every checkpoint key.
- `MemberParallel` (`split.placement: members`): rank r owns members r, r+W, ... and sees
  the whole batch. Each forward all-gathers the members' logits; a rank's own members keep
  their autograd graph and the others' arrive as constants, so each rank computes the very
  single-process loss and its backward reaches exactly its own members' weights with the
  single-process gradient (dL/dz_i needs the other members' values, not their graphs). That
  is why the gather is the plain collective, not `torch.distributed.nn.functional.all_gather`:
  with the loss replicated on every rank its backward would sum W copies of each gradient.

Rank 0 alone writes checkpoints, metrics and history; `sync_state` first makes every rank's
model and optimizer state the full single-process layout, so a checkpoint resumes with any
placement and world size. docs/distributed.md says what is exact and what is not.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dnc.config import ConfigError, Params
from dnc.ensemble.splitnet import SplitNet
from dnc.train.engine import DivergenceError


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's workers."""

    rank: int
    size: int
    local_rank: int


def world_from_env(env: Mapping[str, str] = os.environ) -> World | None:
    """The torchrun world from RANK, WORLD_SIZE and LOCAL_RANK; None outside torchrun."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


def check_parallel(params: Params, world: World) -> None:
    """Placement rules that need the world size; fail before any data is read."""
    t, s = params.train, params.split
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device: {t.device!r} under torchrun; use auto, cuda or cpu")
    if s.placement == "members" and world.size > s.factor:
        raise ConfigError(
            f"split.placement: members needs WORLD_SIZE <= split.factor "
            f"({world.size} > {s.factor}); members x data shards is not implemented"
        )
    if s.placement == "loop" and t.batch_size % world.size:
        raise ConfigError(f"train.batch_size: {t.batch_size} is not divisible by {world.size}")
    if t.sync_bn and s.placement == "loop" and device_type(t.device) != "cuda":
        raise ConfigError("train.sync_bn: torch's SyncBatchNorm runs on CUDA only")


def device_type(spec: str) -> str:
    """cpu or cuda: the kind of device `train.device` resolves to."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(spec).type


def setup_parallel(params: Params) -> DataParallel | MemberParallel | None:
    """Join torchrun's process group and return the placement; None outside torchrun."""
    # Checked with or without torchrun, so a config fails the same way on one process.
    if params.split.placement == "members" and (
        params.method != "splitnet" or params.split.execution != "loop"
    ):
        raise ConfigError("split.placement: members needs method splitnet, execution loop")
    world = world_from_env()
    if world is None or world.size == 1:
        return None
    check_parallel(params, world)
    cuda = device_type(params.train.device) == "cuda"
    join_world(world, cuda)
    if params.split.placement == "members":
        return MemberParallel(world)
    return DataParallel(world, params.train.sync_bn)


def join_world(world: World, cuda: bool) -> None:
    """Join torchrun's process group once per process (a search joins it before training):
    gloo for CPU tensors, plus nccl for CUDA ones."""
    if cuda:  # "cuda" then means this rank's GPU everywhere in the engine
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _Parallel:
    """What the engine asks of a placement (one object per training process)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.is_main = world.rank == 0

    def place(self, model: nn.Module) -> nn.Module:
        """The model this placement trains (same state_dict keys as `model`)."""
        return model

    def shard(self, loaders: Any) -> Any:
        """The loaders this rank iterates."""
        return loaders

    def check_finite(self, loss: Tensor, where: str) -> None:
        """Raise DivergenceError on every rank when any rank's loss is NaN/inf."""
        flags = [torch.zeros(1, device=loss.device) for _ in range(self.world.size)]
        dist.all_gather(flags, torch.isfinite(loss.detach()).float().reshape(1))
        bad = [r for r, f in enumerate(flags) if f.item() == 0]
        if bad:
            ranks = ", ".join(map(str, bad))
            raise DivergenceError(f"loss is not finite on rank {ranks} at {where}")

    def sync_grads(self, task: nn.Module) -> None:
        """Make every rank's gradients the single-process gradients."""

    def reduce_sums(self, sums: dict[str, Tensor], seen: int) -> tuple[dict[str, Tensor], int]:
        """Epoch sums of the logged loss parts over every rank's images."""
        return sums, seen

    def sync_state(self, task: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Make every rank's weights, buffers and optimizer state the full ordinary layout."""


class DataParallel(_Parallel):
    """Each rank a contiguous shard of every global batch; gradients averaged."""

    def __init__(self, world: World, sync_bn: bool) -> None:
        super().__init__(world)
        self.sync_bn = sync_bn

    def place(self, model: nn.Module) -> nn.Module:
        # SyncBatchNorm keeps BatchNorm's parameter and buffer names: checkpoints unchanged.
        return nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.sync_bn else model

    def shard(self, loaders: Any) -> ShardedLoaders:
        return ShardedLoaders(loaders, self.world.rank, self.world.size)

    def sync_grads(self, task: nn.Module) -> None:
        params = [p for p in task.parameters() if p.requires_grad]
        used = [p.grad is not None for p in params]
        for p in params:  # an unused parameter still takes part, so every rank's buffer matches
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flags = torch.tensor(used, dtype=params[0].dtype, device=params[0].device)
        flat = torch.cat([*(p.grad.reshape(-1) for p in params), flags])  # one all-reduce
        dist.all_reduce(flat)
        flat /= self.world.size  # mean of shard means = the global mean (equal shards)
        offset = 0
        for p, anywhere in zip(params, flat[-len(params) :].tolist(), strict=True):
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
            if anywhere == 0:  # unused on every rank: no gradient, as in one process (SGD skips)
                p.grad = None

    def reduce_sums(self, sums: dict[str, Tensor], seen: int) -> tuple[dict[str, Tensor], int]:
        keys = sorted(sums)
        device = sums[keys[0]].device if keys else "cpu"
        flat = torch.stack([torch.as_tensor(sums[k], device=device).float() for k in keys])
        flat = torch.cat([flat.reshape(-1), torch.tensor([float(seen)], device=device)])
        dist.all_reduce(flat)
        return dict(zip(keys, flat[:-1], strict=True)), int(flat[-1].item())

    @torch.no_grad()
    def sync_state(self, task: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # Weights and optimizer state agree on every rank already (equal averaged gradients);
        # per-rank BatchNorm running statistics do not: use their mean, as one process would
        # have seen every shard. SyncBatchNorm's statistics are equal on every rank already.
        if self.sync_bn:
            return
        for buf in task.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.world.size


class _ShardedEpoch:
    """One epoch's batches, each cut to this rank's contiguous shard."""

    def __init__(self, batches: Any, rank: int, size: int) -> None:
        self.batches, self.rank, self.size = batches, rank, size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for views, targets in self.batches:  # views (V, B, C, H, W), targets (B,)
            idx = torch.tensor_split(torch.arange(targets.shape[0]), self.size)[self.rank]
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            yield views[:, lo:hi].contiguous(), targets[lo:hi]


class ShardedLoaders:
    """Train batches sharded by rank; validation whole on every rank (models are equal)."""

    def __init__(self, inner: Any, rank: int, size: int) -> None:
        self.inner, self.rank, self.size = inner, rank, size
        self.val = inner.val

    def train_epoch(self, epoch: int) -> _ShardedEpoch:
        """Epoch `epoch`'s batches, this rank's shard of each."""
        return _ShardedEpoch(self.inner.train_epoch(epoch), self.rank, self.size)


def owned_members(rank: int, size: int, split: int) -> list[int]:
    """Members rank `rank` trains: rank, rank + size, ... below `split`."""
    return list(range(rank, split, size))


class MemberParallelSplitNet(SplitNet):
    """A SplitNet whose forward runs this rank's members and all-gathers the rest."""

    def __init__(self, net: SplitNet, world: World) -> None:
        super().__init__(list(net.members), net.ensemble)
        self.world = world  # a plain attribute: state_dict keys stay `members.<i>.*`

    def forward(self, x: Tensor, k: int | None = None) -> Tensor:
        split = len(self.members)
        if k is not None and k < split:  # prefixes (evaluation only): every member here
            return super().forward(x, k)
        rank, size = self.world.rank, self.world.size
        own = owned_members(rank, size, split)
        local = [self.members[i](x[i] if x.dim() == 5 else x) for i in own]  # each (B, C)
        slots = -(-split // size)  # every rank sends the same shape: pad the short ones
        pad = [torch.zeros_like(local[0])] * (slots - len(local))
        mine = torch.stack(local + pad).detach().contiguous()  # (slots, B, C)
        gathered = [torch.empty_like(mine) for _ in range(size)]
        dist.all_gather(gathered, mine)
        out = [gathered[i % size][i // size] for i in range(split)]
        for j, i in enumerate(own):  # own members: the live tensor, gradients flow back
            out[i] = local[j]
        return torch.stack(out)  # (S, B, C)


class MemberParallel(_Parallel):
    """Rank r trains members r, r+W, ... on the whole batch."""

    def place(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, SplitNet):
            raise ConfigError("split.placement: members needs a SplitNet (method splitnet)")
        return MemberParallelSplitNet(model, self.world)

    def check_finite(self, loss: Tensor, where: str) -> None:
        # The loss is computed from the same gathered logits on every rank: no collective.
        if not torch.isfinite(loss):
            raise DivergenceError(f"loss is {loss.item()} at {where}")

    @torch.no_grad()
    def sync_state(self, task: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # Non-owned members are stale here: take weights, buffers and momentum from owners.
        groups = optimizer.param_groups
        momentum = {id(p): g.get("momentum", 0) for g in groups for p in g["params"]}
        for i, member in enumerate(task.model.members):
            owner = i % self.world.size
            for tensor in member.state_dict().values():
                _broadcast(tensor, owner)
            for p in member.parameters():
                if not momentum.get(id(p)):
                    continue
                state = optimizer.state[p]
                if state.get("momentum_buffer") is None:  # never stepped here; zeros = none
                    state["momentum_buffer"] = torch.zeros_like(p)
                _broadcast(state["momentum_buffer"], owner)


def _broadcast(tensor: Tensor, src: int) -> None:
    """In-place broadcast; collectives need dense tensors (channels-last weights are not)."""
    if tensor.is_contiguous():
        dist.broadcast(tensor, src=src)
        return
    dense = tensor.contiguous()
    dist.broadcast(dense, src=src)
    tensor.copy_(dense)
