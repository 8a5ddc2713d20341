"""Batch-integration scores as the scGPT paper reports them (scIB definitions).

The paper scores an integrated embedding with the scIB metrics (Luecken et al. 2022):

- bio conservation: NMI and ARI between the cell-type labels and Leiden clusters of the
  embedding's kNN graph at the resolution in 0.1, 0.2, ..., 2.0 that maximises NMI;
  ``asw_cell`` = (ASW + 1) / 2 of the cell-type silhouette;
- batch correction: ``asw_batch`` = mean over cell types of the mean of 1 - |ASW| of the
  batch silhouette within the cell type; ``graph_conn`` = graph connectivity;
- ``avg_bio`` = mean(NMI, ARI, ASW_cell), ``avg_batch`` = mean(ASW_batch, graph_conn),
  ``overall`` = 0.6 avg_bio + 0.4 avg_batch.

Every score comes from a scib-metrics function; only the aggregation and the resolution
grid are ours. scib-metrics' ``Benchmarker`` is not used: its defaults (KMeans NMI/ARI,
BRAS instead of batch ASW, min-max scaled aggregates) are not the paper's. Its
``nmi_ari_cluster_labels_leiden(optimize_resolution=True)`` searches only 0.2, 0.4, ...,
2.0, so the 20-value grid of scIB (0.1..2.0) is searched here with the library's
single-resolution call and the same rule (first maximum of NMI, ARI at that resolution).

Neighbours follow ``Benchmarker.prepare``: one search for the largest k needed, subset to 15
neighbours (clustering, graph connectivity), 50 (kBET) and 90 (LISI). The search is exact up
to 50,000 cells and scib-metrics' pynndescent above (see :func:`compute_neighbors`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HEADLINE_METRICS: tuple[str, ...] = (
    "avg_bio",
    "nmi",
    "ari",
    "asw_cell",
    "avg_batch",
    "asw_batch",
    "graph_conn",
    "overall",
)
"""The paper's columns (``benchmark/paper/integration.csv``), in table order."""

EXTRA_METRICS: tuple[str, ...] = (
    "ilisi",
    "clisi",
    "kbet",
    "isolated_labels",
    "pcr_comparison",
    "leiden_resolution",
)
"""Extra scib-metrics scores reported beside the paper's (not in the paper's table)."""

RESOLUTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 21))
"""Leiden resolutions searched for NMI/ARI (scIB: 0.1 to 2.0 in steps of 0.1)."""

LISI_NEIGHBORS = 90
"""Neighbours for iLISI/cLISI (``Benchmarker``'s 90; perplexity = 90 // 3)."""

KBET_NEIGHBORS = 50
"""Neighbours of the graph kBET diffuses on (``Benchmarker``'s 50)."""

EXACT_NEIGHBORS_MAX_CELLS = 50_000
"""Largest data set searched exactly by ``compute_neighbors(method="auto")``."""

BIO_WEIGHT = 0.6
"""Weight of AvgBIO in Overall (scIB); AvgBATCH gets 1 - BIO_WEIGHT."""


def aggregate_scores(
    nmi: float, ari: float, asw_cell: float, asw_batch: float, graph_conn: float
) -> dict[str, float]:
    """The paper's aggregates from the five component scores.

    Parameters
    ----------
    nmi, ari, asw_cell
        Bio-conservation scores (``asw_cell`` already rescaled to [0, 1]).
    asw_batch, graph_conn
        Batch-correction scores (``asw_batch`` already 1 - |ASW|).

    Returns
    -------
    ``{"avg_bio", "avg_batch", "overall"}`` with AvgBIO = mean(NMI, ARI, ASW_cell),
    AvgBATCH = mean(ASW_batch, graph_conn) and Overall = 0.6 AvgBIO + 0.4 AvgBATCH.
    A NaN component makes its aggregate NaN (never silently dropped).
    """
    avg_bio = float(np.mean([nmi, ari, asw_cell]))
    avg_batch = float(np.mean([asw_batch, graph_conn]))
    overall = BIO_WEIGHT * avg_bio + (1 - BIO_WEIGHT) * avg_batch
    return {"avg_bio": avg_bio, "avg_batch": avg_batch, "overall": float(overall)}


def compute_neighbors(
    embedding: np.ndarray, n_neighbors: int, *, seed: int = 0, method: str = "auto"
) -> Any:
    """k nearest neighbours (Euclidean) of every cell, self included as the first neighbour.

    Parameters
    ----------
    embedding
        Cells x dimensions.
    n_neighbors
        k; capped at ``n_cells - 1`` so that tiny inputs still work.
    seed
        Seed of pynndescent (the exact search is deterministic).
    method
        ``"exact"``: scikit-learn brute-force search; ``"pynndescent"``: scib-metrics'
        :func:`~scib_metrics.nearest_neighbors.pynndescent` (what ``Benchmarker`` uses);
        ``"auto"``: exact up to :data:`EXACT_NEIGHBORS_MAX_CELLS` cells, else pynndescent.
        The exact search avoids pynndescent's ~20 s of numba compilation per process on
        small data and is the limit pynndescent approximates.

    Returns
    -------
    A :class:`scib_metrics.nearest_neighbors.NeighborsResults`.
    """
    from scib_metrics.nearest_neighbors import NeighborsResults, pynndescent

    n_cells = embedding.shape[0]
    k = min(n_neighbors, n_cells - 1)
    if method == "auto":
        method = "exact" if n_cells <= EXACT_NEIGHBORS_MAX_CELLS else "pynndescent"
    if method == "pynndescent":
        return pynndescent(np.ascontiguousarray(embedding), n_neighbors=k, random_state=seed)
    if method != "exact":
        raise ValueError(f"neighbour method {method!r}: expected 'auto', 'exact' or 'pynndescent'")
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean")
    distances, indices = search.fit(embedding).kneighbors(embedding)
    # Duplicate cells can push a cell out of its own first slot; put self first as
    # pynndescent and scanpy do (the graph metrics assume it).
    self_first = indices[:, 0] == np.arange(n_cells)
    if not self_first.all():
        for row in np.flatnonzero(~self_first):
            where = np.flatnonzero(indices[row] == row)
            pos = where[0] if where.size else k - 1
            indices[row, 1 : pos + 1] = indices[row, :pos].copy()
            distances[row, 1 : pos + 1] = distances[row, :pos].copy()
            indices[row, 0], distances[row, 0] = row, 0.0
    return NeighborsResults(indices=indices, distances=distances.astype(np.float32))


def leiden_nmi_ari(
    neighbors: Any,
    labels: np.ndarray,
    *,
    resolutions: Sequence[float] = RESOLUTIONS,
    seed: int = 0,
) -> dict[str, float]:
    """NMI and ARI of Leiden clusters at the resolution that maximises NMI.

    Each resolution is one ``scib_metrics.nmi_ari_cluster_labels_leiden(...,
    optimize_resolution=False, resolution=r, seed=seed)`` call on the same graph.

    Returns
    -------
    ``{"nmi", "ari", "leiden_resolution"}``.
    """
    from scib_metrics import nmi_ari_cluster_labels_leiden

    best: dict[str, float] | None = None
    for resolution in resolutions:
        res = nmi_ari_cluster_labels_leiden(
            neighbors, labels, optimize_resolution=False, resolution=resolution, seed=seed
        )
        if best is None or res["nmi"] > best["nmi"]:
            best = {
                "nmi": float(res["nmi"]),
                "ari": float(res["ari"]),
                "leiden_resolution": resolution,
            }
    if best is None:
        raise ValueError("leiden_nmi_ari: resolutions is empty")
    return best


def _silhouette_batch(embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray) -> float:
    """scib-metrics' batch ASW (1 - |ASW| per cell type); NaN if no cell type spans 2 batches."""
    from scib_metrics import silhouette_batch

    usable = False
    for label in np.unique(cell_type):
        mask = cell_type == label
        n_batches = len(np.unique(batch[mask]))
        if 1 < n_batches < int(mask.sum()):
            usable = True
            break
    if not usable:
        warnings.warn(
            "asw_batch is undefined: no cell type is present in two or more batches",
            stacklevel=2,
        )
        return math.nan
    return float(silhouette_batch(embedding, cell_type, batch, rescale=True))


def _validate(embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray) -> np.ndarray:
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2:
        raise ValueError(f"embedding must be 2-D (cells x dims); got shape {embedding.shape}")
    n = embedding.shape[0]
    if len(cell_type) != n or len(batch) != n:
        raise ValueError(
            f"embedding has {n} rows but cell_type has {len(cell_type)} and batch {len(batch)}"
        )
    if n < 3:
        raise ValueError(f"need at least 3 cells to score an embedding; got {n}")
    if not np.isfinite(embedding).all():
        bad = int((~np.isfinite(embedding)).any(axis=1).sum())
        raise ValueError(f"embedding has non-finite values in {bad} of {n} cells")
    return embedding


def integration_scores(
    embedding: np.ndarray,
    cell_type: np.ndarray | Sequence[str],
    batch: np.ndarray | Sequence[str],
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    x_pre: np.ndarray | None = None,
    extra: bool = True,
    kbet: bool = False,
    neighbor_method: str = "auto",
) -> dict[str, float]:
    """The paper's integration scores of one embedding, plus scib-metrics extras.

    Parameters
    ----------
    embedding
        Cells x dimensions.
    cell_type, batch
        Per-cell labels (any hashable values; compared as strings).
    seed
        Seed of the neighbour search and of Leiden.
    n_neighbors
        k of the graph for clustering and graph connectivity (scIB: 15).
    x_pre
        Unintegrated embedding of the same cells (e.g. PCA of the log-normalised HVGs); when
        given, ``pcr_comparison`` is computed, else it is NaN.
    extra
        Also compute iLISI, cLISI, isolated labels and PCR comparison.
    kbet
        Also compute kBET per label (``kbet_per_label``). Off by default: its diffusion
        step runs pynndescent, whose numba compilation costs ~35 s per process on 2 cores
        whatever the data size; worth it on large data sets only. NaN when off.
    neighbor_method
        ``"auto"``, ``"exact"`` or ``"pynndescent"`` (see :func:`compute_neighbors`).

    Returns
    -------
    Every name in :data:`HEADLINE_METRICS` (and :data:`EXTRA_METRICS` when ``extra``).
    """
    import scib_metrics

    cell_type = np.asarray(cell_type).astype(str)
    batch = np.asarray(batch).astype(str)
    embedding = _validate(embedding, cell_type, batch)

    k_max = n_neighbors
    if extra:
        k_max = max(k_max, LISI_NEIGHBORS, KBET_NEIGHBORS if kbet else 0)
    neighbors = compute_neighbors(embedding, k_max, seed=seed, method=neighbor_method)
    k_graph = min(n_neighbors, neighbors.n_neighbors)
    graph = neighbors.subset_neighbors(k_graph)

    scores: dict[str, float] = {}
    scores.update(leiden_nmi_ari(graph, cell_type, seed=seed))
    scores["asw_cell"] = float(scib_metrics.silhouette_label(embedding, cell_type, rescale=True))
    scores["asw_batch"] = _silhouette_batch(embedding, cell_type, batch)
    scores["graph_conn"] = float(scib_metrics.graph_connectivity(graph, cell_type))
    scores.update(
        aggregate_scores(
            scores["nmi"],
            scores["ari"],
            scores["asw_cell"],
            scores["asw_batch"],
            scores["graph_conn"],
        )
    )
    if extra:
        scores.update(_extra_scores(embedding, neighbors, cell_type, batch, x_pre, kbet=kbet))
    ordered = {m: scores[m] for m in HEADLINE_METRICS}
    ordered.update({k: v for k, v in scores.items() if k not in ordered})
    return ordered


def _extra_scores(
    embedding: np.ndarray,
    neighbors: Any,
    cell_type: np.ndarray,
    batch: np.ndarray,
    x_pre: np.ndarray | None,
    *,
    kbet: bool,
) -> dict[str, float]:
    """iLISI, cLISI, kBET per label, isolated labels and PCR comparison (scib-metrics)."""
    import scib_metrics

    out: dict[str, float] = {}
    n_batches = len(np.unique(batch))
    n_types = len(np.unique(cell_type))
    lisi_graph = neighbors.subset_neighbors(min(LISI_NEIGHBORS, neighbors.n_neighbors))
    out["ilisi"] = (
        float(scib_metrics.ilisi_knn(lisi_graph, batch, scale=True)) if n_batches > 1 else math.nan
    )
    out["clisi"] = (
        float(scib_metrics.clisi_knn(lisi_graph, cell_type, scale=True))
        if n_types > 1
        else math.nan
    )
    out["kbet"] = math.nan
    if kbet and n_batches > 1:
        kbet_graph = neighbors.subset_neighbors(min(KBET_NEIGHBORS, neighbors.n_neighbors))
        with warnings.catch_warnings():
            # NaN for cell types found in one batch only; numpy warns on an all-NaN mean.
            warnings.simplefilter("ignore", RuntimeWarning)
            out["kbet"] = float(scib_metrics.kbet_per_label(kbet_graph, batch, cell_type))
    out["isolated_labels"] = float(scib_metrics.isolated_labels(embedding, cell_type, batch))
    if x_pre is not None and n_batches > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "score is negative ... set to 0"
            out["pcr_comparison"] = float(
                scib_metrics.pcr_comparison(
                    np.asarray(x_pre, dtype=np.float32), embedding, batch, categorical=True
                )
            )
    else:
        out["pcr_comparison"] = math.nan
    return out
