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
- ``random``: uniform random similarities / target scores (the chance level).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from baselines.registry import register


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
