"""scGPT perturbation prediction: control cell + perturbation flags -> perturbed expression.

The setting of the official perturbation tutorial, run by :func:`scgpt.train_perturbation_model`
and :func:`scgpt.predict_perturbation`: every gene of the data is an input token whose value
is a control cell's log-normalised expression (pad value 0), a flag embedding marks the
perturbed genes, and a new affine decoder predicts the perturbed cell's expression of every
gene as ``A(h) * x + b(h)`` of the control value ``x`` (MSE against a cell of the condition).
Only the gene encoder, value encoder and transformer layers come from the checkpoint; no
input batch norm; dropout 0. Defaults: lr 1e-4, batch 64, 15 epochs, up to 1,536 genes per
training sequence (more genes: a random subset per batch, all genes at prediction).
``expr_decoder="mlp", input_batchnorm=True, load_all_weights=True, dropout=0.2`` is this
suite's earlier variant (the pre-trained 3-layer decoder kept).

A condition is predicted as the mean prediction over ``n_control_cells`` random control
cells. Input and output are on the task's scale: the harness hands over log-normalised
expression (``normalize_total(1e4)`` + ``log1p`` of counts, or GEARS' processed values), the
model is trained to output that same scale, and the returned AnnData holds it.

Genes outside the checkpoint's vocabulary keep their position with the ``<pad>`` token (as in
the tutorial: the output covers every gene of ``train``); coverage is logged and a vocabulary
that covers none of the genes is an error. The conditions of the ``val`` split (obs
``split``) are held out of training and pick the epoch whose weights predict the test
conditions (``select_by``: validation Pearson-delta by default, the tutorial's Pearson with
``"pearson"``; training stops after ``early_stop`` epochs without improvement).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from baselines._scgpt_common import load_model, register_scgpt, vocabulary_mask

log = logging.getLogger(__name__)

CONDITION_KEY = "condition"
CONTROL = "ctrl"


@register_scgpt("perturbation")
def scgpt_perturbation(
    train: ad.AnnData,
    conditions: list[str],
    *,
    seed: int,
    checkpoint: str,
    pretrained: bool = True,
    epochs: int = 15,
    lr: float = 1e-4,
    batch_size: int = 64,
    max_len: int = 1536,
    n_control_cells: int = 300,
    val_control_cells: int = 100,
    early_stop: int = 10,
    select_by: str = "pearson_delta",
    dropout: float = 0.0,
    expr_decoder: str = "affine",
    input_batchnorm: bool = False,
    load_all_weights: bool = False,
    device: str = "auto",
) -> ad.AnnData:
    """scGPT fine-tuned to predict perturbed expression (tutorial settings), pre-trained or not.

    Registered as ``scgpt`` (``pretrained=True``) and ``scgpt_scratch`` (``pretrained=False``:
    the same training from a random initialisation of the architecture).

    Parameters
    ----------
    train
        Log-normalised training cells (control + training conditions), obs ``condition``.
    conditions
        Conditions to predict (``"A+ctrl"``, ``"A+B"``).
    seed
        Seed of initialisation, control-cell pairing and shuffling.
    checkpoint
        scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    pretrained
        The checkpoint's weights, or (``False``) only its architecture and gene vocabulary.
    epochs, lr, batch_size, max_len
        Training settings (tutorial: 15, 1e-4, 64, 1536).
    n_control_cells
        Control cells averaged per predicted condition.
    val_control_cells
        Control cells averaged per validation condition when ranking the epochs.
    early_stop
        Epochs without a better validation score before training stops.
    select_by
        Validation score ranking the epochs: ``"pearson_delta"`` or the tutorial's
        ``"pearson"``.
    dropout
        Dropout of the perturbation model (tutorial: 0).
    expr_decoder
        ``"affine"`` (tutorial: a new ``A(h) * x + b(h)`` decoder) or ``"mlp"``.
    input_batchnorm
        Batch norm on the input embeddings (tutorial: none).
    load_all_weights
        Copy every checkpoint weight that fits (the pre-trained decoder too) instead of the
        tutorial's encoder, value encoder and transformer layers only.
    device
        ``"auto"`` (CUDA when available, else CPU) or a torch device.

    Returns
    -------
    AnnData: one row per condition, ``train``'s genes, mean predicted log-normalised expression.
    """
    from scgpt import predict_perturbation, train_perturbation_model
    from scgpt.finetune.perturbation import OFFICIAL_LOAD_PREFIXES

    if CONDITION_KEY not in train.obs:
        raise KeyError(
            f"scGPT perturbation: training data lacks obs {CONDITION_KEY!r}; it has "
            f"{list(train.obs)}"
        )
    model, vocab = load_model(checkpoint, pretrained=pretrained, seed=seed)
    vocabulary_mask(train.var_names, vocab, what="perturbation", checkpoint=checkpoint)
    _warn_unmarkable(train, conditions)
    result = train_perturbation_model(
        model,
        train,
        condition_key=CONDITION_KEY,
        control=CONTROL,
        vocab=vocab,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=max_len,
        split_key="split",
        val_control_cells=val_control_cells,
        early_stop=early_stop,
        select_by=select_by,
        dropout=dropout,
        expr_decoder=expr_decoder,
        input_batchnorm=input_batchnorm,
        load_prefixes=None if load_all_weights else OFFICIAL_LOAD_PREFIXES,
        device=device,
        seed=seed,
    )
    if result.history:
        kept = result.best_epoch or len(result.history)
        log.info(
            "scGPT perturbation: %d epoch(s) trained, keeping epoch %d: %s",
            len(result.history),
            kept,
            result.history[kept - 1],
        )
    predicted = predict_perturbation(
        result,
        train,
        list(conditions),
        n_control_cells=n_control_cells,
        batch_size=batch_size,
        seed=seed,
    )
    # The contract: one row per requested condition, the training genes in their order.
    return ad.AnnData(
        X=np.asarray(predicted.X, dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index([str(c) for c in conditions], name="condition")),
        var=pd.DataFrame(index=train.var_names.copy()),
    )


def _warn_unmarkable(train: ad.AnnData, conditions: list[str]) -> None:
    """Warn (copied into run.json) when perturbed genes are not among the data's genes.

    The model marks a perturbation with a flag on the perturbed gene's token; a gene the data
    does not measure has no token, so the conditions it is in are predicted from control cells
    alone (PerturBench's 500-gene Norman subset holds 1 of its 31 perturbed genes).
    """
    from contract.conditions import parse_condition

    genes = set(train.var_names.astype(str))
    asked = set(train.obs[CONDITION_KEY].astype(str)) | {str(c) for c in conditions}
    perturbed = {g for c in asked for g in parse_condition(c, control=CONTROL)}
    missing = sorted(perturbed - genes)
    if missing:
        log.warning(
            "scGPT perturbation: %d of the %d perturbed genes are not among the %d genes of the "
            "data (e.g. %s): their perturbation cannot be marked, so the conditions they are in "
            "are predicted from control cells alone",
            len(missing),
            len(perturbed),
            len(genes),
            ", ".join(missing[:5]),
        )
