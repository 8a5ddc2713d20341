"""Pre-processing of an AnnData for scGPT and the per-cell quantile value binning.

Binning rule (the official one)
-------------------------------
For each cell separately, the non-zero values ``v`` are cut at ``n_bins - 1`` edges
``e = np.quantile(v, np.linspace(0, 1, n_bins - 1))``; a value gets the bin
``np.digitize(x, e)`` (so bins run from 1 to ``n_bins - 1``) and zeros stay bin 0.
When several edges are equal (many tied values, common for small counts) the official code
breaks the tie randomly: with ``l = np.digitize(x, e)`` and ``r = np.digitize(x, e,
right=True)`` the bin is ``ceil(l + u * (r - l))`` with ``u ~ U[0, 1)``, i.e. uniform over
``r + 1 .. l``, the bins whose edges equal ``x``. A value that does not sit on a repeated
edge is unaffected (``l`` is returned). Because the rule uses ranks within a cell, it gives
the same bins on raw counts, normalised counts or log1p values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scgpt._utils import content_rng, logger
from scgpt.vocab import GeneMatchReport, GeneVocab, map_genes


def digitize_random_ties(
    x: np.ndarray, edges: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``np.digitize`` with the official random tie-break over repeated edges.

    Parameters
    ----------
    x
        1-D values.
    edges
        Increasing (possibly repeated) bin edges.
    rng
        Generator for the tie-break; ``None`` gives plain left ``np.digitize``.

    Returns
    -------
    numpy.ndarray
        int64 bin index per value.
    """
    left = np.digitize(x, edges)
    if rng is None:
        return left.astype(np.int64)
    right = np.digitize(x, edges, right=True)
    u = rng.random(len(x))
    return np.ceil(u * (right - left) + left).astype(np.int64)


def bin_row(
    values: np.ndarray,
    n_bins: int,
    *,
    rng: np.random.Generator | None = None,
    random_ties: bool = True,
) -> np.ndarray:
    """Bin one cell's values: zeros stay 0, non-zeros go to quantile bins 1..``n_bins - 1``.

    Parameters
    ----------
    values
        1-D non-negative expression values of one cell.
    n_bins
        Number of bins including the zero bin (51 in the released models).
    rng
        Generator for the random tie-break (a fresh default generator when ``None``).
    random_ties
        Break ties randomly as the official code does; ``False`` uses left ``np.digitize``.

    Returns
    -------
    numpy.ndarray
        int64 bins, same shape as ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    if n_bins < 3:
        raise ValueError(f"n_bins must be >= 3 (zero bin + at least 2 edges), got {n_bins}")
    out = np.zeros(values.shape, dtype=np.int64)
    if values.size == 0:
        return out
    if values.min() < 0:
        raise ValueError(f"binning expects non-negative values, got minimum {values.min():.4g}")
    nz = np.flatnonzero(values)
    if nz.size == 0:
        return out
    v = values[nz]
    edges = np.quantile(v, np.linspace(0.0, 1.0, n_bins - 1))
    if random_ties and rng is None:
        rng = np.random.default_rng()
    out[nz] = digitize_random_ties(v, edges, rng if random_ties else None)
    return out


def bin_matrix(
    X: np.ndarray | sp.spmatrix | sp.sparray,
    n_bins: int,
    *,
    seed: int | None = 0,
    random_ties: bool = True,
) -> np.ndarray | sp.csr_matrix:
    """Bin every row of ``X`` with :func:`bin_row`.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    n_bins
        Number of bins including the zero bin.
    seed
        Seed of the tie-break generator (``None``: unseeded). Each row draws from a
        generator determined by the seed and the row's own non-zero columns and values, so a
        cell's bins do not depend on the other cells (their number, order or chunking).
    random_ties
        See :func:`bin_row`.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        float32 bins with the sparsity structure of ``X`` (sparse in, CSR out).
    """
    shared = np.random.default_rng() if seed is None else None

    def rng_of(columns: np.ndarray, values: np.ndarray) -> np.random.Generator:
        return shared if shared is not None else content_rng(seed, columns, values)

    if sp.issparse(X):
        csr = sp.csr_matrix(X, dtype=np.float64, copy=True)
        csr.eliminate_zeros()
        csr.sort_indices()  # ties are broken in column order, as for a dense row
        for i in range(csr.shape[0]):
            lo, hi = csr.indptr[i], csr.indptr[i + 1]
            if hi > lo:
                rng = rng_of(csr.indices[lo:hi], csr.data[lo:hi])
                csr.data[lo:hi] = bin_row(csr.data[lo:hi], n_bins, rng=rng, random_ties=random_ties)
        return csr.astype(np.float32)
    dense = np.asarray(X)
    out = np.zeros(dense.shape, dtype=np.float32)
    for i in range(dense.shape[0]):
        nz = np.flatnonzero(dense[i])
        rng = rng_of(nz, dense[i][nz])
        out[i] = bin_row(dense[i], n_bins, rng=rng, random_ties=random_ties)
    return out


def normalize_log1p(
    X: np.ndarray | sp.spmatrix | sp.sparray, target_sum: float | None = 1e4, log1p: bool = True
) -> np.ndarray | sp.csr_matrix:
    """Scale each row to ``target_sum`` total and apply ``log1p`` (rows summing to 0 stay 0).

    A lightweight equivalent of ``sc.pp.normalize_total`` + ``sc.pp.log1p`` used on streamed
    chunks, where building an AnnData per chunk would only cost time.
    """
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
        if target_sum:
            sums = np.asarray(out.sum(axis=1)).ravel()
            scale = np.divide(target_sum, sums, out=np.zeros_like(sums), where=sums > 0)
            out.data *= np.repeat(scale, np.diff(out.indptr)).astype(np.float32)
        if log1p:
            np.log1p(out.data, out=out.data)
        return out
    out = np.array(X, dtype=np.float32, copy=True)
    if target_sum:
        sums = out.sum(axis=1, keepdims=True)
        out = np.divide(out * target_sum, sums, out=np.zeros_like(out), where=sums > 0)
    if log1p:
        np.log1p(out, out=out)
    return out


def gene_names(adata: AnnData, gene_col: str | None = None) -> np.ndarray:
    """Gene symbols of ``adata``: ``var[gene_col]`` or ``var_names``."""
    if gene_col is None:
        return np.asarray(adata.var_names.astype(str))
    if gene_col not in adata.var.columns:
        raise KeyError(
            f"gene_col {gene_col!r} is not a column of adata.var (columns: {list(adata.var.columns)})"
        )
    return np.asarray(adata.var[gene_col].astype(str))


def filter_genes_to_vocab(
    adata: AnnData, vocab: GeneVocab, *, gene_col: str | None = None, copy: bool = True
) -> tuple[AnnData, GeneMatchReport]:
    """Keep the genes of ``adata`` that are in ``vocab``; store their index in ``var["id_in_vocab"]``.

    Parameters
    ----------
    adata
        Cells x genes.
    vocab
        Model vocabulary.
    gene_col
        ``var`` column with gene symbols (``None``: ``var_names``).
    copy
        Return a copy (otherwise a view is materialised in place of the subset).

    Returns
    -------
    adata
        The subset with ``var["id_in_vocab"]``.
    report
        :class:`~scgpt.vocab.GeneMatchReport` (matched / total).
    """
    ids, report = map_genes(gene_names(adata, gene_col), vocab)
    if report.n_matched == 0:
        raise ValueError(
            f"none of the {report.n_total} genes is in the vocabulary ({len(vocab)} tokens); "
            f"examples: {list(report.unmatched[:5])}. Set gene_col to the var column with symbols."
        )
    keep = ids >= 0
    sub = adata[:, keep]
    sub = sub.copy() if copy or sub.is_view else sub
    sub.var["id_in_vocab"] = ids[keep]
    return sub, report


def _looks_logged(X: np.ndarray | sp.spmatrix | sp.sparray) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return False
    sample = data[: min(data.size, 100_000)]
    return bool(
        sample.max() < 30 and sample.min() >= 0 and not np.allclose(sample, np.round(sample))
    )


def preprocess_adata(
    adata: AnnData,
    vocab: GeneVocab | None = None,
    *,
    gene_col: str | None = None,
    layer: str | None = None,
    normalize_total: float | None = 1e4,
    log1p: bool = True,
    n_hvg: int | None = None,
    hvg_flavor: str = "seurat_v3",
    batch_key: str | None = None,
    n_bins: int | None = None,
    binned_layer: str = "X_binned",
    seed: int = 0,
) -> AnnData:
    """Prepare an AnnData of raw counts for scGPT (always returns a new object).

    Steps: keep genes in ``vocab`` (reporting matched/total), keep the counts in
    ``layers["counts"]``, normalise each cell to ``normalize_total`` and ``log1p`` into
    ``X``, optionally select ``n_hvg`` highly variable genes (``seurat_v3`` on the counts),
    and optionally bin into ``layers[binned_layer]`` with the official per-cell rule.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (or ``layers[layer]``).
    vocab
        Model vocabulary; ``None`` keeps every gene.
    gene_col
        ``var`` column holding gene symbols (``None``: ``var_names``).
    layer
        Layer holding the counts (``None``: ``X``).
    normalize_total
        Target total per cell; ``None`` skips normalisation.
    log1p
        Apply ``log1p`` after normalisation.
    n_hvg
        Number of highly variable genes to keep (``None``: all).
    hvg_flavor
        Flavor passed to ``scanpy.pp.highly_variable_genes``.
    batch_key
        ``obs`` column for batch-aware HVG selection.
    n_bins
        Bin into this many bins (``None``: no binning).
    binned_layer
        Layer name for the bins.
    seed
        Seed of the binning tie-break.

    Returns
    -------
    AnnData
        Processed copy; ``uns["scgpt_preprocess"]`` records the parameters and gene match.
    """
    import scanpy as sc

    out = adata.copy()
    info: dict[str, object] = {"n_genes_input": int(adata.n_vars)}
    if vocab is not None:
        out, report = filter_genes_to_vocab(out, vocab, gene_col=gene_col, copy=False)
        info.update(n_genes_matched=report.n_matched, fraction_matched=report.fraction)
    counts = out.layers[layer] if layer is not None else out.X
    counts = (
        sp.csr_matrix(counts, dtype=np.float32)
        if sp.issparse(counts)
        else np.asarray(counts, dtype=np.float32)
    )
    if log1p and _looks_logged(counts):
        logger.warning(
            "the input of preprocess_adata looks already log-transformed (max < 30, non-integer); "
            "pass raw counts or set log1p=False and normalize_total=None"
        )
    out.layers["counts"] = counts.copy()
    out.X = normalize_log1p(counts, normalize_total, log1p)
    if n_hvg is not None and n_hvg < out.n_vars:
        sc.pp.highly_variable_genes(
            out,
            n_top_genes=int(n_hvg),
            flavor=hvg_flavor,
            layer="counts" if hvg_flavor == "seurat_v3" else None,
            batch_key=batch_key,
            subset=True,
        )
        info["n_hvg"] = int(out.n_vars)
    if n_bins is not None:
        out.layers[binned_layer] = bin_matrix(out.X, n_bins, seed=seed)
    info.update(normalize_total=normalize_total, log1p=log1p, n_bins=n_bins, hvg_flavor=hvg_flavor)
    out.uns["scgpt_preprocess"] = info
    return out
