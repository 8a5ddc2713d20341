"""scGPT multi-omic integration: pre-trained and from-scratch joint cell embeddings.

Input (see :mod:`benchmark.tasks.multiomics`): every cell x the selected features of every
modality, raw counts in ``X`` (or ``layers["counts"]``), ``var["modality"]`` in
{"rna", "protein", "atac"}, ``obs["batch"]``; on mosaic data a cell's unmeasured modalities
are zero columns and contribute no tokens.

- ``scgpt``: the official multi-omic fine-tuning (:func:`scgpt.finetune_multiomics`): every
  feature is a token; RNA genes of the checkpoint's vocabulary keep their pre-trained
  embedding rows, proteins and peaks get new rows; only the gene embedding and its
  LayerNorm come from the checkpoint, the rest of the model (4 layers, the checkpoint's
  width) is new; a modality embedding joined to the decoder inputs with the batch
  embedding; masked value prediction (GEP + GEPC, mask ratio 0.4) and the adversarial
  batch loss (DAR, weight 1); lr 1e-3, batch 16, 25 epochs, dropout 0.2; values binned per
  cell within each modality (ATAC binarised); 10% of the cells held out (drawn by the seed)
  to keep the lowest-validation-loss epoch; the ``<cls>`` embedding of every cell.
- ``scgpt_scratch``: the same model and training with nothing copied from the checkpoint
  (it supplies the width and the gene vocabulary only).

Each returns the L2-normalised cell embedding (``n_cells x d_model``).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from baselines._scgpt_common import load_model, register_scgpt


def _batch_key(adata: ad.AnnData, batch_key: str | None) -> str:
    if batch_key is None:
        batch_key = str(adata.uns.get("multiomics", {}).get("batch_key", "batch"))
    if batch_key not in adata.obs:
        raise KeyError(
            f"scGPT multi-omics: obs has no batch column {batch_key!r}; it has {list(adata.obs)}"
        )
    return batch_key


@register_scgpt("multiomics")
def scgpt_multiomics(
    adata: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    pretrained: bool = True,
    batch_key: str | None = None,
    epochs: int = 25,
    lr: float = 1e-3,
    batch_size: int = 16,
    max_len: int | None = None,
    mask_ratio: float = 0.4,
    dab_weight: float = 1.0,
    nlayers: int | None = 4,
    dropout: float = 0.2,
    atac_values: str = "binary",
    val_fraction: float = 0.1,
    device: str = "auto",
) -> np.ndarray:
    """scGPT fine-tuned for multi-omic integration (tutorial settings), pre-trained or not.

    Registered as ``scgpt`` (``pretrained=True``) and ``scgpt_scratch`` (``pretrained=False``:
    the same model and training with nothing copied from the checkpoint).

    Parameters
    ----------
    adata
        Cells x features of every modality (counts), ``var["modality"]``, ``obs[batch_key]``.
    seed
        Seed of the initialisation, hold-out split, binning ties, masking and sampling.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    pretrained
        Copy the checkpoint's gene embedding and its LayerNorm; ``False``: no weights.
    batch_key
        obs column with the batch (``None``: ``uns["multiomics"]["batch_key"]``, else
        ``"batch"``).
    epochs, lr, batch_size
        Fine-tuning settings (tutorial: 25, 1e-3, 16; Adam eps 1e-4, decay 0.95 per epoch).
    max_len
        Tokens per cell including ``<cls>`` (cells with more non-zero features are sampled
        down, in training and embedding); ``None``: every feature (the tutorial's).
    mask_ratio
        Fraction of values masked for GEP / GEPC.
    dab_weight
        Adversarial batch loss (DAR) weight (0 disables it; off with one batch).
    nlayers
        Transformer layers of the new model (tutorial: 4; ``None``: the checkpoint's).
    dropout
        Dropout (tutorial: 0.2; on CPU 0 takes PyTorch's fused attention path).
    atac_values
        Peak values: ``"binary"`` (open = 1) or ``"binned"`` (per-cell bins like RNA).
    val_fraction
        Cells held out to keep the lowest-validation-loss epoch (tutorial: 0.1).
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    L2-normalised cell embedding, ``n_cells x d_model``.
    """
    from scgpt import finetune_multiomics

    key = _batch_key(adata, batch_key)
    model, vocab = load_model(checkpoint, pretrained=pretrained, seed=seed)
    result = finetune_multiomics(
        model,
        adata,
        vocab=vocab,
        batch_key=key,
        pretrained=pretrained,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=max_len,
        mask_ratio=mask_ratio,
        dab_weight=dab_weight,
        nlayers=nlayers,
        dropout=dropout,
        atac_values=atac_values,
        val_fraction=val_fraction,
        layer="counts" if "counts" in adata.layers else None,
        device=device,
        seed=seed,
    )
    return np.asarray(result.embedding, dtype=np.float32)
