"""Reading the multiomics task's method input (one AnnData, every modality's features).

The contract (``benchmark.tasks.multiomics``): ``X`` (or ``layers["counts"]``) raw counts,
``var["modality"]`` in {"rna", "protein", "atac"}, ``var["linked_gene"]`` for features linked
to a gene, ``obs["batch"]`` and boolean ``obs["has_<modality>"]`` (absent = every cell has
that modality). scGLUE and scMoMaT share these readers.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

MODALITIES: tuple[str, ...] = ("rna", "protein", "atac")
"""Modality names of ``var["modality"]``."""


def counts_csr(adata: ad.AnnData) -> sp.csr_matrix:
    """Raw counts (``layers["counts"]``, else ``X``) as CSR float32."""
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    return sp.csr_matrix(counts, dtype=np.float32)


def feature_masks(adata: ad.AnnData, method: str) -> dict[str, np.ndarray]:
    """Boolean feature mask of every modality that has at least one feature.

    Raises
    ------
    KeyError
        ``var["modality"]`` is missing.
    ValueError
        A value outside :data:`MODALITIES`.
    """
    if "modality" not in adata.var:
        raise KeyError(
            f"{method}: var has no 'modality' column (expected values {list(MODALITIES)}); "
            f"var columns are {list(adata.var.columns)}"
        )
    modality = adata.var["modality"].astype(str).to_numpy()
    unknown = sorted(set(modality) - set(MODALITIES))
    if unknown:
        raise ValueError(
            f"{method}: var['modality'] has values {unknown}; expected only {list(MODALITIES)}"
        )
    return {m: modality == m for m in MODALITIES if np.any(modality == m)}


def cells_with(adata: ad.AnnData, modality: str, method: str) -> np.ndarray:
    """Boolean mask of the cells measured in ``modality`` (``obs["has_<modality>"]``).

    A missing column means every cell has the modality (paired data).
    """
    key = f"has_{modality}"
    if key not in adata.obs:
        return np.ones(adata.n_obs, dtype=bool)
    values = adata.obs[key]
    if values.isna().any():
        raise ValueError(f"{method}: obs[{key!r}] has missing values; expected True/False")
    return values.to_numpy().astype(bool)


def linked_genes(adata: ad.AnnData, mask: np.ndarray, method: str, modality: str) -> np.ndarray:
    """``var["linked_gene"]`` of the masked features as str, ``""`` where unknown.

    Raises
    ------
    KeyError
        ``var["linked_gene"]`` is missing.
    ValueError
        None of the masked features has a linked gene.
    """
    if "linked_gene" not in adata.var:
        raise KeyError(
            f"{method}: var has no 'linked_gene' column, needed to link {modality} features to "
            f"genes (expected the gene symbol of each linked feature, NaN where unknown); var "
            f"columns are {list(adata.var.columns)}"
        )
    genes = adata.var["linked_gene"].to_numpy()[mask]
    out = np.array(["" if pd.isna(g) else str(g) for g in genes], dtype=object)
    if not np.any(out != ""):
        raise ValueError(
            f"{method}: none of the {int(mask.sum())} {modality} features has a "
            "var['linked_gene']; at least one link to a gene is needed"
        )
    return out


def batch_labels(adata: ad.AnnData, batch_key: str, method: str) -> pd.Series:
    """``obs[batch_key]`` as str (one value ``"all"`` when the column is absent)."""
    if batch_key not in adata.obs:
        return pd.Series("all", index=adata.obs_names, dtype=str)
    values = adata.obs[batch_key]
    if values.isna().any():
        raise ValueError(f"{method}: obs[{batch_key!r}] has missing values")
    return values.astype(str)
