"""kNN label transfer on any cell embedding, and the PCA + kNN reference-mapping control.

:func:`knn_transfer` labels each query cell by a majority vote of its ``k`` nearest reference
cells in a shared embedding (scGPT's zero-shot reference mapping does exactly this on its
cell embeddings; this module is the one implementation every method reuses). The search
uses faiss (exact, ``IndexFlatIP`` on L2-normalised vectors for cosine, ``IndexFlatL2`` for
Euclidean) or pynndescent (approximate); ``backend="auto"`` picks faiss when importable.

``pca_knn`` (task ``reference_mapping``, and ``annotation`` as a simple control): the query
is projected onto the reference's principal components (log-normalised HVGs of the
reference, scaled with the reference's means and SDs), then labelled by kNN transfer.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

import numpy as np

from contract.registry import register

log = logging.getLogger(__name__)

Metric = Literal["cosine", "euclidean"]
Backend = Literal["auto", "faiss", "pynndescent"]


def _check_inputs(
    ref_emb: np.ndarray, query_emb: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.ascontiguousarray(ref_emb, dtype=np.float32)
    query = np.ascontiguousarray(query_emb, dtype=np.float32)
    if ref.ndim != 2 or query.ndim != 2 or ref.shape[1] != query.shape[1]:
        raise ValueError(
            f"knn_transfer: reference embedding {ref.shape} and query embedding {query.shape} "
            "must be 2-d with the same number of columns"
        )
    if not np.isfinite(ref).all() or not np.isfinite(query).all():
        raise ValueError("knn_transfer: embeddings contain NaN or infinite values")
    if k < 1:
        raise ValueError(f"knn_transfer: k must be >= 1, got {k}")
    return ref, query


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def knn_search(
    ref_emb: np.ndarray,
    query_emb: np.ndarray,
    *,
    k: int = 10,
    metric: Metric = "cosine",
    backend: Backend = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the ``k`` nearest reference cells of every query cell.

    Returns
    -------
    ``(indices, distances)``, both ``(n_query, k)``, nearest first. Cosine distance is
    ``1 - cosine similarity``; Euclidean distance is not squared.
    """
    ref, query = _check_inputs(ref_emb, query_emb, k)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"knn_transfer: metric must be 'cosine' or 'euclidean', got {metric!r}")
    k = min(k, ref.shape[0])
    if backend == "auto":
        backend = "faiss" if importlib.util.find_spec("faiss") is not None else "pynndescent"
    if backend == "faiss":
        import faiss

        if metric == "cosine":
            ref_n, query_n = _normalise_rows(ref), _normalise_rows(query)
            index = faiss.IndexFlatIP(ref.shape[1])
            index.add(ref_n)
            sims, idx = index.search(query_n, k)
            return idx.astype(np.int64), (1.0 - sims).astype(np.float32)
        index = faiss.IndexFlatL2(ref.shape[1])
        index.add(ref)
        sq, idx = index.search(query, k)
        return idx.astype(np.int64), np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
    if backend == "pynndescent":
        from pynndescent import NNDescent

        index = NNDescent(ref, metric=metric, n_neighbors=max(k, 15), random_state=seed)
        idx, dist = index.query(query, k=k)
        return idx.astype(np.int64), dist.astype(np.float32)
    raise ValueError(
        f"knn_transfer: backend must be 'auto', 'faiss' or 'pynndescent', got {backend!r}"
    )


def vote(neighbour_labels: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Majority label per row; ties go to the label whose tied neighbours are closest.

    ``neighbour_labels`` and ``distances`` are ``(n_query, k)``; ties are broken by the
    smallest summed distance, then alphabetically, so the result is deterministic.
    """
    out = np.empty(neighbour_labels.shape[0], dtype=object)
    for i, (labels, dist) in enumerate(zip(neighbour_labels, distances, strict=True)):
        uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        summed = np.bincount(inverse, weights=dist, minlength=uniq.size)
        # lexsort: last key is primary -> most votes, then smallest summed distance.
        order = np.lexsort((uniq, summed, -counts))
        out[i] = uniq[order[0]]
    return out.astype(str)


def knn_transfer(
    ref_emb: np.ndarray,
    ref_labels: np.ndarray,
    query_emb: np.ndarray,
    *,
    k: int = 10,
    metric: Metric = "cosine",
    backend: Backend = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Label query cells by majority vote of their ``k`` nearest reference cells.

    Parameters
    ----------
    ref_emb
        Reference embedding, ``(n_ref, d)``.
    ref_labels
        Reference labels, ``(n_ref,)``.
    query_emb
        Query embedding in the same space, ``(n_query, d)``.
    k
        Neighbours per query cell (capped at ``n_ref``).
    metric
        ``"cosine"`` or ``"euclidean"``.
    backend
        ``"faiss"`` (exact), ``"pynndescent"`` (approximate) or ``"auto"``.
    seed
        Seed of pynndescent's random projections.

    Returns
    -------
    One label (str) per query cell.
    """
    labels = np.asarray(ref_labels).astype(str)
    if labels.shape != (np.shape(ref_emb)[0],):
        raise ValueError(
            f"knn_transfer: {labels.size} reference labels for {np.shape(ref_emb)[0]} reference cells"
        )
    idx, dist = knn_search(ref_emb, query_emb, k=k, metric=metric, backend=backend, seed=seed)
    return vote(labels[idx], dist)


def reference_pca(
    reference_x: np.ndarray, query_x: np.ndarray, *, n_comps: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """PCA fitted on the (scaled) reference, applied to both; returns the two embeddings."""
    from sklearn.decomposition import PCA

    mean = reference_x.mean(axis=0)
    sd = reference_x.std(axis=0)
    sd[sd == 0] = 1.0
    ref = np.clip((reference_x - mean) / sd, -10, 10)
    query = np.clip((query_x - mean) / sd, -10, 10)
    n_comps = int(min(n_comps, ref.shape[0] - 1, ref.shape[1]))
    pca = PCA(n_components=n_comps, random_state=seed, svd_solver="full")
    return pca.fit_transform(ref).astype(np.float32), pca.transform(query).astype(np.float32)


def log_normalised_hvg(
    reference, query, *, n_top_genes: int | None = 2000, target_sum: float = 1e4
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dense log1p(CP10k) expression of the reference's top HVGs, for reference and query.

    HVGs are chosen on the reference only (scanpy ``flavor="seurat"`` dispersion on
    log-normalised values), so the query never influences the features. ``None`` or a number
    at least the gene count keeps every gene.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("reference and query must have the same genes in the same order")
    mats = []
    for adata in (reference, query):
        tmp = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), var=adata.var[[]].copy())
        sc.pp.normalize_total(tmp, target_sum=target_sum)
        sc.pp.log1p(tmp)
        mats.append(tmp)
    genes = list(reference.var_names)
    if n_top_genes is not None and n_top_genes < reference.n_vars:
        hvg = sc.pp.highly_variable_genes(
            mats[0], n_top_genes=n_top_genes, flavor="seurat", inplace=False
        )
        keep = np.asarray(hvg["highly_variable"], dtype=bool)
        genes = [g for g, k in zip(genes, keep, strict=True) if k]
        mats = [m[:, keep] for m in mats]
    dense = [m.X.toarray() if sp.issparse(m.X) else np.asarray(m.X) for m in mats]
    return dense[0].astype(np.float32), dense[1].astype(np.float32), genes


@register("reference_mapping", "pca_knn", label="PCA + kNN")
@register("annotation", "pca_knn", label="PCA + kNN")
def pca_knn(
    reference,
    query,
    *,
    seed: int,
    n_top_genes: int | None = 2000,
    n_comps: int = 50,
    k: int = 10,
    metric: Metric = "cosine",
    backend: Backend = "auto",
) -> np.ndarray:
    """Reference PCA projected onto the query, then kNN label transfer (a simple control)."""
    ref_x, query_x, _ = log_normalised_hvg(reference, query, n_top_genes=n_top_genes)
    ref_emb, query_emb = reference_pca(ref_x, query_x, n_comps=n_comps, seed=seed)
    query.obsm["X_pca_knn"] = query_emb
    return knn_transfer(
        ref_emb,
        reference.obs["cell_type"].astype(str).to_numpy(),
        query_emb,
        k=k,
        metric=metric,
        backend=backend,
        seed=seed,
    )
