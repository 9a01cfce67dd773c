"""`python -m pipelines plan`: fit the budget planner to finished runs, print the plan.

    python -m pipelines plan --runs reports/evaluate --budget-macs 15e6 --plot docs/planner.png
    python -m pipelines plan --study NAME --budget-macs 15e6      # an Optuna study's trials

Bad input (too few configurations, no candidate within the budget) exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipelines.common.params import add_params_options, read_overrides

SPLITS = (1, 2, 4, 8)
WIDTHS = tuple(range(8, 65, 4))


def load_runs(args: argparse.Namespace) -> tuple[list, str]:
    """The runs named on the command line and a description of where they came from."""
    from pipelines.search.plan import runs_from_metrics, runs_from_study

    if args.runs:
        return runs_from_metrics(Path(args.runs), args.target), f"--runs {args.runs}"
    from pipelines.search.space import load_search

    _, search = load_search(Path(args.params), read_overrides(args))
    return runs_from_study(args.study, args.storage or search.storage), f"--study {args.study}"


def make_candidates(args: argparse.Namespace) -> list:
    """(S, width) candidates from the params file's model, costed by dnc."""
    from pipelines.search.plan import candidates_of
    from pipelines.search.space import inference_cost, load_search

    base, _ = load_search(Path(args.params), read_overrides(args))

    def cost(split: int, width: float) -> int:
        over = {"split.factor": split, "model.width": width}
        return inference_cost(base.with_overrides(over))[0]

    return candidates_of(SPLITS, WIDTHS, cost)


def fitted_plan(
    args: argparse.Namespace, runs: list, source: str, budget_macs: float, **kwargs: Any
) -> dict:
    """`plan` over `make_candidates(args)`, costed only once the runs are known to be
    enough to fit (costing the candidates takes seconds)."""
    from pipelines.search.plan import check_enough, plan

    check_enough(runs, source)
    return plan(runs, make_candidates(args), budget_macs, source, **kwargs)


def plot(runs: list, result: dict[str, Any], path: Path, target: str) -> None:
    """Fitted loss against member MACs, one line per S, with the runs on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dnc.io import atomic_path
    from pipelines.search.plan import law

    theta = [result["law"][k] for k in ("a", "b", "alpha", "c")]
    fig, ax = plt.subplots(figsize=(6, 4))
    lo = min(r.member_macs for r in runs) / 2
    hi = max(r.member_macs for r in runs) * 2
    m = np.geomspace(lo, hi, 100)
    for i, s in enumerate(SPLITS):
        color = f"C{i}"
        ax.plot(m / 1e6, law(theta, np.full_like(m, s), m), color=color, label=f"fit S={s}")
        seen = [r for r in runs if r.split == s]
        ax.scatter([r.member_macs / 1e6 for r in seen], [r.y for r in seen], color=color)
    best = result["best"]
    ax.scatter(
        [best["macs"] / best["split"] / 1e6], [best["pred"]], marker="*", s=200, color="k",
        label=f"plan: S={best['split']} width={best['width']:g}",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("member MACs (M)")
    ax.set_ylabel("test NLL" if target == "nll" else "error %")
    ax.set_title(f"budget {result['budget_macs']:.3g} MACs; LOCO MAE {result['loco_mae']:.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def format_plan(result: dict[str, Any], source: str) -> str:
    """The plan as a few human lines."""
    law, best = result["law"], result["best"]
    band = result["band"]
    lines = [
        f"fitted on {result['n_runs']} runs, {result['n_configs']} configurations ({source})",
        "law: y = {a:.4g} + {b:.4g} * (m/1e6)^-{alpha:.3g} + {c:.4g}/S".format(**law),
        f"plan for {result['budget_macs']:.4g} MACs: S={best['split']} width={best['width']:g} "
        f"({best['macs']:,} MACs), predicted {best['pred']:.4g}"
        + (f" [90% band {band[0]:.4g}..{band[1]:.4g}]" if band else ""),
        f"bootstrap picks: {result['bootstrap_picks']}",
        f"leave-one-configuration-out MAE: {result['loco_mae']:.4g}",
    ]
    lines += [
        f"  S={r['split']} m={r['member_macs'] / 1e6:.2f}M: "
        f"actual {r['y']:.4g} predicted {r['pred']:.4g}"
        for r in result["loco"]
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Load runs, fit, plan, print; optional plot and JSON."""
    from dnc.io import write_json

    runs, source = load_runs(args)
    result = fitted_plan(args, runs, source, args.budget_macs)
    print(format_plan(result, source))
    if args.plot:
        plot(runs, result, Path(args.plot), args.target)
    if args.json:
        write_json(result, Path(args.json))
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines plan`."""
    p.description = (__doc__ or "").splitlines()[0]
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="folder of evaluate metrics JSONs (reports/evaluate)")
    source.add_argument("--study", help="Optuna study whose complete trials to fit")
    p.add_argument("--storage", help="study storage URL (default: search.storage)")
    p.add_argument("--budget-macs", type=float, required=True, help="MACs per image, all S")
    p.add_argument("--target", choices=("nll", "err"), default="nll", help="--runs: loss fitted")
    p.add_argument("--plot", help="PNG of the fitted law with the runs")
    p.add_argument("--json", help="write the plan as JSON here")
    add_params_options(p)
    p.set_defaults(func=run)


def seeds_for_search(runs_dir: str, params: Path, budget_macs: float) -> list[dict]:
    """The plan's proposals as Optuna trial points (`search --plan`)."""
    args = argparse.Namespace(runs=runs_dir, target="nll", params=str(params), set=[])
    runs, source = load_runs(args)
    result = fitted_plan(args, runs, source, budget_macs, boots=0)
    points = [{"split.factor": p["split"], "model.width": p["width"]} for p in result["proposals"]]
    return json.loads(json.dumps(points))
