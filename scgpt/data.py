"""In-memory cell datasets, padding collation and length-aware batching."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset, Sampler

from scgpt._utils import cell_rng, content_rng
from scgpt.tokenize import pad_batch, tokenize_cell, tokenize_sparse_row


class CellDataset(Dataset):
    """Cells of a matrix as token sequences (``<cls>`` + genes, sampled to ``max_len``).

    Every random choice (binning ties, down-sampling) is drawn from a generator determined
    by ``(seed, epoch, cell index)``, so an item is reproducible; call :meth:`set_epoch` to
    draw new samples each epoch. With ``draws="content"`` (inference) the generator is
    determined by ``(seed, epoch)`` and the cell's own genes and values instead, and the
    cell's genes are taken in vocabulary order, so that an item depends on the cell alone:
    not on its position, the other cells, or the order of the columns.

    Parameters
    ----------
    X
        Cells x genes expression (CSR preferred; log-normalised values or counts).
    gene_ids
        Vocabulary index per column of ``X`` (negative: not in vocabulary, ignored).
    max_len
        Maximum sequence length including ``<cls>``.
    cls_id
        ``<cls>`` index (``None``: no ``<cls>`` token).
    cls_value
        Value at the ``<cls>`` position (the released pipeline uses ``pad_value``).
    n_bins
        Bin values per cell on the fly (``None``: use values as they are).
    include_zero_genes
        Keep zero-valued genes.
    obs
        Extra per-cell arrays returned with each item (e.g. ``{"label": y, "batch_labels": b}``).
    seed
        Base seed.
    draws
        ``"index"``: random draws keyed by the cell's position (reproducible and resumable
        training); ``"content"``: keyed by the cell's content (see above).
    """

    def __init__(
        self,
        X: np.ndarray | sp.spmatrix | sp.sparray,
        gene_ids: np.ndarray,
        *,
        max_len: int | None,
        cls_id: int | None,
        cls_value: float = 0.0,
        n_bins: int | None = None,
        include_zero_genes: bool = False,
        obs: dict[str, np.ndarray] | None = None,
        seed: int = 0,
        draws: str = "index",
    ) -> None:
        if draws not in ("index", "content"):
            raise ValueError(f"draws must be 'index' or 'content', got {draws!r}")
        self.X = (
            sp.csr_matrix(X, dtype=np.float32)
            if sp.issparse(X)
            else np.asarray(X, dtype=np.float32)
        )
        self.gene_ids = np.asarray(gene_ids, dtype=np.int64)
        if self.X.shape[1] != self.gene_ids.shape[0]:
            raise ValueError(
                f"X has {self.X.shape[1]} genes but gene_ids has {self.gene_ids.shape[0]}"
            )
        self.max_len = max_len
        self.cls_id = cls_id
        self.cls_value = cls_value
        self.n_bins = n_bins
        self.include_zero_genes = include_zero_genes
        self.obs = {k: np.asarray(v) for k, v in (obs or {}).items()}
        for k, v in self.obs.items():
            if len(v) != self.X.shape[0]:
                raise ValueError(f"obs[{k!r}] has {len(v)} entries for {self.X.shape[0]} cells")
        self.seed = seed
        self.draws = draws
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def lengths(self) -> np.ndarray:
        """Sequence length of every cell (after capping at ``max_len``), for length-aware batching."""
        if self.include_zero_genes:
            n = np.full(len(self), int((self.gene_ids >= 0).sum()))
        elif sp.issparse(self.X):
            rows = np.repeat(np.arange(self.X.shape[0]), np.diff(self.X.indptr))
            ok = (self.X.data != 0) & (self.gene_ids[self.X.indices] >= 0)
            n = np.bincount(rows[ok], minlength=self.X.shape[0])
        else:
            n = ((self.X != 0) & (self.gene_ids >= 0)[None, :]).sum(axis=1)
        n = n + (1 if self.cls_id is not None else 0)
        return np.minimum(n, self.max_len) if self.max_len is not None else n

    def _canonical_cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Gene ids and values of cell ``i`` (genes in the vocabulary; non-zero unless
        ``include_zero_genes``), sorted by gene id (then value): independent of column order."""
        if sp.issparse(self.X) and not self.include_zero_genes:
            lo, hi = self.X.indptr[i], self.X.indptr[i + 1]
            ids, vals = self.gene_ids[self.X.indices[lo:hi]], self.X.data[lo:hi]
        else:
            ids = self.gene_ids
            vals = self.X[i].toarray().ravel() if sp.issparse(self.X) else self.X[i]
        keep = ids >= 0 if self.include_zero_genes else (ids >= 0) & (vals != 0)
        ids, vals = ids[keep], vals[keep]
        order = np.lexsort((vals, ids))
        return ids[order], vals[order]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.draws == "content":
            ids, vals = self._canonical_cell(i)
            rng = content_rng(self.seed, ids, vals, self.epoch)
        else:
            rng = cell_rng(self.seed, self.epoch, i)
        kw = dict(
            max_len=self.max_len,
            cls_id=self.cls_id,
            cls_value=self.cls_value,
            n_bins=self.n_bins,
            rng=rng,
        )
        if self.draws == "content":
            genes, vals = tokenize_cell(vals, ids, include_zero_genes=self.include_zero_genes, **kw)
        elif sp.issparse(self.X) and not self.include_zero_genes:
            lo, hi = self.X.indptr[i], self.X.indptr[i + 1]
            genes, vals = tokenize_sparse_row(
                self.X.indices[lo:hi], self.X.data[lo:hi], self.gene_ids, **kw
            )
        else:
            row = self.X[i].toarray().ravel() if sp.issparse(self.X) else self.X[i]
            genes, vals = tokenize_cell(
                row, self.gene_ids, include_zero_genes=self.include_zero_genes, **kw
            )
        item: dict[str, Any] = {"gene_ids": genes, "values": vals, "index": i}
        for k, v in self.obs.items():
            item[k] = v[i]
        return item


class Collator:
    """Pad a list of items (``gene_ids``, ``values`` and scalar extras) into a batch.

    Parameters
    ----------
    pad_id, pad_value
        Padding token id and value.
    length
        Fixed padded length (``None``: the longest item).
    """

    def __init__(self, pad_id: int, pad_value: float, length: int | None = None) -> None:
        self.pad_id = pad_id
        self.pad_value = pad_value
        self.length = length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch(
            [(it["gene_ids"], it["values"]) for it in items],
            pad_id=self.pad_id,
            pad_value=self.pad_value,
            length=self.length,
        )
        for key in items[0]:
            if key in ("gene_ids", "values"):
                continue
            vals = [it[key] for it in items]
            if isinstance(vals[0], np.ndarray) and vals[0].ndim >= 1:
                batch[key] = torch.as_tensor(np.stack(vals))
            else:
                batch[key] = torch.as_tensor(np.asarray(vals))
        return batch


BUCKET_FACTOR = 50
"""Default bucket size of :class:`LengthBucketSampler`, in batches."""


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of cells of similar length (less padding), optionally one group per batch.

    Indices are shuffled, cut into buckets of ``batch_size * bucket_factor`` cells, each bucket
    is sorted by length and cut into batches, and the batches are shuffled. With
    ``num_replicas > 1`` each rank takes every ``num_replicas``-th batch (the batch count is
    equalised so that all ranks take the same number of steps, as DDP requires).

    Parameters
    ----------
    lengths
        Length per cell.
    batch_size
        Cells per batch.
    shuffle
        Shuffle (``False``: batches in length order, for inference).
    seed
        Base seed; :meth:`set_epoch` changes the draw.
    bucket_factor
        Bucket size in batches.
    drop_last
        Drop incomplete batches.
    groups
        Optional group label per cell (e.g. batch, for domain-specific batch norm): each
        batch then holds cells of one group only.
    num_replicas, rank
        Data-parallel sharding.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        bucket_factor: int = BUCKET_FACTOR,
        drop_last: bool = False,
        groups: Sequence[Any] | np.ndarray | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_factor = max(1, int(bucket_factor))
        self.drop_last = drop_last
        self.groups = None if groups is None else np.asarray(groups)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch``."""
        self.epoch = int(epoch)

    def _batches_of(self, idx: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        if self.shuffle:
            idx = rng.permutation(idx)
        bucket = self.batch_size * self.bucket_factor
        out = []
        for s in range(0, len(idx), bucket):
            chunk = idx[s : s + bucket]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                part = chunk[b : b + self.batch_size]
                if len(part) == self.batch_size or not self.drop_last:
                    out.append(part)
        return out

    def _all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.groups is None:
            batches = self._batches_of(np.arange(len(self.lengths)), rng)
        else:
            batches = []
            for g in sorted(set(self.groups.tolist()), key=str):
                batches += self._batches_of(np.flatnonzero(self.groups == g), rng)
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        if self.num_replicas > 1:
            per_rank = len(batches) // self.num_replicas
            if per_rank == 0:
                raise ValueError(f"{len(batches)} batches cannot feed {self.num_replicas} ranks")
            batches = batches[self.rank : per_rank * self.num_replicas : self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._all_batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._all_batches())


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Inference batches: cells sorted by decreasing length, cut into ``batch_size`` pieces.

    Long cells come first so that out-of-memory errors surface at once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches of ``batch_size`` from ``n`` items."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)
