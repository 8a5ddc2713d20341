"""Genetic perturbation prediction: control cell + perturbation flags -> post-perturbation expression.

Setting of the official perturbation tutorial (``Tutorial_Perturbation`` with
``scgpt/model/generation_model.py``): every gene of the data is an input token (no
``<cls>``), the value is the control cell's log-normalised expression (pad value 0), a
perturbation-flag embedding marks the perturbed genes (flag 1; flag 0 is the padding row),
and a new affine expression decoder predicts the perturbed cell's expression of every gene
as ``A(h) * x + b(h)`` of the control value ``x`` (MSE). Only the gene encoder, the value
encoder and the transformer layers come from the checkpoint (the tutorial's
``load_param_prefixs``); the flag embedding and the decoder start new; no batch norm on the
input embeddings; dropout 0. :func:`perturbation_model` builds it (the earlier variant of
this suite, the pre-trained 3-layer decoder with an input batch norm, stays available through
its arguments). Genes missing from the vocabulary keep their position with the ``<pad>``
token id, as in the tutorial.

Long inputs are never silently truncated: when a data set has more genes than ``max_len``,
each training batch uses a random subset of ``max_len`` genes (always including the batch's
perturbed genes; all genes are seen over the batches) and a warning says so; prediction
always runs on all genes (with a warning that the sequence is longer than in training).

Conditions of the validation split (``obs[split_key] == val_split``) are held out of
training, predicted after every epoch and scored by Pearson (correlation of predicted and
observed mean expression over all genes, averaged over conditions) and Pearson-delta (the
same for the change from the control mean); the weights of the best epoch by ``select_by``
are kept, as the tutorial keeps its best model on the validation set, and training stops
early after ``early_stop`` epochs without improvement. The tutorial ranks epochs by Pearson
(``select_by="pearson"``); that one is close to 1 for any model that reproduces the control
profile and barely separates epochs, so the default ranks by Pearson-delta, the paper's
headline metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from contract.conditions import parse_condition
from scgpt._utils import autocast_context, logger, seed_everything
from scgpt.embed import ModelLike
from scgpt.finetune._common import (
    adapt_model,
    best_epoch,
    eval_mode,
    load_for_finetune,
    optimizer_and_scheduler,
    run_epochs,
)
from scgpt.losses import masked_mse
from scgpt.model import TransformerModel
from scgpt.preprocess import gene_names
from scgpt.vocab import GeneVocab, map_genes

PERTURBED_FLAG = 1
OFFICIAL_LOAD_PREFIXES = ("encoder", "value_encoder", "transformer_encoder")
"""Modules the official perturbation tutorial loads from the checkpoint (``load_param_prefixs``)."""
SELECTION_SCORES = {"pearson": "val_pearson", "pearson_delta": "val_pearson_delta"}


@dataclass
class PerturbationResult:
    """A trained perturbation model and what it needs to predict.

    Attributes
    ----------
    model
        The model (with ``pert_encoder``).
    genes
        Gene names of the training data, in column order.
    gene_ids
        Token id per gene (``<pad>`` id for genes outside the vocabulary).
    control
        Name of the control condition.
    condition_key
        ``obs`` column of conditions.
    max_len
        Sequence length used in training.
    history
        Mean losses per epoch, with ``val_pearson`` and ``val_pearson_delta`` when there was
        a validation split and ``best`` = 1 on the epoch whose weights the model holds.
    val_conditions
        Conditions held out of training for epoch selection.
    """

    model: TransformerModel
    genes: list[str]
    gene_ids: np.ndarray
    control: str
    condition_key: str
    max_len: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_conditions: list[str] = field(default_factory=list)

    @property
    def best_epoch(self) -> int | None:
        """Epoch (1-based) whose weights the model holds; ``None`` without validation."""
        return best_epoch(self.history)


def _flags_for(n_genes: int, gene_pos: dict[str, int], condition: str, control: str) -> np.ndarray:
    flags = np.zeros(n_genes, dtype=np.int64)
    missing = []
    for g in parse_condition(condition, control=control):
        if g in gene_pos:
            flags[gene_pos[g]] = PERTURBED_FLAG
        else:
            missing.append(g)
    if missing:
        warnings.warn(
            f"condition {condition!r}: perturbed gene(s) {missing} are not among the {n_genes} genes of the "
            "data, so their perturbation cannot be marked; the prediction ignores them",
            stacklevel=3,
        )
    return flags


def _dense_rows(X: np.ndarray | sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    part = X[rows]
    return (
        part.toarray().astype(np.float32)
        if sp.issparse(part)
        else np.asarray(part, dtype=np.float32)
    )


@torch.inference_mode()
def _predict_means(
    model: TransformerModel,
    X: np.ndarray | sp.csr_matrix,
    gene_ids: torch.Tensor,
    flags: Sequence[np.ndarray],
    control_rows: Sequence[np.ndarray],
    *,
    batch_size: int,
    precision: str,
    progress: bool = False,
) -> np.ndarray:
    """Mean predicted expression per condition: ``flags[i]`` applied to ``control_rows[i]``.

    The (condition, control cell) pairs of all conditions are batched together, so many
    conditions with few control cells each (reverse perturbation's candidate pairs) cost as
    few forward passes as one condition with many cells.
    """
    from tqdm.auto import tqdm

    dev = model.device
    n_genes = len(gene_ids)
    pair_condition = np.concatenate(
        [np.full(len(rows), ci, dtype=np.int64) for ci, rows in enumerate(control_rows)]
    )
    pair_row = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in control_rows])
    flag_table = torch.as_tensor(np.stack(flags), device=dev)
    totals = torch.zeros((len(flags), n_genes), dtype=torch.float64, device=dev)
    starts = range(0, len(pair_row), batch_size)
    for s in tqdm(starts, desc="predict_perturbation", disable=not progress):
        which = torch.as_tensor(pair_condition[s : s + batch_size], device=dev)
        vals = torch.from_numpy(_dense_rows(X, pair_row[s : s + batch_size])).to(dev)
        B = len(which)
        with autocast_context(dev, precision):
            pred = model(gene_ids.expand(B, -1), vals, None, pert_flags=flag_table[which])
        totals.index_add_(0, which, pred["mlm_output"].double())
    counts = np.array([len(rows) for rows in control_rows], dtype=np.float64)
    return (totals.cpu().numpy() / counts[:, None]).astype(np.float32)


def _mean_pearson(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean over conditions (rows) of corr(predicted, observed) over genes; NaN if undefined."""
    values = []
    for p, o in zip(predicted, observed):
        if np.std(p) > 0 and np.std(o) > 0:
            values.append(float(np.corrcoef(p, o)[0, 1]))
    return float(np.mean(values)) if values else float("nan")


def _pearson_delta(predicted: np.ndarray, observed: np.ndarray, ctrl_mean: np.ndarray) -> float:
    """Mean over conditions of corr(predicted - control, observed - control); NaN if undefined."""
    return _mean_pearson(predicted - ctrl_mean, observed - ctrl_mean)


def perturbation_model(
    base: TransformerModel,
    *,
    dropout: float = 0.0,
    expr_decoder: str = "affine",
    input_batchnorm: bool = False,
    load_prefixes: Sequence[str] | None = OFFICIAL_LOAD_PREFIXES,
) -> TransformerModel:
    """The perturbation model built on ``base`` (defaults: the official tutorial's).

    Parameters
    ----------
    base
        Pre-trained (or randomly initialised) model.
    dropout
        Dropout of the new model (tutorial: 0).
    expr_decoder
        ``"affine"`` (a new ``A(h) * x + b(h)`` decoder, the tutorial's) or ``"mlp"``
        (the released 3-layer decoder).
    input_batchnorm
        Batch norm on the summed input embeddings (the tutorial has none).
    load_prefixes
        Top-level modules copied from ``base`` (tutorial: gene encoder, value encoder,
        transformer layers); ``None`` copies every weight that fits (with ``"mlp"``, the
        pre-trained expression decoder too).

    Returns
    -------
    TransformerModel
        A new model with the perturbation-flag embedding (pad row 0), pad value 0 and no
        batch labels, MVC, generative flags or classifier (the tutorial's model has none
        of them in its forward pass).
    """
    return adapt_model(
        base,
        load_prefixes=load_prefixes,
        use_pert_flags=True,
        pert_pad_id=0,
        expr_decoder_style=expr_decoder,
        domain_spec_batchnorm="batchnorm" if input_batchnorm else False,
        dropout=float(dropout),
        pad_value=0.0,
        use_batch_labels=False,
        do_dab=False,
        do_mvc=False,
        use_generative=False,
        explicit_zero_prob=False,
        n_cls=1,
    )


def _validation_split(
    adata: AnnData, conds: np.ndarray, control: str, split_key: str | None, val_split: str
) -> list[str]:
    """Non-control conditions whose cells are all in the validation split."""
    if split_key is None or split_key not in adata.obs.columns:
        return []
    in_val = adata.obs[split_key].astype(str).to_numpy() == val_split
    val = sorted({c for c in np.unique(conds[in_val]) if c != control})
    mixed = [c for c in val if not in_val[conds == c].all()]
    if mixed:
        raise ValueError(
            f"obs[{split_key!r}]: condition(s) {mixed[:5]} have cells both in {val_split!r} and in "
            "other splits; a split assigns whole conditions"
        )
    return val


def _condition_rows(
    adata: AnnData, condition_key: str, control: str, split_key: str | None, val_split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Each cell's condition, the control and training rows, and the validation conditions."""
    if condition_key not in adata.obs.columns:
        raise KeyError(
            f"condition_key {condition_key!r} is not an obs column (columns: {list(adata.obs.columns)})"
        )
    conds = adata.obs[condition_key].astype(str).to_numpy()
    ctrl_rows = np.flatnonzero(conds == control)
    if ctrl_rows.size == 0:
        raise ValueError(f"no control cells ({condition_key} == {control!r}) in the training data")
    val_conditions = _validation_split(adata, conds, control, split_key, val_split)
    train_rows = np.flatnonzero(~np.isin(conds, val_conditions))
    if val_conditions:
        logger.info(
            "perturbation: %d validation condition(s) held out to select the epoch: %s",
            len(val_conditions),
            val_conditions,
        )
    return conds, ctrl_rows, train_rows, val_conditions


def _gene_tokens(
    adata: AnnData, vocab: GeneVocab, gene_col: str | None, max_len: int
) -> tuple[list[str], np.ndarray]:
    """Gene names and token ids (``<pad>`` for genes outside the vocabulary), with warnings."""
    genes = [str(g) for g in gene_names(adata, gene_col)]
    ids, report = map_genes(genes, vocab)
    if report.n_matched < report.n_total:
        logger.warning(
            "%d of %d genes are not in the vocabulary; they stay in the input with the <pad> token",
            report.n_total - report.n_matched,
            report.n_total,
        )
    gene_ids = np.where(ids >= 0, ids, vocab.pad_id)
    n_genes = len(genes)
    if n_genes > max_len:
        warnings.warn(
            f"the data has {n_genes} genes, more than max_len={max_len}: each training batch uses a random "
            f"subset of {max_len} genes (perturbed genes always included); prediction uses all {n_genes} genes",
            stacklevel=3,  # the caller of train_perturbation_model
        )
    return genes, gene_ids


def _float32_matrix(adata: AnnData, layer: str | None) -> np.ndarray | sp.csr_matrix:
    """``X`` (or ``layer``) as float32: CSR if sparse, else a dense array."""
    X = adata.layers[layer] if layer is not None else adata.X
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)


def _pair_batches(
    X: np.ndarray | sp.csr_matrix,
    conds: np.ndarray,
    cond_flags: dict[str, np.ndarray],
    train_rows: np.ndarray,
    ctrl_rows: np.ndarray,
    gid_t: torch.Tensor,
    rng: np.random.Generator,
    *,
    batch_size: int,
    max_len: int,
) -> Callable[[int], Iterator[dict[str, torch.Tensor]]]:
    """``epoch -> batches`` of (random control cell + the cell's flags -> the cell) pairs.

    With more genes than ``max_len`` each batch keeps its perturbed genes and a random
    subset of the others (all drawn from ``rng``, in the order of the batches).
    """
    n_genes = len(gid_t)

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = rng.permutation(train_rows)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            src = rng.choice(ctrl_rows, size=len(rows))
            inp = _dense_rows(X, src)
            tgt = _dense_rows(X, rows)
            flags = np.stack([cond_flags[conds[r]] for r in rows])
            cols = np.arange(n_genes)
            if n_genes > max_len:
                pert_cols = np.flatnonzero(flags.any(0))
                rest = np.setdiff1d(cols, pert_cols)
                pick = rng.choice(rest, size=max(0, max_len - len(pert_cols)), replace=False)
                cols = np.sort(np.concatenate([pert_cols, pick]))
            yield {
                "gene_ids": gid_t[cols].expand(len(rows), -1).clone(),
                "values": torch.from_numpy(inp[:, cols]),
                "target": torch.from_numpy(tgt[:, cols]),
                "pert_flags": torch.from_numpy(flags[:, cols]),
            }

    return batches


def _perturbation_loss(
    m: TransformerModel,
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """MSE of the predicted perturbed expression over every gene of the batch."""

    def loss_fn(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = m(b["gene_ids"], b["values"], None, pert_flags=b["pert_flags"])
        return {
            "loss": masked_mse(
                out["mlm_output"], b["target"], torch.ones_like(b["target"], dtype=torch.bool)
            )
        }

    return loss_fn


def _validation_scores(
    m: TransformerModel,
    X: np.ndarray | sp.csr_matrix,
    conds: np.ndarray,
    ctrl_rows: np.ndarray,
    val_flags: list[np.ndarray],
    val_conditions: list[str],
    gid_t: torch.Tensor,
    rng: np.random.Generator,
    *,
    val_control_cells: int,
    batch_size: int,
    precision: str,
) -> Callable[[], dict[str, float]]:
    """Pearson and Pearson-delta of the validation conditions' predicted mean expression.

    Each condition is predicted from the same fixed sample of control cells (drawn from
    ``rng``) every epoch.
    """
    val_ctrl = rng.choice(ctrl_rows, size=min(val_control_cells, ctrl_rows.size), replace=False)
    ctrl_mean = np.asarray(X[ctrl_rows].mean(axis=0), dtype=np.float64).ravel()
    observed = np.stack(
        [np.asarray(X[conds == c].mean(axis=0), dtype=np.float64).ravel() for c in val_conditions]
    )
    gid_dev = gid_t.to(m.device)

    def validate() -> dict[str, float]:
        predicted = _predict_means(
            m,
            X,
            gid_dev,
            val_flags,
            [val_ctrl] * len(val_flags),
            batch_size=batch_size,
            precision=precision,
        )
        return {
            "val_pearson": _mean_pearson(predicted, observed),
            "val_pearson_delta": _pearson_delta(predicted, observed, ctrl_mean),
        }

    return validate


def train_perturbation_model(
    model: ModelLike,
    adata: AnnData,
    *,
    condition_key: str = "condition",
    control: str = "ctrl",
    vocab: GeneVocab | None = None,
    epochs: int = 15,
    lr: float = 1e-4,
    batch_size: int = 64,
    max_len: int = 1536,
    split_key: str | None = "split",
    val_split: str = "val",
    early_stop: int | None = 10,
    val_control_cells: int = 100,
    select_by: str = "pearson_delta",
    dropout: float = 0.0,
    expr_decoder: str = "affine",
    input_batchnorm: bool = False,
    load_prefixes: Sequence[str] | None = OFFICIAL_LOAD_PREFIXES,
    weight_decay: float = 0.0,
    schedule_gamma: float = 0.9,
    adam_eps: float = 1e-8,
    gene_col: str | None = None,
    layer: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> PerturbationResult:
    """Train the perturbation model (tutorial defaults: lr 1e-4, batch 64, 15 epochs, pad value 0,
    max_len 1536, dropout 0, a new affine decoder, no input batch norm).

    Every perturbed cell is paired with a random control cell each epoch: input = control
    expression + flags of the condition's genes, target = the perturbed cell. Control cells
    are paired with another control cell and no flag. Conditions of the validation split
    select the epoch (module docstring).

    Parameters
    ----------
    model
        Checkpoint folder, model or ``(model, vocab, config)``.
    adata
        Log-normalised expression (``X`` or ``layer``) with ``obs[condition_key]``.
    condition_key, control
        Condition column and the name of the control condition.
    vocab
        Vocabulary when ``model`` is a bare model.
    epochs, lr, batch_size, max_len, weight_decay, schedule_gamma, max_grad_norm
        Training settings.
    split_key, val_split
        ``obs`` column of the split and its validation value: those conditions are held out
        of training and rank the epochs (``split_key=None`` or no such cells: every cell
        trains and the last epoch is kept).
    early_stop
        Epochs without a better validation score before stopping (``None``: never).
    val_control_cells
        Control cells (a fixed sample) averaged per validation condition.
    select_by
        Validation score that ranks the epochs: ``"pearson_delta"`` (default) or
        ``"pearson"`` (the tutorial's; see the module docstring).
    dropout, expr_decoder, input_batchnorm, load_prefixes
        The model, see :func:`perturbation_model`.
    adam_eps
        Adam epsilon (the tutorial's Adam keeps PyTorch's 1e-8).
    gene_col, layer
        Gene symbols column and expression layer.
    device, precision, seed, progress
        As in :func:`~scgpt.finetune.finetune_classifier`.

    Returns
    -------
    PerturbationResult
    """
    if select_by not in SELECTION_SCORES:
        raise ValueError(f"select_by must be one of {sorted(SELECTION_SCORES)}, got {select_by!r}")
    seed_everything(seed)
    base, vocab = load_for_finetune(model, vocab, device)
    conds, ctrl_rows, train_rows, val_conditions = _condition_rows(
        adata, condition_key, control, split_key, val_split
    )
    genes, gene_ids = _gene_tokens(adata, vocab, gene_col, max_len)
    n_genes = len(genes)
    m = perturbation_model(
        base,
        dropout=dropout,
        expr_decoder=expr_decoder,
        input_batchnorm=input_batchnorm,
        load_prefixes=load_prefixes,
    )
    X = _float32_matrix(adata, layer)
    gene_pos = {g: i for i, g in enumerate(genes)}
    cond_flags = {c: _flags_for(n_genes, gene_pos, c, control) for c in np.unique(conds)}
    gid_t = torch.as_tensor(gene_ids)
    batches = _pair_batches(
        X,
        conds,
        cond_flags,
        train_rows,
        ctrl_rows,
        gid_t,
        np.random.default_rng(seed),
        batch_size=batch_size,
        max_len=max_len,
    )
    validate = None
    if val_conditions:
        validate = _validation_scores(
            m,
            X,
            conds,
            ctrl_rows,
            [cond_flags[c] for c in val_conditions],
            val_conditions,
            gid_t,
            np.random.default_rng(seed + 1),
            val_control_cells=val_control_cells,
            batch_size=batch_size,
            precision=precision,
        )

    opt, sched = optimizer_and_scheduler(m, lr, weight_decay, schedule_gamma, eps=adam_eps)
    history = run_epochs(
        m,
        epochs=epochs,
        batches=batches,
        loss_fn=_perturbation_loss(m),
        optimizer=opt,
        scheduler=sched,
        precision=precision,
        max_grad_norm=max_grad_norm,
        progress=progress,
        desc="perturbation",
        validate=validate,
        monitor=SELECTION_SCORES[select_by] if validate is not None else None,
        patience=early_stop,
    )
    return PerturbationResult(
        model=m,
        genes=genes,
        gene_ids=gene_ids,
        control=control,
        condition_key=condition_key,
        max_len=max_len,
        history=history,
        val_conditions=val_conditions,
    )


@torch.inference_mode()
def predict_perturbation(
    result: PerturbationResult,
    adata: AnnData,
    conditions: Sequence[str],
    *,
    n_control_cells: int = 300,
    batch_size: int = 64,
    gene_col: str | None = None,
    layer: str | None = None,
    precision: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> AnnData:
    """Predict the mean post-perturbation expression of each condition.

    Parameters
    ----------
    result
        Output of :func:`train_perturbation_model`.
    adata
        Data holding control cells (``obs[result.condition_key] == result.control``; all
        cells are used as controls when the column is absent) with the training genes.
    conditions
        Conditions to predict (``"A+ctrl"``, ``"A+B"``).
    n_control_cells
        Control cells sampled per condition (predictions are averaged over them).
    batch_size, gene_col, layer, precision, seed, progress
        Inference settings.

    Returns
    -------
    AnnData
        One row per condition (``obs_names`` = conditions), ``var_names`` = the training
        genes, ``X`` = mean predicted log-normalised expression.
    """
    m = result.model
    genes = [str(g) for g in gene_names(adata, gene_col)]
    if genes != result.genes:
        pos = {g: i for i, g in enumerate(genes)}
        missing = [g for g in result.genes if g not in pos]
        if missing:
            raise ValueError(
                f"{len(missing)} training genes are missing from adata (e.g. {missing[:5]})"
            )
        adata = adata[:, [pos[g] for g in result.genes]]
    n_genes = len(result.genes)
    if n_genes > result.max_len:
        warnings.warn(
            f"predicting with all {n_genes} genes, longer than the training max_len={result.max_len} "
            "(nothing is truncated; memory grows with the square of the length)",
            stacklevel=3,  # the inference_mode decorator adds a frame
        )
    if result.condition_key in adata.obs.columns:
        ctrl = np.flatnonzero(
            adata.obs[result.condition_key].astype(str).to_numpy() == result.control
        )
        if ctrl.size == 0:
            raise ValueError(
                f"no control cells ({result.condition_key} == {result.control!r}) in adata"
            )
    else:
        ctrl = np.arange(adata.n_obs)
    X = _float32_matrix(adata, layer)
    rng = np.random.default_rng(seed)
    gene_pos = {g: i for i, g in enumerate(result.genes)}
    flags = [_flags_for(n_genes, gene_pos, c, result.control) for c in conditions]
    rows = [rng.choice(ctrl, size=min(n_control_cells, ctrl.size), replace=False) for _ in flags]
    with eval_mode(m):
        out = _predict_means(
            m,
            X,
            torch.as_tensor(result.gene_ids, device=m.device),
            flags,
            rows,
            batch_size=batch_size,
            precision=precision,
            progress=progress,
        )
    return AnnData(
        X=out,
        obs=pd.DataFrame(index=pd.Index([str(c) for c in conditions], name="condition")),
        var=pd.DataFrame(index=pd.Index(result.genes)),
    )
