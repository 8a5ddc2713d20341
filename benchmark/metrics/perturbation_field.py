"""Perturbation metrics the field uses since the paper: Systema, cell-eval and PerturBench.

The paper's Pearson-delta (:mod:`benchmark.metrics.perturbation`) measures the change over
control. Since then, three groups showed that it rewards predicting the average response of
a screen (systematic variation) and proposed metrics that do not. Every function here scores
all test conditions at once (rows of ``(n_conditions, n_genes)`` arrays of mean
log-normalised expression: ``pred`` a method's predictions, ``truth`` the observed means) and
returns one value per condition (vectorised: one distance matrix, no per-gene loops).

Systema (Vinas Torne et al., Nat Biotechnol 2025; mlbio-epfl/systema, ``evaluation/``):

- :func:`pearson_delta_reference`: corr(pred - ref, truth - ref) with ``ref`` the perturbed
  centroid, the mean of the training perturbations' mean profiles
  (``average_of_perturbation_centroids``), over all genes (``corr_all_allpert``) or a
  condition's top-20 DE genes (``corr_20de_allpert``).
- :func:`centroid_accuracy`: the fraction of the other conditions' true profiles that are
  farther (Euclidean) from the prediction than its own true profile
  (``calculate_centroid_accuracies``; 1 best, about 0.5 for an uninformative prediction).

cell-eval (Arc Institute, the Virtual Cell Challenge scorer, ``cell_eval.metrics``):

- :func:`discrimination_score`: the perturbation discrimination score (PDS,
  ``discrimination_score_l1``): the L1 distance of a condition's predicted change over
  control to every observed change, its own perturbed genes left out; score
  ``1 - rank / n_conditions`` with rank the number of observed changes closer than its own
  (1 best, ``1/n`` worst).
- :func:`de_overlap`: ``overlap_at_N``: of the observed significant DE genes (FDR < 0.05,
  ranked by |log2 fold change|), the fraction of the top N found among the prediction's top
  N by |log2 fold change| (N = all significant genes, or a fixed k).
- :func:`normalised_score`: the score against a baseline run (``cell_eval._score``):
  ``(user - base) / (1 - base)`` for metrics whose best value is 1, ``1 - user / base`` for
  those whose best value is 0, undefined values set to 0, clipped below at 0.

PerturBench (Wu et al., NeurIPS Datasets & Benchmarks 2024; altoslabs/perturbench,
``analysis/benchmarks/metrics.py``):

- :func:`rank_metric`: for each condition, the fraction of all predictions that are more
  similar to its truth than its own prediction (cosine similarity of the change over
  control, ``rank_helper``; 0 best, about 0.5 for an uninformative prediction). PerturBench
  breaks ties by a random shuffle; here a tie counts one half (the expectation of that
  shuffle, deterministic).

What the implementations were checked against: ``tests/data/make_field_reference.py`` runs
cell-eval's own functions on a stored fixture and Systema's / PerturBench's formulas as
their repositories write them (``tests/test_metrics_field_reference.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

FIELD_METRICS: tuple[str, ...] = (
    "pearson_delta_pert",
    "pearson_delta_pert_de",
    "centroid_accuracy",
    "pds",
    "de_overlap",
    "rank",
    "mae",
)
"""Per-condition metrics of the field, in table order (see the module docstring)."""

FIELD_PEARSON_METRICS: tuple[str, ...] = ("pearson_delta_pert", "pearson_delta_pert_de")
"""The field metrics that are Pearson correlations (undefined for a constant change)."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "pearson_delta_pert": True,
    "pearson_delta_pert_de": True,
    "centroid_accuracy": True,
    "pds": True,
    "de_overlap": True,
    "rank": False,
    "mae": False,
}
"""Direction of each field metric (cell-eval's ``best_value``: ONE or ZERO)."""

VCC_METRICS: tuple[str, ...] = ("mae", "pds", "de_overlap")
"""cell-eval's ``vcc`` profile (mae, discrimination_score_l1, overlap_at_N): the metrics the
Virtual Cell Challenge score averages after normalising each against the mean baseline."""


def _matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (n_conditions, n_genes), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = _matrix(pred, "pred")
    truth = _matrix(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth differ in shape: {pred.shape} and {truth.shape}")
    return pred, truth


def row_pearson(x: np.ndarray, y: np.ndarray, *, atol: float = 0.0) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y``.

    A row whose range (max - min) is at most ``atol`` in either matrix is constant: its
    correlation is undefined (NaN), as in :func:`benchmark.metrics.perturbation.pearson`.
    """
    x, y = _pair(x, y)
    out = np.full(x.shape[0], np.nan)
    if x.shape[1] < 2:
        return out
    ok = (np.ptp(x, axis=1) > atol) & (np.ptp(y, axis=1) > atol)
    xc = x[ok] - x[ok].mean(axis=1, keepdims=True)
    yc = y[ok] - y[ok].mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    out[ok] = np.clip(num / den, -1.0, 1.0)
    return out


def pearson_delta_reference(
    pred: np.ndarray,
    truth: np.ndarray,
    reference: np.ndarray,
    de_idx: np.ndarray | None = None,
) -> np.ndarray:
    """Systema's Pearson-delta against a reference: corr(pred - ref, truth - ref) per row.

    Parameters
    ----------
    pred, truth
        ``(n_conditions, n_genes)`` predicted and observed mean expression.
    reference
        ``(n_genes,)``: the perturbed centroid (:func:`perturbed_centroid`) for Systema's
        metric; control gives the paper's Pearson-delta.
    de_idx
        ``(n_conditions, k)`` gene indices per condition (its top-20 DE genes): correlate
        over those genes only; ``None``: all genes.

    Returns
    -------
    One correlation per condition; NaN where either change is constant (within float32
    rounding of the reference, as the paper's metric), e.g. a prediction equal to the
    reference.
    """
    pred, truth = _pair(pred, truth)
    reference = np.asarray(reference, dtype=np.float64).ravel()
    if reference.size != pred.shape[1]:
        raise ValueError(f"reference has {reference.size} genes, pred {pred.shape[1]}")
    dp = pred - reference
    dt = truth - reference
    if de_idx is not None:
        de_idx = np.asarray(de_idx, dtype=np.int64)
        if de_idx.ndim != 2 or de_idx.shape[0] != pred.shape[0]:
            raise ValueError(
                f"de_idx must be (n_conditions={pred.shape[0]}, k), got shape {de_idx.shape}"
            )
        dp = np.take_along_axis(dp, de_idx, axis=1)
        dt = np.take_along_axis(dt, de_idx, axis=1)
    atol = 1e-6 * max(1.0, float(np.abs(reference).max(initial=0.0)))
    return row_pearson(dp, dt, atol=atol)


def perturbed_centroid(means: np.ndarray) -> np.ndarray:
    """Systema's perturbed reference: the mean of the perturbations' mean profiles.

    ``means`` are the ``(n_perturbations, n_genes)`` mean profiles of the training
    perturbations (control excluded); each perturbation weighs the same whatever its cell
    count (``average_of_perturbation_centroids``).
    """
    means = _matrix(means, "means")
    if means.shape[0] == 0:
        raise ValueError("perturbed centroid: no perturbation profiles to average")
    return means.mean(axis=0)


def centroid_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Systema's centroid accuracy of each prediction (1 best; NaN below 2 conditions).

    ``acc_i = #{j != i : ||pred_i - truth_j|| > ||pred_i - truth_i||} / (n - 1)``.
    """
    pred, truth = _pair(pred, truth)
    n = pred.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    dist = cdist(pred, truth, metric="euclidean")
    own = np.diag(dist)
    farther = (dist > own[:, None]).sum(axis=1)  # own distance is never > itself
    return farther / (n - 1)


def _tie_rank(scores: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per row: entries strictly below ``own`` plus half the other entries equal to it."""
    below = (scores < own[:, None]).sum(axis=1)
    ties = (scores == own[:, None]).sum(axis=1) - 1  # minus the own entry
    return below + 0.5 * ties


def discrimination_score(
    pred: np.ndarray,
    truth: np.ndarray,
    ctrl: np.ndarray,
    exclude: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """cell-eval's perturbation discrimination score (``discrimination_score_l1``) per row.

    ``d_ij = sum_g |(pred_i - ctrl)_g - (truth_j - ctrl)_g|`` over the genes not in
    ``exclude[i]``; ``pds_i = 1 - #{j : d_ij < d_ii} / n`` (ties count one half). 1 best,
    ``1/n`` worst; undefined (NaN) below 2 conditions.

    Parameters
    ----------
    pred, truth
        ``(n_conditions, n_genes)`` predicted and observed mean expression.
    ctrl
        ``(n_genes,)`` control mean (the changes are taken against it; the L1 distance of
        changes equals that of profiles, the control cancels, kept for clarity).
    exclude
        Per condition, the gene indices left out of its distances: its perturbed genes
        (cell-eval leaves out the gene named as the perturbation).
    """
    pred, truth = _pair(pred, truth)
    ctrl = np.asarray(ctrl, dtype=np.float64).ravel()
    n = pred.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    dp = pred - ctrl
    dt = truth - ctrl
    dist = cdist(dp, dt, metric="cityblock")
    if exclude is not None:
        if len(exclude) != n:
            raise ValueError(f"exclude has {len(exclude)} entries for {n} conditions")
        for i, genes in enumerate(exclude):
            genes = np.asarray(genes, dtype=np.int64)
            if genes.size:
                dist[i] -= np.abs(dp[i, genes][None, :] - dt[:, genes]).sum(axis=1)
    rank = _tie_rank(dist, np.diag(dist).copy())
    return 1.0 - rank / n


def rank_metric(pred: np.ndarray, truth: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """PerturBench's rank of each condition on the cosine similarity of changes (0 best).

    ``s_ji = cos(pred_j - ctrl, truth_i - ctrl)``;
    ``rank_i = #{j : s_ji > s_ii} / n`` (ties with other predictions count one half).
    A prediction with no change (zero vector) has similarity 0 to every truth.
    """
    pred, truth = _pair(pred, truth)
    ctrl = np.asarray(ctrl, dtype=np.float64).ravel()
    n = pred.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    dp = pred - ctrl
    dt = truth - ctrl
    norm_p = np.linalg.norm(dp, axis=1)
    norm_t = np.linalg.norm(dt, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (dt @ dp.T) / np.outer(norm_t, norm_p)  # rows: truth i, columns: prediction j
    sim = np.where(np.isfinite(sim), sim, 0.0)
    # ranking by "more similar" = ranking by the negated similarity being smaller
    rank = _tie_rank(-sim, -np.diag(sim).copy())
    return rank / n


def log2_fold_change(means: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """log2 fold change of mean log1p expression over control, as scanpy computes it.

    ``log2((expm1(mean) + 1e-9) / (expm1(ctrl) + 1e-9))`` (``rank_genes_groups``'
    ``logfoldchanges``), so a pseudobulk prediction and the observed cells are on one scale.
    A negative predicted mean (a linear model can predict one) counts as no expression.
    """
    means = np.maximum(_matrix(means, "means"), 0.0)
    ctrl = np.maximum(np.asarray(ctrl, dtype=np.float64).ravel(), 0.0)
    return np.log2((np.expm1(means) + 1e-9) / (np.expm1(ctrl) + 1e-9))


def de_overlap(
    pred: np.ndarray,
    ctrl: np.ndarray,
    real_de: Sequence[Sequence[int]],
    k: int | None = None,
) -> np.ndarray:
    """cell-eval's ``overlap_at_N`` (``k=None``) or ``overlap_at_k`` of each condition.

    ``k_eff = min(k or len(real), len(real))``; overlap = |real[:k_eff] & top_pred[:k_eff]|
    / k_eff, with ``top_pred`` the genes ranked by the prediction's |log2 fold change|
    (:func:`log2_fold_change`). Undefined (NaN) for a condition without a significant real
    DE gene (cell-eval scores it 0; here it is marked, not scored).

    Parameters
    ----------
    pred
        ``(n_conditions, n_genes)`` predicted mean expression (log1p scale).
    ctrl
        ``(n_genes,)`` control mean.
    real_de
        Per condition, the observed significant DE genes (FDR < 0.05) ranked by |log2 fold
        change|, best first (:func:`benchmark.tasks.perturbation.significant_de_genes`).
    k
        Fixed number of genes (``overlap_at_50`` ...); ``None``: all significant genes.

    Notes
    -----
    cell-eval ranks the predicted genes from a DE test on predicted cells, filtered at FDR
    0.05 too. The contract's predictions are one mean profile per condition, with no cells to
    test, so every gene is a candidate and |log2 fold change| alone ranks them.
    """
    pred = _matrix(pred, "pred")
    if len(real_de) != pred.shape[0]:
        raise ValueError(f"real_de has {len(real_de)} entries for {pred.shape[0]} conditions")
    if k is not None and k < 1:
        raise ValueError(f"de_overlap: k must be >= 1 or None, got {k}")
    lfc = np.abs(log2_fold_change(pred, ctrl))
    # stable sort of the negated values: equal fold changes keep gene order
    order = np.argsort(-lfc, axis=1, kind="stable")
    out = np.full(pred.shape[0], np.nan)
    for i, real in enumerate(real_de):
        real = np.asarray(real, dtype=np.int64)
        k_eff = real.size if k is None else min(k, real.size)
        if k_eff == 0:
            continue
        out[i] = np.intersect1d(real[:k_eff], order[i, :k_eff]).size / k_eff
    return out


def mae(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean absolute error of each row, ``mean_g |pred - truth|`` (cell-eval's ``mae``)."""
    pred, truth = _pair(pred, truth)
    return np.abs(pred - truth).mean(axis=1)


def normalised_score(user: float, base: float, *, higher_is_better: bool) -> float:
    """cell-eval's score of a mean metric against the baseline's (``cell_eval._score``).

    ``(user - base) / (1 - base)`` when the best value is 1, ``1 - user / base`` when it is
    0; an undefined result (NaN, e.g. 0/0) becomes 0 and the score is clipped below at 0, as
    cell-eval does (so 0 = no better than the baseline, 1 = perfect). An undefined input
    (NaN ``user`` or ``base``) gives NaN: it is not scored as 0.
    """
    if np.isnan(user) or np.isnan(base):
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        u, b = np.float64(user), np.float64(base)
        value = (u - b) / (1.0 - b) if higher_is_better else 1.0 - u / b
    value = float(value)
    if np.isnan(value):
        return 0.0
    return max(value, 0.0)


def field_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    ctrl: np.ndarray,
    reference: np.ndarray,
    de_idx: np.ndarray,
    real_de: Sequence[Sequence[int]],
    target_idx: Sequence[Sequence[int]],
) -> dict[str, np.ndarray]:
    """Every :data:`FIELD_METRICS` for every condition (one array per metric).

    Parameters
    ----------
    pred, truth
        ``(n_conditions, n_genes)`` predicted and observed mean expression.
    ctrl
        Control mean.
    reference
        Systema's perturbed centroid (:func:`perturbed_centroid` of the training
        perturbations).
    de_idx
        ``(n_conditions, 20)`` top-20 DE genes per condition (the paper's DE set).
    real_de
        Per condition, significant DE genes ranked by |log2 fold change| (cell-eval's).
    target_idx
        Per condition, the indices of its perturbed genes (left out of the PDS).
    """
    return {
        "pearson_delta_pert": pearson_delta_reference(pred, truth, reference),
        "pearson_delta_pert_de": pearson_delta_reference(pred, truth, reference, de_idx),
        "centroid_accuracy": centroid_accuracy(pred, truth),
        "pds": discrimination_score(pred, truth, ctrl, target_idx),
        "de_overlap": de_overlap(pred, ctrl, real_de),
        "rank": rank_metric(pred, truth, ctrl),
        "mae": mae(pred, truth),
    }


__all__ = [
    "FIELD_METRICS",
    "FIELD_PEARSON_METRICS",
    "HIGHER_IS_BETTER",
    "VCC_METRICS",
    "centroid_accuracy",
    "de_overlap",
    "discrimination_score",
    "field_scores",
    "log2_fold_change",
    "mae",
    "normalised_score",
    "pearson_delta_reference",
    "perturbed_centroid",
    "rank_metric",
    "row_pearson",
]
