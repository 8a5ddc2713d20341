"""totalVI (Gayoso et al. 2021, scvi-tools): joint RNA + surface-protein latent space."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from contract.registry import register


def modality_counts(adata: ad.AnnData, modality: str, what: str) -> sp.csr_matrix:
    """Raw counts (``layers["counts"]``, else ``X``) of one modality's features, checked.

    Raises
    ------
    KeyError
        If ``var["modality"]`` is missing.
    ValueError
        If the modality has no feature or the values are not non-negative integers.
    """
    if "modality" not in adata.var:
        raise KeyError(f"{what}: var has no 'modality' column; it has {list(adata.var.columns)}")
    mask = adata.var["modality"].astype(str).to_numpy() == modality
    if not mask.any():
        found = sorted(set(adata.var["modality"].astype(str)))
        raise ValueError(f"{what}: the data has no {modality} features; it has {found}")
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(matrix[:, mask], dtype=np.float32)
    if counts.data.size and (
        counts.data.min() < 0 or not np.all(counts.data == np.round(counts.data))
    ):
        raise ValueError(
            f"{what}: needs raw {modality} counts (non-negative integers) in layers['counts'] "
            "or X; got non-integer or negative values"
        )
    return counts


def lacking(adata: ad.AnnData, modality: str) -> int:
    """Number of cells whose ``obs["has_<modality>"]`` is False (0 when the column is absent)."""
    key = f"has_{modality}"
    return int((~adata.obs[key].astype(bool)).sum()) if key in adata.obs else 0


@register("multiomics", "totalvi", label="totalVI")
def totalvi(
    adata: ad.AnnData,
    *,
    seed: int,
    batch_key: str = "batch",
    n_latent: int = 20,
    max_epochs: int | None = None,
    lr: float = 4e-3,
    batch_size: int = 256,
    accelerator: str = "auto",
    n_threads: int = 1,
) -> np.ndarray:
    """totalVI latent means of paired RNA + protein counts (scvi-tools' defaults).

    The RNA part is the task's HVGs, the proteins go to ``obsm`` (``setup_anndata`` with
    ``protein_expression_obsm_key``); the batch is the model's batch covariate. Proteins
    missing in a whole batch are handled by totalVI itself (its protein batch mask); cells
    without RNA are not.

    Parameters
    ----------
    adata
        The multiomics task's input: RNA and protein features (``var["modality"]``), counts
        in ``layers["counts"]`` (else ``X``), ``obs[batch_key]``.
    seed
        ``scvi.settings.seed``.
    batch_key
        obs column with the batch.
    n_latent
        Latent dimensions (scvi-tools' 20).
    max_epochs
        Training epochs; ``None`` = scvi-tools' heuristic (400 up to 20k cells, fewer above).
    lr, batch_size
        Adam learning rate and minibatch size (scvi-tools' 4e-3 and 256).
    accelerator
        Lightning accelerator: ``"auto"`` (GPU when present), ``"cpu"``, ``"gpu"``.
    n_threads
        Torch CPU threads (``scvi.settings.num_threads``).

    Returns
    -------
    ``n_cells x n_latent`` posterior means.

    Raises
    ------
    ValueError
        Without RNA or protein features, or when some cells have no RNA (mosaic data where
        a batch measured ATAC + protein: totalVI models RNA + protein only).
    """
    import scvi

    if batch_key not in adata.obs:
        raise KeyError(f"totalvi: obs has no batch column {batch_key!r}; it has {list(adata.obs)}")
    rna = modality_counts(adata, "rna", "totalvi")
    protein = modality_counts(adata, "protein", "totalvi")
    if lacking(adata, "rna"):
        raise ValueError(
            f"totalvi: {lacking(adata, 'rna')} cells have no RNA (obs['has_rna'] False); "
            "totalVI needs RNA in every cell (protein may be missing per batch)"
        )
    names = adata.var_names[adata.var["modality"].astype(str).to_numpy() == "protein"]
    scvi.settings.seed = seed
    scvi.settings.num_threads = n_threads
    data = ad.AnnData(X=rna, obs=adata.obs[[batch_key]].astype(str).astype("category"))
    data.obs_names = adata.obs_names.astype(str)
    data.obsm["protein_expression"] = pd.DataFrame(
        protein.toarray(), index=data.obs_names, columns=names.astype(str)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="We recommend using setup_mudata")
        scvi.model.TOTALVI.setup_anndata(
            data, protein_expression_obsm_key="protein_expression", batch_key=batch_key
        )
    model = scvi.model.TOTALVI(data, n_latent=n_latent)
    model.train(max_epochs=max_epochs, lr=lr, batch_size=batch_size, accelerator=accelerator)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
