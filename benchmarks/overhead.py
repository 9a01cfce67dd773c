"""Benchmark 3: what dnc's engine, tracking and orchestration cost on top of plain PyTorch.

    python benchmarks/overhead.py              # params.yaml's run (3 epochs, 10k images)
    python benchmarks/overhead.py --quick      # < 1 min: 1 epoch on 2,000 images
    python benchmarks/overhead.py --no-tracked # skip the MLflow + Prefect run

Three ways to train the same model on the same prepared data and augmented views:
- plain: a hand-written PyTorch loop (slice, augment, forward, loss, backward, step),
  no validation or checkpoints: the floor;
- dnc: `dnc.stages.train` (engine.fit: metrics, validation, checkpoints every epoch);
- tracked: the same inside a Prefect flow, logged to MLflow (`pipelines.prefect.tasks.
  train_members`, entry point "prefect"), with a throw-away SQLite store and Prefect home.
Rounds alternate the three. Writes reports/benchmarks/overhead.json.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import base_parser, report
from common import setup as setup_device

from dnc import builders, stages
from dnc.config import Params
from dnc.config_loading import load_params, parse_set
from dnc.data import BatchViews, load_prepared
from dnc.ensemble.fused import execution_model
from dnc.io import derive_seed
from dnc.train import checkpoint
from dnc.train.losses import js_divergence

QUICK = {"data.train_size": 2000, "data.val_size": 500, "data.test_size": 500}
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def plain_train(params: Params, data_dir: Path) -> dict[str, float]:
    """Hand-written loop over the prepared data; returns its images/s and seconds."""
    data = load_prepared(data_dir)
    info, t = data.info, params.train
    torch.manual_seed(params.seed)
    model = builders.build_model(params, info.num_classes, info.in_chans, info.image_size)
    model = execution_model(model, params.split.execution)
    if t.channels_last:  # the same memory layout as the engine's
        model = model.to(memory_format=torch.channels_last)
    split = model.split_factor
    views_of = BatchViews(info, params.data, split, train=True)
    opt = torch.optim.SGD(
        model.parameters(), t.lr, t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    )
    images, labels = data.train.images, data.train.labels
    start, seen = time.perf_counter(), 0
    model.train()
    for epoch in range(t.epochs):
        order = torch.randperm(len(labels))
        for i in range(0, len(labels) - t.batch_size + 1, t.batch_size):
            idx = order[i : i + t.batch_size]
            g = torch.Generator().manual_seed(derive_seed(params.seed, epoch, i))
            views, targets = views_of(images[idx], g), labels[idx]  # (S, B, C, H, W)
            if t.channels_last:
                shape = views.shape
                views = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                views = views.view(shape)
            logits = model(views)  # (S, B, classes)
            loss = sum(F.cross_entropy(z, targets) for z in logits)
            if split > 1:
                loss = loss + t.cot_weight * js_divergence(logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(targets)
    seconds = time.perf_counter() - start
    return {"train img/s": seen / seconds, "wall s": seconds, "run img/s": seen / seconds}


def dnc_train(params: Params, data_dir: Path, out: Path) -> dict[str, float]:
    """`stages.train` (untracked): engine throughput and whole-run images/s."""
    start = time.perf_counter()
    result = stages.train(params, data_dir, out, resume=False)
    return _run_figures(result.state.history, time.perf_counter() - start, params)


def tracked_train(params: Params, data_dir: Path, out: Path) -> dict[str, float]:
    """The same run as a Prefect task inside a flow, tracked in MLflow."""
    from prefect import flow  # imports (~3 s) count: a tracked process pays them

    from pipelines.prefect.tasks import train_members

    @flow(name="overhead-benchmark")
    def one_run() -> dict:
        return train_members(params, data_dir, out)

    start = time.perf_counter()
    one_run()
    seconds = time.perf_counter() - start
    history = checkpoint.load(out / checkpoint.LAST)["state"]["history"]
    return _run_figures(history, seconds, params)


def _run_figures(history: list[dict], seconds: float, params: Params) -> dict[str, float]:
    epoch_rates = [h["train/images_per_s"] for h in history]
    trained = sum(h["train/images_per_s"] * h["train/epoch_time_s"] for h in history)
    return {
        "train img/s": statistics.mean(epoch_rates),  # the engine's own, training only
        "wall s": seconds,
        "run img/s": trained / seconds,  # incl. validation, checkpoints, tracking, startup
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-tracked", action="store_true", help="skip MLflow + Prefect")
    args = parser.parse_args()
    device = setup_device(args)
    overrides = {**(QUICK if args.quick else {}), **parse_set(args.set)}
    overrides |= {"train.progress": False, "train.device": str(device)}
    if args.quick:
        overrides["train.epochs"] = 1
    params = load_params(args.params, overrides)
    rounds = args.rounds or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="dnc-overhead-") as tmp:
        tmp_path = Path(tmp)
        os.environ.update(QUIET)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
        os.environ["PREFECT_HOME"] = str(tmp_path / "prefect")
        os.environ["DNC_ARTIFACT_ROOT"] = str(tmp_path / "mlartifacts")
        stages.prepare(params, tmp_path / "data")
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "dnc": [], "tracked": []}
        for r in range(rounds):
            runs["plain"].append(plain_train(params, tmp_path / "data"))
            runs["dnc"].append(dnc_train(params, tmp_path / "data", tmp_path / f"dnc{r}"))
            if not args.no_tracked:
                out = tmp_path / f"tracked{r}"
                runs["tracked"].append(tracked_train(params, tmp_path / "data", out))
    rows = summarize_runs(runs)
    columns = ["variant", "train img/s", "run img/s", "wall s", "train vs plain"]
    columns += ["run vs plain", "train vs dnc", "run vs dnc"]
    extra = {"params": params.flat(), "device": str(device), "rounds": rounds}
    report("overhead", args, rows, columns, extra)


def summarize_runs(runs: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Median of each figure per variant, and its throughput as a fraction of plain / dnc."""
    rows = []
    for name, results in runs.items():
        row = {"variant": name}
        for key in results[0] if results else ():
            row[key] = statistics.median(r[key] for r in results)
        rows.append(row)
    plain, dnc = rows[0], rows[1]
    for row in (r for r in rows if "wall s" in r):
        for kind in ("train", "run"):
            row[f"{kind} vs plain"] = row[f"{kind} img/s"] / plain[f"{kind} img/s"]
            row[f"{kind} vs dnc"] = row[f"{kind} img/s"] / dnc[f"{kind} img/s"]
    return rows


if __name__ == "__main__":
    main()
