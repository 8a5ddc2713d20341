"""Which perturbation metric is right: controlled predictions whose true error is known.

Usage::

    .venv/bin/python benchmarks/metric_validity.py [--runs results/perturbation/sim_perturb]
        [--checkpoint results/model/sim_atlas] [--fit scgpt gears]
        [--output benchmarks/results/metric_validity]

The demo's simulated screen (``sim_perturb`` with the demo config's parameters) knows each
condition's true effect (``uns["simulation"]["true_delta"]``: the change of expected
log-normalised expression over control). Every metric of the perturbation task (the paper's
and the field's, :mod:`benchmark.metrics.perturbation_field`) scores, through the task's own
``score`` (NaN policy ``zero``, the paper's), a family of predictions whose distance from the
truth is known:

* ``truth``: the observed control mean plus the true effect;
* ``truth + noise xf``: the truth plus Gaussian noise on every gene whose variance is ``f``
  times the mean-effect prediction's true error (f = 0.25, 0.5, 1, 2, 4), so the noisy truths
  with ``f < 1`` are truly closer to the truth than the mean effect and those with ``f > 1``
  are farther;
* ``mean effect``: control plus the mean true effect of the training conditions, the same
  for every condition (systematic variation only: what "train mean" learns);
* ``mean effect + target genes``: the mean effect with each condition's perturbed genes set
  to their true value (knows which gene falls and nothing about its neighbours);
* ``control``: no change;
* ``other condition's truth``: each condition gets the truth of another test condition;
* the cheap methods run here (``train_mean``, ``matching_mean``, ``additive``, ``linear``,
  ``linear_scgpt`` with ``--checkpoint``), the methods named by ``--fit`` run here through
  the harness (``benchmark.runner.run_method``, seed 0, the demo config's parameters: what
  the demo's jobs run; scGPT ~2-4 min, GEARS ~1-2 min on one core) and every method run found
  under ``--runs`` (``<method>/seed<k>/predictions.h5ad``, e.g. after the demo workflow).

Three verdicts per metric:

* *fooled by systematic variation* (the issue's test): it ranks the mean effect, which
  carries no condition-specific information, above a noisy truth, which carries it;
* *credit for systematic variation*: how far the mean effect gets from control towards the
  truth on the metric's scale, ``(m(mean) - m(control)) / (m(truth) - m(control))`` (0: no
  credit for the shared response, 1: as much as the truth);
* agreement with the true error (mean squared distance from the truth over genes and
  conditions; Kendall tau of the two rankings, 1 = the same order), and whether the mean
  effect is ranked above a noisy truth that is truly closer (f < 1).

Writes ``<output>.json`` (values, ranks, verdicts), ``<output>.md`` (the table) and
``<output>.png`` (ranks per metric, predictions ordered by true error). About 30 s on one
core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.perturbation_simple import (
    additive,
    linear,
    linear_scgpt,
    matching_mean,
    train_mean,
)
from benchmark.io import read_json, write_json, write_text
from benchmark.metrics.perturbation_field import HIGHER_IS_BETTER
from benchmark.simulate import simulate_perturbation
from benchmark.tasks.perturbation import PerturbationTask
from benchmark.yamlfile import load_yaml

ROOT = Path(__file__).resolve().parents[1]
NOISE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
SEED = 0

HIGHER: dict[str, bool] = {
    "pearson_delta": True,
    "pearson_delta_de": True,
    "pearson_delta_de_non_dropout": True,
    "mse": False,
    "mse_de": False,
    "direction_acc_de": True,
    **HIGHER_IS_BETTER,
    "vcc_score": True,
}
"""Direction of every metric of the task (True: higher is better)."""

PAPER = ("pearson_delta", "pearson_delta_de", "pearson_delta_de_non_dropout")


def demo_screen() -> ad.AnnData:
    """The demo's ``sim_perturb`` (the demo config's builder parameters)."""
    params = load_yaml(ROOT / "config" / "config.yaml")["datasets"]["sim_perturb"]
    return simulate_perturbation(**params)


def as_anndata(values: np.ndarray, inputs: dict[str, Any]) -> ad.AnnData:
    out = ad.AnnData(X=np.asarray(values, dtype=np.float32))
    out.obs_names = list(inputs["conditions"])
    out.var_names = list(inputs["var_names"])
    return out


def controlled_predictions(adata: ad.AnnData, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The controlled family (see the module docstring), rows = the task's test conditions."""
    sim = adata.uns["simulation"]
    names = [str(c) for c in sim["conditions"]]
    delta = np.asarray(sim["true_delta"], dtype=np.float64)
    row = {c: i for i, c in enumerate(names)}
    conditions = inputs["conditions"]
    missing = [c for c in conditions if c not in row]
    if missing:
        raise KeyError(f"uns['simulation']['conditions'] lacks test conditions {missing[:5]}")
    ctrl = inputs["ctrl_mean"]
    truth = ctrl + delta[[row[c] for c in conditions]]
    split = dict(zip(names, (str(s) for s in sim["condition_split"]), strict=True))
    train = [row[c] for c in names if split[c] in ("train", "val")]
    mean_effect = np.tile(ctrl + delta[train].mean(axis=0), (len(conditions), 1))
    mean_error = float(np.mean((mean_effect - truth) ** 2))
    rng = np.random.default_rng(SEED)
    family = {"truth": truth}
    for f in NOISE_FACTORS:
        family[f"truth + noise x{f:g}"] = truth + rng.normal(
            0.0, np.sqrt(f * mean_error), truth.shape
        )
    family["mean effect"] = mean_effect
    targeted = mean_effect.copy()
    for i, genes in enumerate(inputs["target_idx"][c] for c in conditions):
        targeted[i, genes] = truth[i, genes]
    family["mean effect + target genes"] = targeted
    family["control"] = np.tile(ctrl, (len(conditions), 1))
    family["other condition's truth"] = np.roll(truth, 1, axis=0)
    return family


def method_predictions(
    inputs: dict[str, Any], runs: Path | None, checkpoint: Path | None
) -> dict[str, np.ndarray]:
    """Cheap methods run here, and every method's predictions found under ``runs``."""
    train, conditions = inputs["args"]
    out: dict[str, np.ndarray] = {}
    cheap = {
        "train_mean": lambda: train_mean(train, conditions, seed=0),
        "matching_mean": lambda: matching_mean(train, conditions, seed=0),
        "additive": lambda: additive(train, conditions, seed=0),
        "linear": lambda: linear(train, conditions, seed=0),
    }
    if checkpoint is not None and checkpoint.is_dir():
        cheap["linear_scgpt"] = lambda: linear_scgpt(
            train, conditions, seed=0, checkpoint=str(checkpoint)
        )
    for name, run in cheap.items():
        out[f"method: {name}"] = PerturbationTask.align(run(), inputs)
    if runs is not None and runs.is_dir():
        for path in sorted(runs.glob("*/seed*/predictions.h5ad")):
            record = path.with_name("run.json")
            if record.exists() and read_json(record).get("status") != "ok":
                continue
            label = f"run: {path.parent.parent.name} ({path.parent.name})"
            out[label] = PerturbationTask.align(ad.read_h5ad(path), inputs)
    return out


def fitted_predictions(
    adata: ad.AnnData, inputs: dict[str, Any], methods: list[str], checkpoint: Path | None
) -> dict[str, np.ndarray]:
    """Run ``methods`` through the harness with the demo config's parameters (seed 0)."""
    import tempfile

    from benchmark.runner import run_method
    from contract.registry import get_method

    config = load_yaml(ROOT / "config" / "config.yaml")["tasks"]["perturbation"]
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="metric_validity_") as tmp:
        path = Path(tmp) / "sim_perturb.h5ad"
        adata.write_h5ad(path)
        for method in methods:
            spec = get_method("perturbation", method)
            run_dir = Path(tmp) / method / "seed0"
            record = run_method(
                "perturbation",
                method,
                "sim_perturb",
                path,
                run_dir,
                seed=0,
                params=dict(config["methods"].get(method) or {}),
                checkpoint=str(checkpoint) if spec.needs_checkpoint else None,
                threads=1,
            )
            if record["status"] != "ok":
                raise RuntimeError(f"--fit {method} failed: {record.get('error')}")
            pred = ad.read_h5ad(run_dir / "predictions.h5ad")
            out[f"fitted: {method}"] = PerturbationTask.align(pred, inputs)
            print(f"fitted {method}: {record['wall_seconds']:.0f} s", flush=True)
    return out


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two rankings (scipy)."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def evaluate(
    runs: Path | None, checkpoint: Path | None, fit: list[str] | None = None
) -> dict[str, Any]:
    """Score every prediction with every metric; rank; judge each metric."""
    adata = demo_screen()
    task = PerturbationTask(nan_policy="zero")
    inputs = task.prepare(adata, seed=0)
    predictions = controlled_predictions(adata, inputs)
    truth = predictions["truth"]
    predictions.update(method_predictions(inputs, runs, checkpoint))
    if fit:
        predictions.update(fitted_predictions(adata, inputs, fit, checkpoint))
    metrics = list(task.metrics)
    values = {}
    true_error = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for name, pred in predictions.items():
        scores = task.score(as_anndata(pred, inputs), inputs, seed=0)
        values[name] = {m: float(scores[m]) for m in metrics}
        true_error[name] = float(np.mean((pred - truth) ** 2))
    wall = (time.perf_counter() - wall) / len(predictions)
    cpu = (time.process_time() - cpu) / len(predictions)
    frame = pd.DataFrame(values).T.loc[:, metrics]
    error = pd.Series(true_error)
    order = error.sort_values(kind="stable").index.tolist()
    frame, error = frame.loc[order], error.loc[order]
    ranks = pd.DataFrame(
        {m: (-frame[m] if HIGHER[m] else frame[m]).rank(method="average") for m in metrics}
    )
    error_rank = error.rank(method="average")
    noisy = [f"truth + noise x{f:g}" for f in NOISE_FACTORS]
    closer = [n for n in noisy if true_error[n] < true_error["mean effect"]]
    verdicts = {}
    for m in metrics:
        beaten = [n for n in noisy if ranks.at["mean effect", m] < ranks.at[n, m]]
        span = frame.at["truth", m] - frame.at["control", m]
        credit = (frame.at["mean effect", m] - frame.at["control", m]) / span if span else np.nan
        verdicts[m] = {
            "fooled_by_systematic_variation": bool(beaten),
            "mean_effect_ranked_above": beaten,
            "credit_for_systematic_variation": float(credit),
            "kendall_tau_with_true_error": kendall_tau(ranks[m].to_numpy(), error_rank.to_numpy()),
            "mean_effect_above_a_truly_closer_noisy_truth": bool(set(beaten) & set(closer)),
            "truth_ranked_first": bool(ranks.at["truth", m] == ranks[m].min()),
        }
    return {
        "dataset": "sim_perturb (demo config parameters)",
        "n_conditions": len(inputs["conditions"]),
        "nan_policy": "zero",
        "noise_factors": list(NOISE_FACTORS),
        "true_error": error.to_dict(),
        "values": frame.to_dict(orient="index"),
        "ranks": ranks.to_dict(orient="index"),
        "verdicts": verdicts,
        "score_seconds_per_prediction": {"wall": wall, "cpu": cpu},
        "ceiling": {k: float(v) for k, v in inputs["ceiling"].items()},
    }


def to_markdown(result: dict[str, Any], command: str) -> str:
    values = pd.DataFrame(result["values"]).T
    metrics = list(values.columns)
    error = pd.Series(result["true_error"])
    lines = [
        "# Which perturbation metric is right (simulated screen, known truth)",
        "",
        f"Command: `{command}`. Dataset: {result['dataset']}, {result['n_conditions']} test "
        f"conditions; NaN policy `{result['nan_policy']}`. Predictions ordered by their true "
        "error (mean squared distance from the truth); values in each metric's units.",
        "",
        "| prediction | true error | " + " | ".join(metrics) + " |",
        "|---|---|" + "|".join("---" for _ in metrics) + "|",
    ]
    for name in error.index:
        cells = [f"{values.at[name, m]:.3f}" for m in metrics]
        lines.append(f"| {name} | {error[name]:.4f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Verdicts",
        "",
        "Fooled: the metric ranks the mean effect (systematic variation only, no "
        "condition-specific information) above a noisy truth (which has it). Credit: how far "
        "the mean effect gets from control towards the truth on the metric's scale (0 = none, "
        "1 = as far as the truth). Kendall tau: agreement of the metric's ranking of all "
        "predictions with their true error (1 = same order); against true error: the mean "
        "effect ranked above a noisy truth that is truly closer to the truth.",
        "",
        "| metric | fooled by systematic variation | credit for systematic variation "
        "| Kendall tau | against true error | truth ranked first |",
        "|---|---|---|---|---|---|",
    ]
    for m, v in result["verdicts"].items():
        fooled = (
            "yes: above " + ", ".join(v["mean_effect_ranked_above"])
            if v["fooled_by_systematic_variation"]
            else "no"
        )
        lines.append(
            f"| {m} | {fooled} | {v['credit_for_systematic_variation']:.2f} | "
            f"{v['kendall_tau_with_true_error']:.2f} | "
            f"{'yes' if v['mean_effect_above_a_truly_closer_noisy_truth'] else 'no'} | "
            f"{'yes' if v['truth_ranked_first'] else 'no'} |"
        )
    seconds = result["score_seconds_per_prediction"]
    lines += [
        "",
        f"Scoring one prediction with every metric (task.score): {seconds['cpu']:.3f} s CPU, "
        f"{seconds['wall']:.3f} s wall on the shared machine.",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = pd.DataFrame(result["ranks"]).T  # predictions x metrics
    ranks = ranks.loc[list(pd.Series(result["true_error"]).index)]
    metrics = list(ranks.columns)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(ranks), 1.2 + 0.36 * len(metrics)))
    image = ax.imshow(ranks.T.to_numpy(), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(ranks)), ranks.index, rotation=60, ha="right", fontsize=7)
    labels = []
    for m in metrics:
        v = result["verdicts"][m]
        mark = " FOOLED" if v["fooled_by_systematic_variation"] else ""
        labels.append(f"{m}  credit {v['credit_for_systematic_variation']:.2f}{mark}")
    ax.set_yticks(range(len(metrics)), labels, fontsize=7)
    mean_col = list(ranks.index).index("mean effect")
    ax.axvline(mean_col, color="red", lw=1.0, ls="--")
    ax.set_xlabel("prediction, ordered by true error (left: closest to the truth)", fontsize=8)
    ax.set_title(
        "Rank of each prediction under each metric (1 = best); red: the mean effect", fontsize=9
    )
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="rank")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results/perturbation/sim_perturb")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "results/model/sim_atlas")
    parser.add_argument("--fit", nargs="*", default=[], help="methods to run here: scgpt gears")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/metric_validity")
    args = parser.parse_args(argv)
    command = "python benchmarks/metric_validity.py " + " ".join(argv or sys.argv[1:])
    result = evaluate(args.runs, args.checkpoint, args.fit)
    write_json(result, args.output.with_suffix(".json"))
    write_text(to_markdown(result, command.strip()), args.output.with_suffix(".md"))
    plot(result, args.output.with_suffix(".png"))
    print(args.output.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
