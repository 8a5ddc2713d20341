"""Ground-truth checks of a pre-trained scGPT on simulated cells (``benchmarks/pretraining_quality.py``).

Three questions, each against references that bracket what is learnable:

- **Masked-value loss.** Held-out cells are tokenised as the pre-training corpus does
  (normalise, log1p, per-cell bins, ``max_len`` non-zero genes) and half of each cell's genes
  are hidden (a seeded split); the model generates their bins from the other half. The
  references predict every hidden bin by the gene's mean bin (``gene_mean``: what a model
  that ignores the cell learns first, the plateau) and by the gene's mean bin within the
  cell's true type (``oracle``: the best a model can do that knows the type but not the
  cell's individual noise). ``gap_closed`` = (gene_mean - model) / (gene_mean - oracle).
- **Zero-shot cell embedding.** kNN cell-type accuracy of the ``<cls>`` embedding from the
  reference batches to the query batch of a :func:`benchmark.simulate.simulate_celltypes`
  data set, beside the same kNN on 50 principal components of log-normalised expression.
- **Gene embedding.** Mean cosine of the gene-token embeddings of genes in the same
  simulated program vs genes in different programs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from scgpt._utils import cell_rng
from scgpt.masking import split_for_generation
from scgpt.model import TransformerModel
from scgpt.preprocess import bin_row, normalize_log1p
from scgpt.tokenize import pad_batch, tokenize_sparse_row
from scgpt.vocab import GeneVocab, map_genes

__all__ = [
    "HeldOut",
    "gene_program_cosine",
    "make_heldout",
    "masked_value_losses",
    "model_masked_value_loss",
    "zero_shot_knn",
]


@dataclass(frozen=True)
class HeldOut:
    """Held-out cells split into known and hidden genes, with the reference predictions.

    Attributes
    ----------
    batches
        Per batch: ``known_gene_ids``, ``known_values``, ``known_padding_mask``,
        ``gen_gene_ids``, ``gen_padding_mask``, ``gen_target`` (tensors).
    references
        ``{"gene_mean": mse, "oracle": mse}`` on the same hidden tokens.
    n_tokens
        Number of hidden tokens scored.
    """

    batches: list[dict[str, torch.Tensor]]
    references: dict[str, float]
    n_tokens: int


def _binned_rows(
    adata: ad.AnnData, gene_ids: np.ndarray, n_vocab: int, n_bins: int, seed: int
) -> sp.csr_matrix:
    """Per-cell bins of the non-zero, in-vocabulary genes (columns = vocabulary ids)."""
    X = normalize_log1p(sp.csr_matrix(adata.X, dtype=np.float32), 1e4, True)
    rows, cols, vals = [], [], []
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        ids = gene_ids[X.indices[lo:hi]]
        keep = ids >= 0
        v = bin_row(X.data[lo:hi][keep], n_bins, rng=cell_rng(seed, 1, i))
        rows.append(np.full(keep.sum(), i))
        cols.append(ids[keep])
        vals.append(v)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(X.shape[0], n_vocab),
    )


def _mean_tables(
    reference: ad.AnnData,
    gene_ids: np.ndarray,
    n_vocab: int,
    n_bins: int,
    types: list[str],
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean bin per gene (vocabulary id) among cells expressing it, overall and per type."""
    B = _binned_rows(reference, gene_ids, n_vocab, n_bins, seed)
    nz = (B != 0).astype(np.float64)
    gene_mean = np.asarray(B.sum(0)).ravel() / np.maximum(np.asarray(nz.sum(0)).ravel(), 1)
    codes = reference.obs["cell_type"].astype(str).map({t: k for k, t in enumerate(types)})
    type_mean = np.tile(gene_mean, (len(types), 1))
    for k in range(len(types)):
        sel = np.flatnonzero(codes.to_numpy() == k)
        if sel.size:
            n = np.asarray(nz[sel].sum(0)).ravel()
            s = np.asarray(B[sel].sum(0)).ravel()
            type_mean[k] = np.where(n > 0, s / np.maximum(n, 1), gene_mean)
    return gene_mean, type_mean


def make_heldout(
    heldout: ad.AnnData,
    reference: ad.AnnData,
    vocab: GeneVocab,
    *,
    max_len: int,
    n_bins: int = 51,
    pad_value: float = -2.0,
    gen_ratio: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
) -> HeldOut:
    """Tokenise ``heldout`` cells, hide ``gen_ratio`` of their genes and score the references.

    Parameters
    ----------
    heldout
        Cells to score (raw counts, obs ``cell_type``), never seen in pre-training.
    reference
        Cells from which the per-gene and per-type mean bins are computed.
    vocab
        The model's vocabulary.
    max_len
        Tokens per cell including ``<cls>`` (the pre-training ``max_seq_len``).
    n_bins, pad_value
        The model's binning and pad / ``<cls>`` value.
    gen_ratio
        Fraction of each cell's genes to hide.
    batch_size
        Cells per batch.
    seed
        Seed of binning ties, gene sampling and the hidden split.
    """
    gene_ids, _ = map_genes(heldout.var_names, vocab)
    ref_ids, _ = map_genes(reference.var_names, vocab)
    types = sorted(
        set(map(str, reference.obs["cell_type"])) | set(map(str, heldout.obs["cell_type"]))
    )
    n_vocab = vocab.num_embeddings
    gm, tm = _mean_tables(reference, ref_ids, n_vocab, n_bins, types, seed)
    codes = np.array([types.index(str(t)) for t in heldout.obs["cell_type"]])
    X = normalize_log1p(sp.csr_matrix(heldout.X, dtype=np.float32), 1e4, True)
    cells = []
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        cells.append(
            tokenize_sparse_row(
                X.indices[lo:hi],
                X.data[lo:hi],
                gene_ids,
                max_len=max_len,
                cls_id=vocab.cls_id,
                cls_value=pad_value,
                n_bins=n_bins,
                rng=cell_rng(seed, 2, i),
            )
        )
    gen = torch.Generator().manual_seed(seed)
    batches, se = [], {"gene_mean": 0.0, "oracle": 0.0}
    n_tokens = 0
    for b in range(0, len(cells), batch_size):
        padded = pad_batch(cells[b : b + batch_size], pad_id=vocab.pad_id, pad_value=pad_value)
        gb = split_for_generation(
            padded["gene_ids"],
            padded["values"],
            padded["padding_mask"],
            gen_ratio=gen_ratio,
            pad_id=vocab.pad_id,
            pad_value=pad_value,
            generator=gen,
        )
        keep = ~gb.gen_padding_mask
        g = gb.gen_gene_ids.numpy()
        target = gb.gen_target.numpy()
        k = keep.numpy()
        cell_codes = codes[b : b + batch_size][:, None]
        se["gene_mean"] += float((((gm[g] - target) ** 2) * k).sum())
        se["oracle"] += float((((tm[cell_codes, g] - target) ** 2) * k).sum())
        n_tokens += int(k.sum())
        batches.append(
            {
                "known_gene_ids": gb.known_gene_ids,
                "known_values": gb.known_values,
                "known_padding_mask": gb.known_padding_mask,
                "gen_gene_ids": gb.gen_gene_ids,
                "gen_padding_mask": gb.gen_padding_mask,
                "gen_target": gb.gen_target,
            }
        )
    return HeldOut(batches, {k: v / max(1, n_tokens) for k, v in se.items()}, n_tokens)


@torch.no_grad()
def model_masked_value_loss(model: TransformerModel, heldout: HeldOut) -> float:
    """Mean squared error of the model's generated bins on the hidden tokens."""
    was_training = model.training
    model.eval()
    device = model.device
    se, n = 0.0, 0
    try:
        for b in heldout.batches:
            out = model.generative_forward(
                b["known_gene_ids"].to(device),
                b["known_values"].to(device),
                b["known_padding_mask"].to(device),
                b["gen_gene_ids"].to(device),
                b["gen_padding_mask"].to(device),
            )
            keep = ~b["gen_padding_mask"].to(device)
            err = (out["gen_preds"].float() - b["gen_target"].to(device)) ** 2
            se += float(err[keep].sum())
            n += int(keep.sum())
    finally:
        model.train(was_training)
    return se / max(1, n)


def masked_value_losses(model: TransformerModel, heldout: HeldOut) -> dict[str, float]:
    """Model and reference losses on ``heldout`` and the fraction of the gap closed."""
    loss = model_masked_value_loss(model, heldout)
    gm, oracle = heldout.references["gene_mean"], heldout.references["oracle"]
    return {
        "model": loss,
        "gene_mean": gm,
        "oracle": oracle,
        "gap_closed": (gm - loss) / (gm - oracle) if gm > oracle else float("nan"),
    }


def zero_shot_knn(
    model: TransformerModel,
    vocab: GeneVocab,
    adata: ad.AnnData,
    *,
    max_len: int,
    k: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """kNN cell-type accuracy, reference batches -> query batch: ``<cls>`` embedding vs PCA.

    ``adata`` needs obs ``cell_type`` and ``split`` (``"reference"`` / ``"query"``).
    """
    import scanpy as sc
    from sklearn.neighbors import KNeighborsClassifier

    from scgpt.embed import embed_cells

    emb = embed_cells(
        adata,
        model,
        vocab=vocab,
        max_length=max_len,
        obsm_key=None,
        progress=False,
        seed=seed,
        device=model.device,
    )
    log = adata.copy()
    sc.pp.normalize_total(log, target_sum=1e4)
    sc.pp.log1p(log)
    n_comps = min(50, log.n_vars - 1, log.n_obs - 1)
    pcs = sc.pp.pca(
        log.X.toarray() if sp.issparse(log.X) else log.X, n_comps=n_comps, random_state=seed
    )
    ref = (adata.obs["split"] == "reference").to_numpy()
    labels = adata.obs["cell_type"].astype(str).to_numpy()

    def acc(x: np.ndarray) -> float:
        clf = KNeighborsClassifier(n_neighbors=k).fit(x[ref], labels[ref])
        return float((clf.predict(x[~ref]) == labels[~ref]).mean())

    return {"scgpt_cls_knn": acc(np.asarray(emb)), "pca_knn": acc(np.asarray(pcs))}


def gene_program_cosine(
    model: TransformerModel, vocab: GeneVocab, programs: dict[str, Any]
) -> dict[str, float]:
    """Mean cosine of gene embeddings within and between the simulator's programs.

    Parameters
    ----------
    programs
        ``{program: [genes]}`` (``SimulationWorld.programs()``).
    """
    from scgpt.embed import gene_embeddings

    genes = [g for members in programs.values() for g in members if g in vocab]
    label = {g: p for p, members in programs.items() for g in members}
    emb = gene_embeddings(model, genes, vocab=vocab, device=model.device).to_numpy()
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ emb.T
    lab = np.array([label[g] for g in genes])
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(genes), dtype=bool)
    within = float(cos[same & off].mean())
    between = float(cos[~same].mean())
    return {"within": within, "between": between, "difference": within - between}
