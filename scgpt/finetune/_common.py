"""Shared pieces of the fine-tuning functions: model adaptation, inputs, optimiser, loops."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from scgpt._utils import autocast_context, logger, resolve_device
from scgpt.checkpoint import load_state_dict_checked
from scgpt.embed import ModelLike, resolve_model
from scgpt.model import TransformerModel
from scgpt.preprocess import gene_names
from scgpt.vocab import GeneVocab, map_genes


def adapt_model(
    model: TransformerModel,
    *,
    load_prefixes: Sequence[str] | None = None,
    **changes: Any,
) -> TransformerModel:
    """A model with configuration ``changes`` (new heads, batch norms ...), keeping the weights that fit.

    Parameters
    ----------
    model
        Source model.
    load_prefixes
        Copy only the weights of these top-level modules (``"encoder"`` matches
        ``encoder.*``, not ``transformer_encoder.*``); the official perturbation tutorial
        loads ``("encoder", "value_encoder", "transformer_encoder")`` and starts everything
        else new. ``None``: every weight whose name and shape fit.
    **changes
        :class:`~scgpt.model.ModelConfig` fields to change.

    Returns
    -------
    TransformerModel
        ``model`` itself when nothing changes and every weight is kept, else a new model on
        the same device with the selected weights copied where names and shapes match (new
        modules keep their initialisation; the copy is reported in the log).
    """
    cfg = model.config
    if load_prefixes is None and all(getattr(cfg, k) == v for k, v in changes.items()):
        return model
    new = TransformerModel(cfg.replace(**changes))
    state = model.state_dict()
    if load_prefixes is not None:
        prefixes = tuple(load_prefixes)
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in prefixes}
        if not state:
            raise ValueError(
                f"load_prefixes={list(prefixes)} match no weight of the model; its modules: "
                f"{sorted({k.split('.', 1)[0] for k in model.state_dict()})}"
            )
    load_state_dict_checked(
        new, state, skip_mismatched=True, source="the pre-trained model", partial_expected=True
    )
    new.vocab = model.vocab
    return new.to(model.device)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(train, validation)`` row indices, ``fraction`` of ``n`` rows held out.

    The official annotation and integration tutorials hold out 10% of the cells at random
    (``train_test_split(test_size=0.1, shuffle=True)``) to pick the best epoch; the seed
    draws the split, so the paper's repeats are different splits. ``fraction`` 0 (or too
    few rows to hold one out while keeping one to train) gives no validation rows.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    n_val = math.ceil(n * fraction)  # sklearn's train_test_split rounds the test part up
    if n_val == 0 or n_val >= n:
        return np.arange(n), np.arange(0)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_for_finetune(
    model: ModelLike, vocab: GeneVocab | None, device: str | torch.device | None
) -> tuple[TransformerModel, GeneVocab]:
    """Resolve ``model`` (folder, model or tuple) and its vocabulary on ``device``."""
    m, v = resolve_model(model, vocab=vocab, device=resolve_device(device))
    m.vocab = v
    return m, v


def expression_inputs(
    adata: AnnData,
    vocab: GeneVocab,
    *,
    gene_col: str | None,
    layer: str | None,
    warn_below: float = 0.5,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """CSR expression and the vocabulary index per gene (``-1`` when unknown)."""
    ids, report = map_genes(gene_names(adata, gene_col), vocab, warn_below=warn_below)
    if report.n_matched == 0:
        raise ValueError(f"no gene of the data is in the model's vocabulary: {report}")
    X = adata.layers[layer] if layer is not None else adata.X
    return sp.csr_matrix(X, dtype=np.float32), ids


def labels_array(adata: AnnData, labels: str | Iterable[Any]) -> np.ndarray:
    """Labels as strings from an ``obs`` column name or a sequence (one per cell)."""
    if isinstance(labels, str):
        if labels not in adata.obs.columns:
            raise KeyError(
                f"labels {labels!r} is not an obs column (columns: {list(adata.obs.columns)})"
            )
        arr = adata.obs[labels].astype(str).to_numpy()
    else:
        arr = np.asarray([str(x) for x in labels])
    if len(arr) != adata.n_obs:
        raise ValueError(f"got {len(arr)} labels for {adata.n_obs} cells")
    return arr


def optimizer_and_scheduler(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    schedule_gamma: float,
    eps: float = 1e-8,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and a per-epoch step decay (``schedule_ratio`` 0.9 in the tutorials).

    With ``weight_decay`` 0 (the tutorials') AdamW is the tutorials' Adam. ``eps``: the
    annotation and integration tutorials use 1e-4 under mixed precision (their runs), the
    perturbation tutorial PyTorch's default 1e-8.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=schedule_gamma)


def run_epochs(
    model: TransformerModel,
    *,
    epochs: int,
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    loss_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: str,
    max_grad_norm: float | None,
    progress: bool,
    desc: str,
    validate: Callable[[], dict[str, float]] | None = None,
    monitor: str | None = None,
    patience: int | None = None,
    mode: str = "max",
) -> list[dict[str, float]]:
    """The shared training loop; returns the mean losses (and validation scores) per epoch.

    Parameters
    ----------
    batches
        ``epoch -> iterable of batches`` (already on the model's device or CPU tensors).
    loss_fn
        ``batch -> dict`` of losses with a ``"loss"`` entry to minimise.
    validate
        Called in eval mode after every epoch; its scores join the epoch's history row.
    monitor
        Key of ``validate``'s scores to optimise: the weights of the best epoch are restored
        at the end (the official tutorials keep a copy of the best model the same way) and
        that epoch's row gets ``"best": 1.0``. A NaN score never counts as the best.
    patience
        Stop after this many epochs without a better ``monitor`` score (``None``: never).
    mode
        ``"max"`` (scores such as a correlation) or ``"min"`` (validation losses).
    """
    from tqdm.auto import tqdm

    if monitor is not None and validate is None:
        raise ValueError(f"monitor={monitor!r} needs a validate function")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    sign = 1.0 if mode == "max" else -1.0
    device = model.device
    history: list[dict[str, float]] = []
    best_score, best_state, best_row, stale = -np.inf, None, None, 0
    model.train()
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        n = 0
        # Batches are built as they are consumed: holding the whole epoch's padded tensors
        # costs cells x max_len memory (GBs for the paper's perturbation and multi-omic sets)
        # and gives the same batches (their random draws never share a generator with the
        # loss), in the same order (benchmarks/scaling.py).
        for batch in tqdm(
            batches(epoch),
            desc=f"{desc} epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        ):
            batch = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            with autocast_context(device, precision):
                parts = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
        scheduler.step()
        row = {k: v / max(1, n) for k, v in sums.items()}
        row["epoch"] = epoch + 1
        if validate is not None:
            with eval_mode(model):
                row.update(validate())
        history.append(row)
        logger.info("%s epoch %d: %s", desc, epoch + 1, {k: round(v, 4) for k, v in row.items()})
        if monitor is None:
            continue
        if monitor not in row:
            raise KeyError(f"validation scores {sorted(row)} lack the monitored {monitor!r}")
        if sign * row[monitor] > best_score:  # False for NaN
            best_score, best_row, stale = sign * row[monitor], row, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if patience is not None and stale >= patience:
                logger.info("%s: no better %s for %d epochs, stopping", desc, monitor, stale)
                break
    if best_state is not None and best_row is not None:
        model.load_state_dict(best_state)
        best_row["best"] = 1.0
        logger.info(
            "%s: keeping epoch %d (%s %.4f)",
            desc,
            int(best_row["epoch"]),
            monitor,
            best_row[monitor],
        )
    model.eval()
    return history


def best_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch (1-based) :func:`run_epochs` marked ``best``; ``None`` without validation."""
    best = [row["epoch"] for row in history if row.get("best")]
    return int(best[0]) if best else None


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for the block, restoring its mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
