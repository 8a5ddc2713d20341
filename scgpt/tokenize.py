"""Turning cells into token sequences: ``<cls>`` + genes with their values, sampled and padded.

A cell becomes ``[<cls>, g_1, ..., g_k]`` with values ``[cls_value, v_1, ..., v_k]`` where
the genes are its non-zero genes (or all genes, for perturbation), restricted to genes in the
vocabulary. When ``k + 1 > max_len`` the genes are sampled without replacement down to
``max_len - 1`` (the ``<cls>`` token is always kept) and kept in input order; the model has
no positional encoding, so order carries no information. Batches are padded with the
``<pad>`` id and ``pad_value``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from scgpt.preprocess import bin_row


def tokenize_cell(
    values: np.ndarray,
    gene_ids: np.ndarray,
    *,
    max_len: int | None,
    cls_id: int | None,
    cls_value: float = 0.0,
    include_zero_genes: bool = False,
    n_bins: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise one cell given its dense expression row.

    Parameters
    ----------
    values
        Expression of the cell, one value per gene of ``gene_ids``.
    gene_ids
        Vocabulary index per gene (negative = not in the vocabulary, dropped).
    max_len
        Maximum length including ``<cls>``; ``None`` keeps every gene.
    cls_id
        Index of ``<cls>``; ``None`` adds no ``<cls>`` token.
    cls_value
        Value placed at the ``<cls>`` position.
    include_zero_genes
        Keep zero-valued genes (used by the perturbation model).
    n_bins
        Bin the kept values with the per-cell rule of :func:`scgpt.preprocess.bin_row`
        before sampling (as the official collator does); ``None`` keeps the values.
    rng
        Generator for the binning tie-break and down-sampling (fresh when ``None``).

    Returns
    -------
    genes, vals
        int64 token ids and float32 values.
    """
    values = np.asarray(values).ravel()
    gene_ids = np.asarray(gene_ids)
    if values.shape[0] != gene_ids.shape[0]:
        raise ValueError(f"values has {values.shape[0]} genes but gene_ids has {gene_ids.shape[0]}")
    keep = gene_ids >= 0
    if not include_zero_genes:
        keep &= values != 0
    pos = np.flatnonzero(keep)
    vals = values[pos]
    rng = rng if rng is not None else np.random.default_rng()
    if n_bins is not None:
        vals = bin_row(vals, n_bins, rng=rng).astype(np.float32)
    return _finish(gene_ids[pos], vals, max_len, cls_id, cls_value, rng)


def tokenize_sparse_row(
    indices: np.ndarray,
    data: np.ndarray,
    gene_ids: np.ndarray,
    *,
    max_len: int | None,
    cls_id: int | None,
    cls_value: float = 0.0,
    n_bins: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise one cell from its CSR row (column ``indices`` and ``data``), non-zero genes only.

    Same rules as :func:`tokenize_cell` with ``include_zero_genes=False``.
    """
    ids = np.asarray(gene_ids)[indices]
    keep = (ids >= 0) & (np.asarray(data) != 0)
    vals = np.asarray(data)[keep]
    rng = rng if rng is not None else np.random.default_rng()
    if n_bins is not None:
        vals = bin_row(vals, n_bins, rng=rng).astype(np.float32)
    return _finish(ids[keep], vals, max_len, cls_id, cls_value, rng)


def _finish(
    genes: np.ndarray,
    vals: np.ndarray,
    max_len: int | None,
    cls_id: int | None,
    cls_value: float,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    budget = None if max_len is None else max_len - (1 if cls_id is not None else 0)
    if budget is not None and budget < 1:
        raise ValueError(f"max_len={max_len} leaves no room for genes")
    if budget is not None and genes.shape[0] > budget:
        rng = rng if rng is not None else np.random.default_rng()
        pick = np.sort(rng.choice(genes.shape[0], size=budget, replace=False))
        genes, vals = genes[pick], vals[pick]
    genes = genes.astype(np.int64, copy=False)
    vals = vals.astype(np.float32, copy=False)
    if cls_id is not None:
        genes = np.concatenate([np.array([cls_id], dtype=np.int64), genes])
        vals = np.concatenate([np.array([cls_value], dtype=np.float32), vals])
    return genes, vals


def pad_batch(
    sequences: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    pad_id: int,
    pad_value: float,
    length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad token sequences into tensors.

    Parameters
    ----------
    sequences
        ``(genes, values)`` per cell.
    pad_id
        Index of ``<pad>``.
    pad_value
        Value at padded positions.
    length
        Pad to this length (default: the longest sequence). Longer sequences raise.

    Returns
    -------
    dict
        ``gene_ids`` (long, B x L), ``values`` (float, B x L) and ``padding_mask``
        (bool, True at padded positions, the ``key_padding_mask`` of the model).
    """
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    longest = max(len(g) for g, _ in sequences)
    L = longest if length is None else int(length)
    if longest > L:
        raise ValueError(f"a sequence has {longest} tokens, more than the padded length {L}")
    B = len(sequences)
    genes = np.full((B, L), pad_id, dtype=np.int64)
    vals = np.full((B, L), pad_value, dtype=np.float32)
    mask = np.ones((B, L), dtype=bool)
    for i, (g, v) in enumerate(sequences):
        genes[i, : len(g)] = g
        vals[i, : len(v)] = v
        mask[i, : len(g)] = False
    # the mask comes from the lengths, not from ``gene_ids == pad_id``: a real gene may carry
    # the pad id (genes unknown to the vocabulary in the perturbation model)
    return {
        "gene_ids": torch.from_numpy(genes),
        "values": torch.from_numpy(vals),
        "padding_mask": torch.from_numpy(mask),
    }


def tokenize_and_pad(
    X: np.ndarray | sp.spmatrix | sp.sparray,
    gene_ids: np.ndarray,
    *,
    max_len: int | None,
    pad_id: int,
    pad_value: float,
    cls_id: int | None,
    cls_value: float = 0.0,
    include_zero_genes: bool = False,
    n_bins: int | None = None,
    seed: int | None = 0,
    pad_to_max_len: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenise every cell (row) of ``X`` and pad them into one batch of tensors.

    See :func:`tokenize_cell` and :func:`pad_batch` for the parameters; ``pad_to_max_len``
    pads to ``max_len`` instead of the longest cell.
    """
    rng = np.random.default_rng(seed)
    seqs = []
    is_sparse = sp.issparse(X)
    if is_sparse and not include_zero_genes:
        csr = sp.csr_matrix(X)
        for i in range(csr.shape[0]):
            lo, hi = csr.indptr[i], csr.indptr[i + 1]
            seqs.append(
                tokenize_sparse_row(
                    csr.indices[lo:hi],
                    csr.data[lo:hi],
                    gene_ids,
                    max_len=max_len,
                    cls_id=cls_id,
                    cls_value=cls_value,
                    n_bins=n_bins,
                    rng=rng,
                )
            )
    else:
        dense = X.toarray() if is_sparse else np.asarray(X)
        for row in dense:
            seqs.append(
                tokenize_cell(
                    row,
                    gene_ids,
                    max_len=max_len,
                    cls_id=cls_id,
                    cls_value=cls_value,
                    include_zero_genes=include_zero_genes,
                    n_bins=n_bins,
                    rng=rng,
                )
            )
    return pad_batch(
        seqs, pad_id=pad_id, pad_value=pad_value, length=max_len if pad_to_max_len else None
    )
