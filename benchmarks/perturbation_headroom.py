"""What the simulated perturbation screen rewards: reference predictors vs the measured methods.

Usage::

    .venv/bin/python benchmarks/perturbation_headroom.py [--dataset data/standard/sim_perturb.h5ad]
        [--runs results/perturbation/sim_perturb] [--checkpoint results/model/pretrained]
        [--output benchmarks/results/perturbation_headroom.json]

Run after the demo workflow. Pearson-delta per GEARS subgroup (mean over conditions) of:

* ``train_mean``: the train-mean baseline;
* ``train_mean_plus_observed_knockdown``: the train mean with the perturbed genes' own change
  replaced by the observed one (an oracle of the knockdown alone: what a model gains by
  learning that a flagged gene falls, without knowing its neighbours);
* ``program_mean``: for each perturbed gene, the mean change of the training single
  knockdowns of its gene program (the simulator's ``programs``, prior knowledge that GEARS
  also gets as its GO graph), summed over a double's genes; train mean when a gene has no
  program relative;
* ``program_mean_plus_observed_knockdown``: both (oracle);
* every method run found under ``--runs`` (``<method>/seed<k>/per_condition.csv``).

And, for ``--checkpoint``, how much the gene token embeddings know of the programs: mean
cosine similarity (centred embeddings) of gene pairs within one program and between programs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.perturbation_simple import pseudobulk, train_mean
from benchmark.io import write_json
from benchmark.tasks.perturbation import TASK
from contract.conditions import parse_condition


def _as_prediction(X: np.ndarray, inputs: dict) -> ad.AnnData:
    return ad.AnnData(
        X=np.asarray(X, dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index(inputs["conditions"])),
        var=pd.DataFrame(index=pd.Index(inputs["var_names"])),
    )


def _subgroup_means(table: pd.DataFrame) -> dict[str, float]:
    # Undefined (NaN) for a group with any undefined condition, as in the task's tables.
    scores = table["pearson_delta"]
    out = {"all": scores.mean(skipna=False)}
    out.update(
        {name: group.mean(skipna=False) for name, group in scores.groupby(table["subgroup"])}
    )
    return {k: round(float(v), 4) for k, v in out.items()}


def _program_of(adata: ad.AnnData) -> dict[str, str]:
    """Gene -> its program in the simulator's ``uns["simulation"]["programs"]``."""
    programs = adata.uns["simulation"]["programs"]
    return {str(g): name for name, members in programs.items() for g in members}


def reference_predictors(adata: ad.AnnData) -> dict[str, dict[str, float]]:
    """Pearson-delta per subgroup of the reference predictors (module docstring)."""
    inputs = TASK.prepare(adata, seed=0)
    train, conditions = inputs["args"]
    genes = list(inputs["var_names"])
    ctrl = inputs["ctrl_mean"]
    observed = inputs["truth_mean"]
    program_of = _program_of(adata)

    baseline = np.asarray(train_mean(train, conditions, seed=0).X, dtype=np.float64)
    singles, means, train_ctrl = pseudobulk(train)
    single_change = {
        key[0]: means[i] - train_ctrl for i, key in enumerate(singles) if len(key) == 1
    }
    mean_change = baseline[0] - ctrl

    def program_change(gene: str) -> np.ndarray:
        relatives = [
            change
            for g, change in single_change.items()
            if g != gene
            and program_of.get(g) is not None
            and program_of.get(g) == program_of.get(gene)
        ]
        return np.mean(relatives, axis=0) if relatives else mean_change

    by_program = np.stack(
        [ctrl + sum(program_change(g) for g in parse_condition(c)) for c in conditions]
    )

    def with_observed_knockdown(pred: np.ndarray) -> np.ndarray:
        pred = pred.copy()
        for row, condition in enumerate(conditions):
            for gene in parse_condition(condition):
                col = genes.index(gene)
                pred[row, col] = observed[row, col]
        return pred

    predictors = {
        "train_mean": baseline,
        "train_mean_plus_observed_knockdown": with_observed_knockdown(baseline),
        "program_mean": by_program,
        "program_mean_plus_observed_knockdown": with_observed_knockdown(by_program),
    }
    return {
        name: _subgroup_means(TASK.per_condition(_as_prediction(X, inputs), inputs))
        for name, X in predictors.items()
    }


def method_runs(runs: Path) -> dict[str, dict[str, float]]:
    """Pearson-delta per subgroup of each method run's ``per_condition.csv`` (mean over seeds)."""
    out = {}
    for method_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        tables = [pd.read_csv(f) for f in sorted(method_dir.glob("seed*/per_condition.csv"))]
        if tables:
            out[method_dir.name] = _subgroup_means(pd.concat(tables))
    return out


def embedding_program_cohesion(checkpoint: Path, adata: ad.AnnData) -> dict[str, float]:
    """Mean cosine of centred gene embeddings within one program and between programs."""
    from scgpt import gene_embeddings

    program_of = _program_of(adata)
    table = gene_embeddings(str(checkpoint), [g for g in adata.var_names if g in program_of])
    labels = np.array([program_of[g] for g in table.index])
    X = table.to_numpy(dtype=np.float64)
    X -= X.mean(axis=0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cos = X @ X.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return {
        "n_genes": len(labels),
        "within_program": round(float(cos[same & off_diagonal].mean()), 4),
        "between_programs": round(float(cos[~same].mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="data/standard/sim_perturb.h5ad")
    parser.add_argument("--runs", default="results/perturbation/sim_perturb")
    parser.add_argument("--checkpoint", default="results/model/pretrained")
    parser.add_argument("--output", default="benchmarks/results/perturbation_headroom.json")
    args = parser.parse_args(argv)

    dataset = Path(args.dataset)
    if not dataset.is_file():
        parser.error(f"--dataset {dataset} does not exist: run the demo workflow first")
    adata = ad.read_h5ad(dataset)
    if "simulation" not in adata.uns or "programs" not in adata.uns["simulation"]:
        parser.error(
            f"--dataset {dataset} is not a simulated screen (uns['simulation']['programs'])"
        )
    result: dict = {
        "dataset": str(dataset),
        "metric": "pearson_delta (mean over conditions)",
        "reference_predictors": reference_predictors(adata),
    }
    if Path(args.runs).is_dir():
        result["methods"] = method_runs(Path(args.runs))
    if (Path(args.checkpoint) / "best_model.pt").is_file():
        result["gene_embedding_program_cosine"] = {
            "checkpoint": args.checkpoint,
            **embedding_program_cohesion(Path(args.checkpoint), adata),
        }
    write_json(result, args.output)
    print(Path(args.output).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
