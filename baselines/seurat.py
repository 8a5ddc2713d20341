"""Seurat (v4, R) through rpy2: anchor integration and reference label transfer.

The R code is in ``baselines/seurat.R``; :mod:`baselines._rbridge` moves the data. Defaults
are Seurat's own (and its integration / mapping vignettes'): CCA anchors on the given genes,
30 dimensions, ``k.anchor = 5``, ``k.filter = 200``, ``k.score = 30``, ``k.weight = 100``
(integration) or 50 (transfer), 30 PCs of the integrated assay. scIB (the paper's
benchmark code) runs Seurat the same way: anchors on the shared HVGs, default parameters.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from contract.registry import register

R_SCRIPT = Path(__file__).with_name("seurat.R")
"""R functions ``scgpt_bench_integrate`` and ``scgpt_bench_transfer``."""


def _counts_and_kind(adata: ad.AnnData, what: str) -> tuple[sp.csr_matrix, bool]:
    """The matrix to give Seurat and whether it is already log-normalised.

    ``layers["counts"]`` when present, else ``X``. Integer-valued non-negative values are
    counts (Seurat normalises them); anything else is taken as log-normalised values and
    used as Seurat's ``data`` slot.
    """
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    values = matrix.data
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what}: Seurat needs counts or log-normalised values; found negative values "
            "(scaled data?) in " + ("layers['counts']" if "counts" in adata.layers else "X")
        )
    is_counts = bool(np.all(values == np.round(values)))
    return matrix, not is_counts


def _unique_names(names: pd.Index, what: str) -> list[str]:
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:3].tolist()
        raise ValueError(f"{what} has duplicated names (e.g. {dup}); call .obs_names_make_unique()")
    return [str(n) for n in names]


@register("integration", "seurat", label="Seurat", env="r")
def seurat_integration(
    adata: ad.AnnData,
    *,
    seed: int,
    batch_key: str = "batch",
    reduction: str = "cca",
    dims: int = 30,
    k_anchor: int = 5,
    k_filter: int = 200,
    k_score: int = 30,
    k_weight: int = 100,
    n_pcs: int = 30,
) -> np.ndarray:
    """Seurat anchor integration (CCA or RPCA); the PCA of the integrated assay.

    Parameters
    ----------
    adata
        Cells x genes; ``layers["counts"]`` (or ``X``) raw counts, ``obs[batch_key]``.
    seed
        R's ``set.seed`` and RunPCA's ``seed.use``.
    reduction
        ``"cca"`` (Seurat's default, scIB's) or ``"rpca"`` (faster, more conservative).
    dims
        Dimensions for anchor finding and integration (``1:dims``).
    k_anchor, k_filter, k_score, k_weight
        Seurat's ``k.anchor``, ``k.filter``, ``k.score`` and IntegrateData's ``k.weight``;
        ``k.weight`` must be below the number of cells of the smallest batch.
    n_pcs
        PCs of the integrated, scaled assay returned as the embedding.

    Returns
    -------
    ``n_cells x n_pcs`` embedding in the order of ``adata.obs_names``.
    """
    from baselines import _rbridge

    if reduction not in ("cca", "rpca"):
        raise ValueError(f"seurat reduction {reduction!r}: expected 'cca' or 'rpca'")
    if batch_key not in adata.obs:
        raise KeyError(f"seurat: obs has no batch column {batch_key!r}; it has {list(adata.obs)}")
    batch = adata.obs[batch_key].astype(str).to_numpy()
    sizes = pd.Series(batch).value_counts()
    if len(sizes) < 2:
        raise ValueError(
            f"seurat integration needs >= 2 batches in obs[{batch_key!r}]; got {len(sizes)}"
        )
    smallest = int(sizes.min())
    if smallest <= max(k_weight, dims):
        raise ValueError(
            f"seurat: batch {sizes.idxmin()!r} has {smallest} cells; k_weight ({k_weight}) and "
            f"dims ({dims}) must be below the smallest batch size (set smaller values)"
        )
    cells = _unique_names(adata.obs_names, "adata.obs_names")
    genes = _unique_names(adata.var_names, "adata.var_names")
    matrix, normalized = _counts_and_kind(adata, "seurat integration")
    _rbridge.require_r(("Seurat", "Matrix"))
    _rbridge.source_r(R_SCRIPT)
    parts = _rbridge.sparse_parts(matrix)
    result = _rbridge.call_r(
        "scgpt_bench_integrate",
        parts["i"],
        parts["p"],
        parts["x"],
        genes,
        cells,
        list(batch),
        reduction=reduction,
        dims=dims,
        k_anchor=k_anchor,
        k_filter=k_filter,
        k_score=k_score,
        k_weight=k_weight,
        npcs=n_pcs,
        normalized=normalized,
        seed=seed,
    )
    embedding = np.asarray(result["embedding"], dtype=np.float32)
    return _rbridge.align_by_names(embedding, result["cells"], cells)


@register("reference_mapping", "seurat", label="Seurat", env="r")
def seurat_label_transfer(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    seed: int,
    label_key: str = "cell_type",
    n_features: int = 2000,
    dims: int = 30,
    k_anchor: int = 5,
    k_filter: int = 200,
    k_score: int = 30,
    k_weight: int = 50,
) -> np.ndarray:
    """Seurat reference mapping: FindTransferAnchors + TransferData of the reference labels.

    Parameters
    ----------
    reference
        Labelled cells: counts in ``layers["counts"]`` or ``X``; ``obs[label_key]``.
    query
        Cells to label, same kind of values; genes matched to the reference's by name.
    seed
        R's ``set.seed`` and RunPCA's ``seed.use``.
    n_features
        Variable genes of the reference (vst) used for the PCA and the anchors.
    dims, k_anchor, k_filter, k_score, k_weight
        Seurat's ``dims = 1:dims``, ``k.anchor``, ``k.filter``, ``k.score`` and
        TransferData's ``k.weight`` (below the number of query cells).

    Returns
    -------
    Predicted label per query cell, in the order of ``query.obs_names``.
    """
    from baselines import _rbridge

    if label_key not in reference.obs:
        raise KeyError(
            f"seurat: reference obs has no label column {label_key!r}; it has {list(reference.obs)}"
        )
    if query.n_obs <= k_weight:
        raise ValueError(
            f"seurat: k_weight ({k_weight}) must be below the query's {query.n_obs} cells"
        )
    shared = reference.var_names.intersection(query.var_names, sort=False)
    if len(shared) < dims:
        raise ValueError(
            f"seurat: reference and query share {len(shared)} genes; need at least dims={dims}"
        )
    reference = reference[:, shared]
    query = query[:, shared]
    genes = _unique_names(shared, "var_names")
    ref_cells = _unique_names(reference.obs_names, "reference.obs_names")
    query_cells = _unique_names(query.obs_names, "query.obs_names")
    ref_matrix, ref_norm = _counts_and_kind(reference, "seurat reference")
    query_matrix, query_norm = _counts_and_kind(query, "seurat query")
    if ref_norm != query_norm:
        raise ValueError(
            "seurat: reference and query must both hold counts or both log-normalised values"
        )
    _rbridge.require_r(("Seurat", "Matrix"))
    _rbridge.source_r(R_SCRIPT)
    ref_parts = _rbridge.sparse_parts(ref_matrix)
    query_parts = _rbridge.sparse_parts(query_matrix)
    result = _rbridge.call_r(
        "scgpt_bench_transfer",
        ref_parts["i"],
        ref_parts["p"],
        ref_parts["x"],
        genes,
        ref_cells,
        reference.obs[label_key].astype(str).tolist(),
        query_parts["i"],
        query_parts["p"],
        query_parts["x"],
        genes,
        query_cells,
        nfeatures=n_features,
        dims=dims,
        k_anchor=k_anchor,
        k_filter=k_filter,
        k_score=k_score,
        k_weight=k_weight,
        normalized=ref_norm,
        seed=seed,
    )
    predicted = np.asarray(result["predicted"]).astype(str)
    return _rbridge.align_by_names(predicted.reshape(-1, 1), result["cells"], query_cells)[:, 0]
