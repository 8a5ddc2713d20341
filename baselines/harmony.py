"""Harmony (Korsunsky et al. 2019, harmonypy) on the PCA of the log-normalised HVGs."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np

from contract.pca import log_normalized, pca_embedding
from contract.registry import register


@register("integration", "harmony", label="Harmony")
def harmony_integration(
    adata: ad.AnnData,
    *,
    seed: int,
    batch_key: str = "batch",
    n_comps: int = 50,
    theta: float = 2.0,
    max_iter_harmony: int = 10,
    n_threads: int = 1,
) -> np.ndarray:
    """Harmony-corrected PCA (scIB: 50 PCs of the log-normalised HVGs, unscaled).

    Parameters
    ----------
    adata
        Cells x HVGs with ``layers["log1p"]`` (or counts) and ``obs[batch_key]``.
    seed
        ARPACK's and Harmony's random state.
    batch_key
        obs column with the batch.
    n_comps
        PCs Harmony corrects (scanpy's/scIB's 50).
    theta, max_iter_harmony
        Harmony's diversity penalty and iteration cap (its defaults, 2 and 10).
    n_threads
        Harmony's threads (results do not depend on it).

    Returns
    -------
    The corrected PCs, ``n_cells x n_comps``.
    """
    import harmonypy

    if batch_key not in adata.obs:
        raise KeyError(f"harmony: obs has no batch column {batch_key!r}; it has {list(adata.obs)}")
    pcs = pca_embedding(log_normalized(adata), n_comps=n_comps, seed=seed)
    meta = adata.obs[[batch_key]].astype(str)
    logging.getLogger("harmonypy").setLevel(logging.WARNING)
    result = harmonypy.run_harmony(
        pcs,
        meta,
        batch_key,
        theta=theta,
        max_iter_harmony=max_iter_harmony,
        random_state=seed,
        ncores=n_threads,
        verbose=False,
    )
    corrected = np.asarray(result.Z_corr, dtype=np.float32)
    if corrected.shape != pcs.shape:  # older harmonypy returned PCs x cells
        corrected = corrected.T
    return corrected
