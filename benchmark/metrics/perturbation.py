"""Perturbation-prediction metrics (scGPT paper, Supp. Note 12; GEARS' evaluation).

All inputs are mean log-normalised expression vectors over genes: ``pred`` (a method's
prediction for one condition), ``truth`` (mean of the condition's observed cells) and
``ctrl`` (mean of the control cells). With the changes over control
``dp = pred - ctrl`` and ``dt = truth - ctrl``, ``D`` a condition's top-20 differentially
expressed genes and ``N`` its top-20 non-dropout DE genes (:func:`non_dropout_de`):

- ``pearson_delta``    = corr(dp, dt) over all genes (Pearson; GEARS ``pearson_delta``),
- ``pearson_delta_de`` = corr(dp[D], dt[D]) (GEARS ``pearson_delta_top20_de``),
- ``pearson_delta_de_non_dropout`` = corr(dp[N], dt[N]) (GEARS
  ``pearson_delta_top20_de_non_dropout``, reported in GEARS' and scGPT's tutorials),
- ``mse``              = mean((pred - truth)^2) over all genes (GEARS ``mse``),
- ``mse_de``           = mean((pred[D] - truth[D])^2) (GEARS ``mse_top20_de``),
- ``direction_acc_de`` = mean(sign(dp[D]) == sign(dt[D])) (GEARS
  ``frac_correct_direction_20``; a predicted change of exactly 0 counts as wrong unless the
  observed change is 0 too).

Every value equals GEARS' (cell-gears 0.1.2) on a stored fixture
(``tests/data/make_gears_reference.py``) with the NaN policy ``"zero"``.

Pearson's r is undefined when either vector is constant (a "no change" prediction has
``dp = 0``); a change whose range is within float32 rounding of the control counts as
constant. What an undefined r becomes is the NaN policy (:data:`NAN_POLICIES`,
:func:`apply_nan_policy`): ``"zero"`` scores it 0 as GEARS does (the paper-compatible
choice); ``"nan"`` keeps it undefined, and a mean over conditions is then NaN as soon as one
of them is undefined, so that a mean always covers the same conditions for every method
(compare such methods on the MSE). Condition scores are averaged with :func:`mean_scores`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

CONDITION_METRICS: tuple[str, ...] = (
    "pearson_delta",
    "pearson_delta_de",
    "pearson_delta_de_non_dropout",
    "mse",
    "mse_de",
    "direction_acc_de",
)
"""Metrics computed per condition, in table order."""

PEARSON_METRICS: tuple[str, ...] = (
    "pearson_delta",
    "pearson_delta_de",
    "pearson_delta_de_non_dropout",
)
"""The metrics that can be undefined (NaN) and that the NaN policy applies to."""

NAN_POLICIES: dict[str, str] = {
    "zero": "an undefined Pearson correlation scores 0 (GEARS' and the paper's evaluation)",
    "nan": "an undefined Pearson correlation stays NaN; a mean over conditions with one is NaN",
}
"""What an undefined Pearson correlation becomes (config ``tasks.perturbation.metrics``)."""


def _vector(x: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def pearson(x: np.ndarray, y: np.ndarray, *, atol: float = 0.0) -> float:
    """Pearson correlation of two vectors; NaN if either is constant or shorter than 2.

    ``r = sum((x - mean x)(y - mean y)) / sqrt(sum((x - mean x)^2) sum((y - mean y)^2))``.
    A vector whose range (max - min) is at most ``atol`` counts as constant.
    """
    x = _vector(x, "x")
    y = _vector(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"vectors differ in length: {x.size} and {y.size}")
    if x.size < 2 or np.ptp(x) <= atol or np.ptp(y) <= atol:
        return float("nan")
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(xc @ yc) / np.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(np.clip(r, -1.0, 1.0))


def pearson_delta(pred: np.ndarray, truth: np.ndarray, ctrl: np.ndarray) -> float:
    """Pearson correlation of predicted and observed change: corr(pred - ctrl, truth - ctrl).

    Changes whose range is below ``1e-6 * max(1, max|ctrl|)`` count as constant (NaN): a
    prediction equal to control up to float32 rounding is "no change".
    """
    ctrl = _vector(ctrl, "ctrl")
    atol = 1e-6 * max(1.0, float(np.abs(ctrl).max(initial=0.0)))
    return pearson(_vector(pred, "pred") - ctrl, _vector(truth, "truth") - ctrl, atol=atol)


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error ``mean((pred - truth)^2)``."""
    pred = _vector(pred, "pred")
    truth = _vector(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in length: {pred.size} and {truth.size}")
    return float(np.mean((pred - truth) ** 2))


def direction_accuracy(pred: np.ndarray, truth: np.ndarray, ctrl: np.ndarray) -> float:
    """Fraction of genes with ``sign(pred - ctrl) == sign(truth - ctrl)``."""
    ctrl = _vector(ctrl, "ctrl")
    dp = np.sign(_vector(pred, "pred") - ctrl)
    dt = np.sign(_vector(truth, "truth") - ctrl)
    if dp.size == 0:
        return float("nan")
    return float(np.mean(dp == dt))


def non_dropout_de(
    ranking: Sequence[int] | np.ndarray,
    truth: np.ndarray,
    ctrl: np.ndarray,
    n_top: int = 20,
) -> np.ndarray:
    """The condition's top ``n_top`` DE genes that are not dropouts (GEARS' definition).

    GEARS' ``top_non_dropout_de_20``: walk the condition's DE ranking (all genes) and keep
    the genes that are non-zero in the condition's mean or zero in both the condition's and
    the control's mean; genes silent in the condition but expressed in control (dropouts)
    are skipped.

    Parameters
    ----------
    ranking
        Gene indices in DE order (best first), ideally every gene.
    truth, ctrl
        The condition's and the control's mean expression (non-negative, log-normalised).
    n_top
        How many genes to keep.
    """
    truth = _vector(truth, "truth")
    ctrl = _vector(ctrl, "ctrl")
    ranking = np.asarray(ranking, dtype=np.int64)
    keep = (truth != 0) | (ctrl == 0)
    return ranking[keep[ranking]][:n_top]


def condition_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    ctrl: np.ndarray,
    de_idx: Sequence[int] | np.ndarray,
    *,
    de_idx_non_dropout: Sequence[int] | np.ndarray,
) -> dict[str, float]:
    """All :data:`CONDITION_METRICS` for one condition (undefined Pearson values are NaN).

    Parameters
    ----------
    pred, truth, ctrl
        Predicted, observed and control mean expression (same gene order).
    de_idx
        Indices of the condition's top differentially expressed genes (20 in the paper).
    de_idx_non_dropout
        Indices of its top non-dropout DE genes (:func:`non_dropout_de`).
    """
    pred = _vector(pred, "pred")
    truth = _vector(truth, "truth")
    ctrl = _vector(ctrl, "ctrl")
    if not (pred.shape == truth.shape == ctrl.shape):
        raise ValueError(
            f"pred, truth and ctrl differ in length: {pred.size}, {truth.size}, {ctrl.size}"
        )
    de = np.asarray(de_idx, dtype=np.int64)
    nd = np.asarray(de_idx_non_dropout, dtype=np.int64)
    return {
        "pearson_delta": pearson_delta(pred, truth, ctrl),
        "pearson_delta_de": pearson_delta(pred[de], truth[de], ctrl[de]),
        "pearson_delta_de_non_dropout": pearson_delta(pred[nd], truth[nd], ctrl[nd]),
        "mse": mse(pred, truth),
        "mse_de": mse(pred[de], truth[de]),
        "direction_acc_de": direction_accuracy(pred[de], truth[de], ctrl[de]),
    }


def apply_nan_policy(
    scores: Mapping[str, float], policy: str, metrics: Sequence[str] = PEARSON_METRICS
) -> dict[str, float]:
    """One condition's scores with undefined Pearson values treated as ``policy`` says.

    Parameters
    ----------
    scores
        Output of :func:`condition_scores` (other keys are passed through).
    policy
        A key of :data:`NAN_POLICIES`: ``"zero"`` (GEARS) replaces NaN in ``metrics`` by 0;
        ``"nan"`` leaves it.
    metrics
        The Pearson metrics the policy applies to (default :data:`PEARSON_METRICS`; the task
        adds Systema's Pearson-delta against the perturbed centroid).
    """
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy {policy!r}: expected one of {sorted(NAN_POLICIES)}")
    out = dict(scores)
    if policy == "zero":
        for metric in metrics:
            value = out.get(metric)
            if isinstance(value, float) and np.isnan(value):
                out[metric] = 0.0
    return out


def mean_scores(
    per_condition: Iterable[Mapping[str, float]],
    metrics: Sequence[str] = CONDITION_METRICS,
    *,
    suffix: str = "",
    skip_nan: bool = False,
) -> dict[str, float]:
    """Average condition scores over conditions.

    Parameters
    ----------
    per_condition
        One mapping of metric -> value per condition.
    metrics
        Metrics to average.
    suffix
        Appended to every output key (e.g. ``"_single"``).
    skip_nan
        False (default): a metric is NaN if any condition's value is NaN (undefined).
        True: average the defined values only (NaN when none is defined).

    Returns
    -------
    ``<metric><suffix>`` for each metric and ``n_conditions<suffix>``.
    """
    rows = list(per_condition)
    out: dict[str, float] = {f"n_conditions{suffix}": float(len(rows))}
    for metric in metrics:
        values = np.array([row[metric] for row in rows], dtype=np.float64)
        if skip_nan:
            values = values[~np.isnan(values)]
        out[f"{metric}{suffix}"] = float(values.mean()) if values.size else float("nan")
    return out
