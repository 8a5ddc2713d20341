"""scGPT reference mapping: scGPT cell embeddings + kNN label transfer (paper Supp. Note 1).

``scgpt_zeroshot``, as in the paper's reference-mapping tutorial: reference and query cells are embedded with the
pre-trained model (no training; ``<cls>`` embedding of the cell's expressed genes, values
binned per cell, L2-normalised, up to 1,200 tokens as in the official ``embed_data``), and each
query cell takes the majority label of its ``k`` nearest reference cells by cosine similarity
(:func:`baselines.knn_transfer.knn_transfer`, exact faiss search like the tutorial's).
Genes outside the checkpoint's vocabulary are dropped (coverage logged).

``scgpt_finetuned``: the same kNN transfer in the embedding of the model fine-tuned on the
reference's labels. The fine-tuning is the annotation adapter's own
(:func:`baselines.scgpt_annotation.scgpt_annotation`, same settings and defaults), run
with reference and query stacked as its "query" so that both are embedded by the fine-tuned
model in one pass; its classifier predictions are only logged (agreement with the kNN labels).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from baselines._scgpt_common import load_model, vocabulary_genes
from baselines.knn_transfer import Backend, knn_transfer
from contract.registry import register

log = logging.getLogger(__name__)

LABEL_KEY = "cell_type"
OBSM_KEY = "X_scGPT"


@register("reference_mapping", "scgpt_zeroshot", label="scGPT (zero-shot)", needs_checkpoint=True)
def scgpt_zeroshot_mapping(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    k: int = 10,
    batch_size: int = 64,
    max_len: int = 1200,
    backend: Backend = "auto",
    device: str = "auto",
) -> np.ndarray:
    """Label transfer by kNN in the pre-trained scGPT cell embedding (no fine-tuning).

    Parameters
    ----------
    reference, query
        Labelled reference (obs ``cell_type``) and query cells, same genes (counts).
    seed
        Seed of the down-sampling of cells with more than ``max_len - 1`` expressed genes.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    k
        Neighbours of the majority vote (the tutorial's 10).
    batch_size, max_len
        Cells per forward pass; tokens per cell including ``<cls>``.
    backend
        kNN search backend (see :func:`baselines.knn_transfer.knn_search`).
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    One label per query cell; ``query.obsm["X_scGPT"]`` holds the query embedding.
    """
    from scgpt import embed_cells

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("scGPT reference mapping: reference and query must have the same genes")
    if LABEL_KEY not in reference.obs:
        raise KeyError(
            f"scGPT reference mapping: reference lacks obs {LABEL_KEY!r}; it has "
            f"{list(reference.obs)}"
        )
    model, vocab = load_model(checkpoint, pretrained=True, seed=seed)
    ref = vocabulary_genes(reference, vocab, what="reference mapping", checkpoint=checkpoint)
    qry = query if ref is reference else query[:, ref.var_names].copy()
    embeddings = [
        embed_cells(
            data,
            model,
            vocab=vocab,
            batch_size=batch_size,
            max_length=max_len,
            device=device,
            obsm_key=None,
            seed=seed,
        )
        for data in (ref, qry)
    ]
    query.obsm[OBSM_KEY] = embeddings[1]
    return knn_transfer(
        embeddings[0],
        reference.obs[LABEL_KEY].astype(str).to_numpy(),
        embeddings[1],
        k=k,
        metric="cosine",
        backend=backend,
        seed=seed,
    )


def _stacked(reference: ad.AnnData, query: ad.AnnData) -> ad.AnnData:
    """Reference cells then query cells (``X`` and genes only) in one AnnData."""
    import scipy.sparse as sp

    xs = [reference.X, query.X]
    x = sp.vstack(xs, format="csr") if any(sp.issparse(m) for m in xs) else np.vstack(xs)
    n = reference.n_obs + query.n_obs
    return ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=[str(i) for i in range(n)]),
        var=pd.DataFrame(index=reference.var_names.copy()),
    )


@register("reference_mapping", "scgpt_finetuned", label="scGPT (fine-tuned)", needs_checkpoint=True)
def scgpt_finetuned_mapping(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 32,
    max_len: int = 3001,
    val_fraction: float = 0.1,
    device: str = "auto",
    k: int = 10,
) -> np.ndarray:
    """Label transfer by kNN in the embedding of scGPT fine-tuned on the reference labels.

    Parameters
    ----------
    reference, query
        Labelled reference (obs ``cell_type``) and query cells, same genes (counts).
    seed
        Seed of sampling and shuffling in fine-tuning and of the embedding's down-sampling.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    epochs, lr, batch_size, max_len
        Fine-tuning settings, those of the annotation adapter (tutorial: 10, 1e-4, 32, 3001);
        ``batch_size`` and ``max_len`` also apply to the embedding.
    val_fraction
        Reference cells held out to keep the best-validation epoch (annotation adapter's).
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.
    k
        Neighbours of the majority vote (cosine similarity; the tutorial's 10).

    Returns
    -------
    One label per query cell; ``query.obsm["X_scGPT"]`` holds the query embedding.
    """
    from baselines.scgpt_annotation import scgpt_annotation

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("scGPT reference mapping: reference and query must have the same genes")
    cells = _stacked(reference, query)
    classified = scgpt_annotation(
        reference,
        cells,
        seed=seed,
        checkpoint=checkpoint,
        pretrained=True,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=max_len,
        val_fraction=val_fraction,
        device=device,
    )
    embedding = cells.obsm[OBSM_KEY]
    ref_emb, query_emb = embedding[: reference.n_obs], embedding[reference.n_obs :]
    query.obsm[OBSM_KEY] = query_emb
    labels = knn_transfer(
        ref_emb,
        reference.obs[LABEL_KEY].astype(str).to_numpy(),
        query_emb,
        k=k,
        metric="cosine",
        seed=seed,
    )
    log.info(
        "scGPT fine-tuned mapping: kNN labels agree with the classifier head on %.1f%% of "
        "the query",
        100.0 * float(np.mean(labels == classified[reference.n_obs :])),
    )
    return labels
