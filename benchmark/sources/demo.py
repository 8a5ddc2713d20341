"""The real PBMC demo data set shipped inside scanpy, in the standard dataset layout."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.simulate import apply_batch_effects, make_batch_effects

__all__ = ["pbmc_demo"]

# scanpy's pbmc68k_reduced stores log1p(counts / n_counts * 1e4) in .raw, rounded to 3 decimals.
_PBMC_TARGET_SUM = 1e4
# Largest tolerated distance of a reconstructed count from an integer. Rounding the stored log
# values to 3 decimals moves a count c by at most about c * 5e-4 (0.13 at the data's largest
# count, 259); anything larger means the data are not what this loader expects.
_MAX_ROUNDING_ERROR = 0.25

_STREAM_PBMC = 53


def _load_pbmc68k_reduced() -> ad.AnnData:
    # scanpy ships this file inside the package (scanpy/datasets/10x_pbmc68k_reduced.h5ad), so
    # loading it needs no network.
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()


def _stratified_codes(labels: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Assign cells to ``n_groups`` groups so that each label is spread evenly over groups."""
    codes = np.empty(labels.size, dtype=int)
    offset = 0
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        # Rotate the starting group per label so small labels do not all land in batch 0.
        codes[idx] = (np.arange(idx.size) + offset) % n_groups
        offset += idx.size
    return codes


def _stratified_query(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean query mask with ``round(fraction * n)`` cells of each label (>= 1 if n >= 2)."""
    query = np.zeros(labels.size, dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_query = round(fraction * idx.size)
        if idx.size >= 2:
            n_query = min(max(n_query, 1), idx.size - 1)
        query[rng.choice(idx, n_query, replace=False)] = True
    return query


def pbmc_demo(
    *,
    n_batches: int = 2,
    seed: int = 0,
    query_fraction: float = 0.3,
    batch_gene_sigma: float = 0.4,
) -> ad.AnnData:
    """Real PBMC cells (scanpy's ``pbmc68k_reduced``) as a standard demo data set.

    The packaged data have no raw count matrix: ``.X`` is scaled and ``.raw.X`` holds
    ``log1p(counts / n_counts * 1e4)`` for 765 genes, rounded to 3 decimals, where
    ``obs["n_counts"]`` is each cell's total over the full transcriptome. Counts are therefore
    recovered exactly as ``round(expm1(raw.X) * n_counts / 1e4)`` (checked: every value lies
    within rounding error of an integer); they are the cells' original UMI counts of those 765
    genes.

    The 700 cells come from one 10x run, so batches are simulated: cells are split into
    ``n_batches`` groups stratified by cell type (each batch has every type) and each batch
    gets the simulator's batch effects (:func:`benchmark.simulate.apply_batch_effects`: a
    library-size factor, a log-normal gene-wise scaling and extra dropout). ``split`` marks a
    stratified random ``query_fraction`` of the cells of each type as ``"query"`` for
    reference mapping, the rest ``"reference"``.

    Parameters
    ----------
    n_batches
        Number of simulated batches (1: counts are left unchanged).
    seed
        Seed of the batch assignment, batch effects and query split.
    query_fraction
        Fraction of each cell type in the query.
    batch_gene_sigma
        SD of the log gene-wise scaling per batch.

    Returns
    -------
    anndata.AnnData
        ``X`` counts (CSR float32), ``var_names`` gene symbols; obs ``cell_type`` (from
        ``bulk_labels``), ``batch``, ``split``, ``n_counts`` (total of ``X``),
        ``n_counts_original`` (full-transcriptome total of the source) and the source's
        ``bulk_labels``, ``louvain`` and ``phase``; ``uns["demo"]`` says how counts, batches
        and the split were made.
    """
    if n_batches < 1:
        raise ValueError(f"pbmc_demo: n_batches must be >= 1, got {n_batches}")
    if not 0.0 < query_fraction < 1.0:
        raise ValueError(f"pbmc_demo: query_fraction must be in (0, 1), got {query_fraction}")
    source = _load_pbmc68k_reduced()
    for key in ("bulk_labels", "n_counts"):
        if key not in source.obs:
            raise KeyError(
                f"pbmc68k_reduced: obs column {key!r} missing (columns: {list(source.obs)})"
            )
    if source.raw is None:
        raise KeyError("pbmc68k_reduced: .raw (log-normalised expression) is missing")

    lognorm = source.raw.X
    lognorm = lognorm.toarray() if sp.issparse(lognorm) else np.asarray(lognorm)
    totals = source.obs["n_counts"].to_numpy(dtype=float)
    exact = np.expm1(lognorm.astype(np.float64)) * totals[:, None] / _PBMC_TARGET_SUM
    counts = np.rint(exact)
    error = float(np.abs(exact - counts).max()) if exact.size else 0.0
    if error > _MAX_ROUNDING_ERROR:
        raise ValueError(
            f"pbmc68k_reduced: .raw.X * n_counts / 1e4 is not integer-valued (max distance "
            f"{error:.3f} from an integer); cannot recover counts"
        )

    labels = source.obs["bulk_labels"].astype(str).to_numpy()
    rng = np.random.default_rng([int(seed), _STREAM_PBMC])
    batch_code = _stratified_codes(labels, n_batches, rng)
    effects = make_batch_effects(n_batches, counts.shape[1], rng, gene_sigma=batch_gene_sigma)
    if n_batches > 1:
        counts = apply_batch_effects(counts, batch_code, effects, rng)
    query = _stratified_query(labels, query_fraction, rng)

    obs = pd.DataFrame(index=source.obs_names.copy())
    obs["cell_type"] = pd.Categorical(labels)
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    obs["split"] = pd.Categorical(
        np.where(query, "query", "reference"), categories=["reference", "query"]
    )
    obs["n_counts"] = counts.sum(axis=1).astype(np.float32)
    obs["n_counts_original"] = totals.astype(np.float32)
    for key in ("bulk_labels", "louvain", "phase"):
        if key in source.obs:
            obs[key] = source.obs[key].to_numpy()
    var = pd.DataFrame(index=pd.Index(source.raw.var_names.astype(str), name="gene"))
    var["gene_name"] = var.index.to_numpy()

    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.uns["demo"] = {
        "source": "scanpy.datasets.pbmc68k_reduced (10x Genomics PBMC 68k subset, 700 cells)",
        "counts": (
            "round(expm1(raw.X) * obs.n_counts / 1e4): exact UMI counts of the 765 genes in "
            ".raw; the packaged data hold log1p(normalised) values only"
        ),
        "max_rounding_error": error,
        "batches": (
            "simulated: cells split into n_batches stratified by bulk_labels, then "
            "benchmark.simulate.apply_batch_effects (library factor, gene-wise log-normal "
            "scaling, dropout)"
            if n_batches > 1
            else "one batch, counts unchanged"
        ),
        "split": f"stratified random query of {query_fraction:.0%} of each cell type",
        "seed": int(seed),
        "params": {
            "n_batches": n_batches,
            "query_fraction": query_fraction,
            "batch_gene_sigma": batch_gene_sigma,
        },
    }
    if n_batches > 1:
        adata.uns["demo"]["batch_effects"] = effects.to_uns()
    return adata
