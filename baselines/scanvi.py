"""scANVI reference mapping with scArches-style query surgery (scvi-tools).

Follows scvi-tools' "reference mapping with scArches" recipe:

1. HVGs: the reference's top ``n_top_genes`` genes (``flavor="seurat_v3"`` on counts, per
   batch when the reference has several), used for both reference and query.
2. SCVI on the reference counts with the scArches architecture (``n_layers=2``,
   ``encode_covariates=True``, ``use_layer_norm="both"``, ``use_batch_norm="none"``,
   ``dropout_rate=0.2``), batch = ``obs["batch"]`` when present.
3. SCANVI initialised from it (``SCANVI.from_scvi_model``) with the reference labels and
   trained ``scanvi_epochs`` epochs (``n_samples_per_label=100``).
4. Query surgery: ``SCANVI.prepare_query_anndata`` + ``SCANVI.load_query_data`` (new batch
   categories get new, trainable covariate weights; the rest stays frozen), query labels all
   ``"Unknown"``, trained ``query_epochs`` epochs with ``weight_decay=0``.
5. ``predict()`` gives the labels; the query latent is ``query.obsm["X_scanvi"]``.

``scvi_epochs=None`` uses scvi-tools' default (``min(round(20000 / n_cells * 400), 400)``).
"""

from __future__ import annotations

import logging

import numpy as np

from contract.registry import register

log = logging.getLogger(__name__)

UNLABELED = "Unknown"


def _counts_adata(adata, genes: list[str], batch: np.ndarray, labels: np.ndarray):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    sub = adata[:, genes]
    x = sp.csr_matrix(sub.X, dtype=np.float32)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(batch.astype(str)),
            "cell_type": pd.Categorical(labels.astype(str)),
        },
        index=adata.obs_names.copy(),
    )
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))


def _batches(adata, batch_key: str | None) -> np.ndarray:
    if batch_key is not None and batch_key in adata.obs:
        return adata.obs[batch_key].astype(str).to_numpy()
    return np.full(adata.n_obs, "batch0", dtype=object)


@register("reference_mapping", "scanvi", label="scANVI (scArches)")
def scanvi(
    reference,
    query,
    *,
    seed: int,
    n_top_genes: int | None = 2000,
    batch_key: str | None = "batch",
    n_latent: int = 10,
    n_layers: int = 2,
    n_hidden: int = 128,
    dropout_rate: float = 0.2,
    scvi_epochs: int | None = None,
    scanvi_epochs: int = 20,
    query_epochs: int = 100,
    n_samples_per_label: int = 100,
    batch_size: int = 128,
    accelerator: str = "auto",
) -> np.ndarray:
    """SCVI -> SCANVI on the reference, scArches surgery on the query, predict labels."""
    import scanpy as sc
    import scvi
    from scvi.model import SCANVI, SCVI

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("scanvi: reference and query must have the same genes in the same order")
    scvi.settings.seed = seed
    ref_batch = _batches(reference, batch_key)
    query_batch = _batches(query, batch_key)
    # A query batch named like a reference batch is treated as that batch (same weights).
    overlap = set(query_batch) & set(ref_batch)
    if overlap:
        log.info("scanvi: query batches %s also occur in the reference", sorted(overlap))

    genes = [str(g) for g in reference.var_names]
    ref = _counts_adata(
        reference, genes, ref_batch, reference.obs["cell_type"].astype(str).to_numpy()
    )
    if n_top_genes is not None and n_top_genes < ref.n_vars:
        n_batches = len(set(ref_batch))
        hvg = sc.pp.highly_variable_genes(
            ref,
            n_top_genes=n_top_genes,
            flavor="seurat_v3",
            batch_key="batch" if n_batches > 1 else None,
            inplace=False,
        )
        genes = [
            g for g, k in zip(genes, np.asarray(hvg["highly_variable"], bool), strict=True) if k
        ]
        ref = ref[:, genes].copy()
    qry = _counts_adata(query, genes, query_batch, np.full(query.n_obs, UNLABELED, dtype=object))

    trainer = {"accelerator": accelerator, "enable_progress_bar": False}
    SCVI.setup_anndata(ref, batch_key="batch", labels_key="cell_type")
    vae = SCVI(
        ref,
        n_latent=n_latent,
        n_layers=n_layers,
        n_hidden=n_hidden,
        dropout_rate=dropout_rate,
        encode_covariates=True,
        deeply_inject_covariates=False,
        use_layer_norm="both",
        use_batch_norm="none",
    )
    vae.train(max_epochs=scvi_epochs, batch_size=batch_size, **trainer)

    model = SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELED, labels_key="cell_type")
    model.train(
        max_epochs=scanvi_epochs,
        n_samples_per_label=n_samples_per_label,
        batch_size=batch_size,
        **trainer,
    )

    SCANVI.prepare_query_anndata(qry, model)
    query_model = SCANVI.load_query_data(qry, model)
    query_model.train(
        max_epochs=query_epochs,
        plan_kwargs={"weight_decay": 0.0},
        batch_size=batch_size,
        **trainer,
    )
    query.obsm["X_scanvi"] = np.asarray(query_model.get_latent_representation(), dtype=np.float32)
    return np.asarray(query_model.predict(), dtype=object).astype(str)
