"""Confidence-gated cascade over an ensemble's members: cost-adaptive inference.

The k-of-S prefix curve fixes k for every input. A cascade picks k per input: run member
1; stop when the running ensemble (the first k members combined with the ensemble's own
rule) is confident, `confidence >= tau`; otherwise add the next member. Only the
undecided rows of a batch go through the next member, so easy inputs cost one member.

Gates (all in [0, 1], higher = surer, so tau = 0 always stops after member 1 and
tau > 1 never stops early, i.e. is the full ensemble exactly):
- `maxprob` (default): the running ensemble's top probability. It is the quantity the
  prediction is made from, needs no class-count normalisation, and under a calibrated
  ensemble tau reads as the accuracy asked of the rows that stop;
- `margin`: top-1 minus top-2 probability; blind to how the rest of the mass spreads;
- `entropy`: 1 - H(p) / log C; looks at the whole distribution, so it is moved by the
  tail classes that do not change the prediction.

`cascade_outcomes` scores a whole grid of tau from the members' precomputed logits (what
evaluation does: one forward of every member, then exact per-tau exits); `run_cascade`
is the batched forward that deployment and the latency numbers use; both agree exactly.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnc.evaluation.flops import cached_cost
from dnc.train.losses import EnsembleHow, ensemble_log_probs
from dnc.train.scoring import collect_logits

if TYPE_CHECKING:
    from dnc.config import EvalConfig

Gate = Literal["maxprob", "margin", "entropy"]
Combine = EnsembleHow | Literal["last"]
GATES: tuple[str, ...] = ("maxprob", "margin", "entropy")
# tau grid of the evaluation; 1.01 > 1 is the full ensemble, 0.0 is member 1 alone.
TAUS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 1.01)


def confidence(log_probs: Tensor, gate: Gate = "maxprob") -> Tensor:
    """Per-row confidence in [0, 1] of log-probabilities (B, C) under `gate`."""
    p = log_probs.exp()
    if gate == "maxprob":
        return p.max(dim=-1).values
    if gate == "margin":
        top2 = p.topk(2, dim=-1).values  # (B, 2)
        return top2[:, 0] - top2[:, 1]
    if gate == "entropy":
        h = -(p * log_probs).nan_to_num().sum(dim=-1)
        return 1.0 - h / math.log(p.shape[-1])
    raise ValueError(f"eval.cascade_gate: unknown gate {gate!r} (choose from {GATES})")


def combine(logits: Tensor, how: Combine) -> Tensor:
    """Log-probabilities (B, C) of the stages run so far, logits (k, B, C).

    An ensembling rule combines them; `last` answers with the latest stage alone (the
    depths of one cooperative Teammate: the deeper one supersedes the shallower).
    """
    if how == "last":
        return F.log_softmax(logits[-1].float(), dim=-1)
    return ensemble_log_probs(logits, how)


def running_log_probs(logits: Tensor, how: Combine) -> Tensor:
    """Log-probabilities (M, N, C) of the running ensembles of the first 1..M members."""
    return torch.stack([combine(logits[: k + 1], how) for k in range(len(logits))])


def exit_stage(conf: Tensor, tau: float) -> Tensor:
    """Per row, the 0-based stage at which the cascade stops: the first with confidence
    >= tau, else the last. `conf` is (M, N)."""
    m = conf.shape[0]
    sure = conf >= tau
    sure[-1] = True  # the last stage always answers
    return sure.float().argmax(dim=0).clamp(max=m - 1)  # argmax: first True


def cascade_outcomes(
    logits: Tensor,
    labels: Tensor,
    stage_macs: Sequence[int],
    how: Combine,
    taus: Sequence[float] = TAUS,
    gate: Gate = "maxprob",
) -> list[dict]:
    """Per tau: accuracy (%), NLL, mean MACs per image and the share of rows exiting at
    each stage, from the members' logits (M, N, C) in cascade order."""
    log_p = running_log_probs(logits, how)  # (M, N, C)
    conf = torch.stack([confidence(z, gate) for z in log_p])  # (M, N)
    spent = torch.tensor(stage_macs, dtype=torch.float64).cumsum(0)  # MACs to reach stage k
    rows = []
    for tau in taus:
        stop = exit_stage(conf, tau)  # (N,)
        chosen = log_p[stop, torch.arange(labels.numel())]  # (N, C)
        counts = torch.bincount(stop, minlength=len(logits))
        rows.append(
            {
                "tau": float(tau),
                "acc": 100.0 * (chosen.argmax(-1) == labels).float().mean().item(),
                "nll": F.nll_loss(chosen, labels).item(),
                "macs": spent[stop].mean().item(),
                "exit_share": (counts.double() / labels.numel()).tolist(),
            }
        )
    return rows


@torch.no_grad()
def run_cascade(
    stages: Sequence[Callable[[Tensor], Tensor]],
    x: Tensor,
    tau: float,
    how: Combine,
    gate: Gate = "maxprob",
) -> tuple[Tensor, Tensor]:
    """Batched cascade: log-probabilities (B, C) and the 0-based exit stage (B,) of each row.

    Each stage maps images to logits (B, C); only rows still undecided after stage k are
    run through stage k+1, and their running ensemble is recomputed from their logits.
    """
    rows = torch.arange(x.shape[0], device=x.device)  # undecided rows, as indices into x
    seen: list[Tensor] = []  # per stage, logits of the rows still undecided (k, b, C)
    out: Tensor | None = None
    stop = torch.full((x.shape[0],), len(stages) - 1, dtype=torch.long, device=x.device)
    for k, stage in enumerate(stages):
        seen.append(stage(x[rows]).float())
        log_p = combine(torch.stack(seen), how)  # (b, C)
        if out is None:
            out = torch.empty(x.shape[0], log_p.shape[-1], device=x.device)
        sure = confidence(log_p, gate) >= tau
        if k == len(stages) - 1:
            sure[:] = True
        out[rows[sure]] = log_p[sure]
        stop[rows[sure]] = k
        keep = ~sure
        rows, seen = rows[keep], [z[keep] for z in seen]
        if rows.numel() == 0:
            break
    assert out is not None, "a cascade needs at least one stage"
    return out, stop


class CascadeModel(nn.Module):
    """A deployable cascade at a fixed `tau`: `forward` returns log-probabilities (B, C)."""

    def __init__(
        self, stages: Sequence[nn.Module], tau: float, how: Combine, gate: Gate = "maxprob"
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.tau, self.how, self.gate = float(tau), how, gate

    def forward(self, x: Tensor) -> Tensor:
        """Log-probabilities (B, C) of the cascade's answer for images (B, C, H, W)."""
        return run_cascade(list(self.stages), x, self.tau, self.how, self.gate)[0]

    predict = forward  # the served-model interface (`model.predict`) of the ensembles


def select_tau(val_rows: Sequence[dict], budget_macs: float) -> dict:
    """The validation row of best accuracy (then fewest MACs) whose mean MACs fit the budget.

    Raises ValueError naming `eval.cascade_budget_macs` when not even tau = 0 (member 1
    alone) fits.
    """
    fitting = [r for r in val_rows if r["macs"] <= budget_macs]
    if not fitting:
        cheapest = min(r["macs"] for r in val_rows)
        raise ValueError(
            f"eval.cascade_budget_macs: {budget_macs:g} is below the cheapest cascade "
            f"({cheapest:.0f} MACs, the first member alone)"
        )
    return max(fitting, key=lambda r: (r["acc"], -r["macs"]))


def cascade_latency_ms(
    stages: Sequence[Callable[[Tensor], Tensor]],
    images: Tensor,
    tau: float,
    how: Combine,
    gate: Gate,
    batch: int,
    repeats: int,
) -> float:
    """Median milliseconds of `run_cascade` on `repeats` different real batches of `batch`
    images (after two warm-ups): the rows that stop early depend on the images."""
    times = []
    for i in range(repeats + 2):
        start = (i * batch) % max(1, images.shape[0] - batch + 1)
        x = images[start : start + batch]
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        sync()
        t0 = time.perf_counter()
        run_cascade(stages, x, tau, how, gate)
        sync()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _images(loader: Iterable[tuple[Tensor, Tensor]], n: int, device: torch.device) -> Tensor:
    """The first `n` images of `loader` (fewer when it has fewer), on `device`."""
    out, have = [], 0
    for images, _ in loader:
        out.append(images)
        have += images.shape[0]
        if have >= n:
            break
    return torch.cat(out)[:n].to(device)


def evaluate_cascade(
    stages: Sequence[tuple[str, nn.Module]],
    how: Combine,
    loaders: tuple[Iterable, Iterable],
    input_shape: tuple[int, ...],
    device: torch.device,
    cfg: EvalConfig,
    test_logits: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """The cascade section of the metrics JSON: per tau on the test set, accuracy, mean
    MACs per image, exit shares and batched latency; with `cfg.cascade_budget_macs`, the
    tau chosen on the validation set (`loaders` = (val, test)) and its test accuracy.
    `test_logits`: the stages' (M, N, C) logits and labels on the test set, when the
    caller already has them (else they are collected here)."""
    val_loader, test_loader = loaders
    modules = [m.to(device).eval() for _, m in stages]
    macs = [cached_cost(m, input_shape)["macs"] for m in modules]
    budget = cfg.cascade_budget_macs
    if budget is not None and budget < macs[0]:  # before any compute
        select_tau([{"macs": macs[0], "acc": 0.0}], budget)

    def forward(x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in modules])  # (M, B, C)

    module = nn.ModuleList(modules)
    if test_logits is None:
        test_logits = collect_logits(module, test_loader, device, forward)
    logits, labels = test_logits
    points = cascade_outcomes(logits, labels, macs, how, TAUS, cfg.cascade_gate)
    images = _images(test_loader, max(cfg.latency_batch_sizes) * (cfg.latency_repeats + 2), device)
    for p in points:
        p["latency_ms"] = {
            str(b): cascade_latency_ms(
                modules, images, p["tau"], how, cfg.cascade_gate, b, cfg.latency_repeats
            )
            for b in cfg.latency_batch_sizes
        }
    out = {
        "gate": cfg.cascade_gate,
        "combine": how,
        "stages": [{"name": n, "macs": c} for (n, _), c in zip(stages, macs, strict=True)],
        "points": points,
        "budget": None,
    }
    if budget is not None:
        val_logits, val_labels = collect_logits(module, val_loader, device, forward)
        val_rows = cascade_outcomes(val_logits, val_labels, macs, how, TAUS, cfg.cascade_gate)
        chosen = select_tau(val_rows, budget)
        test = next(p for p in points if p["tau"] == chosen["tau"])
        out["budget"] = {
            "budget_macs": budget,
            "tau": chosen["tau"],
            "selected_on": "val",
            "val_acc": chosen["acc"],
            "val_macs": chosen["macs"],
            "test_acc": test["acc"],
            "test_macs": test["macs"],
        }
    return out
