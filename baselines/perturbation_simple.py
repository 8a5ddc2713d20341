"""Simple perturbation baselines: no change, training mean, additive and linear.

All follow the perturbation contract ``f(train, conditions, *, seed, **params) -> AnnData``
(one row per condition, ``var_names`` = ``train.var_names``, log-normalised mean expression)
and work on pseudobulks: the mean log-normalised expression of each training condition.

- ``no_change``: every condition is predicted as the control mean.
- ``train_mean``: the mean of all perturbed training cells (Csendes et al. 2025's "train
  mean" baseline, which scores well on Pearson-delta because it captures the average
  response of a screen).
- ``additive``: control plus the sum of the single-gene effects (single mean - control)
  observed in training; a gene without a training single adds nothing (Ahlmann-Eltze et al.
  2025, Nature Methods 22:1657, "additive" model).
- ``linear``: the linear model of Ahlmann-Eltze et al. (2025) with PCA gene embeddings and
  ridge regression (see :func:`linear`). The scGPT paper compares against a "linear"
  baseline without specifying it in text we have; this published model stands in for it.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from contract.conditions import CTRL, parse_condition
from contract.registry import register


def _check_train(train: ad.AnnData, conditions: list[str]) -> None:
    if "condition" not in train.obs:
        raise KeyError(f"training data lacks obs 'condition'; it has {list(train.obs.columns)}")
    if not (train.obs["condition"].astype(str) == CTRL).any():
        raise ValueError("training data has no control cells (obs 'condition' == 'ctrl')")
    for condition in conditions:
        parse_condition(condition)


def pseudobulk(train: ad.AnnData) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray]:
    """Mean expression of each training condition.

    Returns
    -------
    genes
        Perturbed genes of each non-control condition (sorted tuples), in row order.
    means
        ``(n_conditions, n_genes)`` mean expression of those conditions.
    ctrl
        ``(n_genes,)`` mean expression of the control cells.
    """
    labels = train.obs["condition"].astype(str).to_numpy()
    X = train.X
    keys: dict[tuple[str, ...], list[np.ndarray]] = {}
    for condition in pd.unique(labels):
        keys.setdefault(parse_condition(condition), []).append(labels == condition)
    ctrl_mask = np.logical_or.reduce(keys.pop((), [labels == CTRL]))
    ctrl = np.asarray(X[ctrl_mask].mean(axis=0), dtype=np.float64).ravel()
    genes = sorted(keys)
    means = np.zeros((len(genes), train.n_vars), dtype=np.float64)
    for i, key in enumerate(genes):
        mask = np.logical_or.reduce(keys[key])
        means[i] = np.asarray(X[mask].mean(axis=0), dtype=np.float64).ravel()
    return genes, means, ctrl


def as_prediction(values: np.ndarray, conditions: list[str], train: ad.AnnData) -> ad.AnnData:
    """Wrap ``(n_conditions, n_genes)`` predictions as the contract's AnnData."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (len(conditions), train.n_vars):
        raise ValueError(f"prediction shape {values.shape} != ({len(conditions)}, {train.n_vars})")
    return ad.AnnData(
        X=values,
        obs=pd.DataFrame(index=pd.Index([str(c) for c in conditions], name="condition")),
        var=pd.DataFrame(index=train.var_names.copy()),
    )


def single_effects(train: ad.AnnData) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Effect (single mean - control mean) of each gene with a training single; and control."""
    genes, means, ctrl = pseudobulk(train)
    effects = {key[0]: means[i] - ctrl for i, key in enumerate(genes) if len(key) == 1}
    return effects, ctrl


@register("perturbation", "no_change", label="No change")
def no_change(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
    """Predict the control mean for every condition (no perturbation effect)."""
    del seed
    _check_train(train, conditions)
    ctrl_mask = (train.obs["condition"].astype(str) == CTRL).to_numpy()
    ctrl = np.asarray(train.X[ctrl_mask].mean(axis=0), dtype=np.float64).ravel()
    return as_prediction(np.tile(ctrl, (len(conditions), 1)), conditions, train)


@register("perturbation", "train_mean", label="Train mean")
def train_mean(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
    """Predict the mean of all perturbed (non-control) training cells for every condition."""
    del seed
    _check_train(train, conditions)
    perturbed = (train.obs["condition"].astype(str) != CTRL).to_numpy()
    if not perturbed.any():
        raise ValueError("training data has no perturbed cells")
    mean = np.asarray(train.X[perturbed].mean(axis=0), dtype=np.float64).ravel()
    return as_prediction(np.tile(mean, (len(conditions), 1)), conditions, train)


@register("perturbation", "additive", label="Additive")
def additive(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
    """Control plus the sum of the training single-gene effects of the condition's genes.

    ``pred(A+B) = ctrl + (mean(A) - ctrl) + (mean(B) - ctrl)`` with ``mean(A)`` the mean of
    the training cells of ``A+ctrl``; genes without a training single contribute zero (so an
    unseen single is predicted as control).
    """
    del seed
    _check_train(train, conditions)
    effects, ctrl = single_effects(train)
    zero = np.zeros_like(ctrl)
    rows = [
        ctrl + sum((effects.get(g, zero) for g in parse_condition(c)), zero) for c in conditions
    ]
    return as_prediction(
        np.vstack(rows) if rows else np.zeros((0, train.n_vars)), conditions, train
    )


@register("perturbation", "linear", label="Linear")
def linear(
    train: ad.AnnData,
    conditions: list[str],
    *,
    seed: int,
    n_components: int = 10,
    ridge_lambda: float = 0.1,
) -> ad.AnnData:
    """Ahlmann-Eltze et al. (2025) linear model: ``Y ~ G W P^T + b`` with PCA gene embeddings.

    ``Y`` (genes x training perturbations) holds the training pseudobulks, ``b`` their row
    means. ``G`` (genes x K) are the first K principal components of ``Y - b`` with genes as
    observations; a perturbation's embedding ``p`` is the row of ``G`` of its gene (the sum of
    rows for a double). ``W`` is the ridge solution
    ``W = (G'G + l I)^-1 G' (Y - b) P (P'P + l I)^-1``. A condition is predicted as
    ``G W p + b``; one whose genes are not measured (no row in ``G``) gets ``b``.

    Parameters
    ----------
    n_components
        K, the embedding dimension (10 in the paper), capped by the number of training
        perturbations and genes.
    ridge_lambda
        Ridge penalty ``l`` (0.1 in the paper).
    """
    del seed  # deterministic: an SVD and two linear solves
    _check_train(train, conditions)
    if ridge_lambda < 0:
        raise ValueError(f"ridge_lambda must be >= 0, got {ridge_lambda}")
    genes, means, _ = pseudobulk(train)
    if not genes:
        raise ValueError("linear: no perturbed training conditions to fit")
    Y = means.T  # genes x perturbations
    b = Y.mean(axis=1)
    Yc = Y - b[:, None]
    k = int(max(1, min(n_components, Yc.shape[1], Yc.shape[0])))
    # PCA with genes as observations: centre each perturbation (column), then SVD.
    centred = Yc - Yc.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    G = u[:, :k] * s[:k]  # principal-component scores of each gene
    gene_row = {g: i for i, g in enumerate(train.var_names.astype(str))}

    def embed(key: tuple[str, ...]) -> np.ndarray | None:
        rows = [gene_row[g] for g in key if g in gene_row]
        return G[rows].sum(axis=0) if rows else None

    fit = [(i, embed(key)) for i, key in enumerate(genes)]
    fit = [(i, p) for i, p in fit if p is not None]
    if not fit:
        raise ValueError(
            "linear: none of the perturbed training genes is among train.var_names, so no "
            "perturbation has an embedding"
        )
    P = np.vstack([p for _, p in fit])  # perturbations x K
    Yfit = Yc[:, [i for i, _ in fit]]
    eye = np.eye(k)
    left = np.linalg.solve(G.T @ G + ridge_lambda * eye, G.T @ Yfit)  # K x perturbations
    W = np.linalg.solve((P.T @ P + ridge_lambda * eye).T, (left @ P).T).T  # K x K
    rows = []
    for condition in conditions:
        p = embed(parse_condition(condition))
        rows.append(b if p is None else G @ (W @ p) + b)
    return as_prediction(
        np.vstack(rows) if rows else np.zeros((0, train.n_vars)), conditions, train
    )


__all__ = [
    "additive",
    "as_prediction",
    "linear",
    "no_change",
    "pseudobulk",
    "single_effects",
    "train_mean",
]
