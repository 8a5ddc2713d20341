"""scVI (Lopez et al. 2018, scvi-tools) on the raw counts of the shared HVGs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from contract.registry import register


@register("integration", "scvi", label="scVI")
def scvi_integration(
    adata: ad.AnnData,
    *,
    seed: int,
    batch_key: str = "batch",
    n_latent: int = 30,
    n_layers: int = 2,
    n_hidden: int = 128,
    gene_likelihood: str = "nb",
    max_epochs: int | None = None,
    batch_size: int = 128,
    accelerator: str = "auto",
    n_threads: int = 1,
) -> np.ndarray:
    """scVI latent means, with scIB's settings (the paper's benchmark code).

    scIB's ``scvi`` wrapper uses ``n_latent=30, n_layers=2, gene_likelihood="nb"`` and
    ``max_epochs = min(round(20000 / n_cells * 400), 400)``; scvi-tools' own heuristic
    (``max_epochs=None``) gives the same for up to 20,000 cells and the same decay above.

    Parameters
    ----------
    adata
        Cells x HVGs with raw counts in ``layers["counts"]`` (else ``X``) and
        ``obs[batch_key]``.
    seed
        ``scvi.settings.seed`` (torch, numpy, Python and Lightning).
    batch_key
        obs column with the batch.
    n_latent, n_layers, n_hidden, gene_likelihood
        Model size and likelihood (scIB: 30, 2, 128, negative binomial).
    max_epochs
        Training epochs; ``None`` = scvi-tools' heuristic (400 up to 20k cells).
    batch_size
        Minibatch size (scvi-tools' 128).
    accelerator
        Lightning accelerator: ``"auto"`` (GPU when present), ``"cpu"``, ``"gpu"``.
    n_threads
        Torch CPU threads (``scvi.settings.num_threads``); 1 was 3-8x faster than 2 on a
        shared 2-core machine (torch threads spin when the cores are contended).

    Returns
    -------
    ``n_cells x n_latent`` posterior means of the latent space.
    """
    import scvi

    if batch_key not in adata.obs:
        raise KeyError(f"scvi: obs has no batch column {batch_key!r}; it has {list(adata.obs)}")
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if counts.data.size and (
        counts.data.min() < 0 or not np.all(counts.data == np.round(counts.data))
    ):
        raise ValueError(
            "scvi needs raw counts (non-negative integers) in layers['counts'] or X; "
            "got non-integer or negative values"
        )
    scvi.settings.seed = seed
    scvi.settings.num_threads = n_threads
    data = ad.AnnData(X=counts, obs=adata.obs[[batch_key]].astype(str).astype("category"))
    data.obs_names = adata.obs_names
    data.var_names = adata.var_names
    scvi.model.SCVI.setup_anndata(data, batch_key=batch_key)
    model = scvi.model.SCVI(
        data,
        n_latent=n_latent,
        n_layers=n_layers,
        n_hidden=n_hidden,
        gene_likelihood=gene_likelihood,
    )
    model.train(max_epochs=max_epochs, batch_size=batch_size, accelerator=accelerator)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)
