"""The field's perturbation metrics (Systema, cell-eval, PerturBench) on hand-made cases.

The control profile is not constant in any case here (a metric that silently assumed a
zero or flat control would pass a flat one); the upstream comparison is
``tests/test_metrics_field_reference.py``.
"""

from __future__ import annotations

import math
from typing import Any

import anndata as ad
import numpy as np
import pytest

from baselines.perturbation_simple import (
    linear,
    linear_embedding_model,
    linear_scgpt,
    matching_mean,
    train_mean,
)
from benchmark.metrics import perturbation_field as pf
from benchmark.simulate import simulate_perturbation
from benchmark.tasks.perturbation import TASK
from contract.registry import get_method
from tests._models import random_checkpoint

CTRL = np.array([1.0, 3.0, 0.5, 2.0, 0.0, 4.0])  # non-constant control


def _screen() -> tuple[np.ndarray, np.ndarray]:
    """Four conditions: a shared response plus a distinct one each; truth and ctrl."""
    shared = np.array([0.5, -0.5, 0.5, 0.0, 0.3, -0.2])
    own = np.array(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.5, 0.0, 0.0, -0.5],
            [0.0, -1.0, 0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.2, 0.4],
        ]
    )
    return CTRL + shared + own, CTRL


def test_perfect_prediction_is_best_everywhere() -> None:
    truth, ctrl = _screen()
    ref = pf.perturbed_centroid(truth)
    de = np.tile(np.arange(4), (4, 1))
    np.testing.assert_allclose(pf.pearson_delta_reference(truth, truth, ref), 1.0)
    np.testing.assert_allclose(pf.pearson_delta_reference(truth, truth, ref, de), 1.0)
    np.testing.assert_array_equal(pf.centroid_accuracy(truth, truth), 1.0)
    np.testing.assert_array_equal(pf.discrimination_score(truth, truth, ctrl), 1.0)
    np.testing.assert_array_equal(pf.rank_metric(truth, truth, ctrl), 0.0)
    np.testing.assert_array_equal(pf.mae(truth, truth), 0.0)


def test_mean_effect_prediction_is_exposed() -> None:
    """Predicting the perturbed centroid scores well against control, not against it."""
    truth, ctrl = _screen()
    ref = pf.perturbed_centroid(truth)
    mean_pred = np.tile(ref, (4, 1))
    against_ctrl = pf.pearson_delta_reference(mean_pred, truth, ctrl)
    assert np.all(against_ctrl > 0.3)  # the paper's metric rewards the shared response
    assert np.all(np.isnan(pf.pearson_delta_reference(mean_pred, truth, ref)))  # undefined
    # one prediction for every condition: no condition is told apart
    np.testing.assert_allclose(pf.rank_metric(mean_pred, truth, ctrl), 1.5 / 4)  # ties: half
    # PDS of one prediction for all: the ranks 0..n-1 once each, mean (n + 1) / (2 n)
    assert pf.discrimination_score(mean_pred, truth, ctrl).mean() == pytest.approx(5 / 8)


def test_centroid_accuracy_counts_farther_centroids() -> None:
    truth = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    pred = np.array([[0.9, 0.0], [1.0, 0.0], [3.0, 0.0]])
    # prediction 0 sits next to truth 1: only truth 2 is farther than its own truth
    np.testing.assert_allclose(pf.centroid_accuracy(pred, truth), [0.5, 1.0, 1.0])
    assert np.isnan(pf.centroid_accuracy(pred[:1], truth[:1])).all()


def test_pds_ranks_and_leaves_out_the_target_gene() -> None:
    ctrl = np.array([2.0, 1.0, 0.5])
    truth = ctrl + np.array([[-2.0, 0.2, 0.0], [0.0, 0.2, 0.1], [0.0, -0.5, 0.5]])
    # prediction 0 gets the knocked-down gene wrong and copies condition 1 elsewhere
    pred = truth.copy()
    pred[0] = ctrl + np.array([0.0, 0.2, 0.1])
    with_target = pf.discrimination_score(pred, truth, ctrl)
    # L1 to the observed changes: own 2.1, truth 1 0.0, truth 2 1.1: two closer
    assert with_target[0] == pytest.approx(1 - 2 / 3)
    without = pf.discrimination_score(pred, truth, ctrl, exclude=[[0], [], []])
    # without gene 0: own 0.1, truth 1 0.0, truth 2 1.1: one closer
    assert without[0] == pytest.approx(1 - 1 / 3)
    np.testing.assert_allclose(with_target[1:], 1.0)
    with pytest.raises(ValueError, match="exclude has 1 entries"):
        pf.discrimination_score(pred, truth, ctrl, exclude=[[0]])


def test_rank_metric_counts_closer_predictions() -> None:
    ctrl = np.array([1.0, 1.0, 1.0])
    truth = ctrl + np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pred = ctrl + np.array([[0.5, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # for truth 0 no prediction is closer than prediction 0 (cos 0.45 vs 0, 0); for truth 1
    # prediction 1 is exact; prediction 0 is not its truth's closest elsewhere
    np.testing.assert_allclose(pf.rank_metric(pred, truth, ctrl), [0.0, 0.0, 0.0])
    pred[0] = ctrl + np.array([0.0, 1.0, 0.1])  # now prediction 1 is not closer to truth 0
    r = pf.rank_metric(pred, truth, ctrl)
    # cos(pred0, truth0) = 0 = cos(pred1, truth0) = cos(pred2, truth0): two ties, half each
    assert r[0] == pytest.approx(1.0 / 3)
    # a "no change" prediction (zero vector) has similarity 0, not NaN
    pred[2] = ctrl
    assert np.isfinite(pf.rank_metric(pred, truth, ctrl)).all()


def test_de_overlap_uses_fold_changes_and_k() -> None:
    ctrl = np.log1p(np.array([4.0, 4.0, 4.0, 4.0, 1.0]))
    pred = np.log1p(np.array([[16.0, 4.0, 1.0, 4.0, 1.0], [4.0, 4.0, 4.0, 4.0, 8.0]]))
    # |log2FC| of row 0: genes 0 and 2 (2 each), then genes 1, 3, 4 (0; stable order)
    real = [[2, 1, 3], [4]]
    out = pf.de_overlap(pred, ctrl, real)
    assert out[0] == pytest.approx(2 / 3)  # top 3 of pred = {0, 2, 1}: genes 2 and 1 shared
    assert out[1] == 1.0
    # k=1: the prediction's first gene is 0 (tied with 2, gene order), the real one 2
    np.testing.assert_allclose(pf.de_overlap(pred, ctrl, real, k=1), [0.0, 1.0])
    assert math.isnan(pf.de_overlap(pred, ctrl, [[], [4]])[0])  # no real DE gene: undefined
    with pytest.raises(ValueError, match="k must be"):
        pf.de_overlap(pred, ctrl, real, k=0)


def test_normalised_score() -> None:
    assert pf.normalised_score(0.8, 0.6, higher_is_better=True) == pytest.approx(0.5)
    assert pf.normalised_score(0.5, 0.6, higher_is_better=True) == 0.0  # clipped
    assert pf.normalised_score(0.1, 0.2, higher_is_better=False) == pytest.approx(0.5)
    assert pf.normalised_score(0.0, 0.0, higher_is_better=False) == 0.0  # 0/0 -> 0
    assert math.isnan(pf.normalised_score(math.nan, 0.2, higher_is_better=True))  # undefined


def test_bad_input_is_refused() -> None:
    truth, ctrl = _screen()
    with pytest.raises(ValueError, match="differ in shape"):
        pf.mae(truth, truth[:, :3])
    with pytest.raises(ValueError, match="non-finite"):
        pf.centroid_accuracy(np.full_like(truth, np.nan), truth)
    with pytest.raises(ValueError, match="reference has 3 genes"):
        pf.pearson_delta_reference(truth, truth, ctrl[:3])
    with pytest.raises(ValueError, match="no perturbation profiles"):
        pf.perturbed_centroid(np.zeros((0, 6)))


# -- the task and the new baselines ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> ad.AnnData:
    return simulate_perturbation(
        n_ctrl_cells=120, n_cells_per_condition=12, n_single=10, n_double=6, seed=1
    )


@pytest.fixture(scope="module")
def inputs(tiny: ad.AnnData) -> dict[str, Any]:
    return TASK.prepare(tiny, seed=0)


def test_task_scores_the_field_metrics_and_ceiling(inputs: dict[str, Any]) -> None:
    truth = ad.AnnData(X=inputs["truth_mean"])
    truth.obs_names = inputs["conditions"]
    truth.var_names = list(inputs["var_names"])
    perfect = TASK.score(truth, inputs, seed=0)
    assert perfect["pds"] == 1.0 and perfect["centroid_accuracy"] == 1.0
    assert perfect["rank"] == 0.0 and perfect["vcc_score"] > 0.5
    base = TASK.score(train_mean(*inputs["args"], seed=0), inputs, seed=0)
    assert base["vcc_score"] == pytest.approx(0.0, abs=0.05)  # ~ the baseline itself
    for metric in pf.FIELD_METRICS:
        assert f"{metric}_ceiling" in base and f"{metric}_ceiling" in TASK.breakdown
        assert metric in TASK.metrics
    # the ceiling is a noisy half against the other half: below a perfect prediction
    assert base["pds_ceiling"] <= 1.0 and base["mae_ceiling"] > 0.0


def test_matching_mean_averages_the_singles(inputs: dict[str, Any]) -> None:
    train, conditions = inputs["args"]
    out = matching_mean(train, conditions, seed=0)
    labels = train.obs["condition"].astype(str).to_numpy()
    for i, condition in enumerate(conditions):
        genes = condition.split("+")
        singles = [f"{g}+ctrl" for g in genes if g != "ctrl" and f"{g}+ctrl" in set(labels)]
        if len(singles) == 2:
            expect = np.mean([train.X[labels == s].mean(axis=0).A1 for s in singles], axis=0)
            np.testing.assert_allclose(out.X[i], expect, rtol=1e-5, atol=1e-6)
            return
    pytest.fail("the fixture has no double with both singles in training")


def test_linear_embedding_model_reproduces_linear(inputs: dict[str, Any]) -> None:
    train, conditions = inputs["args"]
    ours = linear(train, conditions, seed=0, n_components=train.n_vars, ridge_lambda=0.1)
    # the same model with the identity as gene embeddings of a gene subset still predicts
    # every gene (the rest at their training mean)
    rows = np.arange(0, train.n_vars, 2)
    G = np.eye(train.n_vars)[rows][:, :8]
    values = linear_embedding_model(train, conditions, G, rows, ridge_lambda=0.1)
    assert values.shape == ours.shape
    with pytest.raises(ValueError, match="gene embeddings have shape"):
        linear_embedding_model(train, conditions, G[:3], rows, ridge_lambda=0.1)


def test_linear_scgpt_uses_the_checkpoint_embeddings(inputs: dict[str, Any], tmp_path) -> None:
    train, conditions = inputs["args"]
    genes = list(train.var_names[: train.n_vars // 2])
    ckpt = random_checkpoint(tmp_path / "ckpt", genes, seed=0)
    out = linear_scgpt(train, conditions, seed=0, checkpoint=ckpt)
    assert out.shape == (len(conditions), train.n_vars)
    assert np.isfinite(out.X).all()
    spec = get_method("perturbation", "linear_scgpt")
    assert spec.needs_checkpoint and spec.label == "Linear (scGPT gene embeddings)"
    assert get_method("perturbation", "matching_mean").label == "Matching mean"
    # genes outside the vocabulary are predicted as their training mean
    other = random_checkpoint(tmp_path / "none", ["NOT_A_GENE"], seed=0)
    with pytest.raises(ValueError, match="none of the"):
        linear_scgpt(train, conditions, seed=0, checkpoint=other)


def test_undefined_field_scores_say_why() -> None:
    import pandas as pd

    from benchmark.tasks.perturbation import PerturbationTask

    one = pd.DataFrame({"de_overlap": [math.nan]})
    reasons = PerturbationTask._undefined_reasons(one)
    assert set(reasons) == {"centroid_accuracy", "pds", "rank", "de_overlap", "vcc_score"}
    assert "without a significant DE gene" in reasons["de_overlap"]
    assert PerturbationTask._undefined_reasons(pd.DataFrame({"de_overlap": [0.5, 0.2]})) == {}
