"""Training engine: fit / train_one_epoch, emitting events to callbacks.

The engine knows nothing of logging or tracking: MLflow, Optuna pruning and progress
reporting subscribe as callbacks (the protocol and the state they see:
`dnc.train.callbacks`). Each epoch re-seeds every RNG from (seed, epoch), validates
(`dnc.train.scoring`), and the full training state is checkpointed after every epoch, so a
killed and resumed run ends with exactly the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from dnc.config import TrainConfig
from dnc.train import checkpoint
from dnc.train.callbacks import CallbackList, FitResult, TrainState
from dnc.train.losses import EnsembleHow
from dnc.train.param_groups import exempt_groups
from dnc.train.progress import batch_bar, progress_callbacks
from dnc.train.schedule import build_scheduler
from dnc.train.scoring import validate

if TYPE_CHECKING:  # the methods import dnc.train.scoring; typing only here
    from dnc.methods.base import Task


class DivergenceError(RuntimeError):
    """The loss became NaN/inf; training stops at once."""


def resolve_device(spec: str) -> torch.device:
    """`auto` -> cuda when available, else cpu."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every RNG gets at the start of `epoch` (shuffle, views, dropout, mixup)."""
    return seed * 100_003 + epoch


class Loaders(Protocol):
    """What the engine needs from `dnc.data`: per-epoch train batches and a val loader."""

    val: Iterable[tuple[Tensor, Tensor]]

    def train_epoch(self, epoch: int) -> Iterable[tuple[Tensor, Tensor]]: ...


def train_one_epoch(
    task: Task,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    steps_per_epoch: int,
    device: torch.device,
    cfg: TrainConfig,
    parallel: Any = None,  # dnc.train.distributed placement under torchrun, else None
) -> dict[str, float]:
    """One pass over the training batches; returns batch-size-weighted mean of each part."""
    task.train()
    amp = cfg.amp and device.type == "cuda"
    sums: dict[str, Tensor] = {}
    seen = 0
    start = time.perf_counter()
    bar = batch_bar(batches, steps_per_epoch, f"epoch {epoch}", cfg.progress)
    for step, (views, targets) in enumerate(bar):
        views = views.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if cfg.channels_last:
            shape = views.shape  # (V, B, C, H, W): channels-last per view
            views = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            views = views.view(shape)
        with torch.autocast(device.type, enabled=amp):
            parts = task.training_step(views, targets, epoch + step / steps_per_epoch)
        loss = parts["loss"]
        if parallel is not None:  # every rank stops when any rank's loss is not finite
            parallel.check_finite(loss, f"epoch {epoch} step {step}")
        elif not torch.isfinite(loss):
            raise DivergenceError(f"loss is {loss.item()} at epoch {epoch} step {step}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if parallel is not None:
            parallel.sync_grads(task)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        batch = targets.shape[0]
        seen += batch
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float() * batch
    elapsed = time.perf_counter() - start
    if parallel is not None:  # data-parallel: every rank's images
        sums, seen = parallel.reduce_sums(sums, seen)
    out = {f"train/{k}": float(v) / max(seen, 1) for k, v in sums.items()}
    out["train/lr"] = optimizer.param_groups[0]["lr"]
    out["train/images_per_s"] = seen / max(elapsed, 1e-9)
    out["train/epoch_time_s"] = elapsed
    return out


def _state_dict(state: TrainState) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "global_step": state.global_step,
        "best_value": state.best_value,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "extra": state.extra,
    }


def _save_last(
    path: Path, task: Task, optimizer, scheduler, scaler, state: TrainState, flat: dict | None
) -> None:
    checkpoint.save_atomic(
        {
            "format": "dnc.last/1",
            # The resolved params: a resume with other ones fails naming the key.
            "params": flat,
            "fingerprint": checkpoint.fingerprint(flat) if flat is not None else None,
            "task_state": task.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "state": _state_dict(state),
        },
        path,
    )


def _restore(
    path: Path, task: Task, optimizer, scheduler, scaler, device, flat: dict | None
) -> TrainState:
    ckpt = checkpoint.load(path, device)
    if flat is not None:  # before any state is touched: name the changed key
        checkpoint.verify_params(ckpt, path, flat)
    try:
        task.load_state_dict(ckpt["task_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        return TrainState(**ckpt["state"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise checkpoint.CheckpointError(
            f"{path}: does not fit this run ({why}); pass --restart to start over"
        ) from err


def fit(
    task: Task,
    loaders: Loaders,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    weight_decay: float,
    ensemble: EnsembleHow = "logits",
    callbacks: Sequence[object] = (),
    resume: bool = True,
    best_meta: dict[str, Any] | None = None,
    parallel: Any = None,  # dnc.train.distributed placement under torchrun, else None
    run_params: dict[str, Any] | None = None,
) -> FitResult:
    """Train `task` for `cfg.epochs`, selecting the best epoch on validation accuracy.

    Writes `run_dir/last.pt` (resumable) every epoch and `run_dir/best.pt` (inference
    model + `best_meta`) whenever the validation ensemble accuracy improves; with no
    validation data the last epoch is the best. Resumes from `last.pt` when present;
    `run_params` (dotted params) are stored in it, and a resume with other ones (up to
    dnc.config.RESUME_SAFE_KEYS) fails naming the first differing key.
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    task.to(device)
    if cfg.channels_last:  # weights too: a conv runs channels-last only when both are
        task.to(memory_format=torch.channels_last)
    steps = max(1, len(loaders.train_epoch(0)))
    groups = exempt_groups(task, task.param_groups(weight_decay), cfg.weight_decay_exempt)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    scheduler = build_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    last_path, best_path = run_dir / checkpoint.LAST, run_dir / checkpoint.BEST
    state = TrainState()
    if resume and last_path.is_file():
        state = _restore(last_path, task, optimizer, scheduler, scaler, device, run_params)
    resumed_from = state.epoch
    main = parallel is None or parallel.is_main  # rank 0 alone writes and reports
    # Other ranks keep only the callbacks that take part in a collective (`every_rank`).
    mine = [c for c in callbacks if main or getattr(c, "every_rank", False)]
    events = CallbackList([*mine, *progress_callbacks(cfg.progress and main, cfg.epochs)])
    events("on_fit_start", state)
    try:
        for epoch in range(state.epoch + 1, cfg.epochs):
            torch.manual_seed(epoch_seed(seed, epoch))
            metrics = train_one_epoch(
                task,
                loaders.train_epoch(epoch),
                optimizer,
                scheduler,
                scaler,
                epoch,
                steps,
                device,
                cfg,
                parallel,
            )
            if parallel is not None:  # full single-process layout before eval and saving
                parallel.sync_state(task, optimizer)
            has_val = _has_data(loaders.val)
            if has_val:
                metrics.update(validate(task, loaders.val, device, ensemble))
            state.epoch, state.global_step = epoch, state.global_step + steps
            value = metrics.get("val/ensemble/acc", float(epoch))
            metrics = {"epoch": float(epoch), **metrics}
            state.history.append(metrics)
            events("on_before_checkpoint", state)
            improved = value > state.best_value or not has_val
            if improved:
                state.best_value, state.best_epoch = value, epoch
            if improved and main:
                checkpoint.save_atomic(
                    {
                        "format": "dnc.best/1",
                        "model_state": task.model.state_dict(),
                        "epoch": epoch,
                        "val": metrics,
                        "meta": best_meta or {},
                    },
                    best_path,
                )
            if main:
                _save_last(last_path, task, optimizer, scheduler, scaler, state, run_params)
            events("on_epoch_end", state, metrics)
    except BaseException as error:
        events("on_fit_error", state, error)
        raise
    result = FitResult(state, run_dir, best_path, resumed_from)
    events("on_fit_end", state, result)
    return result


def _has_data(loader: Iterable) -> bool:
    try:
        return len(loader) > 0  # type: ignore[arg-type]
    except TypeError:
        return True
