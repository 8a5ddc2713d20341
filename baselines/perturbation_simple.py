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
- ``linear_scgpt``: the same linear model with the scGPT checkpoint's own pre-trained gene
  embeddings in place of PCA (Ahlmann-Eltze et al.'s foundation-model variant: what
  pre-training carries about genes, measured without fine-tuning).
- ``matching_mean``: Systema's ``matching-mean`` (Vinas Torne et al. 2025): the mean of the
  training profiles of the condition's single perturbations, the mean of all perturbed
  training cells standing in for a gene without a training single.

``train_mean`` is also Systema's ``nonctl-mean`` (the mean of all non-control training
cells, weighted by cell as in ``src/run_nonctl-mean.py``), so it is not registered twice.
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
    Yc = means.T - means.T.mean(axis=1, keepdims=True)
    k = int(max(1, min(n_components, Yc.shape[1], Yc.shape[0])))
    # PCA with genes as observations: centre each perturbation (column), then SVD.
    centred = Yc - Yc.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    G = u[:, :k] * s[:k]  # principal-component scores of each gene
    values = linear_embedding_model(
        train, conditions, G, np.arange(train.n_vars), ridge_lambda=ridge_lambda
    )
    return as_prediction(values, conditions, train)


def linear_embedding_model(
    train: ad.AnnData,
    conditions: list[str],
    G: np.ndarray,
    rows: np.ndarray,
    *,
    ridge_lambda: float,
) -> np.ndarray:
    """Ahlmann-Eltze et al.'s ``Y ~ G W P^T + b`` for given gene embeddings ``G``.

    Parameters
    ----------
    train
        Log-normalised training cells (obs ``condition``).
    conditions
        Conditions to predict.
    G
        ``(n_embedded, K)`` embeddings of the genes ``train.var_names[rows]``.
    rows
        Var indices of the embedded genes: the model fits and predicts these genes; the
        others are predicted as their mean over training perturbations (``b``). A
        perturbation's embedding is the sum of its embedded genes' rows of ``G``.
    ridge_lambda
        Ridge penalty of both solves.

    Returns
    -------
    ``(n_conditions, n_genes)`` predictions; a condition none of whose genes is embedded is
    predicted as ``b``.
    """
    genes, means, _ = pseudobulk(train)
    if not genes:
        raise ValueError("linear: no perturbed training conditions to fit")
    rows = np.asarray(rows, dtype=np.int64)
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != rows.size:
        raise ValueError(f"gene embeddings have shape {G.shape}, expected ({rows.size}, K)")
    Y = means.T  # genes x perturbations
    b = Y.mean(axis=1)
    Yc = (Y - b[:, None])[rows]
    names = train.var_names.astype(str)
    embedded = {names[r]: i for i, r in enumerate(rows)}

    def embed(key: tuple[str, ...]) -> np.ndarray | None:
        hit = [embedded[g] for g in key if g in embedded]
        return G[hit].sum(axis=0) if hit else None

    fit = [(i, embed(key)) for i, key in enumerate(genes)]
    fit = [(i, p) for i, p in fit if p is not None]
    if not fit:
        raise ValueError(
            "linear: none of the perturbed training genes has a gene embedding (is among "
            "train.var_names / the embedded genes), so no perturbation can be fitted"
        )
    P = np.vstack([p for _, p in fit])  # perturbations x K
    Yfit = Yc[:, [i for i, _ in fit]]
    eye = np.eye(G.shape[1])
    left = np.linalg.solve(G.T @ G + ridge_lambda * eye, G.T @ Yfit)  # K x perturbations
    W = np.linalg.solve((P.T @ P + ridge_lambda * eye).T, (left @ P).T).T  # K x K
    out = np.tile(b, (len(conditions), 1))
    for j, condition in enumerate(conditions):
        p = embed(parse_condition(condition))
        if p is not None:
            out[j, rows] += G @ (W @ p)
    return out


@register(
    "perturbation", "linear_scgpt", label="Linear (scGPT gene embeddings)", needs_checkpoint=True
)
def linear_scgpt(
    train: ad.AnnData,
    conditions: list[str],
    *,
    seed: int,
    checkpoint: str,
    ridge_lambda: float = 0.1,
) -> ad.AnnData:
    """Ahlmann-Eltze et al.'s linear model with the scGPT checkpoint's gene embeddings.

    ``G`` holds the pre-trained gene token embeddings (token embedding + LayerNorm,
    :func:`scgpt.gene_embeddings`) of the genes in the checkpoint's vocabulary; genes
    outside it are predicted as their training mean (coverage logged; no covered gene is an
    error). Otherwise as :func:`linear` (K = the model's width).

    Parameters
    ----------
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    ridge_lambda
        Ridge penalty (0.1, as :func:`linear`).
    """
    del seed  # deterministic: pre-trained embeddings and two linear solves
    _check_train(train, conditions)
    if ridge_lambda < 0:
        raise ValueError(f"ridge_lambda must be >= 0, got {ridge_lambda}")
    from baselines._scgpt_common import load_model, vocabulary_mask
    from scgpt import gene_embeddings

    model, vocab = load_model(checkpoint, pretrained=True, seed=0)
    covered = vocabulary_mask(
        train.var_names, vocab, what="linear_scgpt gene embeddings", checkpoint=checkpoint
    )
    rows = np.flatnonzero(covered)
    names = train.var_names.astype(str)[rows].tolist()
    G = gene_embeddings((model, vocab, model.config), names).loc[names].to_numpy()
    values = linear_embedding_model(train, conditions, G, rows, ridge_lambda=ridge_lambda)
    return as_prediction(values, conditions, train)


@register("perturbation", "matching_mean", label="Matching mean")
def matching_mean(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
    """Systema's ``matching-mean``: the mean of the condition's single-perturbation profiles.

    ``pred(A+B) = (mean(A) + mean(B)) / 2`` and ``pred(A) = mean(A)`` with ``mean(A)`` the
    mean of the training cells of ``A+ctrl``; a gene without a training single contributes
    the mean of all perturbed training cells (Systema's ``src/run_matching-mean.py``).
    """
    del seed
    _check_train(train, conditions)
    genes, means, _ = pseudobulk(train)
    singles = {key[0]: means[i] for i, key in enumerate(genes) if len(key) == 1}
    perturbed = (train.obs["condition"].astype(str) != CTRL).to_numpy()
    if not perturbed.any():
        raise ValueError("training data has no perturbed cells")
    fallback = np.asarray(train.X[perturbed].mean(axis=0), dtype=np.float64).ravel()
    rows = []
    for condition in conditions:
        parts = [singles.get(g, fallback) for g in parse_condition(condition)]
        rows.append(np.mean(parts, axis=0) if parts else fallback)
    return as_prediction(
        np.vstack(rows) if rows else np.zeros((0, train.n_vars)), conditions, train
    )


__all__ = [
    "additive",
    "as_prediction",
    "linear",
    "linear_embedding_model",
    "linear_scgpt",
    "matching_mean",
    "no_change",
    "pseudobulk",
    "single_effects",
    "train_mean",
]
