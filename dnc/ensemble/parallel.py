"""Inference with the members spread over several devices, running concurrently.

`ParallelSplitNet` gives each device a contiguous group of members (fused into one packed
network when `execution` is `fused`), runs the groups in one thread each and gathers the
logits on the first device. Torch kernels release the GIL, so groups on different GPUs (or
CPU groups) overlap, as the paper runs its members at inference. The same code path runs
on a CPU device list such as `cpu,cpu` (tests/test_fused.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from dnc.ensemble.fused import execution_model
from dnc.ensemble.splitnet import SplitNet
from dnc.train.losses import ensemble_log_probs


def parse_devices(devices: str | Sequence[str]) -> list[torch.device]:
    """`"cuda:0,cuda:1"` or a list of names -> devices; an empty list is an error."""
    names = devices.split(",") if isinstance(devices, str) else list(devices)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("devices: give at least one device, e.g. cuda:0,cuda:1 or cpu")
    return [torch.device(n) for n in names]


def member_groups(split: int, groups: int) -> list[range]:
    """Contiguous member ranges, sizes differing by at most one (the first ones larger)."""
    groups = min(groups, split)
    size, extra = divmod(split, groups)
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + size + (g < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


class ParallelSplitNet(nn.Module):
    """A SplitNet's members placed over `devices`; the same interface as `SplitNet`.

    Placement is fixed when built: `to()` is a no-op, so evaluation code that moves its
    model keeps this placement. `members` are the source SplitNet's (for cost counting).
    """

    def __init__(self, net: SplitNet, devices: Sequence[torch.device], execution: str) -> None:
        super().__init__()
        self.devices = list(devices)
        self.ranges = member_groups(net.split_factor, len(self.devices))
        self.devices = self.devices[: len(self.ranges)]
        self.ensemble = net.ensemble
        self.split = net.split_factor
        self._source = (net,)  # a tuple, so the source is not a registered submodule
        self.groups = nn.ModuleList(
            execution_model(SplitNet([copy.deepcopy(net.members[i]) for i in r]), execution)
            .to(device)
            .train(net.training)
            for r, device in zip(self.ranges, self.devices, strict=True)
        )
        self._pool: ThreadPoolExecutor | None = None

    @property
    def members(self) -> nn.ModuleList:
        return self._source[0].members

    @property
    def split_factor(self) -> int:
        return self.split

    def to(self, *args: object, **kwargs: object) -> ParallelSplitNet:
        """No-op: the placement over `devices` is fixed (see the class docstring)."""
        return self

    def forward(self, x: Tensor, k: int | None = None) -> Tensor:
        """Logits (k, B, C) of the first k members, gathered on the first device.

        `x`: one batch (B, C, H, W) for every member or one view per member (S, B, C, H, W).
        """
        k = k or self.split
        if not 1 <= k <= self.split:
            raise ValueError(f"k must be in 1..{self.split}, got {k}")
        jobs = [(g, r, min(k, r.stop) - r.start) for g, r in enumerate(self.ranges) if r.start < k]
        grad = torch.is_grad_enabled()  # grad mode is thread-local: carry it to the workers
        futures = []
        if len(jobs) > 1:
            if self._pool is None:
                workers = len(self.ranges) - 1
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dnc-member")
            futures = [self._pool.submit(self._run, *job, x, grad) for job in jobs[1:]]
        # The calling thread runs the first group while the pool runs the others.
        outs = [self._run(*jobs[0], x, grad)] + [f.result() for f in futures]
        return torch.cat(outs)  # (k, B, C)

    def _run(self, g: int, members: range, k: int, x: Tensor, grad: bool) -> Tensor:
        device = self.devices[g]
        if x.dim() == 5:
            x = x[members.start : members.start + k]  # this group's views
        with torch.set_grad_enabled(grad):
            out = self.groups[g](x.to(device, non_blocking=True), k)
        return out.to(self.devices[0])

    def predict(self, x: Tensor, k: int | None = None) -> Tensor:
        """Ensemble log-probabilities (B, C) of the first k members."""
        return ensemble_log_probs(self(x, k), self.ensemble)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None  # threads cannot be copied or pickled
        return state


def inference_model(
    net: SplitNet, devices: Sequence[str] | None, execution: str, device: torch.device
) -> SplitNet | ParallelSplitNet:
    """The model evaluation runs: the members placed on `devices`, fused per device when
    `execution` is fused; with no device list, `net` itself (loop) or all members fused on
    `device`."""
    if not devices and execution == "loop":
        return net
    return ParallelSplitNet(net, parse_devices(devices or [str(device)]), execution)
