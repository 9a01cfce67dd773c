"""Search efficiency: TPE with and without pruning against an exhaustive grid of one space.

Every arm is a real study run through `pipelines.search.run.run_search` (same objective,
same training, same prepared data). The grid trains every configuration of a small space;
the searches sample `--trials` configurations of the same (discrete) space. Reported per
arm: trials, epochs and training MACs used, wall seconds, the best validation accuracy it
found, and its regret = grid's best accuracy - the grid's accuracy of the configuration the
arm picked (how close to the exhaustive optimum the search lands).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_efficiency.py --quick   # digits, <1 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_efficiency.py           # Fashion-MNIST

Writes reports/benchmarks/search_efficiency[_quick].json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DNC_TRACKING", "off")  # tracking overhead is not what is measured

import optuna  # noqa: E402
import torch  # noqa: E402

from dnc.io import write_json  # noqa: E402
from pipelines.search.run import run_search  # noqa: E402
from pipelines.search.space import load_search  # noqa: E402
from pipelines.search.study import final_trials  # noqa: E402
from pipelines.tracking import runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "train": {"data.dataset": "digits", "data.train_size": 768, "data.val_size": 300,
                  "data.test_size": 256, "train.epochs": 2, "train.batch_size": 64},
        "space": {"split.factor": {"choices": [1, 2]}, "model.width": {"choices": [4, 8]},
                  "train.cot_weight": {"choices": [0.0, 0.5]}},
        "trials": 5, "repeats": 1, "startup": 3,
        "arms": {"tpe+hyperband": "hyperband", "tpe, no pruning": "none"},
    },
    "full": {
        "train": {"data.dataset": "fashion_mnist", "data.train_size": 2000,
                  "data.val_size": 1000, "data.test_size": 256, "train.epochs": 4},
        "space": {"split.factor": {"choices": [1, 2, 4]}, "model.width": {"choices": [8, 16]},
                  "train.cot_weight": {"choices": [0.0, 0.5]}},
        "trials": 6, "repeats": 2, "startup": 3,
        "arms": {"tpe+hyperband": "hyperband", "tpe+median": "median", "tpe, no pruning": "none"},
    },
}  # fmt: skip


def run_arm(study: str, overrides: dict[str, Any], dirs: dict[str, Path]) -> dict[str, Any]:
    """One study; its compute and what it found."""
    start = time.perf_counter()
    run_search(study, overrides=overrides, params_path=ROOT / "params.yaml", **dirs)
    wall = time.perf_counter() - start
    storage = overrides["search.storage"]
    loaded = optuna.load_study(study_name=study, storage=storage)
    final = final_trials(loaded.get_trials())
    complete = [t for t in final if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    return {
        "study": study,
        "trials": len(final),
        "pruned": sum(t.state.name == "PRUNED" for t in final),
        "epochs": sum(len(t.intermediate_values) for t in final),
        "train_macs": sum(t.user_attrs.get("train_macs", 0.0) for t in final),
        "wall_s": wall,
        "best_acc": best.value,
        "best_config": best.params,
        "configs": {json.dumps(t.params, sort_keys=True): t.value for t in complete},
    }


def table(arms: dict[str, list[dict[str, Any]]], grid: dict[str, Any]) -> str:
    """Markdown: mean over repeats per arm; regret against the grid's best."""
    lines = [
        "| arm | trials | pruned | epochs | train MACs | wall s | best val acc % | regret (pt) "
        "| grid rank |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in arms.items():
        n = len(runs)
        mean = {
            k: sum(r[k] for r in runs) / n
            for k in ("trials", "pruned", "epochs", "train_macs", "wall_s", "best_acc")
        }
        regret = sum(r["regret"] for r in runs) / n
        rank = sum(r["grid_rank"] for r in runs) / n
        lines.append(
            f"| {name} | {mean['trials']:.1f} | {mean['pruned']:.1f} | {mean['epochs']:.1f} "
            f"| {mean['train_macs']:.3g} | {mean['wall_s']:.0f} | {mean['best_acc']:.2f} "
            f"| {regret:.2f} | {rank:.1f} of {len(grid['configs'])} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, tiny space (<1 min)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="JSON path (default reports/benchmarks/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setting = SETTINGS["quick" if args.quick else "full"]
    name = "search_efficiency" + ("_quick" if args.quick else "")
    out = Path(args.out or ROOT / "reports" / "benchmarks" / f"{name}.json")
    with tempfile.TemporaryDirectory(prefix="dnc-search-bench-") as tmp:
        tmp = Path(tmp)
        common = {
            **setting["train"], "train.progress": False, "train.device": "cpu",
            "search.storage": f"sqlite:///{tmp}/optuna.db", "search.mode": "single",
            "search.space": setting["space"], "search.startup_trials": setting["startup"],
            "search.budget.macs": None, "search.budget.params": None,
        }  # fmt: skip
        base, _ = load_search(ROOT / "params.yaml", common)
        dirs = {"data_dir": tmp / "data", "models_dir": tmp / "models", "reports_dir": tmp / "r"}
        runner.prepare(base, dirs["data_dir"])  # one split for every arm
        grid = run_arm(
            "grid",
            {**common, "search.sampler": "grid", "search.pruner": "none",
             "search.n_trials": 10_000},
            dirs,
        )  # fmt: skip
        arms: dict[str, list[dict[str, Any]]] = {}
        for arm, pruner in setting["arms"].items():
            for r in range(setting["repeats"]):
                over = {**common, "search.sampler": "tpe", "search.pruner": pruner,
                        "search.n_trials": setting["trials"]}  # fmt: skip
                res = run_arm(f"{pruner}-{r}", over, dirs)
                found = grid["configs"][json.dumps(res["best_config"], sort_keys=True)]
                res["regret"] = grid["best_acc"] - found
                res["grid_rank"] = 1 + sum(v > found for v in grid["configs"].values())
                arms.setdefault(arm, []).append(res)
    text = table({"exhaustive grid": [{**grid, "regret": 0.0, "grid_rank": 1}], **arms}, grid)
    print(text)
    write_json(
        {
            "benchmark": name,
            "setting": setting,
            "machine": {"cpu_threads": args.threads, "platform": platform.platform()},
            "grid": grid,
            "arms": arms,
            "table": text,
        },
        out,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
