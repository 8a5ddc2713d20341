"""The PCA that scores use (integration's PCR comparison) and the PCA baselines share.

It lives here, not in a baseline's module, so that editing a compared method cannot change a
metric: ``benchmark.tasks.integration`` / ``multiomics`` compute their PCR reference with
:func:`pca_embedding`, and ``baselines.pca`` (the unintegrated control) calls the same code.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

__all__ = ["LOG1P_LAYER", "log_normalized", "pca_embedding"]

LOG1P_LAYER = "log1p"
"""Layer the integration task fills with log-normalised values (see benchmark.tasks.integration)."""


def log_normalized(adata: ad.AnnData) -> sp.csr_matrix | np.ndarray:
    """Log-normalised expression: ``layers["log1p"]`` when present, else computed from counts.

    The fallback is the task's own normalisation (counts per cell scaled to 1e4, then
    log1p) applied to ``layers["counts"]`` or ``X``.
    """
    if LOG1P_LAYER in adata.layers:
        return adata.layers[LOG1P_LAYER]
    import scanpy as sc

    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    tmp = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    return tmp.X


def pca_embedding(
    matrix: sp.spmatrix | np.ndarray, *, n_comps: int, seed: int, scale: bool = False
) -> np.ndarray:
    """PCA (scanpy, ARPACK, centred) of a cells x genes matrix, optionally z-scored first.

    ``n_comps`` is capped at ``min(n_cells, n_genes) - 1``.
    """
    import scanpy as sc

    tmp = ad.AnnData(X=matrix.astype(np.float32))
    if scale:
        sc.pp.scale(tmp, max_value=10)
    n_comps = min(n_comps, min(tmp.shape) - 1)
    sc.pp.pca(tmp, n_comps=n_comps, svd_solver="arpack", random_state=seed)
    return np.asarray(tmp.obsm["X_pca"], dtype=np.float32)
