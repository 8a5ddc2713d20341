"""The field's perturbation metrics against the upstream projects' own code on a fixture.

``tests/data/make_field_reference.py`` ran cell-eval 0.8.2 (``discrimination_score``,
``pearson_delta``, ``mae``, ``DEComparison.compute_overlap``, ``score_agg_metrics``),
Systema's ``calculate_centroid_accuracies`` / ``pearson_delta_reference_metrics`` and
PerturBench's ``pairwise_metric_helper`` / ``rank_helper`` on a small screen with a
non-constant control (``field_input.npz``) and stored the results (``field_reference.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark.metrics import perturbation_field as pf
from benchmark.metrics.perturbation import pearson_delta
from benchmark.tasks.perturbation import de_statistics, significant_de_genes

DATA = Path(__file__).parent / "data"
TOL = 1e-9


@pytest.fixture(scope="module")
def fixture() -> dict:
    with np.load(DATA / "field_input.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    reference = json.loads((DATA / "field_reference.json").read_text())
    labels = arrays["condition"].astype(str)
    perts = reference["perts"]
    truth = np.vstack([arrays["X"][labels == p].mean(axis=0) for p in perts])
    ctrl = arrays["X"][labels == "ctrl"].mean(axis=0)
    genes = list(arrays["genes"].astype(str))
    return {
        **arrays,
        "ref": reference,
        "perts": perts,
        "truth": truth,
        "ctrl": ctrl,
        "genes": genes,
        "gene_index": {g: i for i, g in enumerate(genes)},
    }


def _values(fixture: dict, block: str, metric: str) -> np.ndarray:
    return np.array([fixture["ref"][block][metric][p] for p in fixture["perts"]])


def test_control_is_not_constant(fixture: dict) -> None:
    assert np.ptp(fixture["ctrl"]) > 1.0


def test_pds_equals_cell_eval(fixture: dict) -> None:
    targets = [[fixture["gene_index"][p]] for p in fixture["perts"]]
    for key, block in (("pred", "cell_eval"), ("baseline", "cell_eval_baseline")):
        ours = pf.discrimination_score(fixture[key], fixture["truth"], fixture["ctrl"], targets)
        np.testing.assert_allclose(ours, _values(fixture, block, "pds"), atol=TOL)
    # the fixture tells a wrong prediction apart (perturbation 5 predicts 6's profile)
    assert _values(fixture, "cell_eval", "pds")[5] < 1.0


def test_mae_and_pearson_delta_equal_cell_eval(fixture: dict) -> None:
    pred, truth, ctrl = fixture["pred"], fixture["truth"], fixture["ctrl"]
    np.testing.assert_allclose(pf.mae(pred, truth), _values(fixture, "cell_eval", "mae"), atol=TOL)
    ours = [pearson_delta(pred[i], truth[i], ctrl) for i in range(len(truth))]
    np.testing.assert_allclose(ours, _values(fixture, "cell_eval", "pearson_delta"), atol=TOL)
    # Systema's function with the control as reference is the paper's metric too
    np.testing.assert_allclose(pf.pearson_delta_reference(pred, truth, ctrl), ours, atol=TOL)


def test_significant_de_genes_match_the_fixture(fixture: dict) -> None:
    labels = fixture["condition"].astype(str)
    adata = ad.AnnData(
        X=sp.csr_matrix(fixture["X"]),
        obs=pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=fixture["genes"]),
    )
    stats = de_statistics(adata, fixture["perts"])
    for p in fixture["perts"]:
        ours = [fixture["genes"][i] for i in significant_de_genes(stats[p])]
        assert ours == fixture["ref"]["real_significant_by_abs_lfc"][p]


def test_de_overlap_equals_cell_eval(fixture: dict) -> None:
    real = [
        [fixture["gene_index"][g] for g in fixture["ref"]["real_significant_by_abs_lfc"][p]]
        for p in fixture["perts"]
    ]
    for key, block in (("pred", "cell_eval"), ("baseline", "cell_eval_baseline")):
        for k, name in ((None, "overlap_at_N"), (5, "overlap_at_5")):
            ours = pf.de_overlap(fixture[key], fixture["ctrl"], real, k=k)
            np.testing.assert_allclose(ours, _values(fixture, block, name), atol=TOL)


def test_normalised_score_equals_cell_eval(fixture: dict) -> None:
    ref = fixture["ref"]
    means = {
        block: {
            "mae": np.mean(_values(fixture, block, "mae")),
            "pds": np.mean(_values(fixture, block, "pds")),
            "de_overlap": np.mean(_values(fixture, block, "overlap_at_N")),
        }
        for block in ("cell_eval", "cell_eval_baseline")
    }
    upstream = {
        "mae": ref["cell_eval_normalised"]["mae"],
        "pds": ref["cell_eval_normalised"]["discrimination_score_l1"],
        "de_overlap": ref["cell_eval_normalised"]["overlap_at_N"],
    }
    ours = {
        m: pf.normalised_score(
            means["cell_eval"][m],
            means["cell_eval_baseline"][m],
            higher_is_better=pf.HIGHER_IS_BETTER[m],
        )
        for m in pf.VCC_METRICS
    }
    for m in pf.VCC_METRICS:
        assert ours[m] == pytest.approx(upstream[m], abs=TOL)
    assert np.mean(list(ours.values())) == pytest.approx(
        ref["cell_eval_normalised"]["avg_score"], abs=TOL
    )


def test_systema_metrics_equal_systema(fixture: dict) -> None:
    pred, truth = fixture["pred"], fixture["truth"]
    reference = pf.perturbed_centroid(truth)
    top20 = np.array([fixture["ref"]["top20_de"][p] for p in fixture["perts"]])
    np.testing.assert_allclose(
        pf.pearson_delta_reference(pred, truth, reference),
        _values(fixture, "systema", "corr_all_allpert"),
        atol=TOL,
    )
    np.testing.assert_allclose(
        pf.pearson_delta_reference(pred, truth, reference, top20),
        _values(fixture, "systema", "corr_20de_allpert"),
        atol=TOL,
    )
    np.testing.assert_allclose(
        pf.centroid_accuracy(pred, truth),
        _values(fixture, "systema", "centroid_accuracy"),
        atol=TOL,
    )


def test_rank_equals_perturbench(fixture: dict) -> None:
    np.testing.assert_allclose(
        pf.rank_metric(fixture["pred"], fixture["truth"], fixture["ctrl"]),
        _values(fixture, "perturbench", "rank_cosine_logfc"),
        atol=TOL,
    )
