"""Reference perturbation scores from GEARS' own evaluation code, for the suite's tests.

Run from the repository root with the project's environment (GEARS, ``cell-gears`` 0.1.2, is
one of its dependencies)::

    .venv/bin/python tests/data/make_gears_reference.py

Stored numbers were made with cell-gears 0.1.2, scanpy 1.11.5, scipy 1.17.1, numpy 2.4.6 and
scikit-learn 1.9.1 (written into the JSON under ``versions``).

Input (``gears_input.npz``, written on the first run and read afterwards): a small
log-normalised screen drawn with ``numpy.random.default_rng(0)``: 60 genes, 64 control cells
and 4 perturbations of 15 cells; some genes are zero in every cell (GEARS' "true zeros"), and
some are zero in one perturbation's cells but expressed in control (its "dropouts"). One
predicted mean vector per perturbation; the last one equals the control mean ("no change"),
whose Pearson correlations are undefined.

GEARS' steps (``gears.data_utils``, ``gears.inference``):

- ``get_DE_genes``: scanpy ``rank_genes_groups`` (t-test, ``rankby_abs``) of every
  perturbation against control, all genes ranked (``rank_genes_groups_cov_all``);
- ``get_dropout_non_zero_genes``: ``top_non_dropout_de_20`` = the first 20 ranked genes that
  are non-zero in the perturbation's mean or zero in both it and the control;
- ``compute_metrics`` (mse over all genes), ``deeper_analysis`` (``pearson_delta``,
  ``pearson_delta_top20_de``, ``mse_top20_de``, ``frac_correct_direction_20``) and
  ``non_dropout_analysis`` (``pearson_delta_top20_de_non_dropout``) on the predictions, with
  ``test_res`` holding every cell of a perturbation with the perturbation's predicted mean as
  its prediction. GEARS scores an undefined Pearson correlation as 0.

Output ``gears_reference.json``: per perturbation, the two DE gene lists and those scores.
"""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
INPUT = HERE / "gears_input.npz"
N_GENES = 60
PERTURBATIONS = ("G1+ctrl", "G2+ctrl", "G3+G4", "G5+ctrl")


def build_input() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 0.6, N_GENES)
    base[:4] = 0.0  # never expressed: true zeros
    n_ctrl, n_per = 64, 15
    conditions = ["ctrl"] * n_ctrl + [p for p in PERTURBATIONS for _ in range(n_per)]
    rows = []
    effects = {
        p: rng.normal(0.0, 0.8, N_GENES) * (rng.random(N_GENES) < 0.3) for p in PERTURBATIONS
    }
    for condition in conditions:
        mean = base if condition == "ctrl" else np.clip(base + effects[condition], 0.0, None)
        cell = rng.poisson(np.exp(mean) * 2.0) * (rng.random(N_GENES) < 0.8)
        rows.append(np.log1p(cell.astype(np.float64)))
    # Values on a 1/64 grid and 64 control cells: every mean GEARS takes (the control's, and
    # of 15 copies of a prediction) is exact in float32, so "no change" is exactly 0 there.
    X = (np.round(np.array(rows) * 64) / 64).astype(np.float32)
    X[:, :4] = 0.0
    # dropouts: expressed in control, never in these perturbations' cells
    labels = np.array(conditions)
    X[np.ix_(labels == "G1+ctrl", [4, 5, 6])] = 0.0
    X[np.ix_(labels == "G3+G4", [7, 8])] = 0.0
    # The control mean exactly as GEARS computes it (np.mean of the sparse rows, float32), so
    # that the "no change" prediction below has a change of exactly 0.
    ctrl_mean = np.asarray(np.mean(sp.csr_matrix(X)[np.flatnonzero(labels == "ctrl")], axis=0))[0]
    preds = []
    for i, p in enumerate(PERTURBATIONS):
        truth = X[labels == p].mean(axis=0)
        if i == len(PERTURBATIONS) - 1:
            preds.append(ctrl_mean)  # "no change": undefined Pearson of the change
        else:
            noise = rng.normal(0.0, 0.3, N_GENES).astype(np.float32)
            preds.append(ctrl_mean + 0.6 * (truth - ctrl_mean) + noise * (ctrl_mean > 0))
    return {
        "X": X,
        "condition": labels.astype(str),
        "genes": np.array([f"G{i}" for i in range(1, N_GENES + 1)], dtype=str),
        "perturbations": np.array(PERTURBATIONS, dtype=str),
        "pred": np.array(preds, dtype=np.float32),
    }


def load_input() -> dict[str, np.ndarray]:
    if not INPUT.exists():
        np.savez_compressed(INPUT, **build_input())
    with np.load(INPUT, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    from gears.data_utils import get_DE_genes, get_dropout_non_zero_genes
    from gears.inference import compute_metrics, deeper_analysis, non_dropout_analysis

    data = load_input()
    genes = data["genes"]
    adata = ad.AnnData(
        X=sp.csr_matrix(data["X"]),
        obs=pd.DataFrame(
            {"condition": data["condition"], "cell_type": "K562"},
            index=[f"c{i}" for i in range(len(data["condition"]))],
        ),
        var=pd.DataFrame({"gene_name": genes}, index=genes),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = get_DE_genes(adata, skip_calc_de=False)
        adata = get_dropout_non_zero_genes(adata)
    name_of = dict(adata.obs[["condition", "condition_name"]].astype(str).values)
    gene_idx = {g: i for i, g in enumerate(genes)}

    labels = adata.obs["condition"].astype(str).to_numpy()
    pert_cat, pred, truth, pred_de, truth_de = [], [], [], [], []
    X = data["X"]
    for i, pert in enumerate(data["perturbations"]):
        cells = np.flatnonzero(labels == pert)
        de = [gene_idx[g] for g in adata.uns["rank_genes_groups_cov_all"][name_of[pert]][:20]]
        for c in cells:
            pert_cat.append(pert)
            pred.append(data["pred"][i])
            truth.append(X[c])
            pred_de.append(data["pred"][i][de])
            truth_de.append(X[c][de])
    test_res = {
        "pert_cat": np.array(pert_cat),
        "pred": np.array(pred),
        "truth": np.array(truth),
        "pred_de": np.array(pred_de),
        "truth_de": np.array(truth_de),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning for "no change"
        _, per_pert = compute_metrics(test_res)
        deeper = deeper_analysis(adata, test_res)
        non_dropout = non_dropout_analysis(adata, test_res)

    record: dict = {"versions": {}, "perturbations": {}}
    for name in ("cell-gears", "scanpy", "scipy", "numpy", "scikit-learn", "anndata"):
        record["versions"][name] = importlib.metadata.version(name)
    for pert in data["perturbations"]:
        full = name_of[pert]
        record["perturbations"][str(pert)] = {
            "de_20": [str(g) for g in adata.uns["rank_genes_groups_cov_all"][full][:20]],
            "non_dropout_de_20": [str(g) for g in adata.uns["top_non_dropout_de_20"][full]],
            "mse": float(per_pert[pert]["mse"]),
            "pearson_delta": float(deeper[pert]["pearson_delta"]),
            "pearson_delta_top20_de": float(deeper[pert]["pearson_delta_top20_de"]),
            "mse_top20_de": float(deeper[pert]["mse_top20_de"]),
            "frac_correct_direction_20": float(deeper[pert]["frac_correct_direction_20"]),
            "pearson_delta_top20_de_non_dropout": float(
                non_dropout[pert]["pearson_delta_top20_de_non_dropout"]
            ),
        }
    out = HERE / "gears_reference.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["perturbations"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
