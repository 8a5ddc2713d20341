"""Embedding API: cell embeddings into ``adata.obsm`` and gene embeddings of a checkpoint."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from scgpt._utils import autocast_context, logger, resolve_device
from scgpt.checkpoint import load_pretrained
from scgpt.data import CellDataset, Collator, length_sorted_batches
from scgpt.model import ModelConfig, TransformerModel
from scgpt.preprocess import gene_names
from scgpt.vocab import GeneVocab, map_genes

ModelLike = str | os.PathLike | TransformerModel | tuple[TransformerModel, GeneVocab, ModelConfig]


def resolve_model(
    checkpoint: ModelLike,
    *,
    vocab: GeneVocab | None = None,
    device: str | torch.device | None = None,
) -> tuple[TransformerModel, GeneVocab]:
    """Turn a checkpoint folder, a model or a ``(model, vocab, config)`` tuple into ``(model, vocab)``.

    The model is moved to ``device`` (default: CUDA if available, else CPU).
    """
    dev = resolve_device(device)
    if isinstance(checkpoint, str | os.PathLike):
        model, vocab, _ = load_pretrained(checkpoint)
    elif isinstance(checkpoint, tuple):
        model, vocab = checkpoint[0], checkpoint[1]
    elif isinstance(checkpoint, TransformerModel):
        model = checkpoint
        vocab = vocab if vocab is not None else model.vocab
        if vocab is None:
            raise ValueError("the model has no vocabulary attached: pass vocab=")
    else:
        raise TypeError(
            f"expected a checkpoint folder, a TransformerModel or a tuple, got {type(checkpoint).__name__}"
        )
    return model.to(dev), vocab


def batch_codes(
    adata: AnnData, batch_key: str, categories: Sequence[str] | None = None
) -> np.ndarray:
    """Integer batch label per cell from ``obs[batch_key]`` (in ``categories`` order when given)."""
    if batch_key not in adata.obs.columns:
        raise KeyError(
            f"batch_key {batch_key!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    col = adata.obs[batch_key].astype(str)
    cats = list(categories) if categories is not None else sorted(col.unique())
    lookup = {c: i for i, c in enumerate(cats)}
    unknown = sorted(set(col) - set(lookup))
    if unknown:
        raise ValueError(
            f"batches {unknown[:5]} of obs[{batch_key!r}] were not seen in training ({cats[:10]})"
        )
    return col.map(lookup).to_numpy(dtype=np.int64)


@torch.inference_mode()
def check_expression(X: np.ndarray | sp.spmatrix, where: str = "X") -> None:
    """Refuse NaN, infinite or negative expression values (they would be binned silently).

    Raises
    ------
    ValueError
        Naming ``where`` and how many values are bad.
    """
    values = X.data if sp.issparse(X) else np.asarray(X)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"adata.{where} has {int(bad.sum())} NaN/infinite values; scGPT needs finite, "
            "non-negative expression (raw counts)"
        )
    if (values < 0).any():
        raise ValueError(
            f"adata.{where} has {int((values < 0).sum())} negative values; scGPT needs "
            "non-negative expression (raw counts, not scaled data)"
        )


@torch.inference_mode()
def embed_cells(
    adata: AnnData,
    checkpoint: ModelLike,
    *,
    batch_size: int = 64,
    max_length: int = 1200,
    device: str | torch.device | None = None,
    obsm_key: str | None = "X_scGPT",
    gene_col: str | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    vocab: GeneVocab | None = None,
    normalize: bool = True,
    binning: bool = True,
    include_zero_genes: bool = False,
    precision: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Embed every cell with a (pre-trained or fine-tuned) scGPT model.

    Each cell becomes ``<cls>`` + its non-zero genes in the vocabulary (values binned per
    cell, ``<cls>`` value = ``pad_value`` as in the released pipeline), sampled to
    ``max_length``; cells are batched in length order and the ``<cls>`` output is taken
    (L2-normalised like the official ``embed_data``).

    Parameters
    ----------
    adata
        Cells x genes, raw counts (or any non-negative expression: binning uses ranks).
    checkpoint
        Checkpoint folder, :class:`~scgpt.model.TransformerModel` (with ``.vocab`` or
        ``vocab=``) or ``(model, vocab, config)``.
    batch_size
        Cells per forward pass.
    max_length
        Maximum tokens per cell including ``<cls>``.
    device
        ``None``: CUDA when available (bf16 autocast), else CPU.
    obsm_key
        Key to write in ``adata.obsm`` (``None``: do not write).
    gene_col
        ``var`` column with gene symbols (``None``: ``var_names``).
    layer
        Layer to read instead of ``X``.
    batch_key
        ``obs`` column of batches, required by models with batch labels / DSBN.
    vocab
        Vocabulary when ``checkpoint`` is a bare model.
    normalize
        L2-normalise the embeddings.
    binning
        Bin values into ``config.n_bins`` (the released models' input); ``False`` feeds the
        values as they are.
    include_zero_genes
        Tokenise the cell's zero genes too (a model fine-tuned that way, e.g. the
        integration tutorial's).
    precision
        ``"auto"`` (bf16 on CUDA), ``"bf16"``, ``"fp32"``.
    seed
        Seed of the binning tie-break and of the down-sampling of long cells. Both draws
        are determined by the seed and the cell's own genes and values, so a cell's
        embedding does not depend on its position, the other cells, the batch size, how a
        large AnnData is chunked or the order of the columns (with ``max_length`` above the
        cell's gene count, not on ``max_length`` either).
    progress
        Show a tqdm bar.

    Returns
    -------
    numpy.ndarray
        ``n_cells x d_model`` float32 (also stored in ``adata.obsm[obsm_key]``).
    """
    from tqdm.auto import tqdm

    model, vocab = resolve_model(checkpoint, vocab=vocab, device=device)
    cfg = model.config
    dev = model.device
    ids, report = map_genes(gene_names(adata, gene_col), vocab)
    if report.n_matched == 0:
        raise ValueError(f"no gene of the data is in the vocabulary: {report}")
    X = adata.layers[layer] if layer is not None else adata.X
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    check_expression(X, f"layers[{layer!r}]" if layer is not None else "X")
    obs: dict[str, np.ndarray] = {}
    if cfg.use_batch_labels or cfg.uses_dsbn:
        if batch_key is None:
            raise ValueError("this model uses batch labels: pass batch_key")
        obs["batch_labels"] = batch_codes(
            adata, batch_key, getattr(model, "batch_categories", None)
        )
    ds = CellDataset(
        X,
        ids,
        max_len=max_length,
        cls_id=vocab.cls_id,
        cls_value=cfg.pad_value,
        n_bins=cfg.n_bins if binning else None,
        include_zero_genes=include_zero_genes,
        obs=obs,
        seed=seed,
        # draws keyed by the cell's own genes and values, never by its position: a cell's
        # embedding is the same whatever the other cells, their order, the chunking of a
        # large AnnData or the order of the columns
        draws="content",
    )
    collate = Collator(vocab.pad_id, cfg.pad_value)
    out = np.zeros((adata.n_obs, cfg.d_model), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        batches = length_sorted_batches(ds.lengths(), batch_size)
        for idx in tqdm(batches, desc="embed_cells", disable=not progress or len(batches) < 2):
            b = collate([ds[int(i)] for i in idx])
            with autocast_context(dev, precision):
                emb = model.get_cell_embeddings(
                    b["gene_ids"].to(dev),
                    b["values"].to(dev),
                    b["padding_mask"].to(dev),
                    batch_labels=b["batch_labels"].to(dev) if "batch_labels" in b else None,
                )
            out[idx] = emb.float().cpu().numpy()
    finally:
        model.train(was_training)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    if obsm_key:
        adata.obsm[obsm_key] = out
    logger.info("embedded %d cells (%s)", adata.n_obs, report)
    return out


@torch.inference_mode()
def gene_embeddings(
    checkpoint: ModelLike,
    genes: Sequence[str] | None = None,
    *,
    as_dataframe: bool = True,
    vocab: GeneVocab | None = None,
    device: str | torch.device | None = "cpu",
) -> pd.DataFrame | dict[str, np.ndarray]:
    """Gene token embeddings (embedding + LayerNorm), as used for gene programs / GRN.

    Parameters
    ----------
    checkpoint
        Checkpoint folder, model or ``(model, vocab, config)``.
    genes
        Genes to return (default: every non-special gene of the vocabulary); genes not in
        the vocabulary are skipped with a warning naming them.
    as_dataframe
        Return a DataFrame (genes x d) instead of ``{gene: vector}``.
    vocab
        Vocabulary when ``checkpoint`` is a bare model.
    device
        Device for the computation.

    Returns
    -------
    pandas.DataFrame or dict
    """
    model, vocab = resolve_model(checkpoint, vocab=vocab, device=device)
    names = list(vocab.genes) if genes is None else [str(g) for g in genes]
    ids, report = map_genes(names, vocab, warn_below=0.0)
    if report.n_matched < report.n_total:
        logger.warning("gene_embeddings: %s", report)
    keep = [n for n, i in zip(names, ids) if i >= 0]
    ids = ids[ids >= 0]
    parts = []
    for s in range(0, len(ids), 8192):
        t = torch.as_tensor(ids[s : s + 8192], device=model.device)
        parts.append(model.gene_embeddings(t).float().cpu().numpy())
    mat = np.concatenate(parts) if parts else np.zeros((0, model.config.d_model), dtype=np.float32)
    if as_dataframe:
        return pd.DataFrame(mat, index=pd.Index(keep, name="gene"))
    return dict(zip(keep, mat))
