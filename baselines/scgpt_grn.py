"""scGPT for gene-network inference (paper Fig. 5 and 6; the GRN tutorials).

Input: the ``grn`` task's AnnData (see :mod:`benchmark.tasks.grn`); ``uns["grn"]["mode"]``
says which part of the analysis it is.

- ``mode == "programs"`` (Fig. 5): the gene token embeddings (embedding row + its
  LayerNorm, independent of the data) of the task's genes in the vocabulary; the method
  returns their cosine similarity, which the task turns into a kNN graph and Leiden
  programs. ``scgpt``: the pre-trained checkpoint (zero-shot); ``scgpt_finetuned``: after
  the integration fine-tuning on the dataset (the paper's fine-tuned model on Immune Human).
- ``mode == "targets"`` (Fig. 6): the last layer's raw attention scores ``q k^T`` of every
  cell, rank-normalised along rows (rank / M) then along columns, averaged over heads and
  over the cells of a condition (:func:`rank_normalise`, :func:`attention_influence`); the
  influence of a perturbed gene on gene ``i`` is entry ``[i, gene]``. Three settings:
  ``control`` (control cells), ``perturbed`` (the gene's knock-down / knock-out cells) and
  ``difference`` (perturbed - control). ``scgpt`` uses the pre-trained model with the
  tutorial's input (binned values with ``<cls>``, every gene, zeros included, no flags).
  ``scgpt_finetuned`` by default follows Tutorial_Attention_GRN: the pre-trained model
  fine-tuned with the integration pipeline on every gene of the screen (``adata.raw``),
  control vs perturbed as the batch, then the same binned ``<cls>`` input;
  ``targets_finetuning="perturbation"`` uses the perturbation-fine-tuned model instead (the
  paper's text), whose input is the log-normalised expression with perturbation flags. Unlike the official notebook, every cell of a condition
  is added to the mean (the notebook skips the first one).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from baselines._scgpt_common import load_model, vocabulary_mask
from contract.registry import register

log = logging.getLogger(__name__)

SETTINGS = ("difference", "perturbed", "control")
CONTROL = "ctrl"
"""Attention settings, the first one is the method's headline ranking."""


# ----------------------------------------------------------------------------- attention
def _ranks(x, dim: int):
    """Rank (0 .. n-1, ties by position) of every entry of ``x`` along ``dim``."""
    import torch

    order = torch.argsort(x, dim=dim, stable=True)
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    positions = torch.arange(x.shape[dim], device=x.device).view(shape).expand_as(order)
    # One sort and a scatter give the same ranks as the tutorial's argsort of argsort.
    return torch.empty_like(order).scatter_(dim, order, positions)


def rank_normalise(scores, columns=None):
    """Rank-normalise attention scores along rows (rank / M), then along columns.

    Parameters
    ----------
    scores
        ``(..., M, M)`` tensor (torch) of raw attention scores, e.g. B x H x M x M.
    columns
        Optional column indices: return only these columns of the result (the column
        ranking is then computed for them alone, which is what the GRN needs: the influence
        of a few regulators).

    Returns
    -------
    torch.Tensor
        float32 ``rank(rank(scores, rows) / M, columns) / M`` with ranks ``0 .. M-1`` (ties
        broken by position, as the tutorial's ``argsort``): ``(..., M, M)``, or
        ``(..., M, len(columns))``.
    """
    import torch

    m = scores.shape[-1]
    if scores.dim() < 2 or scores.shape[-2] != m:
        raise ValueError(f"rank_normalise: expected square (..., M, M); got {tuple(scores.shape)}")
    if columns is None:
        rows = _ranks(scores, -1).to(torch.float32) / m
    else:
        # Row ranks of a few entries by counting (no full sort): smaller entries of the row,
        # plus equal ones at an earlier position (the stable sort's tie order).
        position = torch.arange(m, device=scores.device)
        parts = []
        for j in columns:
            value = scores[..., j : j + 1]
            rank = (scores < value).sum(-1) + ((scores == value) & (position < j)).sum(-1)
            parts.append(rank)
        rows = torch.stack(parts, dim=-1).to(torch.float32) / m
    return _ranks(rows, -2).to(torch.float32) / m


def mean_attention(
    model,
    gene_ids: np.ndarray,
    values: np.ndarray,
    *,
    columns: list[int],
    pert_flags: np.ndarray | None = None,
    batch_label: int | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Rank-normalised last-layer attention averaged over heads and cells, ``L x len(columns)``.

    Parameters
    ----------
    model
        A :class:`scgpt.model.TransformerModel` (eval mode is set here).
    gene_ids
        ``(L,)`` token ids, the same for every cell (no padding).
    values
        ``(n_cells, L)`` input values.
    columns
        Key positions (the regulators) whose columns are returned.
    pert_flags
        ``(L,)`` perturbation flags of the condition (perturbation models), or ``None``.
    batch_label
        The cells' batch code for a model fine-tuned with batch labels or DSBN, or ``None``.
    batch_size
        Cells per forward pass.
    """
    import torch

    model.eval()
    n_cells, length = values.shape
    total = torch.zeros(length, len(columns), dtype=torch.float64)
    ids = torch.as_tensor(gene_ids, dtype=torch.long, device=model.device)
    flags = (
        None
        if pert_flags is None
        else torch.as_tensor(pert_flags, dtype=torch.long, device=model.device)
    )
    with torch.inference_mode():
        for start in range(0, n_cells, batch_size):
            part = torch.as_tensor(
                values[start : start + batch_size], dtype=torch.float32, device=model.device
            )
            b = part.shape[0]
            raw = model.attention_scores(
                ids.expand(b, -1),
                part,
                None,
                layer=-1,
                pert_flags=None if flags is None else flags.expand(b, -1),
                batch_labels=(
                    None
                    if batch_label is None
                    else torch.full((b,), batch_label, dtype=torch.long, device=model.device)
                ),
                softmax=False,
            )
            normalised = rank_normalise(raw.float(), columns)
            total += normalised.mean(dim=1).sum(dim=0).double().cpu()
    return (total / max(n_cells, 1)).numpy()


def attention_influence(
    control: np.ndarray, perturbed: np.ndarray, genes: list[str], regulator: str
) -> dict[str, pd.Series]:
    """Influence of ``regulator`` on every gene in the three settings.

    Parameters
    ----------
    control, perturbed
        The regulator's column of the mean rank-normalised attention (one value per gene,
        rows = query genes) in the control and in the perturbed cells.
    genes
        Gene names of the rows.
    regulator
        The perturbed gene; its own row is left out of the result.
    """
    j = genes.index(regulator)
    keep = [i for i in range(len(genes)) if i != j]
    names = [genes[i] for i in keep]
    ctrl = np.asarray(control)[keep]
    pert = np.asarray(perturbed)[keep]
    return {
        "control": pd.Series(ctrl, index=names),
        "perturbed": pd.Series(pert, index=names),
        "difference": pd.Series(pert - ctrl, index=names),
    }


def _condition_rows(adata: ad.AnnData, condition: str, n_max: int, seed: int) -> np.ndarray:
    rows = np.flatnonzero(adata.obs["condition"].astype(str).to_numpy() == condition)
    if rows.size == 0:
        raise ValueError(f"scGPT attention: no cells of condition {condition!r}")
    if rows.size > n_max:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n_max, replace=False))
    return rows


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float32)


def cls_binned_inputs(
    model, vocab, gene_ids, counts, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A pre-trained model's own input for :func:`mean_attention`: ``<cls>`` then the genes,
    each cell's counts binned into the model's ``n_bins`` (``<cls>`` takes the pad value).

    Returns ``(token_ids, values)``: ``(1 + genes,)`` ids and ``(cells, 1 + genes)`` values.
    """
    from scgpt.preprocess import bin_matrix

    cfg = model.config
    binned = _dense(bin_matrix(counts, cfg.n_bins, seed=seed)).astype(np.float32, copy=False)
    values = np.concatenate([np.full((binned.shape[0], 1), cfg.pad_value, np.float32), binned], 1)
    return np.concatenate([[vocab.cls_id], np.asarray(gene_ids)]), values


FINETUNINGS = (None, "perturbation", "integration")


def _control_as_batch(adata: ad.AnnData, vocab, checkpoint: str) -> ad.AnnData:
    """Counts of every gene (``adata.raw`` when the task gave it) in the vocabulary, with
    ``obs["batch"]`` = control or perturbed: the attention tutorial's fine-tuning data."""
    full = adata.raw.to_adata() if adata.raw is not None else adata
    full = full[:, vocabulary_mask(full.var_names, vocab, what="GRN", checkpoint=checkpoint)]
    control = adata.obs["condition"].astype(str).to_numpy() == CONTROL
    return ad.AnnData(
        X=full.X,
        obs=pd.DataFrame(
            {"batch": pd.Categorical(np.where(control, "control", "perturbed"))},
            index=adata.obs_names.copy(),
        ),
        var=pd.DataFrame(index=full.var_names.copy()),
    )


def attention_targets(
    adata: ad.AnnData,
    *,
    checkpoint: str,
    seed: int,
    finetuning: str | None,
    n_cells: int,
    finetune_params: dict,
    batch_size: int,
    device: str = "auto",
) -> dict[str, pd.DataFrame]:
    """Target scores of every regulator in ``uns["grn"]["regulators"]`` for each setting.

    ``finetuning``: ``None`` (the pre-trained model), ``"perturbation"`` (the perturbation
    model, its own input with perturbation flags) or ``"integration"`` (the attention
    tutorial's: the integration pipeline on every gene of ``adata.raw`` with control vs
    perturbed as the batch, then the binned ``<cls>`` input of the pre-trained model).
    """
    from scgpt import finetune_integration, map_genes, train_perturbation_model
    from scgpt._utils import resolve_device

    model, vocab = load_model(checkpoint, pretrained=True, seed=seed)
    model = model.to(resolve_device(device))
    data = adata[:, vocabulary_mask(adata.var_names, vocab, what="GRN", checkpoint=checkpoint)]
    genes = [str(g) for g in data.var_names]
    regulators = [r for r in adata.uns["grn"]["regulators"] if r in genes]
    if not regulators:
        raise ValueError(
            f"scGPT attention: none of the regulators {list(adata.uns['grn']['regulators'])} "
            f"is in the vocabulary of {checkpoint}"
        )
    ids, _ = map_genes(genes, vocab)
    log1p = data.layers["log1p"]
    if finetuning not in FINETUNINGS:
        raise ValueError(
            f"scGPT attention: finetuning {finetuning!r} is not one of {list(FINETUNINGS)}"
        )
    # The integration-tuned model's batch code per kind of cell (its DSBN needs them).
    batch_code: dict[str, int] | None = None
    if finetuning == "integration":
        model = finetune_integration(
            model,
            _control_as_batch(adata, vocab, checkpoint),
            "batch",
            vocab=vocab,
            obsm_key=None,
            seed=seed,
            progress=False,
            **finetune_params,
        ).model
        batch_code = {str(kind): code for code, kind in enumerate(model.batch_categories)}
    if finetuning == "perturbation":
        tuned = train_perturbation_model(
            model,
            ad.AnnData(X=log1p, obs=data.obs[["condition"]].copy(), var=data.var[[]].copy()),
            vocab=vocab,
            split_key=None,
            seed=seed,
            progress=False,
            **finetune_params,
        )
        model = tuned.model

        def inputs(rows: np.ndarray, condition: str) -> tuple:
            flags = np.zeros(len(genes), dtype=np.int64)
            for gene in condition.split("+"):
                if gene in genes:
                    flags[genes.index(gene)] = 1
            return np.asarray(ids), _dense(log1p[rows]), flags, genes

    else:
        counts = data.X

        def inputs(rows: np.ndarray, condition: str) -> tuple:
            token_ids, values = cls_binned_inputs(model, vocab, ids, counts[rows], seed=seed)
            return token_ids, values, None, ["<cls>", *genes]

    def attention(condition: str, wanted: list[str]) -> tuple[np.ndarray, list[str]]:
        rows = _condition_rows(data, condition, n_cells, seed)
        token_ids, values, flags, names = inputs(rows, condition)
        columns = [names.index(g) for g in wanted]
        matrix = mean_attention(
            model,
            token_ids,
            values,
            columns=columns,
            pert_flags=flags,
            batch_label=(
                None
                if batch_code is None
                else batch_code["control" if condition == CONTROL else "perturbed"]
            ),
            batch_size=batch_size,
        )
        return matrix, names

    control, names = attention(CONTROL, regulators)
    out: dict[str, dict[str, pd.Series]] = {s: {} for s in SETTINGS}
    for k, regulator in enumerate(regulators):
        perturbed, _ = attention(adata.uns["grn"]["condition_of"][regulator], [regulator])
        influence = attention_influence(control[:, k], perturbed[:, 0], names, regulator)
        for setting in SETTINGS:
            out[setting][regulator] = influence[setting].drop("<cls>", errors="ignore")
    return {s: pd.DataFrame(out[s]) for s in SETTINGS}


# ----------------------------------------------------------------------------- embeddings
def embedding_similarity(embedding: pd.DataFrame) -> pd.DataFrame:
    """Cosine similarity of gene embedding rows (genes x genes)."""
    x = embedding.to_numpy(dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    return pd.DataFrame(x @ x.T, index=embedding.index, columns=embedding.index)


def _program_genes(adata: ad.AnnData, vocab, checkpoint: str) -> list[str]:
    mask = vocabulary_mask(adata.var_names, vocab, what="GRN", checkpoint=checkpoint)
    return [str(g) for g in adata.var_names[mask]]


@register("grn", "scgpt", label="scGPT (pre-trained)", needs_checkpoint=True)
def scgpt_grn(
    adata: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    n_cells: int = 100_000,
    batch_size: int = 16,
    device: str = "auto",
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Pre-trained scGPT: gene-embedding cosine similarity, or attention-based targets.

    Parameters
    ----------
    adata
        The ``grn`` task's input (``uns["grn"]["mode"]`` is ``programs`` or ``targets``).
    seed
        Seed of cell sampling and bin tie-breaks.
    checkpoint
        scGPT checkpoint folder.
    n_cells
        Targets mode: cells per condition whose attention is averaged (default: all).
    batch_size
        Targets mode: cells per forward pass.
    device
        Targets mode: ``"auto"`` (CUDA if available), ``"cpu"``, ...
    """
    from scgpt import gene_embeddings

    if adata.uns["grn"]["mode"] == "programs":
        model, vocab = load_model(checkpoint, pretrained=True, seed=seed)
        genes = _program_genes(adata, vocab, checkpoint)
        return embedding_similarity(gene_embeddings((model, vocab, model.config), genes))
    return attention_targets(
        adata,
        checkpoint=checkpoint,
        seed=seed,
        finetuning=None,
        n_cells=n_cells,
        finetune_params={},
        batch_size=batch_size,
        device=device,
    )


@register("grn", "scgpt_finetuned", label="scGPT (fine-tuned)", needs_checkpoint=True)
def scgpt_grn_finetuned(
    adata: ad.AnnData,
    *,
    seed: int,
    checkpoint: str,
    epochs: int = 15,
    lr: float = 1e-4,
    batch_size: int = 64,
    max_len: int = 1201,
    include_zero_genes: bool = True,
    targets_finetuning: str = "integration",
    n_cells: int = 100_000,
    attention_batch_size: int = 16,
    device: str = "auto",
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """scGPT fine-tuned on the dataset: integration (programs) or perturbation (targets).

    Parameters
    ----------
    adata
        The ``grn`` task's input.
    seed
        Seed of fine-tuning and sampling.
    checkpoint
        scGPT checkpoint folder.
    epochs, lr, batch_size, max_len
        Fine-tuning settings (defaults: the integration tutorial's, which the paper's Fig. 5
        fine-tuning used; the perturbation tutorial's are the same except ``max_len`` 1,536,
        used in targets mode when ``max_len`` is left at its default).
    include_zero_genes
        Integration fine-tuning: tokenise zero genes too (the integration tutorial's
        setting).
    targets_finetuning
        Targets mode: ``"integration"`` (the attention tutorial's: the integration pipeline on
        every gene of the screen, control vs perturbed as the batch, then the binned
        ``<cls>`` input) or ``"perturbation"`` (the perturbation model with its flags, as the
        paper's text describes).
    n_cells, attention_batch_size
        Targets mode: cells per condition averaged, and cells per forward pass.
    device
        ``"auto"`` (CUDA if available), ``"cpu"``, ...
    """
    from scgpt import finetune_integration, gene_embeddings

    if targets_finetuning not in ("integration", "perturbation"):
        raise ValueError(
            f"scgpt_finetuned: targets_finetuning {targets_finetuning!r} is not "
            "'integration' or 'perturbation'"
        )
    if adata.uns["grn"]["mode"] == "programs":
        model, vocab = load_model(checkpoint, pretrained=True, seed=seed)
        genes = _program_genes(adata, vocab, checkpoint)
        result = finetune_integration(
            model,
            adata[:, genes].copy(),
            "batch",
            vocab=vocab,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_len=max_len,
            include_zero_genes=include_zero_genes,
            obsm_key=None,
            device=device,
            seed=seed,
            progress=False,
        )
        tuned = result.model
        return embedding_similarity(gene_embeddings((tuned, vocab, tuned.config), genes))
    finetune_params = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "device": device}
    if targets_finetuning == "integration":
        finetune_params.update(max_len=max_len, include_zero_genes=include_zero_genes)
    else:
        finetune_params["max_len"] = 1536 if max_len == 1201 else max_len
    return attention_targets(
        adata,
        checkpoint=checkpoint,
        seed=seed,
        finetuning=targets_finetuning,
        n_cells=n_cells,
        finetune_params=finetune_params,
        batch_size=attention_batch_size,
        device=device,
    )
