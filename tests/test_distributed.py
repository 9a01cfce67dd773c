"""torchrun placements (dnc.train.distributed) against single-process oracles.

The multi-process tests use 2 gloo processes on CPU, one torch thread each: spawned workers
for the step-level checks, `torchrun` as a subprocess for the end-to-end ones. The oracles are
single-process runs of the same configuration (or, for per-rank BatchNorm, the single-process
mean of per-shard losses, which is what per-rank statistics compute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from servers import free_port
from torch import Tensor, nn

from dnc import stages
from dnc.cli import run_guarded
from dnc.config import ConfigError
from dnc.config_loading import load_params
from dnc.ensemble.splitnet import SplitNet, build_splitnet
from dnc.methods.splitnet import CoTrainingTask
from dnc.train import checkpoint
from dnc.train.distributed import (
    ShardedLoaders,
    owned_members,
    setup_parallel,
    world_from_env,
)
from dnc.train.engine import DivergenceError, fit
from pipelines.dvc.preset import load_preset

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The references run on one torch thread, as every torchrun worker (OMP_NUM_THREADS=1):
    thread count changes float reduction order, which a few SGD steps amplify."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- single process -------------------------------------------------------------------------


def test_world_from_env_reads_torchrun_variables():
    assert world_from_env({}) is None
    world = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank) == (3, 4, 1)


def test_outside_torchrun_there_is_no_placement(tiny_params, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert setup_parallel(tiny_params.with_overrides({"split.placement": "members"})) is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"split.placement": "members", "split.execution": "fused"}, "split.placement"),
        ({"split.placement": "members", "split.factor": 1}, "split.placement"),
        ({"train.batch_size": 63}, "train.batch_size"),
        ({"train.sync_bn": True}, "train.sync_bn"),
        ({"train.device": "cuda:1"}, "train.device"),
    ],
)
def test_bad_placement_names_its_key(tiny_params, monkeypatch, overrides, key):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=key):  # before any process group is joined
        setup_parallel(tiny_params.with_overrides(overrides))


def test_owned_members_cover_every_member_once():
    assert owned_members(0, 2, 5) == [0, 2, 4]
    assert owned_members(1, 2, 5) == [1, 3]
    assert sorted(owned_members(0, 3, 4) + owned_members(1, 3, 4) + owned_members(2, 3, 4)) == [
        0,
        1,
        2,
        3,
    ]


class ToyLoaders:
    """`batches` global batches per epoch, (V, B, C, H, W) views drawn from (seed, epoch, k)."""

    def __init__(self, views: int, batch: int, batches: int, chans: int = 1, size: int = 8):
        self.shape, self.batches, self.val = (views, batch, chans, size, size), batches, []

    def train_epoch(self, epoch: int) -> list[tuple[Tensor, Tensor]]:
        out = []
        for k in range(self.batches):
            g = torch.Generator().manual_seed(1000 * epoch + k)
            views = torch.randn(self.shape, generator=g)
            out.append((views, torch.randint(0, 10, (self.shape[1],), generator=g)))
        return out


def test_shards_are_contiguous_and_their_union_is_the_batch():
    loaders = ToyLoaders(views=3, batch=10, batches=2)
    shards = [list(ShardedLoaders(loaders, r, 2).train_epoch(0)) for r in range(2)]
    for k, (views, targets) in enumerate(loaders.train_epoch(0)):
        assert torch.equal(torch.cat([s[k][0] for s in shards], dim=1), views)
        assert torch.equal(torch.cat([s[k][1] for s in shards]), targets)
        assert shards[0][k][1].shape == (5,)


@pytest.mark.parametrize(("rank", "printed"), [("0", True), ("1", False)])
def test_divergence_prints_once_and_exits_3(monkeypatch, capsys, rank, printed):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")

    def diverge():
        raise DivergenceError("loss is not finite on rank 1 at epoch 0 step 1")

    assert run_guarded(diverge) == (3, None)
    err = capsys.readouterr().err
    assert ("error: loss is not finite on rank 1" in err) is printed


# --- spawned workers: step-level equality --------------------------------------------------


def _params(overrides: dict):
    return load_params(ROOT / "params.yaml").with_overrides(
        {"train.device": "cpu", "train.progress": False, **overrides}
    )


def _cnn(split: int) -> SplitNet:
    torch.manual_seed(0)
    return build_splitnet(
        "small_cnn", split=split, num_classes=10, in_chans=1, image_size=8, width=8
    )


def _mlp(split: int) -> SplitNet:
    """A BatchNorm-free SplitNet (per-rank statistics do not arise), plus a parameter no
    loss reaches: one process never steps it, so neither may the ranks (no weight decay)."""
    torch.manual_seed(0)
    net = SplitNet(
        [
            nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
            for _ in range(split)
        ]
    )
    net.unused = nn.Linear(2, 2)
    return net


def _step(task: CoTrainingTask, views: Tensor, targets: Tensor) -> tuple[Tensor, dict]:
    loss = task.training_step(views, targets, 0.5)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _batch(split: int, batch: int = 16) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(split, batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,))


class NanOnRank(CoTrainingTask):
    """Co-training whose loss turns NaN on rank `rank` at its second step."""

    def __init__(self, model: SplitNet, rank: int) -> None:
        super().__init__(model, 0.5, 0.0)
        self.bad, self.calls = rank == int(os.environ["RANK"]), 0

    def training_step(self, views, targets, epoch):
        parts = super().training_step(views, targets, epoch)
        self.calls += 1
        if self.bad and self.calls == 2:
            parts["loss"] = parts["loss"] * float("nan")
        return parts


def _fit(task, loaders, params, run_dir, parallel=None) -> None:
    fit(task, loaders, params.train, run_dir, seed=0, weight_decay=5e-4, parallel=parallel)


def _worker(rank: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    members = setup_parallel(_params({"split.placement": "members", "split.factor": 4}))
    for split in (2, 4):  # one co-training step, member-parallel
        task = CoTrainingTask(members.place(_cnn(split)), 0.5, 1.0)
        torch.save(_step(task, *_batch(split)), out / f"members{split}_rank{rank}.pt")
    data = setup_parallel(_params({"train.batch_size": 16}))
    for name, build in (("mlp", _mlp), ("cnn", _cnn)):  # K steps of the engine, data-parallel
        task = CoTrainingTask(data.place(build(2)), 0.5, 1.0)
        _fit(
            task, data.shard(ToyLoaders(2, 16, 4)), _params({"train.epochs": 2}), out / name, data
        )
    try:
        task = NanOnRank(_mlp(2), rank=1)
        _fit(task, data.shard(ToyLoaders(2, 16, 4)), _params({}), out / f"nan{rank}", data)
    except DivergenceError as err:
        (out / f"nan_rank{rank}.txt").write_text(str(err))


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> Path:
    """The workers' outputs. Forked, not spawned: a spawned child imports torch and this
    module again (~5 CPU-s each); no process group exists in this process to be inherited."""
    out = tmp_path_factory.mktemp("spawned")
    mp.start_processes(
        _worker, args=(free_port(), out), nprocs=WORLD, join=True, start_method="fork"
    )
    return out


def _close(a: dict, b: dict, keys=None) -> None:
    """Equal to float rounding (on one thread the member-parallel runs come out bit-equal)."""
    for key in keys or a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("split", [2, 4])
def test_member_parallel_step_is_the_single_process_step(spawned, split):
    loss, grads = _step(CoTrainingTask(_cnn(split), 0.5, 1.0), *_batch(split))
    seen = set()
    for rank in range(WORLD):
        rank_loss, rank_grads = torch.load(spawned / f"members{split}_rank{rank}.pt")
        torch.testing.assert_close(rank_loss, loss, rtol=0, atol=1e-6)  # every rank, same loss
        own = {f"model.members.{i}." for i in owned_members(rank, WORLD, split)}
        assert all(any(n.startswith(o) for o in own) for n in rank_grads)  # own members only
        _close(grads, rank_grads, rank_grads)
        seen |= set(rank_grads)
    assert seen == set(grads)  # together the ranks cover every parameter


@pytest.mark.slow
def test_data_parallel_without_batchnorm_equals_one_process(spawned, tmp_path):
    _fit(
        CoTrainingTask(_mlp(2), 0.5, 1.0),
        ToyLoaders(2, 16, 4),
        _params({"train.epochs": 2}),
        tmp_path,
    )
    one = checkpoint.load(tmp_path / checkpoint.LAST)
    ranks = checkpoint.load(spawned / "mlp" / checkpoint.LAST)
    _close(one["task_state"], ranks["task_state"])
    assert ranks["state"]["global_step"] == one["state"]["global_step"] == 8
    loss = [h["train/loss"] for h in one["state"]["history"]]
    assert [h["train/loss"] for h in ranks["state"]["history"]] == pytest.approx(loss, rel=1e-5)


class GhostBatchTask(CoTrainingTask):
    """The mean of the co-training loss over `shards` contiguous shards of each batch: the
    loss whose gradient per-rank BatchNorm statistics compute."""

    def __init__(self, model: SplitNet, shards: int) -> None:
        super().__init__(model, 0.5, 1.0)
        self.shards = shards

    def training_step(self, views, targets, epoch):
        parts = [
            super(GhostBatchTask, self).training_step(v, t, epoch)
            for v, t in zip(views.chunk(self.shards, 1), targets.chunk(self.shards), strict=True)
        ]
        return {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}


@pytest.mark.slow
def test_data_parallel_with_per_rank_batchnorm_is_the_per_shard_loss(spawned, tmp_path):
    # Weights equal the single-process mean of per-shard losses (BN statistics per shard);
    # they are not the full-batch run's: BN normalises 8 images per rank, not 16.
    params = _params({"train.epochs": 2})
    _fit(GhostBatchTask(_cnn(2), WORLD), ToyLoaders(2, 16, 4), params, tmp_path / "ghost")
    _fit(CoTrainingTask(_cnn(2), 0.5, 1.0), ToyLoaders(2, 16, 4), params, tmp_path / "full")
    ghost = checkpoint.load(tmp_path / "ghost" / checkpoint.LAST)["task_state"]
    full = checkpoint.load(tmp_path / "full" / checkpoint.LAST)["task_state"]
    ranks = checkpoint.load(spawned / "cnn" / checkpoint.LAST)["task_state"]
    weights = [k for k in ranks if not k.endswith(("running_mean", "running_var", "tracked"))]
    _close(ghost, ranks, weights)
    distance = max((full[k] - ranks[k]).abs().max().item() for k in weights)
    assert distance > 1e-3  # the difference is real, so the oracle above is not vacuous


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_naming_it(spawned):
    for rank in range(WORLD):
        message = (spawned / f"nan_rank{rank}.txt").read_text()
        assert message == "loss is not finite on rank 1 at epoch 0 step 1"


# --- torchrun end to end -------------------------------------------------------------------


def _torchrun(params, run_dir: Path, *extra: str) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 -m dnc train` on `params`, in the background."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"  # as the in-process references (see `one_thread`)
    # torchrun's rendezvous store, shared with the workers by default, keeps the dead
    # attempt's addresses, so a restarted rank can dial its killed peer (pytorch#135712).
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(WORLD), *extra, "-m", "dnc", "train"]
    cmd += ["--params", str(path), "--out", str(run_dir)]
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")  # a file: a pipe could fill up
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    out = Path(proc.args[-1] + ".log").read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def _state(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / checkpoint.LAST)


def _moments(state: dict) -> dict:
    return {i: s["momentum_buffer"] for i, s in state["optimizer"]["state"].items()}


class StopAfter:
    """Simulates a kill right after epoch `n`'s checkpoint was written."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state, metrics):
        if state.epoch == self.n:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_member_parallel_resumes_a_one_process_run_exactly(tiny_params, tmp_path):
    # S = 4 on 2 ranks: one process trains epoch 0, torchrun member-parallel epochs 1-2.
    params = tiny_params.with_overrides(
        {
            "data.train_size": 256,
            "split.factor": 4,
            "train.epochs": 3,
            "split.placement": "members",
        }
    )
    stages.train(params, None, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        stages.train(params, None, tmp_path / "mixed", callbacks=[StopAfter(0)])
    out = _finish(_torchrun(params, tmp_path / "mixed"))
    assert '"resumed_from": 0' in out
    straight, mixed = _state(tmp_path / "straight"), _state(tmp_path / "mixed")
    _close(straight["task_state"], mixed["task_state"])
    _close(_moments(straight), _moments(mixed))  # the optimizer state too
    assert [h["train/loss"] for h in mixed["state"]["history"]] == pytest.approx(
        [h["train/loss"] for h in straight["state"]["history"]], rel=1e-5
    )


def _workers(proc: subprocess.Popen) -> list[int]:
    """Pids of torchrun's worker processes (its children running dnc)."""
    ps = ["ps", "-o", "pid=", "--ppid", str(proc.pid)]
    pids = [int(p) for p in subprocess.run(ps, capture_output=True, text=True).stdout.split()]
    return [p for p in pids if b"dnc" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _kill_a_rank_after_epoch_0(proc: subprocess.Popen, run_dir: Path) -> int:
    """SIGKILL one worker once epoch 0's checkpoint exists; the epoch it had saved."""
    deadline = time.monotonic() + 240
    while not (run_dir / checkpoint.LAST).is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "torchrun ended early"
        time.sleep(0.02)
    os.kill(_workers(proc)[-1], 9)
    return _state(run_dir)["state"]["epoch"]


@pytest.fixture(scope="module")
def five_epochs(default_params, tmp_path_factory, one_thread):
    """The tiny run, 5 epochs, member-parallel placement, and its one-process weights."""
    params = default_params.with_overrides(load_preset(ROOT / "presets" / "tiny.yaml"))
    params = params.with_overrides({"train.epochs": 5, "split.placement": "members"})
    run_dir = tmp_path_factory.mktemp("straight")
    stages.train(params, None, run_dir)
    return params, _state(run_dir)


@pytest.fixture(scope="module")
def killed_and_restarted(five_epochs, tmp_path_factory) -> tuple[Path, Path, Path]:
    """One member-parallel torchrun job with one restart: a rank is SIGKILLed once epoch 0's
    checkpoint exists, and the run folder is copied as the kill left it (the surviving rank
    blocks on its dead peer, so nothing is written until the restart). The run folder, the
    copy, and the attempts' logs."""
    params, _ = five_epochs
    tmp = tmp_path_factory.mktemp("killed")
    logs = tmp / "logs"
    proc = _torchrun(
        params, tmp / "run", "--max-restarts", "1", "--log-dir", str(logs), "--redirects", "3"
    )
    assert _kill_a_rank_after_epoch_0(proc, tmp / "run") < 4  # killed mid-run
    (tmp / "as-killed").mkdir()
    for name in checkpoint.RUN_FILES:  # each written atomically: a whole old or new file
        if (tmp / "run" / name).is_file():
            shutil.copy2(tmp / "run" / name, tmp / "as-killed" / name)
    out = _finish(proc)
    restarted = sorted(logs.rglob("attempt_1"))
    assert restarted, f"torchrun did not restart the workers:\n{out[-2000:]}"
    return tmp / "run", tmp / "as-killed", restarted[0]


@pytest.mark.slow
def test_killed_rank_restarts_and_resumes_to_the_uninterrupted_weights(
    five_epochs, killed_and_restarted
):
    _, straight = five_epochs
    run_dir, _, restarted = killed_and_restarted
    assert '"resumed_from": -1' not in (restarted / "0" / "stdout.log").read_text()
    run = _state(run_dir)
    assert run["state"]["epoch"] == 4
    _close(straight["task_state"], run["task_state"])


@pytest.mark.slow
def test_a_member_parallel_checkpoint_resumes_on_one_process(five_epochs, killed_and_restarted):
    params, straight = five_epochs
    _, as_killed, _ = killed_and_restarted
    assert _state(as_killed)["state"]["epoch"] < 4  # written by the member-parallel ranks
    resumed = stages.train(params, None, as_killed)
    assert resumed.resumed_from >= 0
    _close(straight["task_state"], _state(as_killed)["task_state"])


@pytest.mark.slow
def test_divergence_under_torchrun_is_one_message_and_a_failed_job(tiny_params, tmp_path):
    huge = {"train.lr": 1e8, "train.warmup_lr": 1e8, "train.min_lr": 1e8, "train.epochs": 1}
    params = tiny_params.with_overrides({"data.train_size": 256, **huge})
    proc = _torchrun(params, tmp_path / "run")
    assert proc.wait(timeout=300) != 0
    out = Path(f"{tmp_path / 'run'}.log").read_text()
    assert out.count("error: loss is not finite on rank") == 1, out[-3000:]
    assert "exitcode  : 3" in out  # every worker exited 3, none hung
    assert not (tmp_path / "run" / checkpoint.LAST).exists()
