"""Seurat v4 weighted nearest neighbours (WNN; Hao et al. 2021) through rpy2.

The per-modality reductions follow Seurat's WNN vignettes and are computed here in Python:
RNA PCA of the log-normalised HVGs, z-scored (``ScaleData`` + ``RunPCA``, 30 PCs); protein
PCA of CLR values, z-scored (18 PCs of ``apca``); ATAC LSI (Signac's TF-IDF + SVD, components
2..50). R's ``FindMultiModalNeighbors`` (``baselines/seurat_wnn.R``) learns the per-cell
modality weights and returns the weighted shared-nearest-neighbour graph (``wsnn``).

WNN yields a graph, not an embedding, and the task scores a kNN graph of an embedding: the
returned embedding is a spectral embedding (Laplacian eigenmaps, scikit-learn's
``spectral_embedding`` on the symmetric ``wsnn`` graph, normalised Laplacian, first trivial
vector dropped) of that graph. Seurat itself embeds WNN with ``RunUMAP(nn.name =
"weighted.nn")`` for display; its ``RunSPCA(graph = "wsnn")`` projects RNA features only and
would lose the structure the other modalities add, so neither is used for scoring.

Paired data only: WNN needs every modality in every cell.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from baselines.multiomics_pca import has_modality, lsi_embedding, modality_matrix
from contract.pca import pca_embedding
from contract.registry import register

R_SCRIPT = Path(__file__).with_name("seurat_wnn.R")
"""R function ``scgpt_bench_wnn``."""


@register("multiomics", "seurat_wnn", label="Seurat v4", env="r")
def seurat_wnn(
    adata: ad.AnnData,
    *,
    seed: int,
    rna_dims: int = 30,
    protein_dims: int = 18,
    atac_dims: int = 50,
    k_nn: int = 20,
    n_components: int = 30,
) -> np.ndarray:
    """Seurat WNN graph of the paired modalities, embedded spectrally.

    Parameters
    ----------
    adata
        The multiomics task's input (``layers["normalized"]``, ``var["modality"]``); paired
        (every cell has every modality it has features of), at least two modalities.
    seed
        R's ``set.seed``, the decompositions' and the spectral embedding's random state.
    rna_dims
        RNA PCs (the CITE-seq vignette's 30; the 10x Multiome vignette uses 50).
    protein_dims
        Protein PCs (the vignette's 18; capped at the number of proteins - 1).
    atac_dims
        LSI components computed; components 2..``atac_dims`` are used (Signac's convention).
    k_nn
        ``FindMultiModalNeighbors``' ``k.nn`` (its 20).
    n_components
        Dimensions of the spectral embedding of the ``wsnn`` graph.

    Returns
    -------
    ``n_cells x n_components`` spectral embedding, in the order of ``adata.obs_names``.

    Raises
    ------
    ValueError
        On mosaic data (cells lacking a modality), with fewer than two modalities, or when
        R returns other cells than it was given.
    """
    from sklearn.manifold import spectral_embedding

    from baselines import _rbridge

    if "modality" not in adata.var:
        raise KeyError(
            f"seurat_wnn: var has no 'modality' column; it has {list(adata.var.columns)}"
        )
    present = [m for m in ("rna", "protein", "atac") if (adata.var["modality"] == m).any()]
    lacking = {m: int((~has_modality(adata, m)).sum()) for m in present}
    if any(lacking.values()):
        raise ValueError(
            f"seurat_wnn: cells lacking a modality {lacking} (mosaic data); Seurat v4 WNN needs "
            "paired data (every modality in every cell)"
        )
    if len(present) < 2:
        raise ValueError(f"seurat_wnn: needs at least two modalities; the data has {present}")
    cells = [str(c) for c in adata.obs_names]
    if len(set(cells)) != len(cells):
        raise ValueError("seurat_wnn: adata.obs_names are not unique")
    reductions: dict[str, np.ndarray | None] = {"rna": None, "protein": None, "atac": None}
    for modality in present:
        matrix = modality_matrix(adata, modality, "seurat_wnn")
        if modality == "atac":
            reductions[modality] = lsi_embedding(matrix, n_comps=atac_dims, seed=seed)
        else:
            dims = rna_dims if modality == "rna" else protein_dims
            reductions[modality] = pca_embedding(
                matrix.toarray(), n_comps=dims, seed=seed, scale=True
            )
    _rbridge.require_r(("Seurat", "Matrix"))
    _rbridge.source_r(R_SCRIPT)
    result = _rbridge.call_r(
        "scgpt_bench_wnn",
        cells,
        rna=reductions["rna"],
        protein=reductions["protein"],
        atac=reductions["atac"],
        rna_dims=rna_dims,
        protein_dims=protein_dims,
        atac_dims=atac_dims,
        k_nn=k_nn,
        seed=seed,
    )
    n = len(cells)
    graph = sp.csc_matrix(
        (
            np.asarray(result["x"], dtype=np.float64),
            np.asarray(result["i"], dtype=np.int64),
            np.asarray(result["p"], dtype=np.int64),
        ),
        shape=(n, n),
    )
    rows = pd.Index([str(c) for c in result["rows"]]).get_indexer(cells)
    cols = pd.Index([str(c) for c in result["cells"]]).get_indexer(cells)
    if (rows < 0).any() or (cols < 0).any():
        raise ValueError("seurat_wnn: R returned a graph over other cells than the input")
    graph = sp.csr_matrix(graph)[rows][:, cols]
    graph = (graph + graph.T) / 2
    graph.setdiag(0)
    graph.eliminate_zeros()
    embedding = spectral_embedding(
        graph, n_components=n_components, random_state=seed, drop_first=True, norm_laplacian=True
    )
    return np.asarray(embedding, dtype=np.float32)
