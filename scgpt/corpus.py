"""Streaming pre-training corpus: one ``.h5ad`` or a folder of ``.h5ad`` shards, never loaded whole.

Shards are opened in backed mode one at a time and read in chunks of rows. The order of an
epoch is a deterministic function of ``(seed, epoch)``: each shard's rows are dealt at random
into chunks (a new deal every epoch, so a shard that concatenates several source data sets
row block by row block still gives mixed chunks), the list of chunks is permuted, chunks are
dealt round-robin to the data-parallel ranks, and inside a chunk cells are grouped into
length buckets (little padding) whose members are shuffled before they are cut into batches,
and the batches' order is shuffled. Without the shuffle inside buckets, a stable sort by
length keeps row order whenever lengths tie (every cell with ``max_len`` genes), so batches
were runs of consecutive rows (one source each) and the same batches every epoch. Every random choice for a
cell (binning ties, down-sampling) comes from a generator keyed by ``(seed, epoch, shard,
row)``. A position in the stream is therefore just ``(epoch, batches consumed)``, and
resuming skips whole chunks without reading them.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from scgpt._utils import cell_rng, logger
from scgpt.preprocess import normalize_log1p
from scgpt.tokenize import pad_batch, tokenize_sparse_row
from scgpt.vocab import GeneVocab, map_genes


def list_shards(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The ``.h5ad`` files of ``source`` (a file, a folder of shards, or a list of files)."""
    if isinstance(source, str | Path):
        p = Path(source)
        if p.is_dir():
            files = sorted(p.glob("*.h5ad"))
            if not files:
                raise FileNotFoundError(f"no .h5ad files in {p}")
            return files
        if not p.is_file():
            raise FileNotFoundError(f"corpus not found: {p}")
        return [p]
    files = [Path(s) for s in source]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"corpus shards not found: {missing[:5]}")
    return files


def corpus_genes(paths: Sequence[Path], gene_col: str | None = None) -> list[str]:
    """Union of the gene names of the shards, in first-seen order (reads ``var`` only)."""
    seen: dict[str, None] = {}
    for p in paths:
        a = ad.read_h5ad(p, backed="r")
        try:
            names = a.var_names if gene_col is None else a.var[gene_col]
            for g in map(str, names):
                seen.setdefault(g, None)
        finally:
            a.file.close()
    return list(seen)


@dataclass(frozen=True)
class _Shard:
    path: Path
    gene_ids: np.ndarray
    rows: np.ndarray  # selected rows (sorted)


class ShardedCorpus:
    """Deterministic, resumable, rank-sharded stream of padded batches from ``.h5ad`` shards.

    Parameters
    ----------
    source
        ``.h5ad`` file, folder of shards, or list of files (raw counts in ``X``).
    vocab
        Model vocabulary (genes outside it are ignored).
    batch_size
        Cells per batch (per rank).
    max_len
        Maximum tokens per cell including ``<cls>``.
    n_bins
        Per-cell value bins (``None``: normalised log1p values are used as input).
    pad_value
        Value at padded positions.
    cls_value
        Value at the ``<cls>`` position.
    chunk_size
        Rows read at once.
    fraction
        Use a random subset of this fraction of the cells of each shard (data-size series).
    seed
        Base seed of every draw.
    gene_col
        ``var`` column with gene symbols (``None``: ``var_names``).
    normalize_total, log1p
        Per-cell normalisation applied to each chunk.
    world_size, rank
        Data-parallel sharding: rank ``r`` gets chunks ``r, r + world_size, ...``.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        vocab: GeneVocab,
        *,
        batch_size: int,
        max_len: int,
        n_bins: int | None = 51,
        pad_value: float = -2.0,
        cls_value: float = -2.0,
        chunk_size: int = 4096,
        fraction: float = 1.0,
        seed: int = 0,
        gene_col: str | None = None,
        normalize_total: float | None = 1e4,
        log1p: bool = True,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.paths = list_shards(source)
        self.vocab = vocab
        self.batch_size = int(batch_size)
        self.max_len = int(max_len)
        self.n_bins = n_bins
        self.pad_value = float(pad_value)
        self.cls_value = float(cls_value)
        self.chunk_size = int(chunk_size)
        self.seed = int(seed)
        self.normalize_total = normalize_total
        self.log1p = log1p
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.shards: list[_Shard] = []
        for i, p in enumerate(self.paths):
            a = ad.read_h5ad(p, backed="r")
            try:
                names = a.var_names if gene_col is None else a.var[gene_col]
                ids, report = map_genes(names, vocab)
                logger.info("%s: %d cells, %s", p.name, a.n_obs, report)
                n = a.n_obs
            finally:
                a.file.close()
            rows = np.arange(n)
            if fraction < 1.0:
                k = max(1, round(fraction * n))
                rows = np.sort(
                    np.random.default_rng([self.seed, 7919, i]).choice(n, size=k, replace=False)
                )
            self.shards.append(_Shard(p, ids, rows))
        self.n_cells = int(sum(len(s.rows) for s in self.shards))
        if self.n_cells == 0:
            raise ValueError(f"the corpus {source} has no cells")
        self._open: tuple[int, Any] | None = None

    # plan -----------------------------------------------------------------------------------
    def _all_chunks(self, epoch: int) -> list[tuple[int, int, np.ndarray]]:
        chunks = []
        for si, s in enumerate(self.shards):
            # A fresh deal of the shard's rows every epoch; each chunk's rows are sorted back
            # for reading. Chunk sizes do not depend on the deal, so a resumed run can still
            # count batches of skipped chunks without reading them.
            rows = np.random.default_rng([self.seed, 7927, epoch, si]).permutation(s.rows)
            chunks.extend(
                (si, start, np.sort(rows[start : start + self.chunk_size]))
                for start in range(0, len(rows), self.chunk_size)
            )
        order = np.random.default_rng([self.seed, 104729, epoch]).permutation(len(chunks))
        return [chunks[i] for i in order]

    def _rank_chunks(self, epoch: int, rank: int) -> list[tuple[int, int, np.ndarray]]:
        return self._all_chunks(epoch)[rank :: self.world_size]

    def steps_per_epoch(self, epoch: int = 0) -> int:
        """Batches every rank yields in ``epoch`` (the minimum over ranks, so DDP stays in step)."""
        per_rank = [
            sum(
                math.ceil(len(rows) / self.batch_size) for _, _, rows in self._rank_chunks(epoch, r)
            )
            for r in range(self.world_size)
        ]
        return min(per_rank)

    # reading --------------------------------------------------------------------------------
    def _read_rows(self, si: int, rows: np.ndarray) -> sp.csr_matrix:
        if self._open is None or self._open[0] != si:
            self.close()
            self._open = (si, ad.read_h5ad(self.shards[si].path, backed="r"))
        X = self._open[1].X
        contiguous = rows[-1] - rows[0] + 1 == len(rows)
        block = X[int(rows[0]) : int(rows[-1]) + 1] if contiguous else X[rows]
        return sp.csr_matrix(block, dtype=np.float32)

    def close(self) -> None:
        """Close the open shard, if any."""
        if self._open is not None:
            self._open[1].file.close()
            self._open = None

    def _chunk_batches(
        self, epoch: int, si: int, start: int, rows: np.ndarray
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        X = normalize_log1p(self._read_rows(si, rows), self.normalize_total, self.log1p)
        gene_ids = self.shards[si].gene_ids
        cls_id = self.vocab.cls_id
        cells = []
        for j, r in enumerate(rows):
            lo, hi = X.indptr[j], X.indptr[j + 1]
            cells.append(
                tokenize_sparse_row(
                    X.indices[lo:hi],
                    X.data[lo:hi],
                    gene_ids,
                    max_len=self.max_len,
                    cls_id=cls_id,
                    cls_value=self.cls_value,
                    n_bins=self.n_bins,
                    rng=cell_rng(self.seed, epoch, si, int(r)),
                )
            )
        # Length buckets of width max_len / 16 (padding waste below ~6% of max_len), cells in
        # random order inside a bucket: lexsort's last key (bucket) is the primary one.
        lengths = np.array([len(g) for g, _ in cells])
        width = max(1, self.max_len // 16)
        tie_break = np.random.default_rng([self.seed, 6700417, epoch, si, start]).random(len(cells))
        order = np.lexsort((tie_break, (lengths + width - 1) // width))
        batches = [
            [cells[k] for k in order[b : b + self.batch_size]]
            for b in range(0, len(order), self.batch_size)
        ]
        perm = np.random.default_rng([self.seed, 15485863, epoch, si, start]).permutation(
            len(batches)
        )
        return [batches[p] for p in perm]

    def iter_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Yield this rank's padded batches of ``epoch`` from batch ``start_batch`` on.

        Each batch has ``gene_ids``, ``values``, ``padding_mask`` (see
        :func:`scgpt.tokenize.pad_batch`) and ``batch_index`` (position in the epoch).
        """
        total = self.steps_per_epoch(epoch)
        count = 0
        pad_id, pad_value = self.vocab.pad_id, self.pad_value
        try:
            for si, start, rows in self._rank_chunks(epoch, self.rank):
                if count >= total:
                    return
                nb = math.ceil(len(rows) / self.batch_size)
                if count + nb <= start_batch:
                    count += nb
                    continue
                for cells in self._chunk_batches(epoch, si, start, rows):
                    if count >= total:
                        return
                    if count >= start_batch:
                        batch = pad_batch(cells, pad_id=pad_id, pad_value=pad_value)
                        batch["batch_index"] = torch.tensor(count)
                        yield batch
                    count += 1
        finally:
            self.close()


def prefetch(iterator: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """Run ``iterator`` in a background thread, ``depth`` items ahead (order preserved).

    Reading and tokenising release the GIL for much of their time, so the next batches are
    prepared while the model computes. Exceptions are re-raised in the consumer.
    """
    if depth <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                if stop.is_set():
                    break
                q.put(item)
            q.put(done)
        except BaseException as err:  # forwarded to the consumer
            q.put(err)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
