"""Per-batch technical effects on counts (shared with benchmark.sources.demo for the real PBMC data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmark.simulate._common import readonly

__all__ = ["BatchEffects", "apply_batch_effects", "make_batch_effects"]


@dataclass(frozen=True, eq=False)
class BatchEffects:
    """Per-batch technical effects applied to counts by :func:`apply_batch_effects`.

    Attributes
    ----------
    names
        Batch names (``"batch0"``, ...).
    library_factor
        ``(n_batches,)`` multiplicative library-size (sequencing depth) factor.
    gene_scale
        ``(n_batches, n_genes)`` multiplicative gene-wise capture efficiency (log-normal).
    dropout
        ``(n_batches,)`` probability that a count of 1 is lost; larger counts are lost less
        often (``dropout * exp(-0.5 * (x - 1))``).
    """

    names: tuple[str, ...]
    library_factor: np.ndarray
    gene_scale: np.ndarray
    dropout: np.ndarray

    def to_uns(self) -> dict[str, Any]:
        """Plain-array form for ``uns`` (writable to ``.h5ad``)."""
        return {
            "names": list(self.names),
            "library_factor": np.asarray(self.library_factor, dtype=float),
            "gene_scale": np.asarray(self.gene_scale, dtype=float),
            "dropout": np.asarray(self.dropout, dtype=float),
        }


def make_batch_effects(
    n_batches: int,
    n_genes: int,
    rng: np.random.Generator,
    *,
    library_sigma: float = 0.35,
    gene_sigma: float = 0.4,
    max_dropout: float = 0.25,
) -> BatchEffects:
    """Draw per-batch library-size, gene-scaling and dropout effects.

    Parameters
    ----------
    n_batches
        Number of batches.
    n_genes
        Number of genes (columns the effects apply to).
    rng
        Random generator.
    library_sigma
        SD of the log library-size factor.
    gene_sigma
        SD of the log gene-wise scaling.
    max_dropout
        Dropout probabilities are uniform in ``[0.02, max_dropout]``.
    """
    if n_batches < 1:
        raise ValueError(f"make_batch_effects: n_batches must be >= 1, got {n_batches}")
    library = np.exp(rng.normal(0.0, library_sigma, n_batches))
    gene_scale = np.exp(rng.normal(0.0, gene_sigma, (n_batches, n_genes)))
    dropout = rng.uniform(0.02, max(0.02, max_dropout), n_batches)
    return BatchEffects(
        names=tuple(f"batch{b}" for b in range(n_batches)),
        library_factor=readonly(library),
        gene_scale=readonly(gene_scale),
        dropout=readonly(dropout),
    )


def apply_batch_effects(
    counts: np.ndarray | sp.spmatrix | sp.sparray,
    batch_codes: np.ndarray,
    effects: BatchEffects,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply batch effects to integer counts, keeping them integer.

    Each count ``x`` of a cell in batch ``b`` is rescaled by ``f = library_factor[b] *
    gene_scale[b, gene]`` as ``floor(f) * x + Binomial(x, f - floor(f))`` (expected value
    ``f * x``; binomial thinning when ``f < 1``), then non-zero entries are dropped with
    probability ``dropout[b] * exp(-0.5 * (x - 1))``.

    Parameters
    ----------
    counts
        ``(n_cells, n_genes)`` non-negative integer-valued counts (dense or sparse).
    batch_codes
        ``(n_cells,)`` batch index of each cell, in ``range(len(effects.names))``.
    effects
        Effects from :func:`make_batch_effects` with ``n_genes`` matching ``counts``.
    rng
        Random generator.

    Returns
    -------
    np.ndarray
        Dense ``int64`` counts.
    """
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    dense = np.rint(dense).astype(np.int64)
    batch_codes = np.asarray(batch_codes, dtype=int)
    if dense.shape[1] != effects.gene_scale.shape[1]:
        raise ValueError(
            f"apply_batch_effects: counts have {dense.shape[1]} genes, batch effects "
            f"{effects.gene_scale.shape[1]}"
        )
    if batch_codes.shape != (dense.shape[0],) or (
        batch_codes.size and (batch_codes.min() < 0 or batch_codes.max() >= len(effects.names))
    ):
        raise ValueError(
            f"apply_batch_effects: batch_codes must be {dense.shape[0]} integers in "
            f"[0, {len(effects.names)}), got shape {batch_codes.shape}"
        )
    if dense.size and dense.min() < 0:
        raise ValueError("apply_batch_effects: counts must be non-negative")
    factor = effects.library_factor[batch_codes, None] * effects.gene_scale[batch_codes]
    whole = np.floor(factor)
    out = whole.astype(np.int64) * dense + rng.binomial(dense, factor - whole)
    p_drop = effects.dropout[batch_codes, None] * np.exp(-0.5 * (out - 1.0))
    out[(out > 0) & (rng.random(out.shape) < p_drop)] = 0
    return out
