"""Gene-network baselines for the ``grn`` task (see :mod:`benchmark.tasks.grn`).

Each method reads ``uns["grn"]["mode"]``:

- ``coexpression``: the paper's Fig. 5 baseline. Programs: Pearson correlation of the
  genes' log-normalised expression over cells (the task builds the same kNN graph and Leiden
  programs as for scGPT). Targets: absolute correlation of each gene with the perturbed gene
  over the control cells (co-expression with the regulator).
- ``de``: differential expression. Targets: absolute difference of mean log-normalised
  expression between the gene's perturbed cells and the control cells (the ranking a
  perturbation screen gives without any model). Programs: genes' mean-expression profiles
  over Leiden cell clusters (z-scored per gene), compared by Pearson correlation: genes
  with the same cluster-level DE pattern (marker programs).
- ``genie3``: GENIE3 (Huynh-Thu et al. 2010), a random forest per target gene on the other
  genes (programs: symmetrised row-normalised importances) or on the regulators (targets);
  the regression baseline in place of GRNBoost2 (arboreto 0.1.6 fails on current dask).
- ``random``: uniform random similarities / target scores (the chance level).
"""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd

from contract.registry import register


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float64)


def correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of ``x``; constant columns correlate 0."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    centred = centred / np.where(norms > 0, norms, 1.0)
    return centred.T @ centred


def _cell_clusters(pcs: np.ndarray, resolution: float, *, seed: int, k: int = 15) -> np.ndarray:
    """Leiden clusters of a cosine kNN graph of the cells' PCs.

    Not scanpy's neighbours: its UMAP graph is numba-compiled anew in every job (seconds).
    """
    import igraph as ig
    import leidenalg

    unit = pcs / np.maximum(np.linalg.norm(pcs, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(pcs) - 1)
    neighbours = np.argpartition(-sim, kth=k - 1, axis=1)[:, :k]
    edges = {(min(i, j), max(i, j)) for i, row in enumerate(neighbours) for j in row.tolist()}
    graph = ig.Graph(n=len(pcs), edges=sorted(edges))
    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=float(resolution),
        seed=int(seed),
    )
    return np.asarray(partition.membership)


def _conditions(adata: ad.AnnData) -> np.ndarray:
    return adata.obs["condition"].astype(str).to_numpy()


def _frame_per_regulator(adata: ad.AnnData, score_of) -> pd.DataFrame:
    genes = [str(g) for g in adata.var_names]
    columns = {}
    for regulator in adata.uns["grn"]["regulators"]:
        scores = pd.Series(score_of(regulator), index=genes)
        columns[regulator] = scores.drop(regulator)
    return pd.DataFrame(columns)


@register("grn", "coexpression", label="Co-expression")
def coexpression_grn(
    adata: ad.AnnData, *, seed: int, absolute: bool = True
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Gene-gene Pearson correlation of log-normalised expression.

    Parameters
    ----------
    adata
        The ``grn`` task's input (``layers["log1p"]``).
    seed
        Unused (deterministic).
    absolute
        Targets mode: rank by |r| (activation and repression alike); programs always use r.
    """
    x = _dense(adata.layers["log1p"])
    genes = [str(g) for g in adata.var_names]
    if adata.uns["grn"]["mode"] == "programs":
        return pd.DataFrame(correlation(x), index=genes, columns=genes)
    ctrl = _conditions(adata) == "ctrl"
    corr = correlation(x[ctrl])
    pos = {g: i for i, g in enumerate(genes)}

    def score(regulator: str) -> np.ndarray:
        r = corr[:, pos[regulator]]
        return np.abs(r) if absolute else r

    return _frame_per_regulator(adata, score)


@register("grn", "de", label="DE ranking")
def de_grn(
    adata: ad.AnnData, *, seed: int, n_pcs: int = 30, resolution: float = 1.0
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Differential expression: |mean(perturbed) - mean(control)|, or cluster DE profiles.

    Parameters
    ----------
    adata
        The ``grn`` task's input.
    seed
        Seed of PCA and Leiden (programs mode).
    n_pcs, resolution
        Programs mode: PCs of the cell graph and Leiden resolution of the cell clusters.
    """
    import scanpy as sc

    x = _dense(adata.layers["log1p"])
    genes = [str(g) for g in adata.var_names]
    if adata.uns["grn"]["mode"] == "targets":
        conds = _conditions(adata)
        ctrl_mean = x[conds == "ctrl"].mean(axis=0)
        condition_of = adata.uns["grn"]["condition_of"]

        def score(regulator: str) -> np.ndarray:
            rows = conds == condition_of[regulator]
            return np.abs(x[rows].mean(axis=0) - ctrl_mean)

        return _frame_per_regulator(adata, score)
    cells = ad.AnnData(X=x.astype(np.float32))
    sc.pp.pca(cells, n_comps=min(n_pcs, min(cells.shape) - 1), random_state=seed)
    labels = _cell_clusters(cells.obsm["X_pca"], resolution, seed=seed)
    profiles = np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)])
    # Correlation over clusters of the gene profiles (a gene's DE pattern across clusters).
    return pd.DataFrame(correlation(profiles), index=genes, columns=genes)


@register("grn", "random", label="Random")
def random_grn(adata: ad.AnnData, *, seed: int) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Uniform random gene-gene similarities (symmetric) or target scores (chance level)."""
    rng = np.random.default_rng(seed)
    genes = [str(g) for g in adata.var_names]
    if adata.uns["grn"]["mode"] == "programs":
        upper = np.triu(rng.random((len(genes), len(genes))), k=1)
        return pd.DataFrame(upper + upper.T, index=genes, columns=genes)
    return _frame_per_regulator(adata, lambda _regulator: rng.random(len(genes)))


def _job_threads() -> int:
    """The job's CPU share: its affinity, capped by the thread limits the runner set.

    ``run_method`` caps torch's threads and the isolated runner wraps the call in
    ``threadpool_limits(threads)``; either cap (whichever is set) bounds the forests' jobs.
    """
    import sys

    from threadpoolctl import threadpool_info

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = [int(p["num_threads"]) for p in threadpool_info() if p.get("num_threads")]
    if limits:
        n = min(n, min(limits))
    if "torch" in sys.modules:
        n = min(n, sys.modules["torch"].get_num_threads())
    return max(1, n)


def tree_importances(
    x: np.ndarray,
    targets: np.ndarray,
    features: np.ndarray,
    *,
    n_estimators: int,
    max_features: str | float | int,
    min_samples_leaf: int,
    seed: int,
    n_jobs: int,
) -> np.ndarray:
    """GENIE3's importance matrix: one random forest per target column of ``x``.

    Row ``i`` holds the impurity importances of the ``features`` columns for predicting
    column ``targets[i]`` (a target is never its own feature: its entry is 0). Each target
    is scaled to unit variance first (as GENIE3 does) and each row sums to 1 (sklearn's
    normalised importances; 0 for a constant target, which no split can explain).
    """
    from sklearn.ensemble import RandomForestRegressor

    x = np.asarray(x, dtype=np.float32)
    features = np.asarray(features)
    weights = np.zeros((len(targets), len(features)))
    for i, target in enumerate(targets):
        y = x[:, target].astype(np.float64)
        sd = y.std()
        cols = features != target
        if sd == 0 or not cols.any():
            continue
        forest = RandomForestRegressor(
            n_estimators=n_estimators,
            max_features=max_features,
            min_samples_leaf=min_samples_leaf,
            random_state=seed + int(target),
            n_jobs=n_jobs,
        )
        forest.fit(x[:, features[cols]], (y - y.mean()) / sd)
        weights[i, cols] = forest.feature_importances_
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


@register("grn", "genie3", label="GENIE3 (regression)")
def genie3_grn(
    adata: ad.AnnData,
    *,
    seed: int,
    n_estimators: int = 50,
    max_features: str | float | int = "sqrt",
    min_samples_leaf: int = 1,
    max_genes: int | None = 1200,
    max_cells: int | None = 2000,
    cells: str = "control",
    n_jobs: int | None = None,
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """GENIE3 (Huynh-Thu et al. 2010, PLoS ONE 5:e12776): tree-ensemble regression network.

    For each target gene a random forest predicts its log-normalised expression from the
    other genes (programs) or from the perturbed regulators (targets; control cells by
    default, as the co-expression baseline); the forest's impurity importances are the edge weights
    regulator -> target. A regression stand-in for GRNBoost2 (arboreto 0.1.6 fails on
    current dask); GRNBoost2 is GENIE3 with gradient boosting and early stopping.

    Parameters
    ----------
    adata
        The ``grn`` task's input (``layers["log1p"]``).
    seed
        Seed of the forests (target ``i``'s forest uses ``seed + i``).
    n_estimators
        Trees per target. GENIE3's default is 1,000, far too slow for one forest per gene
        on CPUs; 50 trees on <= 2,000 cells take ~0.5-1 s per gene on 1 core (about 10-20
        core-minutes for the paper's 1,200 HVGs).
    max_features
        Features tried per split: GENIE3's random-forest choice ``"sqrt"``.
    min_samples_leaf
        Smallest leaf (1 = fully grown trees, as GENIE3).
    max_genes
        Programs mode: at most this many genes, the most variable of the log-normalised
        data (the output covers only them; default = the paper's 1,200 HVGs, i.e. all).
    max_cells
        Cells the forests are fit on: a seeded random subset of at most this many (the
        paper's datasets have tens of thousands; None = all).
    cells
        Targets mode: ``"control"`` (default; the regulators' natural variation, like the
        co-expression baseline) or ``"all"`` (control and knock-down cells).
    n_jobs
        Forest threads; default the job's threads (affinity and the runner's caps).
    """
    if cells not in ("control", "all"):
        raise ValueError(f"genie3: cells must be 'control' or 'all'; got {cells!r}")
    x = _dense(adata.layers["log1p"])
    genes = np.array([str(g) for g in adata.var_names])
    rows = np.ones(len(x), dtype=bool)
    if adata.uns["grn"]["mode"] == "targets" and cells == "control":
        rows = _conditions(adata) == "ctrl"
    rows = np.flatnonzero(rows)
    if max_cells is not None and len(rows) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    x = x[rows]
    n_jobs = n_jobs or _job_threads()
    options = {
        "n_estimators": n_estimators,
        "max_features": max_features,
        "min_samples_leaf": min_samples_leaf,
        "seed": seed,
        "n_jobs": n_jobs,
    }
    if adata.uns["grn"]["mode"] == "programs":
        if max_genes is not None and len(genes) > max_genes:
            keep = np.sort(np.argsort(-x.var(axis=0), kind="stable")[:max_genes])
            x, genes = x[:, keep], genes[keep]
        everyone = np.arange(len(genes))
        weights = tree_importances(x, everyone, everyone, **options)
        # The harness needs a symmetric similarity: W[i, j] is j's importance for target i,
        # and each row was normalised to sum 1 first so that every target gene votes with
        # the same weight (unnormalised, genes that are easy to predict, whose forests
        # explain most variance, would dominate everyone's neighbours); the mean of the two
        # directions is high when either gene predicts the other.
        similarity = (weights + weights.T) / 2
        np.fill_diagonal(similarity, 1.0)
        return pd.DataFrame(similarity, index=genes, columns=genes)
    regulators = list(adata.uns["grn"]["regulators"])
    pos = {g: i for i, g in enumerate(genes)}
    features = np.array([pos[r] for r in regulators])
    weights = tree_importances(x, np.arange(len(genes)), features, **options)
    frame = pd.DataFrame(weights, index=genes, columns=regulators)
    return pd.DataFrame({r: frame[r].drop(r) for r in regulators})
