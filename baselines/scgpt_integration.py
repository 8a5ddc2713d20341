"""scGPT batch integration: fine-tuned, zero-shot and from-scratch cell embeddings.

Input (see :mod:`benchmark.tasks.integration`): counts of the task's shared HVGs in ``X``
and ``obs["batch"]``. Values are binned per cell, so counts and log-normalised values give
the same tokens; the default ``max_len`` of 1,201 (``<cls>`` + 1,200 HVGs) keeps every HVG
of a cell. Genes outside the checkpoint's vocabulary are dropped (logged).

- ``scgpt``: the pre-trained model fine-tuned with the integration tutorial's objectives
  (:func:`scgpt.finetune_integration`): masked gene expression prediction (GEP, mask ratio
  0.4) and its cell-embedding form (GEPC / MVC), elastic cell similarity (threshold 0.8,
  weight 10), the domain-adversarial batch loss (DAB, weight 1), domain-specific batch
  norm (DSBN) and a batch embedding concatenated to the decoder inputs
  (``use_batch_labels``); every HVG of a cell is a token, zeros included
  (``include_zero_genes``; ``False`` is the paper's faster non-zero variant); lr 1e-4,
  batch 64, 15 epochs, mini-batches drawn within one batch; 10% of the cells held out
  (drawn by the seed) and the best-validation-MSE epoch kept, every cell embedded.
- ``scgpt_zeroshot``: the pre-trained model's ``<cls>`` embedding, no training.
- ``scgpt_scratch``: ``scgpt``'s training from a random initialisation of the architecture.

Each returns the L2-normalised cell embedding (``n_cells x d_model``).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from baselines._scgpt_common import load_model, register_scgpt, vocabulary_genes
from contract.registry import register


def _check_batches(adata: ad.AnnData, batch_key: str) -> None:
    if batch_key not in adata.obs:
        raise KeyError(
            f"scGPT integration: obs has no batch column {batch_key!r}; it has {list(adata.obs)}"
        )


@register_scgpt("integration")
def scgpt_integration(
    adata: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    pretrained: bool = True,
    batch_key: str = "batch",
    epochs: int = 15,
    lr: float = 1e-4,
    batch_size: int = 64,
    max_len: int = 1201,
    mask_ratio: float = 0.4,
    ecs_weight: float = 10.0,
    ecs_threshold: float = 0.8,
    dab_weight: float = 1.0,
    dsbn: bool = True,
    use_batch_labels: bool = True,
    include_zero_genes: bool = True,
    length_buckets: bool = True,
    val_fraction: float = 0.1,
    device: str = "auto",
) -> np.ndarray:
    """scGPT fine-tuned with GEP + GEPC + ECS + DAB + DSBN (tutorial settings), pre-trained or not.

    Registered as ``scgpt`` (``pretrained=True``) and ``scgpt_scratch`` (``pretrained=False``:
    the same objectives and settings from a random initialisation of the architecture).

    Parameters
    ----------
    adata
        Cells x HVGs (counts in ``X``) with ``obs[batch_key]``.
    seed
        Seed of masking, sampling and shuffling.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    pretrained
        The checkpoint's weights, or (``False``) only its architecture and gene vocabulary.
    batch_key
        obs column with the batch.
    epochs, lr, batch_size, max_len
        Fine-tuning settings (tutorial: 15, 1e-4, 64, n_hvg + 1).
    mask_ratio
        Fraction of values masked for GEP / GEPC.
    ecs_weight, ecs_threshold
        Elastic cell similarity (0 weight disables it).
    dab_weight
        Domain-adversarial batch loss (0 disables it).
    dsbn
        Domain-specific batch normalisation.
    use_batch_labels
        Batch embedding concatenated to the decoder inputs (tutorial: True).
    include_zero_genes
        Tokenise zero genes too (tutorial: True; False = the paper's faster variant).
    length_buckets
        Mini-batches of cells of similar length (faster); False: the tutorial's uniform
        shuffle.
    val_fraction
        Cells held out (drawn by ``seed``) to keep the best-validation epoch (tutorial: 0.1).
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    L2-normalised cell embedding, ``n_cells x d_model``.
    """
    from scgpt import finetune_integration

    _check_batches(adata, batch_key)
    model, vocab = load_model(checkpoint, pretrained=pretrained, seed=seed)
    data = vocabulary_genes(adata, vocab, what="integration", checkpoint=checkpoint)
    result = finetune_integration(
        model,
        data,
        batch_key,
        vocab=vocab,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=max_len,
        mask_ratio=mask_ratio,
        ecs_weight=ecs_weight,
        ecs_threshold=ecs_threshold,
        dab_weight=dab_weight,
        dsbn=dsbn,
        use_batch_labels=use_batch_labels,
        include_zero_genes=include_zero_genes,
        length_buckets=length_buckets,
        val_fraction=val_fraction,
        obsm_key=None,
        device=device,
        seed=seed,
    )
    return np.asarray(result.embedding, dtype=np.float32)


@register("integration", "scgpt_zeroshot", label="scGPT (zero-shot)", needs_checkpoint=True)
def scgpt_zeroshot_integration(
    adata: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    batch_size: int = 64,
    max_len: int = 1201,
    device: str = "auto",
) -> np.ndarray:
    """The pre-trained scGPT cell embedding, without fine-tuning or batch information.

    Parameters
    ----------
    adata
        Cells x HVGs (counts in ``X``).
    seed
        Seed of the down-sampling of cells with more than ``max_len - 1`` expressed genes.
    checkpoint
        scGPT checkpoint folder.
    batch_size, max_len
        Cells per forward pass; tokens per cell including ``<cls>``.
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    L2-normalised cell embedding, ``n_cells x d_model``.
    """
    from scgpt import embed_cells

    model, vocab = load_model(checkpoint, pretrained=True, seed=seed)
    data = vocabulary_genes(adata, vocab, what="integration", checkpoint=checkpoint)
    return embed_cells(
        data,
        model,
        vocab=vocab,
        batch_size=batch_size,
        max_length=max_len,
        device=device,
        obsm_key=None,
        seed=seed,
    )
