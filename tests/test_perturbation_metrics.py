"""Perturbation metrics against hand-computed values, and condition-name parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.metrics.perturbation import (
    NAN_POLICIES,
    apply_nan_policy,
    condition_scores,
    direction_accuracy,
    mean_scores,
    mse,
    non_dropout_de,
    pearson,
    pearson_delta,
)
from contract.conditions import (
    format_condition,
    n_seen,
    normalise_condition,
    parse_condition,
    perturbed_genes,
    subgroup,
)

# A control that varies over genes, so that a metric which forgets to subtract it (on either
# side) gives a different number.
CTRL = np.array([1.0, 0.0, 2.0, 3.0])
PRED = np.array([1.0, 1.0, 4.0, 6.0])  # change over ctrl: [0, 1, 2, 3]
TRUTH = np.array([2.0, 1.0, 5.0, 8.0])  # change over ctrl: [1, 1, 3, 5]


def test_pearson_delta_by_hand() -> None:
    # dp - mean = [-1.5, -0.5, 0.5, 1.5]; dt - mean = [-1.5, -1.5, 0.5, 2.5]
    # sum of products 7, sums of squares 5 and 11 -> r = 7 / sqrt(55)
    assert pearson_delta(PRED, TRUTH, CTRL) == pytest.approx(7 / math.sqrt(55))
    # Without the control: corr(pred, truth) = 23 / sqrt(18 * 30); with it on one side only:
    # corr(pred - ctrl, truth) = 11 / sqrt(5 * 30). Neither is the delta correlation.
    assert pearson(PRED, TRUTH) == pytest.approx(23 / math.sqrt(540))
    assert pearson(PRED - CTRL, TRUTH) == pytest.approx(11 / math.sqrt(150))
    assert abs(7 / math.sqrt(55) - 23 / math.sqrt(540)) > 0.04
    assert abs(7 / math.sqrt(55) - 11 / math.sqrt(150)) > 0.04


def test_mse_and_direction_by_hand() -> None:
    # squared errors 1, 0, 1, 4
    assert mse(PRED, TRUTH) == pytest.approx(1.5)
    # signs of change: pred [0, +, +, +], truth [+, +, +, +] -> 3 of 4 agree
    assert direction_accuracy(PRED, TRUTH, CTRL) == pytest.approx(0.75)
    assert direction_accuracy(CTRL - 1, TRUTH, CTRL) == 0.0


def test_condition_scores_on_de_subset() -> None:
    scores = condition_scores(PRED, TRUTH, CTRL, de_idx=[1, 3], de_idx_non_dropout=[0, 1, 2])
    assert scores["pearson_delta"] == pytest.approx(7 / math.sqrt(55))
    assert scores["pearson_delta_de"] == pytest.approx(1.0)  # two points: [1, 3] vs [1, 5]
    # dp [0, 1, 2] vs dt [1, 1, 3]: centred [-1, 0, 1] and [-2/3, -2/3, 4/3] -> 2 / sqrt(2 * 8/3)
    assert scores["pearson_delta_de_non_dropout"] == pytest.approx(2 / math.sqrt(16 / 3))
    assert scores["mse"] == pytest.approx(1.5)
    assert scores["mse_de"] == pytest.approx(2.0)  # (0 + 4) / 2
    assert scores["direction_acc_de"] == pytest.approx(1.0)


def test_constant_prediction_has_undefined_pearson() -> None:
    assert math.isnan(pearson_delta(CTRL, TRUTH, CTRL))
    # float32 rounding of the control mean is still "no change"
    ctrl = np.array([0.1, 2.3, 5.7, 1e-3])
    assert math.isnan(
        pearson_delta(ctrl.astype(np.float32), ctrl + np.array([1.0, 0.0, -1.0, 2.0]), ctrl)
    )
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    scores = condition_scores(CTRL, TRUTH, CTRL, de_idx=[0, 1, 2], de_idx_non_dropout=[1, 2])
    assert math.isnan(scores["pearson_delta"]) and math.isnan(scores["pearson_delta_de"])
    assert math.isnan(scores["pearson_delta_de_non_dropout"])
    assert scores["mse"] == pytest.approx((1 + 1 + 9 + 25) / 4)
    # GEARS' policy scores the undefined correlations 0; the suite's default keeps NaN.
    zero = apply_nan_policy(scores, "zero")
    assert zero["pearson_delta"] == 0.0 and zero["pearson_delta_de_non_dropout"] == 0.0
    assert zero["mse"] == scores["mse"]
    assert math.isnan(apply_nan_policy(scores, "nan")["pearson_delta"])
    with pytest.raises(ValueError, match="nan_policy 'drop'"):
        apply_nan_policy(scores, "drop")
    assert set(NAN_POLICIES) == {"nan", "zero"}


def test_non_dropout_de_skips_genes_silent_only_in_the_condition() -> None:
    ctrl = np.array([1.0, 0.0, 0.5, 2.0, 0.0])
    truth = np.array([0.0, 0.0, 1.0, 3.0, 0.2])
    # gene 0: zero in the condition, expressed in control -> dropout, skipped;
    # gene 1: zero in both -> a true zero, kept (GEARS' definition).
    ranking = [0, 3, 1, 2, 4]
    assert non_dropout_de(ranking, truth, ctrl, n_top=3).tolist() == [3, 1, 2]
    assert non_dropout_de(ranking, truth, ctrl, n_top=20).tolist() == [3, 1, 2, 4]


def test_mean_scores_propagate_or_skip_nan() -> None:
    rows = [
        {"pearson_delta": 0.5, "mse": 1.0},
        {"pearson_delta": float("nan"), "mse": 3.0},
    ]
    out = mean_scores(rows, ("pearson_delta", "mse"), suffix="_single")
    assert out["n_conditions_single"] == 2.0 and out["mse_single"] == 2.0
    assert math.isnan(out["pearson_delta_single"])  # one condition undefined: mean undefined
    skipped = mean_scores(rows, ("pearson_delta", "mse"), skip_nan=True)
    assert skipped == {"n_conditions": 2.0, "pearson_delta": 0.5, "mse": 2.0}


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        mse([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        condition_scores(PRED, TRUTH[:3], CTRL, [0], de_idx_non_dropout=[0])


# -- condition names ---------------------------------------------------------------------


def test_parse_valid_conditions() -> None:
    assert parse_condition("ctrl") == ()
    assert parse_condition("TP53+ctrl") == ("TP53",)
    assert parse_condition("ctrl+TP53") == ("TP53",)
    assert parse_condition("KLF1+BAK1") == ("BAK1", "KLF1")
    assert parse_condition("BAK1+KLF1") == parse_condition("KLF1+BAK1")


def test_normalise_and_format() -> None:
    assert normalise_condition("ctrl+A") == "A+ctrl"
    assert normalise_condition("B+A") == "A+B"
    assert normalise_condition("ctrl") == "ctrl"
    assert format_condition(["B", "A"]) == "A+B"
    assert perturbed_genes(["A+ctrl", "B+A", "ctrl"]) == {"A", "B"}


def test_unknown_gene_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as err:
        parse_condition("A+ZZZ", known_genes={"A", "B"})
    message = str(err.value)
    assert "'A+ZZZ'" in message and "'ZZZ'" in message and "not in var_names" in message
    assert parse_condition("B+ctrl", known_genes={"A", "B"}) == ("B",)


@pytest.mark.parametrize("bad", ["", "A+", "+B", "A++B", "A+A"])
def test_malformed_conditions(bad: str) -> None:
    with pytest.raises(ValueError, match="condition"):
        parse_condition(bad)


def test_subgroups() -> None:
    seen = {"A", "B"}
    assert subgroup("A+ctrl", seen) == "single_seen"
    assert subgroup("ctrl+C", seen) == "single_unseen"
    assert subgroup("C+D", seen) == "combo_seen0"
    assert subgroup("A+C", seen) == "combo_seen1"
    assert subgroup("B+A", seen) == "combo_seen2"
    assert n_seen("A+C", seen) == 1
    with pytest.raises(ValueError):
        subgroup("ctrl", seen)
