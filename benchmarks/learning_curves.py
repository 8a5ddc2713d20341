"""scGPT learning curves: every scGPT method's score against its fine-tuning epochs.

Each point is one run of the suite's own runner (:func:`benchmark.runner.run_method_isolated`,
one thread, the child process the workflow uses) on a demo dataset, with the demo config's
method parameters (``config/config.yaml``) except ``epochs``, scored by the task's own
metrics. Points are appended to ``learning_curves.json`` as they finish (an interrupted run
resumes: measured points are skipped), and the Markdown table and figure are rewritten after
each point.

Where a curve flattens (written here so that every budget chosen from it can cite it): the
*plateau budget* is the smallest measured budget ``b`` such that no larger measured budget
``b'`` beats it by ``tol`` or more per doubling, i.e. ``(s(b') - s(b)) * sign <
tol * log2(b' / b)`` for every ``b' > b`` (``sign`` -1 for lower-is-better metrics such as
the mean rank, whose ``tol`` is given in the metric's own units). A curve whose last point
still gains is "not flat by" its largest budget. One seed per point by default: the same
demo run on two machines of this kind differs by up to 0.07 in scGPT rows, so a plateau
within that band is a budget choice, not a verdict.

Run (cheapest families first; the datasets are built into ``--data-dir`` when missing)::

    nice -n 19 .venv/bin/python benchmarks/learning_curves.py --families integration annotation

``--list`` prints the planned points with their status.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.io import read_json, write_json, write_text  # noqa: E402
from benchmark.yamlfile import load_yaml  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results"
TOL = 0.01  # gain per doubling below which a curve is flat (metric units)


@dataclass(frozen=True)
class Curve:
    """One curve: a scGPT method on one dataset, scored by ``metric`` at each budget.

    ``higher_is_better`` False flips the gain's sign; ``tol`` overrides :data:`TOL` for a
    metric on another scale (the mean rank among 210 candidates).
    """

    family: str
    task: str
    dataset: str
    method: str
    metric: str
    budgets: tuple[int, ...]
    higher_is_better: bool = True
    tol: float = TOL

    @property
    def name(self) -> str:
        return f"{self.task}/{self.dataset}/{self.method}"


# Cheapest families first (one-thread seconds per demo-budget run, results/tables time column):
# integration ~15-60 s, annotation / mapping ~60 s, expansion ~40 s, reverse ~60 s,
# multi-omics ~60 s, GRN ~60 s, perturbation ~120 s; a point costs about budget / demo budget
# times that. Budgets double so that the plateau rule compares like steps.
CURVES: tuple[Curve, ...] = (
    Curve("integration", "integration", "sim_celltypes", "scgpt", "avg_bio", (1, 2, 4, 8)),
    Curve("annotation", "annotation", "sim_celltypes", "scgpt", "accuracy", (1, 2, 4, 8)),
    Curve(
        "reference mapping",
        "reference_mapping",
        "sim_celltypes",
        "scgpt_finetuned",
        "accuracy",
        (1, 2, 4, 8),
    ),
    Curve(
        "expansion",
        "perturbation_expansion",
        "sim_perturb_combo",
        "scgpt",
        "pearson_delta_truth",
        (2, 5, 10, 20),
    ),
    Curve(
        "reverse perturbation",
        "reverse_perturbation",
        "sim_perturb_combo",
        "scgpt",
        "mean_rank",
        (1, 2, 5, 10),
        higher_is_better=False,
        tol=1.0,  # ranks among 210 candidates: one rank per doubling
    ),
    Curve(
        "multi-omic RNA+ATAC", "multiomics", "sim_multiome_atac", "scgpt", "avg_bio", (2, 4, 8, 16)
    ),
    Curve(
        "multi-omic RNA+protein",
        "multiomics",
        "sim_multiome_protein",
        "scgpt",
        "avg_bio",
        (2, 4, 8, 16),
    ),
    Curve("multi-omic mosaic", "multiomics", "sim_mosaic", "scgpt", "avg_bio", (2, 4, 8, 16)),
    Curve("GRN", "grn", "sim_perturb", "scgpt_finetuned", "precision_at_20", (1, 2, 5)),
    Curve("perturbation", "perturbation", "sim_perturb", "scgpt", "pearson_delta", (5, 10, 20)),
)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(c.family.split()[0] for c in CURVES))


def family_key(curve: Curve) -> str:
    """The ``--families`` word of a curve (``multi-omic`` for the three settings)."""
    return curve.family.split()[0]


def point_key(curve: Curve, budget: int, seed: int) -> str:
    return f"{curve.name}/epochs{budget}/seed{seed}"


def plateau(points: list[tuple[int, float]], *, higher_is_better: bool, tol: float) -> int | None:
    """The plateau budget of a curve (see the module docstring), or None if it never flattens.

    Parameters
    ----------
    points
        ``(budget, score)`` pairs, finite scores, any order.
    higher_is_better, tol
        As :class:`Curve`.

    Returns
    -------
    The smallest budget no larger budget beats by ``tol`` per doubling; None when only the
    last budget qualifies (the curve still gains at its end) or fewer than 2 points exist.
    """
    pts = sorted(points)
    if len(pts) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    for i, (b, s) in enumerate(pts[:-1]):
        if all((s2 - s) * sign < tol * math.log2(b2 / b) for b2, s2 in pts[i + 1 :]):
            return b
    return None


def load_config(path: Path) -> dict[str, Any]:
    """The demo config, checked and with the schema's defaults, as the workflow reads it."""
    from benchmark import workflow as wf

    config = load_yaml(path)
    wf.validate_config(config, ROOT / "config" / "schema.yaml")
    return config


def ensure_dataset(plan: Any, dataset: str, data_dir: Path) -> Path:
    """The standard h5ad of ``dataset`` under ``data_dir``, built with the config's params."""
    from benchmark.datasets.standardise import prepare_standard_dataset

    path = data_dir / "standard" / f"{dataset}.h5ad"
    if not path.is_file():
        print(f"building {dataset} -> {path}", flush=True)
        prepare_standard_dataset(
            dataset,
            path,
            params=plan.dataset_params(dataset),
            registry=plan.config.get("registry", "config/datasets.yaml"),
        )
    return path


def run_isolated(
    plan: Any,
    task: str,
    method: str,
    dataset: str,
    params: dict[str, Any],
    outdir: Path,
    *,
    seed: int,
    data_dir: Path,
    checkpoint: Path,
    log_path: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of ``method`` with ``params`` through the suite's runner (one thread, the
    task's metric options, the checkpoint where the method needs it).

    Returns the runner's record and the run's ``scores.json`` (empty when none was written).
    """
    from benchmark.runner import run_method_isolated
    from contract.registry import get_method

    record = run_method_isolated(
        task,
        method,
        dataset,
        ensure_dataset(plan, dataset, data_dir),
        outdir,
        seed=seed,
        params=params,
        checkpoint=checkpoint if get_method(task, method).needs_checkpoint else None,
        threads=1,
        metric_options=plan.metric_options(task),
        log_path=log_path,
    )
    scores = read_json(outdir / "scores.json") if (outdir / "scores.json").is_file() else {}
    return record, scores


def run_variant(
    plan: Any,
    task: str,
    method: str,
    dataset: str,
    changes: dict[str, Any],
    outdir: Path,
    *,
    name: str,
    metrics: Sequence[str],
    data_dir: Path,
    checkpoint: Path,
    log_path: Path,
) -> dict[str, Any]:
    """One seed-0 run of ``method`` with the config's parameters and ``changes`` over them
    (:func:`run_isolated`): its status, the ``metrics`` of its scores and its wall time."""
    params = copy.deepcopy(plan.method_params(task, method, dataset))
    params.update(changes)
    start = time.perf_counter()
    record, scores = run_isolated(
        plan,
        task,
        method,
        dataset,
        params,
        outdir,
        seed=0,
        data_dir=data_dir,
        checkpoint=checkpoint,
        log_path=log_path,
    )
    return {
        "name": name,
        "method": method,
        "params": params,
        "status": record["status"],
        "error": record.get("error"),
        "scores": {m: scores.get(m) for m in metrics},
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_after": round(os.getloadavg()[0], 2),
    }


def run_point(
    plan: Any,
    curve: Curve,
    budget: int,
    seed: int,
    *,
    data_dir: Path,
    work_dir: Path,
    checkpoint: Path,
) -> dict[str, Any]:
    """Run one point through the suite's runner; return its record for the JSON."""
    from contract.registry import get_method

    if "epochs" not in get_method(curve.task, curve.method).parameters():
        raise KeyError(f"{curve.name}: the method has no 'epochs' parameter to vary")
    params = copy.deepcopy(plan.method_params(curve.task, curve.method))
    params["epochs"] = budget
    outdir = (
        work_dir / curve.task / curve.dataset / curve.method / f"epochs{budget}" / f"seed{seed}"
    )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    record, scores = run_isolated(
        plan,
        curve.task,
        curve.method,
        curve.dataset,
        params,
        outdir,
        seed=seed,
        data_dir=data_dir,
        checkpoint=checkpoint,
        log_path=outdir.parent / f"seed{seed}.log",
    )
    value = scores.get(curve.metric)
    return {
        "key": point_key(curve, budget, seed),
        "family": curve.family,
        "task": curve.task,
        "dataset": curve.dataset,
        "method": curve.method,
        "epochs": budget,
        "seed": seed,
        "params": params,
        "metric": curve.metric,
        "value": value,
        "scores": {k: v for k, v in scores.items() if isinstance(v, (int, float))},
        "status": record["status"],
        "error": record.get("error"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "method_seconds": record.get("method_seconds"),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def curve_points(curve: Curve, points: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured ok points of a curve, by budget (mean over seeds done later)."""
    return sorted(
        (
            p
            for p in points.values()
            if p["task"] == curve.task
            and p["dataset"] == curve.dataset
            and p["method"] == curve.method
            and p["status"] == "ok"
            and _finite(p["value"])
        ),
        key=lambda p: (p["epochs"], p["seed"]),
    )


def _by_budget(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    budgets = sorted({p["epochs"] for p in rows})
    return [
        (b, sum(p["value"] for p in rows if p["epochs"] == b) / sum(p["epochs"] == b for p in rows))
        for b in budgets
    ]


def summary_markdown(points: dict[str, dict[str, Any]], commands: list[str]) -> str:
    """The table: one row per curve with its scores by budget, wall time and plateau."""
    lines = [
        "# scGPT learning curves on the demo data",
        "",
        "Score of each scGPT method vs fine-tuning epochs (everything else the demo config's),",
        "through the suite's runner and metrics, one thread per run, one seed. Plateau: the",
        f"smallest budget no larger one beats by >= tol per doubling (tol {TOL} for scores in",
        "[0, 1]; 1 rank for the mean rank, lower better); `not flat by N`: still gaining at",
        "the largest budget measured. Wall seconds are on a shared 2-core machine at the load",
        "shown (1-minute load average before each point), not a budget measurement.",
        "",
        "Commands that measured these points (resumable: a point already measured is",
        "skipped; with no arguments the script measures every curve):",
        "",
        *(f"- `{c}`" for c in commands),
        "",
        "| family | task / dataset / method | metric | score by epochs | wall s by epochs | "
        "load | plateau |",
        "|---|---|---|---|---|---|---|",
    ]
    for curve in CURVES:
        rows = curve_points(curve, points)
        failed = [
            p
            for p in points.values()
            if p["key"].startswith(curve.name + "/") and p["status"] != "ok"
        ]
        if not rows and not failed:
            continue
        scores = ", ".join(f"{b}: {v:.3f}" for b, v in _by_budget(rows)) or "—"
        walls = ", ".join(f"{p['epochs']}: {p['wall_seconds']:.0f}" for p in rows) or "—"
        loads = ", ".join(f"{p['load_before']:.1f}" for p in rows) or "—"
        flat = plateau(_by_budget(rows), higher_is_better=curve.higher_is_better, tol=curve.tol)
        if flat is not None:
            verdict = f"{flat} epochs"
        elif len(rows) >= 2:
            verdict = f"not flat by {max(p['epochs'] for p in rows)}"
        else:
            verdict = "—"
        if failed:
            verdict += "; failed: " + ", ".join(f"{p['epochs']} ({p['error']})" for p in failed)
        lines.append(
            f"| {curve.family} | {curve.name} | {curve.metric} | {scores} | {walls} | {loads} | "
            f"{verdict} |"
        )
    return "\n".join(lines) + "\n"


def write_figure(points: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per curve: score vs epochs (log2 axis), the plateau marked."""
    from benchmark.plots import new_figure, save_figure

    drawn = [c for c in CURVES if curve_points(c, points)]
    if not drawn:
        return
    ncols = min(4, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = new_figure(3.2 * ncols, 2.6 * nrows)
    for i, curve in enumerate(drawn):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        xy = _by_budget(curve_points(curve, points))
        ax.plot([b for b, _ in xy], [v for _, v in xy], "o-")
        flat = plateau(xy, higher_is_better=curve.higher_is_better, tol=curve.tol)
        if flat is not None:
            ax.axvline(flat, color="grey", linestyle="--", label=f"plateau {flat}")
            ax.legend(fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{curve.family}\n{curve.dataset}", fontsize=8)
        ax.set_xlabel("epochs", fontsize=8)
        ax.set_ylabel(curve.metric, fontsize=8)
        ax.tick_params(labelsize=7)
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument(
        "--only", nargs="+", default=None, help="curves whose task/dataset/method contains one"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "results" / "model" / "sim_atlas")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "results" / "learning_curves")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--max-budget", type=int, default=None, help="skip points above this many epochs"
    )
    parser.add_argument("--list", action="store_true", help="print the planned points and stop")
    parser.add_argument(
        "--drop-failed",
        action="store_true",
        help="forget failed points (e.g. runs interrupted by hand), rewrite the table and stop",
    )
    args = parser.parse_args(argv)

    from benchmark.workflow import WorkflowPlan

    os.chdir(ROOT)  # the config's registry and relative paths
    plan = WorkflowPlan.from_config(load_config(args.config))
    json_path = args.out_dir / "learning_curves.json"
    stored = read_json(json_path) if json_path.is_file() else {"points": []}
    points = {p["key"]: p for p in stored["points"]}
    if args.drop_failed:
        stored["points"] = [p for p in points.values() if p["status"] == "ok"]
        write_json(stored, json_path)
        points = {p["key"]: p for p in stored["points"]}
        write_text(
            summary_markdown(points, stored.get("commands", [])),
            args.out_dir / "learning_curves.md",
        )
        write_figure(points, args.out_dir / "learning_curves.png")
        return
    command = " ".join(
        ["nice -n 19 .venv/bin/python benchmarks/learning_curves.py"]
        + (sys.argv[1:] if argv is None else argv)
    )
    todo = [
        (curve, budget, seed)
        for curve in CURVES
        if family_key(curve) in args.families
        and (args.only is None or any(word in curve.name for word in args.only))
        for budget in curve.budgets
        if args.max_budget is None or budget <= args.max_budget
        for seed in args.seeds
    ]
    for curve, budget, seed in todo:
        key = point_key(curve, budget, seed)
        done = key in points and points[key]["status"] == "ok"
        if args.list:
            print(f"{'done' if done else 'todo'}  {key}")
            continue
        if done:
            continue
        print(f"running {key}", flush=True)
        point = run_point(
            plan,
            curve,
            budget,
            seed,
            data_dir=args.data_dir,
            work_dir=args.work_dir,
            checkpoint=args.checkpoint,
        )
        print(
            f"  {point['status']} {curve.metric}={point['value']} in {point['wall_seconds']} s",
            flush=True,
        )
        points[key] = point
        stored["points"] = list(points.values())
        stored["tol"] = TOL
        if command not in stored.setdefault("commands", []):
            stored["commands"].append(command)
        write_json(stored, json_path)
        write_text(
            summary_markdown(points, stored["commands"]), args.out_dir / "learning_curves.md"
        )
        write_figure(points, args.out_dir / "learning_curves.png")


if __name__ == "__main__":
    main()
