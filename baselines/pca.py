"""Unintegrated PCA: the control every integration method should beat on batch mixing."""

from __future__ import annotations

import anndata as ad
import numpy as np

from contract.pca import log_normalized, pca_embedding
from contract.registry import register


@register("integration", "pca", label="PCA (unintegrated)")
def pca_integration(
    adata: ad.AnnData, *, seed: int, n_comps: int = 50, scale: bool = False
) -> np.ndarray:
    """PCA of the log-normalised HVGs, no batch correction (scIB's unintegrated control).

    Parameters
    ----------
    adata
        Cells x HVGs with ``layers["log1p"]`` (or counts to normalise).
    seed
        ARPACK's random state.
    n_comps
        Principal components (scanpy's and scIB's default, 50).
    scale
        Z-score genes (clipped at 10) before the PCA; scIB does not.
    """
    return pca_embedding(log_normalized(adata), n_comps=n_comps, seed=seed, scale=scale)
