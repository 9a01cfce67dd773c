"""What a study leaves in `reports/search/<study>/`: the trial table, the accuracy-vs-MACs
plot with its Pareto front, `summary.json`, and `best.txt` with the `dvc exp run -S ...`
command that re-runs the winner through the DVC pipeline (so it gets full lineage).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dnc.config import Params
from dnc.config_loading import load_params
from dnc.io import write_json
from pipelines.common.redact import redact
from pipelines.search.space import SearchConfig
from pipelines.search.study import final_trials

NOTES = ("rejected", "diverged", "invalid")


def best_trials(study: optuna.Study, mode: str) -> list[FrozenTrial]:
    """single: the best trial; multi: the Pareto front (max accuracy, min MACs) by MACs."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    if mode == "single":
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))


def trial_row(trial: FrozenTrial, space: SearchConfig) -> dict[str, Any]:
    """One trial as plain data; searched keys under their dotted names."""
    attrs = trial.user_attrs
    note = next((f"{k}: {attrs[k]}" for k in NOTES if k in attrs), "")
    if not note and trial.state == TrialState.PRUNED:
        note = f"pruned after {max(trial.intermediate_values, default=0)} epochs"
    return {
        "trial": int(attrs.get("trial", trial.number)),
        "optuna_number": trial.number,
        "state": trial.state.name,
        "val_acc": trial.values[0] if trial.values else None,
        "macs": attrs.get("macs"),
        "params": attrs.get("params"),
        **{key: trial.params.get(key) for key in space.space},
        "train_macs": attrs.get("train_macs", 0.0),
        "train_seconds": attrs.get("train_seconds", 0.0),
        "seed": attrs.get("seed"),
        "run_dir": attrs.get("run_dir"),
        "mlflow_run_id": attrs.get("mlflow_run_id"),
        "note": note,
    }


WD_KEYS = ("split.factor", "train.weight_decay", "split.divide_weight_decay")


def best_per_split(rows: list[dict[str, Any]], base: Params) -> list[dict[str, Any]]:
    """Per split factor S: the completed trial with the best validation accuracy and the
    weight decay it trained with (searched, else the base params'), base and effective.

    The counter-claim (Ruben et al. 2025) is that one wide net wins once weight decay is
    tuned per S; this table is where a study shows the tuned value for every S.
    """
    from dnc.models import divide_weight_decay

    flat = base.flat()

    def value(row: dict[str, Any], key: str) -> Any:
        return flat[key] if row.get(key) is None else row[key]  # not searched: the base's

    done = [r for r in rows if r["state"] == "COMPLETE" and r["val_acc"] is not None]
    out = []
    for split in sorted({value(r, "split.factor") for r in done}):
        mine = [r for r in done if value(r, "split.factor") == split]
        top = max(mine, key=lambda r: r["val_acc"])
        wd, rule = value(top, "train.weight_decay"), value(top, "split.divide_weight_decay")
        out.append(
            {
                "split.factor": split,
                "trial": top["trial"],
                "val_acc": top["val_acc"],
                "trials": len(mine),
                "train.weight_decay": wd,
                "split.divide_weight_decay": rule,
                "effective_weight_decay": divide_weight_decay(wd, int(split), rule),
            }
        )
    return out


def per_split_table(best: list[dict[str, Any]]) -> str:
    """Markdown of `best_per_split`: validation accuracy of single trials, not a test verdict."""
    cols = ["split.factor", "trials", "trial", "val_acc", *WD_KEYS[1:], "effective_weight_decay"]
    lines = [
        "",
        "## Best weight decay per S (validation accuracy, one trial each: no test verdict; "
        "rerun the winners over seeds with `compare:` for one)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in best]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(rows: list[dict[str, Any]], keys: list[str], best: set[int]) -> str:
    """Trials sorted by number; `*` marks the best (single) / Pareto (multi) trials."""
    cols = ["trial", "state", "val_acc", "macs", "params", *keys, "train_macs", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in sorted(rows, key=lambda r: r["trial"]):
        cells = [_fmt(row[c]) for c in cols]
        cells[0] += " *" if row["trial"] in best else ""
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_macs(
    rows: list[dict[str, Any]], front: set[int], out_png: Path, title: str, budget: float | None
) -> None:
    """Completed trials' val accuracy against inference MACs, coloured by split factor,
    the Pareto front as a step line and the MACs budget as a vertical line. (Not
    `plots.accuracy_vs_macs`: that one plots test accuracy, one legend entry per point.)"""
    import matplotlib.pyplot as plt

    from pipelines.dvc.plots import save_figure  # sets the Agg backend

    done = [r for r in rows if r["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for split in sorted({r.get("split.factor") for r in done}, key=str):
        pts = [r for r in done if r.get("split.factor") == split]
        label = f"S = {split}" if split is not None else "trials"
        ax.scatter([r["macs"] for r in pts], [r["val_acc"] for r in pts], label=label, s=24)
    pareto = sorted((r for r in done if r["trial"] in front), key=lambda r: r["macs"])
    if pareto:
        xs, ys = [r["macs"] for r in pareto], [r["val_acc"] for r in pareto]
        ax.step(xs, ys, where="post", color="black", lw=1, label="best / Pareto front")
    if budget is not None:
        ax.axvline(budget, color="red", ls="--", lw=1, label="MACs budget")
    ax.set_xlabel("inference MACs per image (multiply-adds, all members)")
    ax.set_ylabel("validation ensemble accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if done:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png)


def _yaml_value(value: Any) -> str:
    # DVC reads -S values as YAML; JSON scalars and lists are YAML.
    return value if isinstance(value, str) else json.dumps(value)


def dvc_command(overrides: dict[str, Any]) -> str:
    """`dvc exp run -S key=value ...`, shell-quoted."""
    parts = [f"-S {shlex.quote(f'{k}={_yaml_value(v)}')}" for k, v in overrides.items()]
    return " ".join(["dvc exp run", *parts])


def fixed_overrides(base: Params, params_path: Path, searched: list[str]) -> dict[str, Any]:
    """Keys the study set on top of the params file (`--set`), which the winner needs too."""
    on_file = load_params(params_path).flat()
    return {
        k: v
        for k, v in base.flat().items()
        if k not in searched and k != "seed" and on_file.get(k) != v
    }


def best_text(
    best: list[FrozenTrial], fixed: dict[str, Any], study: str, params_path: Path
) -> str:
    """One commented `dvc exp run` line per best/Pareto trial."""
    if not best:
        return f"# study {study}: no completed trial yet\n"
    lines = [f"# study {study}: re-run the winner with DVC (relative to {params_path})"]
    for t in best:
        attrs = t.user_attrs
        lines.append(
            f"# trial {attrs.get('trial', t.number)}: val acc {t.values[0]:.2f} %, "
            f"{attrs.get('macs', 0):,} MACs, {attrs.get('params', 0):,} params "
            f"(trained with seed {attrs.get('seed')})"
        )
        lines.append(dvc_command({**fixed, **t.params}))
    return redact("\n".join(lines) + "\n")  # an overridden URL keeps its password out


def write_reports(
    study: optuna.Study,
    search: SearchConfig,
    base: Params,
    params_path: Path,
    out_dir: Path,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Write table, plot, best.txt and summary.json; returns the summary with the best."""
    out_dir = Path(out_dir)
    final = final_trials(study.get_trials(deepcopy=False))
    rows = [trial_row(t, search) for t in final]
    best = best_trials(study, search.mode)
    best_numbers = {int(t.user_attrs.get("trial", t.number)) for t in best}
    keys = list(search.space)
    fixed = fixed_overrides(base, params_path, keys)
    files = {
        "table": out_dir / "trials.md",
        "plot": out_dir / "accuracy_vs_macs.png",
        "best": out_dir / "best.txt",
        "summary": out_dir / "summary.json",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    per_split = best_per_split(rows, base)
    files["table"].write_text(
        markdown_table(rows, keys, best_numbers) + per_split_table(per_split)
    )
    title = f"{study.study_name} ({'best' if search.mode == 'single' else 'Pareto front'})"
    plot_accuracy_vs_macs(rows, best_numbers, files["plot"], title, search.budget.macs)
    files["best"].write_text(best_text(best, fixed, study.study_name, params_path))
    summary = {
        **summary,
        "best": [
            {
                "trial": int(t.user_attrs.get("trial", t.number)),
                "val_acc": t.values[0],
                "macs": t.user_attrs.get("macs"),
                "params": t.user_attrs.get("params"),
                "overrides": {**fixed, **t.params},
            }
            for t in best
        ],
        "best_per_split": per_split,
        "files": {k: str(v) for k, v in files.items()},
        "trials": rows,
    }
    write_json(summary, files["summary"])
    return summary
