"""Batch-integration scores as the scGPT paper reports them (scIB definitions, scib's code).

The paper scores an integrated embedding with ``scib.metrics.metrics`` (scGPT pins scib
1.0.3; Luecken et al. 2022). Every headline score here follows scib's definition and is
checked against numbers computed by scib itself (``tests/data/make_scib_reference.py``):

- the graph: scanpy's ``sc.pp.neighbors(use_rep=...)`` as scib calls it, 15 neighbours (self
  included), Euclidean, umap's fuzzy-union connectivities (symmetric); built here from an
  exact kNN search (:func:`knn_connectivities`; scanpy's own search is exact below 8,192 cells);
- ``nmi`` / ``ari``: clusters of that graph at the resolution that maximises NMI (arithmetic
  NMI, ARI from scikit-learn; first maximum, clustering seed 0 as scib's). The clustering is
  a choice (:data:`CLUSTERINGS`): ``"louvain"`` = scib 1.0.3's ``opt_louvain``, the paper's
  (scanpy's Louvain, ``louvain`` package, unweighted graph, 20 resolutions 0.1..2.0);
  ``"leiden"`` = scib 1.1.7's ``cluster_optimal_resolution`` (scanpy's Leiden, leidenalg,
  weighted graph, 10 resolutions 0.2..2.0);
- ``asw_cell`` = (ASW + 1) / 2 of the cell-type silhouette; ``asw_batch`` = mean over cell
  types of the mean of 1 - |ASW| of the batch silhouette within the cell type (scib-metrics'
  functions, equal to scib's);
- ``graph_conn``: scib's graph connectivity, the mean over cell types of the fraction of the
  type's cells in the largest connected component of the connectivity graph restricted to
  that type (:func:`graph_connectivity`);
- ``avg_bio`` = mean(NMI, ARI, ASW_cell), ``avg_batch`` = mean(ASW_batch, graph_conn),
  ``overall`` = 0.6 avg_bio + 0.4 avg_batch.

scib-metrics' own variants are kept only under their own names, as extras:
``graph_conn_scib_metrics`` (components of the directed kNN graph, lower than scib's by up to
~0.3), and iLISI, cLISI, kBET, isolated labels and PCR comparison. scib-metrics'
``Benchmarker`` is not used: its defaults (KMeans NMI/ARI, BRAS instead of batch ASW, min-max
scaled aggregates) are not the paper's.

Neighbours follow ``Benchmarker.prepare``: one search for the largest k needed, subset to 15
neighbours (scib's graph), 50 (kBET) and 90 (LISI). The search is exact up to 50,000 cells and
scib-metrics' pynndescent above (see :func:`compute_neighbors`).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

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
    "graph_conn_scib_metrics",
    "cluster_resolution",
)
"""Extra scores reported beside the paper's (not in the paper's table): scib-metrics' iLISI,
cLISI, kBET, isolated labels, PCR comparison and graph connectivity (its directed-graph
variant), and the resolution that the NMI/ARI clustering chose."""

LOUVAIN_RESOLUTIONS: tuple[float, ...] = tuple(2 * x / 20 for x in range(1, 21))
"""scib 1.0.3's ``opt_louvain`` grid: 0.1, 0.2, ..., 2.0 (same float expressions as scib)."""

LEIDEN_RESOLUTIONS: tuple[float, ...] = tuple(2 * (x + 1) / 10 for x in range(10))
"""scib 1.1.7's ``cluster_optimal_resolution`` grid (``get_resolutions(n=10, max=2)``):
0.2, 0.4, ..., 2.0."""

CLUSTERINGS: dict[str, str] = {
    "louvain": "scib 1.0.3 (the paper's): Louvain, 20 resolutions 0.1..2.0, best NMI",
    "leiden": "scib 1.1.7: Leiden, 10 resolutions 0.2..2.0, best NMI",
}
"""NMI/ARI clustering choices (``integration_scores(clustering=...)``) and what each matches."""


def check_clustering(clustering: str, what: str = "clustering") -> str:
    """``clustering`` if it is one of :data:`CLUSTERINGS`.

    Raises
    ------
    ValueError
        Naming ``what`` (e.g. the config key), the value and the choices.
    """
    if clustering not in CLUSTERINGS:
        raise ValueError(f"{what} {clustering!r}: expected one of {sorted(CLUSTERINGS)}")
    return clustering


CLUSTER_SEED = 0
"""Seed of Louvain/Leiden: scanpy's ``random_state=0`` that scib leaves at its default. Fixed,
so that an embedding's score does not depend on the run's seed."""

N_NEIGHBORS = 15
"""Neighbours of scib's graph (scanpy's ``sc.pp.neighbors`` default, self included)."""

LISI_NEIGHBORS = 90
"""Neighbours for iLISI/cLISI (``Benchmarker``'s 90; perplexity = 90 // 3)."""

KBET_NEIGHBORS = 50
"""Neighbours of the graph kBET diffuses on (``Benchmarker``'s 50)."""

EXACT_NEIGHBORS_MAX_CELLS = 50_000
"""Largest data set searched exactly by ``compute_neighbors(method="auto")``."""

BIO_WEIGHT = 0.6
"""Weight of AvgBIO in Overall (scIB); AvgBATCH gets 1 - BIO_WEIGHT."""

MIN_CELL_TYPES = 2
"""Cell types bio-conservation needs: with one, NMI and ARI compare a constant labelling with
the clusters (1.0 whenever the clustering finds one cluster) and the cell-type silhouette has
no other type to compare with, so all three are undefined, never 1.0."""

BIO_SCORES: tuple[str, ...] = (
    "nmi",
    "ari",
    "asw_cell",
    "avg_bio",
    "overall",
    "clisi",
    "isolated_labels",
    "cluster_resolution",
)
"""Scores that need two or more cell types (the bio-conservation components, what is built
from them and the cell-type extras)."""

BATCH_SCORES: tuple[str, ...] = (
    "asw_batch",
    "avg_batch",
    "overall",
    "ilisi",
    "kbet",
    "pcr_comparison",
)
"""Scores that need two or more batches."""


def undefined_scores(
    cell_type: np.ndarray | Sequence[str], batch: np.ndarray | Sequence[str]
) -> dict[str, str]:
    """The scores that the labels leave undefined, each with the reason.

    These are NaN in :func:`integration_scores` (shown as ``—`` in the tables), never a
    number that looks like a result: one cell type makes every bio-conservation score
    undefined (:data:`MIN_CELL_TYPES`); one cell type per cell leaves the silhouette
    undefined (it needs 2..n_cells - 1 labels); one batch, or no cell type in two or more
    batches, leaves the batch silhouette (and so AvgBATCH and Overall) undefined.

    Parameters
    ----------
    cell_type, batch
        Per-cell labels (compared as strings).

    Returns
    -------
    ``{score: reason}``; empty when every score is defined.
    """
    cell_type = np.asarray(cell_type).astype(str)
    batch = np.asarray(batch).astype(str)
    reasons: dict[str, str] = {}
    types = np.unique(cell_type)
    if types.size < MIN_CELL_TYPES:
        found = f"one cell type ({str(types[0])!r})" if types.size else "no cell type"
        why = f"{found}: bio-conservation needs at least {MIN_CELL_TYPES} cell types"
        reasons.update(dict.fromkeys(BIO_SCORES, why))
    elif types.size >= cell_type.size:
        why = (
            f"{types.size} cell types for {cell_type.size} cells: the cell-type silhouette "
            "needs 2 to n_cells - 1 types"
        )
        reasons.update(dict.fromkeys(("asw_cell", "avg_bio", "overall"), why))
    batches = np.unique(batch)
    if batches.size < 2:
        found = f"one batch ({str(batches[0])!r})" if batches.size else "no batch"
        why = f"{found}: batch correction needs at least 2 batches"
        for key in BATCH_SCORES:
            reasons.setdefault(key, why)
    elif not _batch_silhouette_defined(cell_type, batch):
        why = (
            "no cell type has cells in two or more batches (and more cells than batches): "
            "the batch silhouette is undefined"
        )
        for key in ("asw_batch", "avg_batch", "overall"):
            reasons.setdefault(key, why)
    return reasons


def _batch_silhouette_defined(cell_type: np.ndarray, batch: np.ndarray) -> bool:
    """Whether some cell type spans 2 or more batches with more cells than batches."""
    for label in np.unique(cell_type):
        mask = cell_type == label
        if 1 < len(np.unique(batch[mask])) < int(mask.sum()):
            return True
    return False


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
    # The brute-force search returns ~1e-7 instead of 0 for a cell's distance to itself; umap's
    # connectivities take the first non-zero distance as the local scale, so set it exactly.
    distances[:, 0] = 0.0
    return NeighborsResults(indices=indices, distances=distances.astype(np.float32))


_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3


def _smooth_knn_dist(
    distances: np.ndarray, k: int, n_iter: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """umap's ``smooth_knn_dist`` (local_connectivity 1, bandwidth 1), all cells at once.

    For each cell, ``rho`` is the distance to its nearest other cell and ``sigma`` the scale
    at which ``sum_j exp(-(d_j - rho) / sigma)`` over the k - 1 neighbours equals log2(k),
    found by the same 64-step bisection as umap (float32 storage, float64 sums), so that the
    graph weights equal scanpy's to float32 precision.
    """
    n = distances.shape[0]
    target = np.log2(k)
    positive = distances > 0
    first = np.argmax(positive, axis=1)
    rho = np.where(positive.any(axis=1), distances[np.arange(n), first], 0.0).astype(np.float32)
    shifted = (distances[:, 1:] - rho[:, None]).astype(np.float32).astype(np.float64)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    active = np.ones(n, dtype=bool)
    for _ in range(n_iter):
        with np.errstate(over="ignore"):
            terms = np.where(shifted > 0, np.exp(-(shifted / mid[:, None])), 1.0)
        psum = terms.sum(axis=1)
        active &= np.abs(psum - target) >= _SMOOTH_K_TOLERANCE
        if not active.any():
            break
        above = active & (psum > target)
        below = active & ~(psum > target)
        hi[above] = mid[above]
        mid[above] = (lo[above] + hi[above]) / 2.0
        lo[below] = mid[below]
        unbounded = below & np.isinf(hi)
        mid[unbounded] *= 2.0
        bounded = below & ~np.isinf(hi)
        mid[bounded] = (lo[bounded] + hi[bounded]) / 2.0
    sigma = mid.astype(np.float32)
    floor = np.where(
        rho > 0,
        _MIN_K_DIST_SCALE * distances.mean(axis=1),
        _MIN_K_DIST_SCALE * distances.mean(),
    ).astype(np.float32)
    sigma = np.maximum(sigma, floor)
    return sigma, rho


def knn_connectivities(neighbors: Any) -> sp.csr_matrix:
    """scanpy's kNN connectivity graph (``sc.pp.neighbors``, method "umap") from kNN results.

    The graph scib builds, clusters and scores graph connectivity on: cell i's membership
    weight for neighbour j is ``exp(-(d_ij - rho_i) / sigma_i)`` (1 for the nearest, 0 for
    itself), and the fuzzy union ``W + W^T - W * W^T`` makes it symmetric. Built here from the
    neighbour table so that scoring needs no numba compilation (umap's ~10-20 s per process);
    equal to scanpy's matrix to ~2e-6 on the stored reference (``tests/data``).

    Parameters
    ----------
    neighbors
        :class:`scib_metrics.nearest_neighbors.NeighborsResults` with self as the first
        neighbour (scanpy's ``n_neighbors`` counts self: 15 -> self + 14 others).

    Returns
    -------
    Symmetric ``n_cells x n_cells`` CSR matrix (float32), zeros removed.
    """
    indices = np.asarray(neighbors.indices)
    distances = np.asarray(neighbors.distances, dtype=np.float32).copy()
    n, k = indices.shape
    is_self = indices == np.arange(n)[:, None]
    distances[is_self] = 0.0
    sigma, rho = _smooth_knn_dist(distances, k)
    excess = (distances - rho[:, None]).astype(np.float32)
    with np.errstate(over="ignore"):
        weights = np.where(
            (excess <= 0) | (sigma[:, None] == 0),
            np.float32(1.0),
            np.exp(-(excess / sigma[:, None])).astype(np.float32),
        )
    weights[is_self] = 0.0
    valid = indices >= 0  # pynndescent marks missing neighbours with -1
    rows = np.repeat(np.arange(n), k)[valid.ravel()]
    member = sp.csr_matrix(
        (weights[valid].astype(np.float32), (rows, indices[valid])), shape=(n, n)
    )
    member.eliminate_zeros()
    transpose = member.T.tocsr()
    graph = (member + transpose - member.multiply(transpose)).tocsr()
    graph.eliminate_zeros()
    return graph.astype(np.float32)


def graph_connectivity(connectivities: sp.spmatrix, labels: np.ndarray) -> float:
    """scib's graph connectivity on a symmetric connectivity graph.

    For each label, the cells of that label and the graph's edges among them; the score is
    the mean over labels of (cells in the largest connected component) / (cells of the
    label). scib calls scipy's ``connected_components(connection="strong")`` on scanpy's
    symmetric matrix, where strong and weak components coincide.
    """
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels)
    graph = sp.csr_matrix(connectivities)
    if graph.shape[0] != labels.shape[0]:
        raise ValueError(
            f"graph_connectivity: graph has {graph.shape[0]} cells but labels has {len(labels)}"
        )
    fractions = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        _, component = connected_components(graph[members][:, members], connection="strong")
        fractions.append(np.bincount(component).max() / members.size)
    return float(np.mean(fractions))


def _import_louvain() -> Any:
    """Import the ``louvain`` package, which needs ``pkg_resources`` only to read its version.

    setuptools >= 81 no longer ships ``pkg_resources``; for the length of the import a
    minimal stand-in answers ``get_distribution(name).version`` from importlib.metadata, then
    it is removed so that no other package mistakes it for setuptools.
    """
    import importlib.metadata
    import importlib.util
    import sys
    import types

    if "louvain" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        import louvain

        return louvain
    shim = types.ModuleType("pkg_resources")
    shim.DistributionNotFound = importlib.metadata.PackageNotFoundError  # type: ignore[attr-defined]
    shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
        version=importlib.metadata.version(name)
    )
    sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "superseded by leidenalg"
            import louvain
    finally:
        del sys.modules["pkg_resources"]
    return louvain


def _cluster(connectivities: sp.spmatrix, resolution: float, clustering: str) -> np.ndarray:
    """Cluster labels of one resolution, with scanpy's functions as scib calls them.

    scib leaves scanpy's defaults, spelled out here so that a later scanpy cannot change
    them: Louvain (``louvain`` package, RB-configuration partition) on the unweighted
    directed graph; Leiden (leidenalg) on the weighted directed graph, iterated to
    convergence; both seeded with :data:`CLUSTER_SEED`.
    """
    import anndata as ad
    import scanpy as sc

    holder = ad.AnnData(obs={"cell": np.arange(connectivities.shape[0]).astype(str)})
    with warnings.catch_warnings():
        # scanpy's FutureWarning about leidenalg becoming optional; the flavour is deliberate.
        warnings.simplefilter("ignore", FutureWarning)
        if clustering == "louvain":
            _import_louvain()
            sc.tl.louvain(
                holder,
                resolution=resolution,
                adjacency=connectivities,
                flavor="vtraag",
                directed=True,
                use_weights=False,
                random_state=CLUSTER_SEED,
                key_added="cluster",
            )
        else:
            sc.tl.leiden(
                holder,
                resolution=resolution,
                adjacency=connectivities,
                flavor="leidenalg",
                directed=True,
                use_weights=True,
                n_iterations=-1,
                random_state=CLUSTER_SEED,
                key_added="cluster",
            )
    return holder.obs["cluster"].to_numpy()


def cluster_nmi_ari(
    connectivities: sp.spmatrix,
    labels: np.ndarray,
    *,
    clustering: str = "louvain",
    resolutions: Sequence[float] | None = None,
) -> dict[str, float]:
    """NMI and ARI of the clustering at the resolution that maximises NMI, as scib does.

    Parameters
    ----------
    connectivities
        scib's graph (:func:`knn_connectivities`).
    labels
        Cell-type label per cell.
    clustering
        ``"louvain"`` (scib 1.0.3, the paper's) or ``"leiden"`` (scib 1.1.7); see
        :data:`CLUSTERINGS`.
    resolutions
        Grid to search; default the chosen scib version's (:data:`LOUVAIN_RESOLUTIONS` or
        :data:`LEIDEN_RESOLUTIONS`).

    Returns
    -------
    ``{"nmi", "ari", "cluster_resolution"}``: arithmetic NMI and ARI (scikit-learn, as scib)
    at the first resolution with the highest NMI.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    check_clustering(clustering)
    if resolutions is None:
        resolutions = LOUVAIN_RESOLUTIONS if clustering == "louvain" else LEIDEN_RESOLUTIONS
    if len(resolutions) == 0:
        raise ValueError("cluster_nmi_ari: resolutions is empty")
    labels = np.asarray(labels).astype(str)
    best: dict[str, float] | None = None
    for resolution in resolutions:
        clusters = _cluster(connectivities, resolution, clustering)
        nmi = float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))
        # scib keeps the first strict maximum (its running maximum starts at 0).
        if best is None or nmi > best["nmi"]:
            best = {
                "nmi": nmi,
                "ari": float(adjusted_rand_score(labels, clusters)),
                "cluster_resolution": float(resolution),
            }
    assert best is not None
    return best


def _silhouette_batch(embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray) -> float:
    """scib-metrics' batch ASW: per cell type, the mean of 1 - |silhouette of the batches|,
    then the mean over cell types; cell types in one batch only, or with every cell in its own
    batch, are skipped (as scib-metrics' ``silhouette_batch`` does). NaN if none is left.

    Computed per cell type with :func:`silhouette_samples` rather than by scib-metrics' own
    call, which compiles its JAX kernel anew for every cell type's shape (~20 s a run on the
    demo, whatever the data size; ``benchmarks/scaling.py``). Equal to it to float32
    precision (``tests/test_integration_metrics.py``).
    """
    if not _batch_silhouette_defined(cell_type, batch):
        warnings.warn(
            "asw_batch is undefined: no cell type is present in two or more batches",
            stacklevel=2,
        )
        return math.nan
    per_type = []
    for label in np.unique(cell_type):
        members = cell_type == label
        n_batches = len(np.unique(batch[members]))
        if n_batches == 1 or n_batches == int(members.sum()):
            continue
        per_type.append(np.mean(1 - np.abs(silhouette_samples(embedding[members], batch[members]))))
    return float(np.mean(per_type))


SKLEARN_SILHOUETTE_MAX_CELLS = 20_000
"""Up to this many cells the silhouettes use scikit-learn (chunked NumPy distances, no
compilation); above it scib-metrics' JAX kernel, whose ~1-2 s compilation per shape is then
repaid (``benchmarks/scaling.py``). Both give the same values to float32 precision."""


def silhouette_samples(embedding: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-cell Euclidean silhouette of ``labels`` (scikit-learn's / scib-metrics' definition).

    scikit-learn up to :data:`SKLEARN_SILHOUETTE_MAX_CELLS` cells, scib-metrics above.
    """
    if embedding.shape[0] <= SKLEARN_SILHOUETTE_MAX_CELLS:
        from sklearn.metrics import silhouette_samples as sklearn_silhouette

        return np.asarray(sklearn_silhouette(embedding, labels, metric="euclidean"))
    from scib_metrics.utils import silhouette_samples as scib_silhouette

    return np.asarray(scib_silhouette(embedding, labels))


def _validate(
    embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray, n_neighbors: int
) -> np.ndarray:
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2:
        raise ValueError(f"embedding must be 2-D (cells x dims); got shape {embedding.shape}")
    n = embedding.shape[0]
    if len(cell_type) != n or len(batch) != n:
        raise ValueError(
            f"embedding has {n} rows but cell_type has {len(cell_type)} and batch {len(batch)}"
        )
    if not np.isfinite(embedding).all():
        bad = int((~np.isfinite(embedding)).any(axis=1).sum())
        raise ValueError(f"embedding has non-finite values in {bad} of {n} cells")
    if n < n_neighbors:
        # Below k the graph is not scib's k-neighbour graph (every cell would be linked to
        # all others), so clustering and connectivity scores would describe another graph.
        raise ValueError(
            f"{n} cells cannot be scored: scib's neighbour graph needs at least "
            f"n_neighbors = {n_neighbors} cells (each cell and its {n_neighbors - 1} neighbours)"
        )
    return embedding


def integration_scores(
    embedding: np.ndarray,
    cell_type: np.ndarray | Sequence[str],
    batch: np.ndarray | Sequence[str],
    *,
    seed: int = 0,
    n_neighbors: int = N_NEIGHBORS,
    clustering: str = "louvain",
    x_pre: np.ndarray | None = None,
    extra: bool = True,
    kbet: bool = False,
    neighbor_method: str = "auto",
) -> dict[str, float]:
    """The paper's integration scores of one embedding (scib's definitions), plus extras.

    Parameters
    ----------
    embedding
        Cells x dimensions.
    cell_type, batch
        Per-cell labels (any hashable values; compared as strings).
    seed
        Seed of the approximate neighbour search (pynndescent, above 50,000 cells). The
        clustering always uses scib's seed (:data:`CLUSTER_SEED`).
    n_neighbors
        k of scib's graph for clustering and graph connectivity (self included; scib: 15).
    clustering
        NMI/ARI clustering: ``"louvain"`` (scib 1.0.3, the paper's) or ``"leiden"`` (scib
        1.1.7); see :data:`CLUSTERINGS`.
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
    Every name in :data:`HEADLINE_METRICS` and ``cluster_resolution`` (and the rest of
    :data:`EXTRA_METRICS` when ``extra``). Scores the labels leave undefined
    (:func:`undefined_scores`, e.g. bio-conservation of a single cell type) are NaN.

    Raises
    ------
    ValueError
        For fewer cells than ``n_neighbors``, mismatched lengths or non-finite values.
    """
    cell_type = np.asarray(cell_type).astype(str)
    batch = np.asarray(batch).astype(str)
    embedding = _validate(embedding, cell_type, batch, n_neighbors)
    undefined = undefined_scores(cell_type, batch)
    import scib_metrics  # after the checks: its import (JAX) takes seconds

    k_max = n_neighbors
    if extra:
        k_max = max(k_max, LISI_NEIGHBORS, KBET_NEIGHBORS if kbet else 0)
    neighbors = compute_neighbors(embedding, k_max, seed=seed, method=neighbor_method)
    k_graph = min(n_neighbors, neighbors.n_neighbors)
    graph = neighbors.subset_neighbors(k_graph)

    connectivities = knn_connectivities(graph)
    # The cell-type silhouette is O(n^2 d), the costliest score on large data: computed once
    # for asw_cell and the isolated-label score, each of whose scib-metrics functions would
    # compute it again (benchmarks/scaling.py).
    silhouette = functools.cache(lambda: _cell_type_silhouette(embedding, cell_type))

    scores: dict[str, float] = {}
    if "nmi" in undefined:  # one cell type: clustering it would score 1.0 for nothing
        check_clustering(clustering)
        scores.update(nmi=math.nan, ari=math.nan, cluster_resolution=math.nan)
    else:
        scores.update(cluster_nmi_ari(connectivities, cell_type, clustering=clustering))
    scores["asw_cell"] = math.nan if "asw_cell" in undefined else _asw_from_silhouette(silhouette())
    scores["asw_batch"] = _silhouette_batch(embedding, cell_type, batch)
    scores["graph_conn"] = graph_connectivity(connectivities, cell_type)
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
        scores.update(
            _extra_scores(
                embedding, neighbors, cell_type, batch, x_pre, kbet=kbet, silhouette=silhouette
            )
        )
        # scib-metrics' variant (components of the directed kNN graph), under its own name.
        scores["graph_conn_scib_metrics"] = float(scib_metrics.graph_connectivity(graph, cell_type))
    ordered = {m: scores[m] for m in HEADLINE_METRICS}
    ordered.update({k: v for k, v in scores.items() if k not in ordered})
    return ordered


def _cell_type_silhouette(embedding: np.ndarray, cell_type: np.ndarray) -> np.ndarray:
    """Per-cell silhouette of the cell types (the one behind both scib-metrics'
    ``silhouette_label`` and its ``isolated_labels``)."""
    return silhouette_samples(embedding, cell_type)


def _asw_from_silhouette(silhouette: np.ndarray) -> float:
    """scib-metrics' ``silhouette_label(rescale=True)`` from the per-cell silhouettes."""
    return float(np.mean((np.mean(silhouette) + 1) / 2))


def _isolated_labels_from_silhouette(
    silhouette: np.ndarray, cell_type: np.ndarray, batch: np.ndarray
) -> float:
    """scib-metrics' ``isolated_labels`` (rescaled ASW of the labels found in the fewest
    batches) from the per-cell silhouettes; its label choice is its own helper's."""
    import pandas as pd
    from scib_metrics.metrics._isolated_labels import _get_isolated_labels

    rescaled = (silhouette + 1) / 2
    isolated = _get_isolated_labels(cell_type, batch, None)
    return float(
        pd.Series({label: np.mean(rescaled[cell_type == label]) for label in isolated}).mean()
    )


def _extra_scores(
    embedding: np.ndarray,
    neighbors: Any,
    cell_type: np.ndarray,
    batch: np.ndarray,
    x_pre: np.ndarray | None,
    *,
    kbet: bool,
    silhouette: Callable[[], np.ndarray] | None = None,
) -> dict[str, float]:
    """iLISI, cLISI, kBET per label, isolated labels and PCR comparison (scib-metrics).

    ``silhouette``: returns the per-cell cell-type silhouette (computed once and shared with
    ``asw_cell``); computed here when not given.
    """
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
    if silhouette is None:
        silhouette = functools.cache(lambda: _cell_type_silhouette(embedding, cell_type))
    out["isolated_labels"] = (
        _isolated_labels_from_silhouette(silhouette(), cell_type, batch)
        if n_types >= MIN_CELL_TYPES
        else math.nan
    )
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
