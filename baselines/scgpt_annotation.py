"""scGPT cell-type annotation: fine-tune with a classification head (the CLS objective).

The settings of the official annotation tutorial are the defaults: the pre-trained model
plus a new classification head on the ``<cls>`` cell embedding, cross-entropy only, every
layer trained, lr 1e-4 (decayed x0.9 per epoch), batch 32, 10 epochs, up to 3,001 tokens per
cell (``<cls>`` + the cell's expressed genes, values binned per cell). ``scgpt_scratch`` trains
the same architecture from a random initialisation (the paper's "from scratch" rows).

Genes outside the checkpoint's vocabulary are dropped (coverage logged). The fine-tuned
model's cell embedding of the query goes into ``query.obsm["X_scGPT"]`` (the UMAP figure).

Validation cells, as in the tutorial: ``val_fraction`` (10%) of the reference is held out at
random and the epoch with the lowest cross-entropy on it is kept. The split is drawn from the
method's seed, so the paper's five repeats (n = 5) are five random train/validation splits.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np

from baselines._scgpt_common import load_model, register_scgpt, vocabulary_genes

log = logging.getLogger(__name__)

LABEL_KEY = "cell_type"
OBSM_KEY = "X_scGPT"


@register_scgpt("annotation")
def scgpt_annotation(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    pretrained: bool = True,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 32,
    max_len: int = 3001,
    val_fraction: float = 0.1,
    device: str = "auto",
) -> np.ndarray:
    """scGPT fine-tuned with a classification head (tutorial settings), pre-trained or not.

    Registered as ``scgpt`` (``pretrained=True``) and ``scgpt_scratch`` (``pretrained=False``:
    the same training from a random initialisation of the architecture).

    Parameters
    ----------
    reference, query
        Labelled reference (obs ``cell_type``) and query cells, same genes (counts).
    seed
        Seed of initialisation, sampling and shuffling.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    pretrained
        The checkpoint's weights, or (``False``) only its architecture and gene vocabulary.
    epochs, lr, batch_size, max_len
        Fine-tuning settings (tutorial: 10, 1e-4, 32, 3001).
    val_fraction
        Reference cells held out (drawn by ``seed``) to keep the best-validation epoch
        (tutorial: 0.1; 0 keeps the last epoch of training on every cell).
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    One predicted label per query cell; ``query.obsm["X_scGPT"]`` holds its embedding.
    """
    from scgpt import embed_cells, finetune_classifier, predict_classifier

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("scGPT annotation: reference and query must have the same genes")
    if LABEL_KEY not in reference.obs:
        raise KeyError(
            f"scGPT annotation: reference lacks obs {LABEL_KEY!r}; it has {list(reference.obs)}"
        )
    model, vocab = load_model(checkpoint, pretrained=pretrained, seed=seed)
    ref = vocabulary_genes(reference, vocab, what="annotation", checkpoint=checkpoint)
    qry = query if ref is reference else query[:, ref.var_names].copy()
    result = finetune_classifier(
        model,
        ref,
        ref.obs[LABEL_KEY].astype(str).to_numpy(),
        vocab=vocab,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=max_len,
        val_fraction=val_fraction,
        device=device,
        seed=seed,
    )
    if result.history:
        kept = result.best_epoch or len(result.history)
        log.info(
            "scGPT annotation: %d epoch(s), %d validation cell(s), keeping epoch %d: %s",
            len(result.history),
            result.n_validation,
            kept,
            result.history[kept - 1],
        )
    predicted = predict_classifier(
        result, qry, vocab=vocab, batch_size=batch_size, max_len=max_len, seed=seed
    )
    query.obsm[OBSM_KEY] = embed_cells(
        qry,
        result.model,
        vocab=vocab,
        batch_size=batch_size,
        max_length=max_len,
        device=result.model.device,
        obsm_key=None,
        seed=seed,
    )
    return np.asarray(predicted).astype(str)
