"""scGPT zero-shot reference mapping: pre-trained cell embeddings + kNN label transfer.

As in the paper's reference-mapping tutorial: reference and query cells are embedded with the
pre-trained model (no training; ``<cls>`` embedding of the cell's expressed genes, values
binned per cell, L2-normalised, up to 1,200 tokens as in the official ``embed_data``), and each
query cell takes the majority label of its ``k`` nearest reference cells by cosine similarity
(:func:`baselines.knn_transfer.knn_transfer`, exact faiss search like the tutorial's).
Genes outside the checkpoint's vocabulary are dropped (coverage logged).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from baselines._scgpt_common import load_model, vocabulary_genes
from baselines.knn_transfer import Backend, knn_transfer
from baselines.registry import register

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
