"""The suite's perturbation metrics against numbers computed by GEARS' own evaluation code.

``tests/data/make_gears_reference.py`` ran GEARS (cell-gears 0.1.2: ``get_DE_genes``,
``get_dropout_non_zero_genes``, ``compute_metrics``, ``deeper_analysis``,
``non_dropout_analysis``) on a small fixed screen (``gears_input.npz``) and stored its DE gene
lists and scores (``gears_reference.json``). GEARS scores an undefined Pearson correlation as
0: the suite's ``nan_policy="zero"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark.metrics.perturbation import apply_nan_policy, condition_scores, non_dropout_de
from benchmark.tasks.perturbation import condition_means, top_de_genes

DATA = Path(__file__).parent / "data"
TOL = 1e-5


@pytest.fixture(scope="module")
def screen() -> dict:
    with np.load(DATA / "gears_input.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    adata = ad.AnnData(
        X=sp.csr_matrix(arrays["X"]),
        obs=pd.DataFrame(
            {"condition": arrays["condition"]},
            index=[f"c{i}" for i in range(len(arrays["condition"]))],
        ),
        var=pd.DataFrame(index=arrays["genes"]),
    )
    perturbations = [str(p) for p in arrays["perturbations"]]
    ranking = top_de_genes(adata, perturbations, n_top=None)
    ctrl = condition_means(adata, ["ctrl"])[0]
    truth = condition_means(adata, perturbations)
    reference = json.loads((DATA / "gears_reference.json").read_text())
    return {
        "adata": adata,
        "perturbations": perturbations,
        "ranking": ranking,
        "ctrl": ctrl,
        "truth": truth,
        "pred": arrays["pred"],
        "reference": reference,
    }


def test_reference_was_made_by_gears_0_1_2(screen) -> None:
    assert screen["reference"]["versions"]["cell-gears"] == "0.1.2"
    assert sorted(screen["reference"]["perturbations"]) == sorted(screen["perturbations"])


def test_de_genes_equal_gears(screen) -> None:
    genes = screen["adata"].var_names
    dropouts_seen = False
    for i, pert in enumerate(screen["perturbations"]):
        theirs = screen["reference"]["perturbations"][pert]
        ranking = screen["ranking"][pert]
        assert list(genes[ranking[:20]]) == theirs["de_20"]
        nd = non_dropout_de(ranking, screen["truth"][i], screen["ctrl"])
        assert list(genes[nd]) == theirs["non_dropout_de_20"]
        dropouts_seen |= theirs["de_20"] != theirs["non_dropout_de_20"]
    assert dropouts_seen  # the fixture exercises the difference between the two lists


@pytest.mark.parametrize("index", range(4))
def test_scores_equal_gears(screen, index: int) -> None:
    pert = screen["perturbations"][index]
    theirs = screen["reference"]["perturbations"][pert]
    ranking = screen["ranking"][pert]
    raw = condition_scores(
        screen["pred"][index],
        screen["truth"][index],
        screen["ctrl"],
        ranking[:20],
        de_idx_non_dropout=non_dropout_de(ranking, screen["truth"][index], screen["ctrl"]),
    )
    ours = apply_nan_policy(raw, "zero")
    assert ours["pearson_delta"] == pytest.approx(theirs["pearson_delta"], abs=TOL)
    assert ours["pearson_delta_de"] == pytest.approx(theirs["pearson_delta_top20_de"], abs=TOL)
    assert ours["pearson_delta_de_non_dropout"] == pytest.approx(
        theirs["pearson_delta_top20_de_non_dropout"], abs=TOL
    )
    assert ours["mse"] == pytest.approx(theirs["mse"], abs=TOL)
    assert ours["mse_de"] == pytest.approx(theirs["mse_top20_de"], abs=TOL)
    assert ours["direction_acc_de"] == pytest.approx(theirs["frac_correct_direction_20"], abs=TOL)
    if index == 3:  # the "no change" prediction: undefined for the suite, 0 for GEARS
        assert math.isnan(raw["pearson_delta"]) and theirs["pearson_delta"] == 0.0
