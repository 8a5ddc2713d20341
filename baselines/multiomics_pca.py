"""PCA controls of the multi-omic task: RNA only, one shared modality, concatenated modalities.

Inputs follow :mod:`benchmark.tasks.multiomics` (one AnnData of every modality's selected
features, ``var["modality"]``, ``layers["normalized"]``, ``obs["has_<modality>"]``). These
are the references a joint method must beat: ``pca_rna`` (the paper's implicit control: what
RNA alone tells), ``pca_shared`` / ``harmony_shared`` (the modality every batch measured, for
mosaic data where RNA is missing in some batches) and ``pca_concat`` (a naive joint
embedding: per-modality PCs side by side).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from contract.pca import pca_embedding
from contract.registry import register

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("rna", "protein", "atac")
SHARED_PREFERENCE: tuple[str, ...] = ("rna", "protein", "atac")
"""Order in which ``modality="auto"`` picks among several modalities every batch has."""


def modality_matrix(adata: ad.AnnData, modality: str, what: str) -> sp.csr_matrix:
    """The cells x features block of ``layers["normalized"]`` (else counts) of one modality.

    Raises
    ------
    KeyError
        If ``var["modality"]`` is missing.
    ValueError
        If the data has no feature of ``modality`` (naming the modalities it has).
    """
    if "modality" not in adata.var:
        raise KeyError(f"{what}: var has no 'modality' column; it has {list(adata.var.columns)}")
    mask = adata.var["modality"].astype(str).to_numpy() == modality
    if not mask.any():
        found = sorted(set(adata.var["modality"].astype(str)))
        raise ValueError(f"{what}: the data has no {modality} features; it has {found}")
    layer = adata.layers["normalized"] if "normalized" in adata.layers else None
    if layer is None:
        raise KeyError(
            f"{what}: layers['normalized'] is missing (the multiomics task's per-modality "
            f"normalisation); layers: {list(adata.layers)}"
        )
    return sp.csr_matrix(layer[:, mask], dtype=np.float32)


def has_modality(adata: ad.AnnData, modality: str) -> np.ndarray:
    """``obs["has_<modality>"]`` as a boolean array (all True when the column is absent)."""
    key = f"has_{modality}"
    if key not in adata.obs:
        return np.ones(adata.n_obs, dtype=bool)
    return adata.obs[key].astype(bool).to_numpy()


def shared_modalities(adata: ad.AnnData) -> list[str]:
    """Modalities with features that every cell has (in :data:`SHARED_PREFERENCE` order)."""
    present = set(adata.var["modality"].astype(str)) if "modality" in adata.var else set()
    return [m for m in SHARED_PREFERENCE if m in present and has_modality(adata, m).all()]


def _modality_pcs(
    adata: ad.AnnData,
    modality: str,
    *,
    n_comps: int,
    seed: int,
    what: str,
    scale_lsi: bool = True,
) -> np.ndarray:
    """PCs of one modality's normalised block (LSI components 2.. for ATAC, as Signac).

    ``scale_lsi`` False keeps the LSI components' own variances (see :func:`lsi_embedding`).
    """
    matrix = modality_matrix(adata, modality, what)
    if modality == "atac":
        return lsi_embedding(matrix, n_comps=n_comps, seed=seed, scale_embeddings=scale_lsi)
    if modality == "protein":  # few features: z-score densely (Seurat's ScaleData + RunPCA)
        return pca_embedding(matrix.toarray(), n_comps=n_comps, seed=seed, scale=True)
    return pca_embedding(matrix, n_comps=n_comps, seed=seed)


def lsi_embedding(
    tfidf: sp.spmatrix, *, n_comps: int, seed: int, scale_embeddings: bool = True
) -> np.ndarray:
    """Signac's LSI of a TF-IDF matrix: truncated SVD, first component dropped (depth).

    Returns ``n_cells x (n_comps - 1)`` components scaled by their singular values and
    centred; with ``scale_embeddings`` (Signac's ``RunSVD`` default) each component is then
    scaled to unit SD, which gives every component, noise included, the same weight.
    """
    from sklearn.decomposition import TruncatedSVD

    n_comps = max(2, min(n_comps, min(tfidf.shape) - 1))
    svd = TruncatedSVD(n_components=n_comps, algorithm="arpack", random_state=seed)
    components = svd.fit_transform(sp.csr_matrix(tfidf, dtype=np.float64))[:, 1:]
    components = components - components.mean(axis=0)
    if not scale_embeddings:
        return np.asarray(components, dtype=np.float32)
    sd = components.std(axis=0)
    return np.asarray(components / np.where(sd > 0, sd, 1.0), dtype=np.float32)


@register("multiomics", "pca_rna", label="PCA (RNA only)")
def pca_rna(adata: ad.AnnData, *, seed: int, n_comps: int = 50) -> np.ndarray:
    """PCA of the log-normalised RNA HVGs: the RNA-only control a joint method must beat.

    Parameters
    ----------
    adata
        The multiomics task's input (``layers["normalized"]``, ``var["modality"]``).
    seed
        ARPACK's random state.
    n_comps
        Principal components (scanpy's / scIB's 50).

    Raises
    ------
    ValueError
        If the data has no RNA, or some cells lack RNA (mosaic data: use ``pca_shared``).
    """
    has_rna = has_modality(adata, "rna")
    matrix = modality_matrix(adata, "rna", "pca_rna")
    if not has_rna.all():
        raise ValueError(
            f"pca_rna: {int((~has_rna).sum())} of {adata.n_obs} cells have no RNA "
            "(obs['has_rna'] False: mosaic data); an RNA-only embedding is undefined for them. "
            "Use pca_shared (the modality every batch measured) instead"
        )
    return pca_embedding(matrix, n_comps=n_comps, seed=seed)


@register("multiomics", "pca_shared", label="PCA (shared modality)")
def pca_shared(
    adata: ad.AnnData, *, seed: int, modality: str = "auto", n_comps: int = 50
) -> np.ndarray:
    """PCA of the one modality every cell has (on the ASAP-like mosaic: CLR proteins).

    RNA: log-normalised, unscaled (as ``pca_rna``); protein: CLR, z-scored (Seurat's ADT
    PCA); ATAC: TF-IDF -> LSI (components 2..n_comps).

    Parameters
    ----------
    adata
        The multiomics task's input.
    seed
        Random state of the decomposition.
    modality
        ``"auto"``: the modality every cell has, RNA before protein before ATAC when several
        are; or a modality name.
    n_comps
        Components (capped at the number of features - 1).

    Raises
    ------
    ValueError
        If no modality (or not the requested one) is measured in every cell.
    """
    modality = _pick_shared(adata, modality, "pca_shared")
    return _modality_pcs(adata, modality, n_comps=n_comps, seed=seed, what="pca_shared")


@register("multiomics", "harmony_shared", label="Harmony (shared modality)")
def harmony_shared(
    adata: ad.AnnData,
    *,
    seed: int,
    modality: str = "auto",
    n_comps: int = 50,
    batch_key: str = "batch",
    theta: float = 2.0,
    max_iter_harmony: int = 10,
) -> np.ndarray:
    """Harmony on the :func:`pca_shared` components (batch-corrected shared modality).

    Parameters
    ----------
    adata
        The multiomics task's input with ``obs[batch_key]``.
    seed
        Random state of the decomposition and of Harmony.
    modality, n_comps
        As :func:`pca_shared`.
    batch_key
        obs column with the batch.
    theta, max_iter_harmony
        Harmony's diversity penalty and iteration cap (its defaults).
    """
    import harmonypy

    if batch_key not in adata.obs:
        raise KeyError(f"harmony_shared: obs has no column {batch_key!r}; it has {list(adata.obs)}")
    pcs = pca_shared(adata, seed=seed, modality=modality, n_comps=n_comps)
    meta = adata.obs[[batch_key]].astype(str)
    if meta[batch_key].nunique() < 2:
        raise ValueError(f"harmony_shared: obs[{batch_key!r}] has one batch; nothing to correct")
    logging.getLogger("harmonypy").setLevel(logging.WARNING)
    result = harmonypy.run_harmony(
        pcs,
        meta,
        batch_key,
        theta=theta,
        max_iter_harmony=max_iter_harmony,
        random_state=seed,
        verbose=False,
    )
    corrected = np.asarray(result.Z_corr, dtype=np.float32)
    return corrected if corrected.shape == pcs.shape else corrected.T


@register("multiomics", "pca_concat", label="PCA (concatenated modalities)")
def pca_concat(adata: ad.AnnData, *, seed: int, n_comps: int = 30) -> np.ndarray:
    """Per-modality components side by side, each block scaled to unit mean cell norm.

    A naive joint embedding (no weighting, no batch correction): RNA PCA, protein PCA of
    z-scored CLR values, ATAC LSI, each with ``n_comps`` components. Every block keeps its
    components' own variances, as PCA scores do: the ATAC block is LSI without Signac's
    per-component unit-SD scaling. With that scaling the ~27 noise components weigh as much
    as the few that carry chromatin-only differences, and on ``sim_multiome_atac`` (1,000
    cells) the concatenation clustered exactly as RNA alone (Louvain NMI 0.942 both; 1.000
    unscaled).

    Parameters
    ----------
    adata
        The multiomics task's input; paired data (every cell has every modality).
    seed
        Random state of the decompositions.
    n_comps
        Components per modality.

    Raises
    ------
    ValueError
        On mosaic data (a cell without a modality has no block to concatenate).
    """
    present = [m for m in MODALITIES if (adata.var["modality"].astype(str) == m).any()]
    lacking = {m: int((~has_modality(adata, m)).sum()) for m in present}
    if any(lacking.values()):
        raise ValueError(
            f"pca_concat: cells lacking a modality {lacking} (mosaic data); concatenated "
            "per-modality components need paired data. Use pca_shared / harmony_shared"
        )
    blocks = []
    for modality in present:
        block = _modality_pcs(
            adata, modality, n_comps=n_comps, seed=seed, what="pca_concat", scale_lsi=False
        )
        norm = float(np.linalg.norm(block, axis=1).mean())
        blocks.append(block / (norm if norm > 0 else 1.0))
    return np.hstack(blocks).astype(np.float32)


def _pick_shared(adata: ad.AnnData, modality: str, what: str) -> str:
    shared = shared_modalities(adata)
    if modality == "auto":
        if not shared:
            per_batch = adata.uns.get("multiomics", {}).get("batch_modalities", {})
            raise ValueError(
                f"{what}: no modality is measured in every cell (batches measure {per_batch}); "
                "a shared-modality embedding needs one"
            )
        return shared[0]
    if modality not in MODALITIES:
        raise ValueError(f"{what}: modality {modality!r}: expected 'auto' or one of {MODALITIES}")
    if modality not in shared:
        raise ValueError(
            f"{what}: {modality} is not measured in every cell; modalities every cell has: {shared}"
        )
    return modality
