"""MultiVI (Ashuach et al. 2023, scvi-tools): joint RNA + ATAC (+ protein) latent space.

Paired and mosaic data alike: scvi-tools 1.4's MultiVI takes a MuData with one modality per
entry (``setup_mudata``) and treats a cell whose counts in a modality sum to zero as not
having it (its ``mask_expr`` / ``mask_acc`` / ``mask_pro``), which is the task's mosaic form
(absent modalities are zeros). ``organize_multiome_anndatas`` is the older AnnData route to the
same layout; with the task's single AnnData nothing needs reorganising.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from baselines.totalvi import modality_counts
from contract.registry import register

MUDATA_KEYS: dict[str, str] = {"rna": "rna_layer", "atac": "atac_layer", "protein": "protein_layer"}
"""``setup_mudata(modalities=...)`` key of each modality."""


@register("multiomics", "multivi", label="MultiVI")
def multivi(
    adata: ad.AnnData,
    *,
    seed: int,
    batch_key: str = "batch",
    use_protein: bool = True,
    n_latent: int | None = None,
    max_epochs: int = 500,
    lr: float = 1e-4,
    batch_size: int = 128,
    accelerator: str = "auto",
    n_threads: int = 1,
) -> np.ndarray:
    """MultiVI joint latent means (scvi-tools' defaults), paired or mosaic.

    Parameters
    ----------
    adata
        The multiomics task's input: ATAC features and RNA and/or protein features
        (``var["modality"]``), counts in ``layers["counts"]`` (else ``X``), ``obs[batch_key]``;
        a cell's absent modality is all zeros.
    seed
        ``scvi.settings.seed``.
    batch_key
        obs column with the batch (MultiVI's batch covariate).
    use_protein
        Model the proteins too (MultiVI's protein branch, scvi-tools >= 1.1) when present.
    n_latent
        Latent dimensions; ``None`` = MultiVI's default (sqrt of its hidden width, which is
        sqrt of the number of peaks).
    max_epochs
        Training epochs (scvi-tools' 500, with early stopping on the validation loss).
    lr, batch_size
        AdamW learning rate and minibatch size (scvi-tools' 1e-4 and 128).
    accelerator
        Lightning accelerator: ``"auto"`` (GPU when present), ``"cpu"``, ``"gpu"``.
    n_threads
        Torch CPU threads (``scvi.settings.num_threads``).

    Returns
    -------
    ``n_cells x n_latent`` joint posterior means.

    Raises
    ------
    ValueError
        Without ATAC features (RNA + protein data: use totalVI) or without RNA and protein.
    """
    import mudata
    import scvi

    if batch_key not in adata.obs:
        raise KeyError(f"multivi: obs has no batch column {batch_key!r}; it has {list(adata.obs)}")
    present = set(adata.var["modality"].astype(str)) if "modality" in adata.var else set()
    if "atac" not in present:
        raise ValueError(
            f"multivi: the data has no ATAC features (modalities {sorted(present)}); MultiVI "
            "is the RNA + ATAC model (for RNA + protein use totalvi)"
        )
    modalities = [m for m in ("rna", "atac", "protein") if m in present]
    if not use_protein and "protein" in modalities:
        modalities.remove("protein")
    if len(modalities) < 2:
        raise ValueError(f"multivi: needs ATAC and RNA or protein; the data has {sorted(present)}")
    obs = pd.DataFrame(
        {batch_key: adata.obs[batch_key].astype(str).astype("category").to_numpy()},
        index=adata.obs_names.astype(str),
    )
    mods = {}
    for modality in modalities:
        counts = modality_counts(adata, modality, "multivi")
        mask = adata.var["modality"].astype(str).to_numpy() == modality
        mods[modality] = ad.AnnData(
            X=counts, obs=obs.copy(), var=pd.DataFrame(index=adata.var_names[mask].astype(str))
        )
    empty = [m for m, part in mods.items() if part.X.sum() == 0]
    if empty:
        raise ValueError(f"multivi: no cell has counts in {empty}")
    scvi.settings.seed = seed
    scvi.settings.num_threads = n_threads
    mdata = mudata.MuData(mods)
    setup = {MUDATA_KEYS[m]: m for m in modalities}
    scvi.model.MULTIVI.setup_mudata(
        mdata, batch_key=batch_key, modalities={**setup, "batch_key": modalities[0]}
    )
    model = scvi.model.MULTIVI(mdata, n_latent=n_latent)
    model.train(max_epochs=max_epochs, lr=lr, batch_size=batch_size, accelerator=accelerator)
    latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
    # MuData may reorder cells (union of the modalities' obs): align by name.
    order = pd.Index(mdata.obs_names.astype(str)).get_indexer(adata.obs_names.astype(str))
    if (order < 0).any():
        raise ValueError("multivi: MuData lost cells; names do not match the input")
    return latent[order]
