"""Batch integration: fine-tune with GEP (masked) + GEPC (MVC) + ECS + DAB + DSBN, then embed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData

from scgpt._utils import autocast_context, seed_everything
from scgpt.data import (
    BUCKET_FACTOR,
    CellDataset,
    Collator,
    LengthBucketSampler,
    length_sorted_batches,
)
from scgpt.embed import ModelLike, batch_codes, embed_cells
from scgpt.finetune._common import (
    adapt_model,
    best_epoch,
    expression_inputs,
    holdout_split,
    load_for_finetune,
    optimizer_and_scheduler,
    run_epochs,
)
from scgpt.losses import masked_bernoulli_nll, masked_mse
from scgpt.masking import mask_values
from scgpt.model import TransformerModel
from scgpt.vocab import GeneVocab


@dataclass
class IntegrationResult:
    """A model fine-tuned for integration and the integrated embedding.

    Attributes
    ----------
    model
        Fine-tuned model (``model.batch_categories`` lists the batches in label order).
    embedding
        L2-normalised cell embedding, n_cells x d.
    batch_categories
        Batch names in label order.
    history
        Mean losses per epoch, with ``val_mse`` when cells were held out for validation and
        ``best`` = 1 on the epoch whose weights the model holds.
    n_validation
        Cells held out of training to select the epoch (0: the last epoch is kept).
    """

    model: TransformerModel
    embedding: np.ndarray
    batch_categories: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    n_validation: int = 0

    @property
    def best_epoch(self) -> int | None:
        """Epoch (1-based) whose weights the model holds; ``None`` without validation."""
        return best_epoch(self.history)


def _integration_model(
    base: TransformerModel,
    adata: AnnData,
    batch_key: str,
    *,
    dab_weight: float,
    dsbn: bool,
    use_batch_labels: bool,
    explicit_zero_prob: bool,
    mvc: bool,
    ecs_threshold: float,
) -> tuple[TransformerModel, np.ndarray]:
    """The model adapted to the batches (``model.batch_categories``) and each cell's batch code."""
    cats = (
        sorted(adata.obs[batch_key].astype(str).unique())
        if batch_key in adata.obs.columns
        else None
    )
    b = batch_codes(adata, batch_key, cats)
    n_batches = len(cats)
    changes: dict[str, Any] = {
        "num_batch_labels": n_batches,
        "do_dab": dab_weight > 0,
        "domain_spec_batchnorm": "dsbn" if dsbn else False,
        "use_batch_labels": use_batch_labels,
        "explicit_zero_prob": explicit_zero_prob,
        "do_mvc": mvc or base.config.do_mvc,
        "ecs_threshold": ecs_threshold,
    }
    m = adapt_model(base, **changes)
    m.batch_categories = cats  # type: ignore[attr-defined]
    return m, b


def _dataset_maker(
    X: Any,
    gene_ids: np.ndarray,
    b: np.ndarray,
    vocab: GeneVocab,
    cfg: Any,
    *,
    max_len: int,
    binning: bool,
    include_zero_genes: bool,
    seed: int,
) -> Callable[[np.ndarray], CellDataset]:
    """``rows -> CellDataset`` of those cells (tokens, binned values, batch labels)."""

    def dataset(rows: np.ndarray) -> CellDataset:
        return CellDataset(
            X[rows],
            gene_ids,
            max_len=max_len,
            cls_id=vocab.cls_id,
            cls_value=cfg.pad_value,
            n_bins=cfg.n_bins if binning else None,
            include_zero_genes=include_zero_genes,
            obs={"batch_labels": b[rows]},
            seed=seed,
        )

    return dataset


def _epoch_batches(
    ds: CellDataset,
    collate: Collator,
    groups: np.ndarray | None,
    *,
    batch_size: int,
    seed: int,
    length_buckets: bool = True,
) -> Callable[[int], Iterator[dict[str, torch.Tensor]]]:
    """``epoch -> training batches`` of length-bucketed cells (one batch per group if given).

    ``length_buckets`` False draws every batch uniformly at random (the tutorials' shuffle):
    a bucket of one batch is sorted within itself only.
    """
    sampler = LengthBucketSampler(
        ds.lengths(),
        batch_size,
        shuffle=True,
        seed=seed,
        groups=groups,
        bucket_factor=BUCKET_FACTOR if length_buckets else 1,
    )

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        return (collate([ds[i] for i in idx]) for idx in sampler)

    return batches


ModalityTypes = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Token ids -> modality index of each token (``None`` for models without modalities)."""


def _modality_types(m: TransformerModel, token_modality: np.ndarray | None) -> ModalityTypes:
    """Look-up of each token's modality from its id (see ``token_modality``)."""
    cfg = m.config
    if cfg.use_mod and token_modality is None:
        raise ValueError("the model uses modality embeddings (use_mod): pass token_modality")
    mod_lookup = (
        None
        if token_modality is None
        else torch.as_tensor(np.asarray(token_modality), dtype=torch.long, device=m.device)
    )
    if mod_lookup is not None and mod_lookup.shape[0] != cfg.ntoken:
        raise ValueError(
            f"token_modality has {mod_lookup.shape[0]} entries for a vocabulary of {cfg.ntoken}"
        )

    def mod_types(gene_ids: torch.Tensor) -> torch.Tensor | None:
        return None if mod_lookup is None else mod_lookup[gene_ids.to(mod_lookup.device)]

    return mod_types


def _integration_loss(
    m: TransformerModel,
    gen: torch.Generator,
    mod_types: ModalityTypes,
    *,
    needs_labels: bool,
    mask_ratio: float,
    gep: bool,
    mvc: bool,
    ecs_weight: float,
    dab_weight: float,
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The training loss: GEP / GEPC on freshly masked values (drawn by ``gen``), ECS, DAB."""
    cfg = m.config

    def loss_fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values, pad = batch["values"], batch["padding_mask"]
        masked, mask = mask_values(
            values.cpu(), pad.cpu(), mask_ratio=mask_ratio, mask_value=cfg.mask_value, generator=gen
        )
        masked, mask = masked.to(values.device), mask.to(values.device)
        labels = batch["batch_labels"].long()
        out = m(
            batch["gene_ids"],
            masked,
            pad,
            batch_labels=labels if needs_labels else None,
            MVC=mvc,
            ECS=ecs_weight > 0,
            DAB=dab_weight > 0,
            mod_types=mod_types(batch["gene_ids"]),
        )
        parts: dict[str, torch.Tensor] = {}
        if gep:
            parts["loss_gep"] = masked_mse(out["mlm_output"], values, mask)
            if "mlm_zero_probs" in out:
                parts["loss_gep_zero"] = masked_bernoulli_nll(out["mlm_zero_probs"], values, mask)
        if mvc:
            parts["loss_gepc"] = masked_mse(out["mvc_output"], values, mask)
            if "mvc_zero_probs" in out:
                parts["loss_gepc_zero"] = masked_bernoulli_nll(out["mvc_zero_probs"], values, mask)
        if ecs_weight > 0:
            parts["loss_ecs"] = ecs_weight * out["loss_ecs"]
        if dab_weight > 0:
            parts["loss_dab"] = dab_weight * F.cross_entropy(out["dab_output"].float(), labels)
        if not parts:
            raise ValueError("every objective is disabled (gep, mvc, ecs_weight, dab_weight)")
        parts["loss"] = sum(parts.values())  # type: ignore[assignment]
        return parts

    return loss_fn


def _masked_validation(
    m: TransformerModel,
    val_ds: CellDataset,
    collate: Collator,
    mod_types: ModalityTypes,
    *,
    needs_labels: bool,
    batch_size: int,
    mask_ratio: float,
    precision: str,
    seed: int,
) -> Callable[[], dict[str, float]]:
    """Validation of the held-out cells: masked-value MSE of the expression decoder."""
    cfg = m.config
    # The same cells, tokens and masked positions every epoch, so epochs compare on
    # equal terms (the tutorial re-masks each epoch; its selection is noisier).
    val_items = [
        collate([val_ds[int(i)] for i in idx])
        for idx in length_sorted_batches(val_ds.lengths(), batch_size)
    ]
    val_gen = torch.Generator().manual_seed(seed + 1)
    val_masks = [
        mask_values(
            it["values"],
            it["padding_mask"],
            mask_ratio=mask_ratio,
            mask_value=cfg.mask_value,
            generator=val_gen,
        )
        for it in val_items
    ]

    @torch.inference_mode()
    def validate() -> dict[str, float]:
        # The tutorial's validation loss: MSE of the expression decoder at masked positions.
        total, count = 0.0, 0
        for it, (masked, mask) in zip(val_items, val_masks):
            dev = m.device
            with autocast_context(dev, precision):
                out = m(
                    it["gene_ids"].to(dev),
                    masked.to(dev),
                    it["padding_mask"].to(dev),
                    batch_labels=it["batch_labels"].long().to(dev) if needs_labels else None,
                    mod_types=mod_types(it["gene_ids"].to(dev)),
                )
            n = int(mask.sum())
            total += (
                float(masked_mse(out["mlm_output"].float(), it["values"].to(dev), mask.to(dev))) * n
            )
            count += n
        return {"val_mse": total / max(count, 1)}

    return validate


def finetune_integration(
    model: ModelLike,
    adata: AnnData,
    batch_key: str,
    *,
    vocab: GeneVocab | None = None,
    epochs: int = 15,
    lr: float = 1e-4,
    batch_size: int = 64,
    max_len: int = 1201,
    mask_ratio: float = 0.4,
    gep: bool = True,
    mvc: bool = True,
    ecs_weight: float = 10.0,
    ecs_threshold: float = 0.8,
    dab_weight: float = 1.0,
    dsbn: bool = True,
    use_batch_labels: bool = True,
    explicit_zero_prob: bool = True,
    include_zero_genes: bool = True,
    group_batches: bool = True,
    length_buckets: bool = True,
    val_fraction: float = 0.1,
    weight_decay: float = 0.0,
    schedule_gamma: float = 0.9,
    adam_eps: float = 1e-4,
    gene_col: str | None = None,
    layer: str | None = None,
    binning: bool = True,
    token_modality: np.ndarray | None = None,
    obsm_key: str | None = "X_scGPT",
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> IntegrationResult:
    """Fine-tune for batch integration (integration tutorial defaults: 1,200 HVGs upstream,
    zero genes tokenised too, mask ratio 0.4, GEP + GEPC + ECS (threshold 0.8, weight 10) +
    DAB (weight 1) + DSBN, batch embedding fed to the decoders, batch 64, 15 epochs, 10% of
    the cells held out to keep the best-validation-MSE epoch) and return the integrated
    embedding of every cell.

    Parameters
    ----------
    model
        Checkpoint folder, model or ``(model, vocab, config)``.
    adata
        Cells (typically HVG-selected counts or log-normalised values; binned per cell).
    batch_key
        ``obs`` column with the batch of each cell.
    vocab
        Vocabulary when ``model`` is a bare model.
    epochs, lr, batch_size, max_len, weight_decay, schedule_gamma
        Training settings.
    mask_ratio
        Fraction of values masked for GEP / GEPC.
    gep, mvc
        Masked expression prediction from the tokens (GEP) and from the cell embedding (GEPC).
    ecs_weight, ecs_threshold
        Elastic cell similarity (0 disables).
    dab_weight
        Domain-adversarial batch loss (0 disables).
    dsbn
        Domain-specific batch norm.
    use_batch_labels
        Concatenate a batch embedding to the decoder inputs (the tutorial's
        ``use_batch_labels=True``).
    explicit_zero_prob
        Add the Bernoulli zero heads and their losses.
    include_zero_genes
        Tokenise every gene of a cell, zeros included (the tutorial's
        ``include_zero_gene=True``), in training and in the final embedding; ``False``
        keeps the expressed genes only (the paper's faster variant, lower AvgBIO).
    val_fraction
        Fraction of the cells held out at random (drawn by ``seed``) whose masked-value MSE
        picks the epoch, as in the tutorial; 0 trains on every cell and keeps the last
        epoch. Every cell is embedded at the end.
    adam_eps
        Adam epsilon (the tutorial's 1e-4, its value under mixed precision).
    group_batches
        Draw each mini-batch from one batch (the tutorial's per-batch sampling; DSBN
        statistics are then per batch).
    length_buckets
        Group cells of similar length into mini-batches (less padding, faster); ``False``
        draws them uniformly (the tutorials' shuffle). Lengths differ between cell types,
        so bucketed mini-batches are less mixed in type, which the in-batch ECS loss sees.
    gene_col, layer
        Gene symbols column and expression layer.
    binning
        Bin each cell's values into ``n_bins`` (default); ``False``: the values are binned
        already (the multi-omic inputs, binned per modality by
        :func:`~scgpt.finetune.multiomics.bin_by_modality`).
    token_modality
        Modality index of every vocabulary row, for models with modality embeddings
        (``use_mod``): each token's modality is looked up from its id and passed to the
        decoders (see :func:`~scgpt.finetune.finetune_multiomics`).
    obsm_key
        Where to store the embedding in ``adata.obsm`` (``None``: do not store).
    device, precision, max_grad_norm, seed, progress
        As in :func:`~scgpt.finetune.finetune_classifier`.

    Returns
    -------
    IntegrationResult
    """
    seed_everything(seed)
    base, vocab = load_for_finetune(model, vocab, device)
    m, b = _integration_model(
        base,
        adata,
        batch_key,
        dab_weight=dab_weight,
        dsbn=dsbn,
        use_batch_labels=use_batch_labels,
        explicit_zero_prob=explicit_zero_prob,
        mvc=mvc,
        ecs_threshold=ecs_threshold,
    )
    cats = m.batch_categories  # type: ignore[attr-defined]
    cfg = m.config
    X, gene_ids = expression_inputs(adata, vocab, gene_col=gene_col, layer=layer)
    train_rows, val_rows = holdout_split(adata.n_obs, val_fraction, seed)

    dataset = _dataset_maker(
        X,
        gene_ids,
        b,
        vocab,
        cfg,
        max_len=max_len,
        binning=binning,
        include_zero_genes=include_zero_genes,
        seed=seed,
    )
    collate = Collator(vocab.pad_id, cfg.pad_value)
    batches = _epoch_batches(
        dataset(train_rows),
        collate,
        b[train_rows] if group_batches else None,
        batch_size=batch_size,
        seed=seed,
        length_buckets=length_buckets,
    )
    needs_labels = cfg.use_batch_labels or cfg.uses_dsbn
    mod_types = _modality_types(m, token_modality)
    loss_fn = _integration_loss(
        m,
        torch.Generator().manual_seed(seed),
        mod_types,
        needs_labels=needs_labels,
        mask_ratio=mask_ratio,
        gep=gep,
        mvc=mvc,
        ecs_weight=ecs_weight,
        dab_weight=dab_weight,
    )
    validate = None
    if val_rows.size:
        validate = _masked_validation(
            m,
            dataset(val_rows),
            collate,
            mod_types,
            needs_labels=needs_labels,
            batch_size=batch_size,
            mask_ratio=mask_ratio,
            precision=precision,
            seed=seed,
        )

    opt, sched = optimizer_and_scheduler(m, lr, weight_decay, schedule_gamma, eps=adam_eps)
    history = run_epochs(
        m,
        epochs=epochs,
        batches=batches,
        loss_fn=loss_fn,
        optimizer=opt,
        scheduler=sched,
        precision=precision,
        max_grad_norm=max_grad_norm,
        progress=progress,
        desc="integration",
        validate=validate,
        monitor="val_mse" if validate is not None else None,
        mode="min",
    )
    emb = embed_cells(
        adata,
        m,
        vocab=vocab,
        batch_size=batch_size,
        max_length=max_len,
        obsm_key=obsm_key,
        gene_col=gene_col,
        layer=layer,
        batch_key=batch_key if needs_labels else None,
        include_zero_genes=include_zero_genes,
        binning=binning,
        precision=precision,
        seed=seed,
        progress=progress,
        device=m.device,
    )
    return IntegrationResult(
        model=m,
        embedding=emb,
        batch_categories=cats,
        history=history,
        n_validation=int(val_rows.size),
    )
