"""Reference scores of the field's perturbation metrics from the upstream projects' own code.

Run from the repository root (cell-eval and its dependencies need not be in the project's
environment: install them into a folder and put it on ``PYTHONPATH``)::

    .venv/bin/pip install --no-deps --target /tmp/ce cell-eval==0.8.2 pdex==0.3.0 \\
        polars==2.1.0 polars-runtime-32==2.1.0 pyarrow==26.0.1 numba-mwu==0.2.0
    git clone https://github.com/mlbio-epfl/systema /tmp/systema
    git clone https://github.com/altoslabs/perturbench /tmp/perturbench
    PYTHONPATH=/tmp/ce .venv/bin/python tests/data/make_field_reference.py \\
        --systema /tmp/systema --perturbench /tmp/perturbench

The stored numbers were made with cell-eval 0.8.2 (PyPI), Systema at commit
``git -C /tmp/systema rev-parse HEAD`` and PerturBench likewise (both written into the JSON
under ``versions``).

Input (``field_input.npz``, written on the first run and read afterwards): a small
log-normalised screen from ``numpy.random.default_rng(7)``: 40 genes ``G0``..``G39`` whose
control means differ (a non-constant control), 50 control cells and 8 single knock-downs of
genes ``G0``..``G7`` (12 cells each, named by the gene, as cell-eval expects), a method's
predicted mean per perturbation (truth plus noise, one prediction copying another
perturbation's truth) and the mean baseline (mean of the perturbation means).

What each upstream function computes here:

- cell-eval (``cell_eval.metrics``): ``discrimination_score`` (L1, target gene excluded),
  ``pearson_delta``, ``mae`` on a ``PerturbationAnndataPair`` whose predicted AnnData holds
  the real control cells and 3 copies of each predicted mean; ``DEComparison.compute_overlap``
  (``overlap_at_N`` and ``overlap_at_5``) with the real DE table from scanpy's t-test
  (``logfoldchanges``, ``pvals_adj``) and the predicted one from the prediction's log2 fold
  change with every gene significant (no cells to test); ``score_agg_metrics`` of the method's
  mean scores against the baseline's.
- Systema (``evaluation/centroid_accuracy.py``, ``evaluation/pearson_delta_reference_metrics.py``):
  centroid accuracy and PearsonΔ / PearsonΔ20 against the perturbed centroid.
- PerturBench (``src/perturbench/analysis/benchmarks/metrics.py``): ``pairwise_metric_helper``
  (cosine of the changes over control) and ``rank_helper``.

Output ``field_reference.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
INPUT = HERE / "field_input.npz"
OUTPUT = HERE / "field_reference.json"
N_GENES = 40
PERTS = tuple(f"G{i}" for i in range(8))


def build_input() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    genes = np.array([f"G{i}" for i in range(N_GENES)])
    base = rng.gamma(2.0, 0.7, N_GENES) + 0.2  # non-constant control profile
    shared = rng.normal(0.0, 0.4, N_GENES) * (rng.random(N_GENES) < 0.5)  # systematic part
    conditions, rows = [], []
    for _ in range(50):
        rows.append(np.clip(base + rng.normal(0.0, 0.3, N_GENES), 0.0, None))
        conditions.append("ctrl")
    truth_means = []
    for i, pert in enumerate(PERTS):
        effect = shared + rng.normal(0.0, 0.7, N_GENES) * (rng.random(N_GENES) < 0.35)
        effect[i] = -base[i]  # knock-down of the target gene
        cells = np.clip(base + effect + rng.normal(0.0, 0.3, (12, N_GENES)), 0.0, None)
        rows.extend(cells)
        conditions.extend([pert] * 12)
        truth_means.append(cells.mean(axis=0))
    truth = np.vstack(truth_means)
    pred = truth + rng.normal(0.0, 0.35, truth.shape)
    pred[5] = truth[6] + rng.normal(0.0, 0.05, N_GENES)  # predicts another perturbation
    pred = np.clip(pred, 0.0, None)
    baseline = np.tile(truth.mean(axis=0), (len(PERTS), 1))
    return {
        "X": np.vstack(rows).astype(np.float64),
        "condition": np.array(conditions),
        "genes": genes,
        "pred": pred,
        "baseline": baseline,
    }


def load_input() -> dict[str, np.ndarray]:
    if not INPUT.exists():
        arrays = build_input()
        np.savez_compressed(INPUT, **arrays)
    with np.load(INPUT, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commit(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def real_de(adata: ad.AnnData) -> pd.DataFrame:
    """scanpy's t-test of each perturbation against control: the real DE table."""
    import scanpy as sc

    sub = adata.copy()
    sc.tl.rank_genes_groups(
        sub,
        groupby="condition",
        groups=list(PERTS),
        reference="ctrl",
        method="t-test",
        n_genes=N_GENES,
        use_raw=False,
    )
    res = sub.uns["rank_genes_groups"]
    frames = []
    for pert in PERTS:
        frames.append(
            pd.DataFrame(
                {
                    "target": pert,
                    "feature": np.asarray(res["names"][pert]).astype(str),
                    "log2_fold_change": np.asarray(res["logfoldchanges"][pert], dtype=float),
                    "p_value": np.asarray(res["pvals"][pert], dtype=float),
                    "fdr": np.asarray(res["pvals_adj"][pert], dtype=float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systema", type=Path, required=True, help="mlbio-epfl/systema checkout")
    parser.add_argument("--perturbench", type=Path, required=True, help="perturbench checkout")
    args = parser.parse_args()

    import polars as pl
    from cell_eval._score import score_agg_metrics
    from cell_eval._types import DEComparison, DEResults, PerturbationAnndataPair
    from cell_eval.metrics import discrimination_score, mae, pearson_delta

    arrays = load_input()
    genes = arrays["genes"].astype(str)
    obs = pd.DataFrame({"condition": arrays["condition"].astype(str)})
    obs.index = [f"c{i}" for i in range(len(obs))]
    real = ad.AnnData(X=arrays["X"], obs=obs, var=pd.DataFrame(index=genes))
    ctrl_cells = arrays["X"][obs["condition"].to_numpy() == "ctrl"]
    ctrl = ctrl_cells.mean(axis=0)
    truth = np.vstack([arrays["X"][obs["condition"].to_numpy() == p].mean(axis=0) for p in PERTS])

    def pred_adata(means: np.ndarray) -> ad.AnnData:
        X = np.vstack([ctrl_cells, np.repeat(means, 3, axis=0)])
        labels = ["ctrl"] * len(ctrl_cells) + [p for p in PERTS for _ in range(3)]
        return ad.AnnData(
            X=X,
            obs=pd.DataFrame({"condition": labels}, index=[f"p{i}" for i in range(len(labels))]),
            var=pd.DataFrame(index=genes),
        )

    def cell_eval_scores(means: np.ndarray) -> dict[str, dict[str, float]]:
        pair = PerturbationAnndataPair(
            real=real, pred=pred_adata(means), pert_col="condition", control_pert="ctrl"
        )
        return {
            "pds": discrimination_score(pair, metric="l1", exclude_target_gene=True),
            "pearson_delta": pearson_delta(pair),
            "mae": mae(pair),
        }

    de_real = real_de(real)
    real_sig = {
        p: de_real[(de_real["target"] == p) & (de_real["fdr"] < 0.05)]
        .assign(abs_lfc=lambda d: d["log2_fold_change"].abs())
        .sort_values("abs_lfc", ascending=False, kind="stable")["feature"]
        .tolist()
        for p in PERTS
    }

    def overlaps(means: np.ndarray) -> dict[str, dict[str, float]]:
        lfc = np.log2((np.expm1(means) + 1e-9) / (np.expm1(ctrl) + 1e-9))
        pred_frame = pd.DataFrame(
            {
                "target": np.repeat(PERTS, N_GENES),
                "feature": np.tile(genes, len(PERTS)),
                "log2_fold_change": lfc.ravel(),
                "p_value": 0.0,
                "fdr": 0.0,
            }
        )
        comparison = DEComparison(
            real=DEResults(pl.from_pandas(de_real), name="real"),
            pred=DEResults(pl.from_pandas(pred_frame), name="pred"),
        )
        return {
            "overlap_at_N": comparison.compute_overlap(k=None, metric="overlap"),
            "overlap_at_5": comparison.compute_overlap(k=5, metric="overlap"),
        }

    method = {**cell_eval_scores(arrays["pred"]), **overlaps(arrays["pred"])}
    base = {**cell_eval_scores(arrays["baseline"]), **overlaps(arrays["baseline"])}

    def agg(scores: dict[str, dict[str, float]]) -> pl.DataFrame:
        row = {"statistic": ["mean"]}
        row["mae"] = [float(np.mean(list(scores["mae"].values())))]
        row["discrimination_score_l1"] = [float(np.mean(list(scores["pds"].values())))]
        row["overlap_at_N"] = [float(np.mean(list(scores["overlap_at_N"].values())))]
        return pl.DataFrame(row)

    normalised = score_agg_metrics(agg(method), agg(base))
    normalised_scores = dict(
        zip(normalised["metric"].to_list(), normalised["from_baseline"].to_list(), strict=True)
    )

    # Systema's own functions (the repository is not a package: load the files)
    centroid = _module(args.systema / "evaluation" / "centroid_accuracy.py", "systema_centroid")
    pdref = _module(
        args.systema / "evaluation" / "pearson_delta_reference_metrics.py", "systema_pdref"
    )
    reference = truth.mean(axis=0)  # average_of_perturbation_centroids over the 8 perts
    top20 = {}
    for pert in PERTS:
        table = de_real[de_real["target"] == pert]
        order = np.argsort(-np.abs(table["log2_fold_change"].to_numpy()), kind="stable")
        top20[pert] = [
            int(np.flatnonzero(genes == g)[0]) for g in table["feature"].to_numpy()[order][:20]
        ]
    systema_pearson = {}
    for i, pert in enumerate(PERTS):
        # the function reads the top-20 indices from its module's globals
        pdref.top20_de_idxs = np.asarray(top20[pert])
        systema_pearson[pert] = pdref.pearson_delta_reference_metrics(
            truth[i], arrays["pred"][i], reference
        )
    pred_df = pd.DataFrame(arrays["pred"], columns=genes)
    pred_df.index = pd.MultiIndex.from_product([list(PERTS), ["m"]], names=["condition", "method"])
    pred_df = pred_df.sort_index()
    gt_df = pd.DataFrame(truth, index=list(PERTS), columns=genes)
    accuracy = centroid.calculate_centroid_accuracies(pred_df, gt_df)["m"]

    perturbench = _module(
        args.perturbench / "src" / "perturbench" / "analysis" / "benchmarks" / "metrics.py",
        "perturbench_metrics",
    )
    np.random.seed(0)  # noqa: NPY002  (rank_helper shuffles with the global state; no ties here)
    dp = pd.DataFrame(arrays["pred"] - ctrl, index=list(PERTS), columns=genes)
    dt = pd.DataFrame(truth - ctrl, index=list(PERTS), columns=genes)
    similarity = perturbench.pairwise_metric_helper(dp, dt, metric="cosine")
    ranks = perturbench.rank_helper(similarity, metric_type="similarity")

    out = {
        "perts": list(PERTS),
        "top20_de": top20,
        "real_significant_by_abs_lfc": real_sig,
        "cell_eval": {k: {p: float(v[p]) for p in PERTS} for k, v in method.items()},
        "cell_eval_baseline": {k: {p: float(v[p]) for p in PERTS} for k, v in base.items()},
        "cell_eval_normalised": normalised_scores,
        "systema": {
            "corr_all_allpert": {p: float(systema_pearson[p]["corr_all_allpert"]) for p in PERTS},
            "corr_20de_allpert": {p: float(systema_pearson[p]["corr_20de_allpert"]) for p in PERTS},
            "centroid_accuracy": {p: float(accuracy.loc[p]) for p in PERTS},
        },
        "perturbench": {"rank_cosine_logfc": {p: float(ranks.loc[p]) for p in PERTS}},
        "versions": {
            "cell-eval": importlib.metadata.version("cell-eval"),
            "scanpy": importlib.metadata.version("scanpy"),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "systema": _commit(args.systema),
            "perturbench": _commit(args.perturbench),
        },
    }
    OUTPUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
