"""Cell-type annotation: fine-tune scGPT with a classification head (the CLS objective)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData

from scgpt._utils import autocast_context, seed_everything
from scgpt.data import CellDataset, Collator, LengthBucketSampler, length_sorted_batches
from scgpt.embed import ModelLike
from scgpt.finetune._common import (
    adapt_model,
    best_epoch,
    eval_mode,
    expression_inputs,
    holdout_split,
    labels_array,
    load_for_finetune,
    optimizer_and_scheduler,
    run_epochs,
)
from scgpt.model import TransformerModel
from scgpt.vocab import GeneVocab


@dataclass
class ClassifierResult:
    """A fine-tuned classifier.

    Attributes
    ----------
    model
        The model with its ``cls_decoder`` (``model.cls_classes`` holds the class names).
    classes
        Class name per output index.
    history
        Mean losses per epoch, with ``val_loss`` when cells were held out for validation
        and ``best`` = 1 on the epoch whose weights the model holds.
    n_validation
        Cells held out of training to select the epoch (0: the last epoch is kept).
    """

    model: TransformerModel
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    n_validation: int = 0

    @property
    def best_epoch(self) -> int | None:
        """Epoch (1-based) whose weights the model holds; ``None`` without validation."""
        return best_epoch(self.history)


def finetune_classifier(
    model: ModelLike,
    adata: AnnData,
    labels: str | Any,
    *,
    vocab: GeneVocab | None = None,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 32,
    max_len: int = 3001,
    val_fraction: float = 0.1,
    weight_decay: float = 0.0,
    schedule_gamma: float = 0.9,
    adam_eps: float = 1e-4,
    dropout: float | None = None,
    freeze_encoder: bool = False,
    gene_col: str | None = None,
    layer: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> ClassifierResult:
    """Fine-tune a pre-trained model to predict cell labels (paper defaults: CLS objective
    only, lr 1e-4, batch 32, 10 epochs, max_len 3001, all layers trained, 10% of the cells
    held out to keep the best-validation-loss epoch).

    Parameters
    ----------
    model
        Checkpoint folder, model or ``(model, vocab, config)``; a classification head with one
        output per class is created (new weights) if the model has none of that size.
    adata
        Reference cells (raw counts or log-normalised; values are binned per cell).
    labels
        ``obs`` column name or one label per cell.
    vocab
        Vocabulary when ``model`` is a bare model without ``.vocab``.
    epochs, lr, batch_size, max_len, weight_decay, schedule_gamma
        Training settings (step decay of the learning rate by ``schedule_gamma`` per epoch).
    val_fraction
        Fraction of the cells held out at random (drawn by ``seed``) whose cross-entropy
        picks the epoch, as in the annotation tutorial; 0 trains on every cell and keeps the
        last epoch.
    adam_eps
        Adam epsilon (the tutorial's 1e-4, its value under mixed precision).
    dropout
        Override the model's dropout.
    freeze_encoder
        Train only the classification head.
    gene_col, layer
        Gene symbols column of ``var`` and expression layer.
    device, precision
        Hardware (``precision="auto"``: bf16 autocast on CUDA).
    max_grad_norm
        Gradient clipping.
    seed
        Seed.
    progress
        Show progress bars.

    Returns
    -------
    ClassifierResult
    """
    seed_everything(seed)
    base, vocab = load_for_finetune(model, vocab, device)
    y_str = labels_array(adata, labels)
    classes = sorted(set(y_str.tolist()))
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to train a classifier, got {classes}")
    changes: dict[str, Any] = {"n_cls": len(classes)}
    if dropout is not None:
        changes["dropout"] = dropout
    m = adapt_model(base, **changes)
    m.cls_classes = classes  # type: ignore[attr-defined]
    if freeze_encoder:
        for name, p in m.named_parameters():
            p.requires_grad = name.startswith("cls_decoder.")
    X, gene_ids = expression_inputs(adata, vocab, gene_col=gene_col, layer=layer)
    y = np.searchsorted(np.asarray(classes), y_str)
    cfg = m.config
    train_rows, val_rows = holdout_split(adata.n_obs, val_fraction, seed)

    def dataset(rows: np.ndarray, draws: str = "index") -> CellDataset:
        return CellDataset(
            X[rows],
            gene_ids,
            max_len=max_len,
            cls_id=vocab.cls_id,
            cls_value=cfg.pad_value,
            n_bins=cfg.n_bins,
            obs={"label": y[rows]},
            seed=seed,
            draws=draws,
        )

    ds = dataset(train_rows)
    collate = Collator(vocab.pad_id, cfg.pad_value)
    sampler = LengthBucketSampler(ds.lengths(), batch_size, shuffle=True, seed=seed)

    def batches(epoch: int):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        return (collate([ds[i] for i in idx]) for idx in sampler)

    def loss_fn(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = m(b["gene_ids"], b["values"], b["padding_mask"], CLS=True)
        return {"loss": F.cross_entropy(out["cls_output"].float(), b["label"].long())}

    validate = None
    if val_rows.size:
        # Validated as predict_classifier predicts: each cell's draws keyed by its content.
        val_ds = dataset(val_rows, draws="content")
        val_batches = length_sorted_batches(val_ds.lengths(), batch_size)

        @torch.inference_mode()
        def validate() -> dict[str, float]:
            total = 0.0
            for idx in val_batches:
                b = collate([val_ds[int(i)] for i in idx])
                b = {k: v.to(m.device) for k, v in b.items()}
                with autocast_context(m.device, precision):
                    out = m(b["gene_ids"], b["values"], b["padding_mask"], CLS=True)
                total += float(
                    F.cross_entropy(out["cls_output"].float(), b["label"].long(), reduction="sum")
                )
            return {"val_loss": total / val_rows.size}

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
        desc="classifier",
        validate=validate,
        monitor="val_loss" if validate is not None else None,
        mode="min",
    )
    for p in m.parameters():
        p.requires_grad = True
    return ClassifierResult(
        model=m, classes=classes, history=history, n_validation=int(val_rows.size)
    )


@torch.inference_mode()
def predict_classifier(
    model: ClassifierResult | TransformerModel,
    adata: AnnData,
    *,
    classes: list[str] | None = None,
    vocab: GeneVocab | None = None,
    batch_size: int = 64,
    max_len: int = 3001,
    gene_col: str | None = None,
    layer: str | None = None,
    precision: str = "auto",
    return_proba: bool = False,
    seed: int = 0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predict a label per cell with a fine-tuned classifier.

    Parameters
    ----------
    model
        :class:`ClassifierResult` or a model with a classification head.
    adata
        Query cells.
    classes
        Class names (default: ``result.classes`` / ``model.cls_classes``).
    vocab, batch_size, max_len, gene_col, layer, precision, seed
        As in :func:`finetune_classifier`.
    return_proba
        Also return the class probabilities (n_cells x n_classes).

    Returns
    -------
    numpy.ndarray
        Predicted class name per cell (and the probabilities with ``return_proba``).
    """
    if isinstance(model, ClassifierResult):
        classes = classes or model.classes
        model = model.model
    classes = classes or getattr(model, "cls_classes", None)
    if classes is None:
        raise ValueError("pass classes= (the class name of every output of the head)")
    vocab = vocab or model.vocab
    if vocab is None:
        raise ValueError("the model has no vocabulary attached: pass vocab=")
    cfg = model.config
    X, gene_ids = expression_inputs(adata, vocab, gene_col=gene_col, layer=layer)
    ds = CellDataset(
        X,
        gene_ids,
        max_len=max_len,
        cls_id=vocab.cls_id,
        cls_value=cfg.pad_value,
        n_bins=cfg.n_bins,
        seed=seed,
        # A cell's prediction depends on the cell, not on its position or on the chunking.
        draws="content",
    )
    collate = Collator(vocab.pad_id, cfg.pad_value)
    proba = np.zeros((adata.n_obs, len(classes)), dtype=np.float32)
    dev = model.device
    with eval_mode(model):
        for idx in length_sorted_batches(ds.lengths(), batch_size):
            b = collate([ds[int(i)] for i in idx])
            with autocast_context(dev, precision):
                out = model(
                    b["gene_ids"].to(dev), b["values"].to(dev), b["padding_mask"].to(dev), CLS=True
                )
            proba[idx] = torch.softmax(out["cls_output"].float(), dim=1).cpu().numpy()
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)].astype(str)
    return (pred, proba) if return_proba else pred
