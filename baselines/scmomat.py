"""scMoMaT (Zhang et al. 2023, PyPI ``scmomat``): mosaic integration by matrix tri-factorisation.

scMoMaT factorises every (batch, modality) matrix as ``softmax(C_cells) A softmax(C_feats)^T``
with cell factors per batch, feature factors per modality shared across batches and a shared
association matrix. The cell factors are the joint embedding: the paper's mosaic comparison
(ASAP PBMC) integrates through them.

Input layout (the package's tutorial): per scMoMaT batch one matrix per modality, ``None``
where the batch lacks it. A scMoMaT batch here is a group of cells with the same
``obs["batch"]`` and the same set of measured modalities (``obs["has_*"]``), since
scMoMaT needs every cell of a batch measured in the same modalities.

- RNA: ``scmomat.preprocess(counts, "RNA", log=True)`` (log1p, quantile normalisation,
  scaled to max 1); proteins the same, as their own modality.
- ATAC: binarised peaks (``preprocess(..., "ATAC")``).
- Gene activity: the tutorial gives batches with ATAC but no RNA a pseudo-RNA matrix
  ``binarise(ATAC @ GxR^T)`` so that RNA and ATAC batches share the gene features. ``GxR``
  (genes x peaks) is built from ``var["linked_gene"]``: a gene's activity sums its linked
  peaks. Batches with both RNA and ATAC keep their real RNA.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import scipy.sparse as sp

from baselines._multiomics_input import (
    batch_labels,
    cells_with,
    counts_csr,
    feature_masks,
    linked_genes,
)
from contract.registry import register

if TYPE_CHECKING:
    import torch

METHOD = "scmomat"


@dataclass
class ScmomatResult:
    """Output of :func:`fit_scmomat`.

    Attributes
    ----------
    embedding
        ``n_cells x K`` cell factors in ``adata.obs_names`` order.
    losses
        Full-data validation loss after the first iteration and at the end of every chunk
        of ``interval`` iterations (the package's ``train_func`` values).
    groups
        Name of each scMoMaT batch (``"<batch>|<modalities>"``).
    """

    embedding: np.ndarray
    losses: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


def gene_peak_matrix(peak_genes: np.ndarray, genes: np.ndarray) -> sp.csr_matrix:
    """Genes x peaks 0/1 matrix (scMoMaT's ``GxR``) from each peak's linked gene.

    Parameters
    ----------
    peak_genes
        Linked gene symbol of every peak (``""`` where unknown).
    genes
        Gene symbols of the RNA features (the rows).
    """
    index = {g: i for i, g in enumerate(genes)}
    cols = [j for j, g in enumerate(peak_genes) if g in index]
    rows = [index[peak_genes[j]] for j in cols]
    return sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(genes), len(peak_genes))
    )


def _resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"{METHOD}: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device("cuda:0" if device == "cuda" else "cpu")


def fit_scmomat(
    adata: ad.AnnData,
    *,
    seed: int,
    K: int = 30,
    T: int = 4000,
    lamb: float = 0.001,
    lr: float = 1e-2,
    batch_size: float = 0.1,
    interval: int = 1000,
    pseudo_rna: bool = True,
    batch_key: str = "batch",
    device: str = "auto",
    n_threads: int = 1,
    progress: bool = True,
) -> ScmomatResult:
    """Train scMoMaT on the task input and return its cell factors; see :func:`scmomat_multiomics`."""
    import scmomat
    import torch
    from tqdm.auto import tqdm

    if T < 1 or K < 2 or interval < 1:
        raise ValueError(f"{METHOD}: need T >= 1, K >= 2, interval >= 1; got {T}, {K}, {interval}")
    masks = feature_masks(adata, METHOD)
    has = {m: cells_with(adata, m, METHOD) & (m in masks) for m in ("rna", "protein", "atac")}
    if "rna" not in masks and "atac" in masks and pseudo_rna:
        raise ValueError(
            f"{METHOD}: pseudo_rna=True needs RNA features to map ATAC peaks to; this dataset "
            f"has {sorted(masks)}"
        )
    orphan = ~(has["rna"] | has["protein"] | has["atac"])
    if orphan.any():
        raise ValueError(
            f"{METHOD}: {int(orphan.sum())} cells have no measured modality (obs has_rna, "
            "has_protein, has_atac all False)"
        )
    counts = counts_csr(adata)
    genes = adata.var_names.to_numpy()[masks["rna"]] if "rna" in masks else None
    gxr = None
    if "atac" in masks and "rna" in masks and pseudo_rna:
        gxr = gene_peak_matrix(linked_genes(adata, masks["atac"], METHOD, "atac"), genes)

    # scMoMaT batches: cells sharing obs batch and measured modalities, sorted by name.
    batches = batch_labels(adata, batch_key, METHOD).to_numpy()
    pattern = np.array(
        ["+".join(m for m in ("rna", "protein", "atac") if has[m][i]) for i in range(adata.n_obs)]
    )
    keys = sorted(set(zip(batches, pattern)))
    group_cells = [np.flatnonzero((batches == b) & (pattern == p)) for b, p in keys]
    small = [f"{b}|{p}" for (b, p), c in zip(keys, group_cells) if int(c.size * batch_size) < 1]
    if small:
        raise ValueError(
            f"{METHOD}: batches {small} have fewer than 1/batch_size = {1 / batch_size:g} cells, "
            "so scMoMaT's mini-batch would be empty; raise batch_size or merge batches"
        )

    data: dict[str, list[np.ndarray | None]] = {m: [] for m in masks}
    for cells, (_, pat) in zip(group_cells, keys):
        present = pat.split("+")
        block = {m: counts[cells][:, masks[m]].toarray() for m in present}
        for m in masks:
            if m == "rna" and "rna" not in present and "atac" in present and gxr is not None:
                # The tutorial's pseudo-scRNA-seq: binarised gene activity of the peaks.
                activity = sp.csr_matrix(block["atac"] > 0, dtype=np.float32) @ gxr.T
                data[m].append((activity.toarray() > 0).astype(np.float64))
            elif m not in present:
                data[m].append(None)
            elif m == "atac":
                data[m].append(scmomat.preprocess(block[m], modality="ATAC"))
            else:
                data[m].append(scmomat.preprocess(block[m], modality="RNA", log=True))
    # A modality no batch has (e.g. RNA features on ATAC-only data without pseudo-RNA).
    data = {m: v for m, v in data.items() if any(x is not None for x in v)}
    model_counts: dict = {**data, "nbatches": len(keys)}
    model_counts["feats_name"] = {m: adata.var_names.to_numpy()[masks[m]] for m in data}

    torch.set_num_threads(n_threads)
    quiet = io.StringIO()  # scMoMaT prints its sanity check and every validation loss
    with contextlib.redirect_stdout(quiet):
        model = scmomat.scmomat_model(
            counts=model_counts,
            K=K,
            batch_size=batch_size,
            interval=interval,
            lr=lr,
            lamb=lamb,
            seed=seed,
            device=_resolve_device(device),
        )
    losses: list[float] = []
    # train_func(T) in chunks of `interval`: the optimiser and parameters persist between
    # calls and each chunk reports its first and last validation loss, so this is the same
    # training as one call, with a progress bar.
    chunks = [interval] * (T // interval) + ([T % interval] if T % interval else [])
    for i, chunk in enumerate(tqdm(chunks, desc="scMoMaT", unit="chunk", disable=not progress)):
        model.interval = chunk
        with contextlib.redirect_stdout(quiet):
            values = model.train_func(T=chunk)
        losses.extend(values if i == 0 else values[-1:])
    factors = model.extract_cell_factors()
    embedding = np.zeros((adata.n_obs, K), dtype=np.float32)
    for cells, z in zip(group_cells, factors):
        embedding[cells] = z
    return ScmomatResult(
        embedding=embedding, losses=[float(v) for v in losses], groups=[f"{b}|{p}" for b, p in keys]
    )


@register("multiomics", "scmomat", label="scMoMat")
def scmomat_multiomics(
    adata: ad.AnnData,
    *,
    seed: int,
    K: int = 30,
    T: int = 4000,
    lamb: float = 0.001,
    lr: float = 1e-2,
    batch_size: float = 0.1,
    interval: int = 1000,
    pseudo_rna: bool = True,
    batch_key: str = "batch",
    device: str = "auto",
    n_threads: int = 1,
) -> np.ndarray:
    """scMoMaT cell factors (mosaic or paired RNA / protein / ATAC) as the joint embedding.

    Defaults are the package tutorial's (``K=30, T=4000, lamb=0.001, lr=1e-2``, mini-batches
    of 10% of cells and features). The embedding is the softmax cell factors
    (``extract_cell_factors``), concatenated back into ``adata.obs_names`` order; scMoMaT's
    post-processed neighbourhood graph (``calc_post_graph``) is a kNN graph for UMAP and
    clustering, not an embedding, so it is not used.

    Parameters
    ----------
    adata
        Task input: raw counts, ``var["modality"]``, ``var["linked_gene"]`` (peak -> gene,
        needed when ATAC is present and ``pseudo_rna``), ``obs[batch_key]``,
        ``obs["has_rna"|"has_protein"|"has_atac"]``.
    seed
        scMoMaT's seed (numpy and torch: initial factors and mini-batches).
    K
        Latent dimensions (embedding width).
    T
        Training iterations.
    lamb, lr, batch_size
        scMoMaT's lambda, Adam learning rate and mini-batch fraction of cells / features.
    interval
        Iterations between validation losses (and progress-bar steps).
    pseudo_rna
        Give ATAC batches without RNA the tutorial's binarised gene-activity matrix as
        their RNA (peaks summed per ``linked_gene``), which is what connects RNA-only and
        ATAC-only batches.
    batch_key
        obs column with the batch.
    device
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda"``.
    n_threads
        Torch CPU threads.

    Returns
    -------
    ``n_cells x K`` float32 cell factors.
    """
    return fit_scmomat(
        adata,
        seed=seed,
        K=K,
        T=T,
        lamb=lamb,
        lr=lr,
        batch_size=batch_size,
        interval=interval,
        pseudo_rna=pseudo_rna,
        batch_key=batch_key,
        device=device,
        n_threads=n_threads,
    ).embedding
