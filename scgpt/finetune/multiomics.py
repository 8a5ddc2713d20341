"""Multi-omic integration: every feature a token, a modality embedding, GEP + GEPC + DAR.

The official multi-omic tutorial (``Tutorial_Multiomics``, BMMC RNA + protein), as facts:

- Every feature of every modality is a token. RNA genes of the checkpoint's vocabulary keep
  their pre-trained embedding rows; proteins, peaks (and RNA genes the vocabulary lacks) are
  new vocabulary entries whose rows are appended and initialised afresh
  (:func:`extend_vocab`). Only the gene embedding and its LayerNorm come from the
  checkpoint; the rest of the model (4 layers in the tutorial, the checkpoint's width) is
  newly initialised (:func:`multiomic_model`).
- A modality embedding (``RNA``, ``Protein``, ``ATAC`` and the special tokens) is looked up
  per token and, summed with the batch embedding, joined to the decoders' inputs
  (``use_mod``; see :class:`~scgpt.model.TransformerModel`).
- Values: each modality is binned per cell on its own (51 bins, zeros stay 0 and are not
  tokens); :func:`bin_by_modality`.
- Objectives: masked value prediction from the tokens (GEP) and from the cell embedding
  (GEPC), mask ratio 0.4; the adversarial batch discriminator (DAR, weight 1) and batch
  labels to the decoders; no ECS, no DSBN, no classifier. lr 1e-3, Adam eps 1e-4, step decay
  0.95 per epoch, batch 16, 25 epochs, dropout 0.2, 10% of the cells held out to keep the
  lowest-validation-loss epoch.

The training loop is the integration fine-tuning's (:func:`~scgpt.finetune.finetune_integration`)
with pre-binned values and the modality lookup; this module builds the vocabulary, the model
and the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from scgpt._utils import logger
from scgpt.checkpoint import load_state_dict_checked
from scgpt.embed import ModelLike, check_expression
from scgpt.finetune._common import load_for_finetune
from scgpt.finetune.integration import IntegrationResult, finetune_integration
from scgpt.model import TransformerModel
from scgpt.preprocess import bin_row
from scgpt.vocab import CLS_TOKEN, EOC_TOKEN, PAD_TOKEN, GeneVocab

MODALITY_NAMES: dict[str, str] = {"rna": "RNA", "protein": "Protein", "atac": "ATAC"}
"""``var["modality"]`` value -> modality token (the tutorial's names)."""

MODALITY_TOKENS: tuple[str, ...] = ("RNA", "Protein", "ATAC", PAD_TOKEN, CLS_TOKEN, EOC_TOKEN)
"""Rows of the modality embedding: the modalities and the special tokens' own modality."""

ATAC_VALUES: tuple[str, ...] = ("binary", "binned")
"""How peak counts become values (see :func:`bin_by_modality`)."""

TOKEN_COL = "scgpt_token"
"""``var`` column of the model inputs holding each feature's vocabulary token."""


@dataclass
class MultiomicsResult(IntegrationResult):
    """A model fine-tuned for multi-omic integration and the joint embedding.

    Attributes (besides :class:`~scgpt.finetune.IntegrationResult`'s)
    ----------------------------------------------------------------
    vocab
        The extended vocabulary (checkpoint tokens + the new features).
    token_modality
        Modality index (into :data:`MODALITY_TOKENS`) of every vocabulary row.
    tokens
        The vocabulary token of every input feature, in input order.
    """

    vocab: GeneVocab | None = None
    token_modality: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tokens: list[str] = field(default_factory=list)


def feature_modalities(adata: AnnData, modality_key: str = "modality") -> np.ndarray:
    """``var[modality_key]`` as lower-case str, checked against :data:`MODALITY_NAMES`."""
    if modality_key not in adata.var.columns:
        raise KeyError(
            f"scGPT multi-omics: var has no {modality_key!r} column (expected values "
            f"{list(MODALITY_NAMES)} per feature); var columns are {list(adata.var.columns)}"
        )
    mods = adata.var[modality_key].astype(str).str.lower().to_numpy()
    unknown = sorted(set(mods) - set(MODALITY_NAMES))
    if unknown:
        raise ValueError(
            f"scGPT multi-omics: var[{modality_key!r}] has values {unknown}; expected only "
            f"{list(MODALITY_NAMES)}"
        )
    return mods


def feature_tokens(names: Sequence[str], modalities: Sequence[str], vocab: GeneVocab) -> list[str]:
    """Vocabulary token of every feature.

    An RNA feature is its gene symbol (a pre-trained token when the vocabulary has it). A
    protein or peak is its own name, unless that name is already a checkpoint token (a
    protein named like a gene, the collision the tutorial avoids with its ``p_`` prefix):
    then ``"<modality>:<name>"``, so that it never shares a gene's row.
    """
    out = []
    for name, mod in zip(names, modalities):
        name = str(name)
        if mod != "rna" and name in vocab:
            name = f"{MODALITY_NAMES[mod]}:{name}"
        out.append(name)
    if len(set(out)) != len(out):
        dup = pd.Index(out)[pd.Index(out).duplicated()][:5].tolist()
        raise ValueError(f"scGPT multi-omics: feature names are not unique, e.g. {dup}")
    return out


def extend_vocab(vocab: GeneVocab, tokens: Sequence[str]) -> GeneVocab:
    """``vocab`` with the ``tokens`` it lacks appended as new rows (existing indices unchanged)."""
    stoi = vocab.stoi
    nxt = vocab.num_embeddings
    for tok in tokens:
        if tok not in stoi:
            stoi[tok] = nxt
            nxt += 1
    return GeneVocab(stoi, pad_token=vocab.pad_token)


def token_modalities(
    vocab: GeneVocab, tokens: Sequence[str], modalities: Sequence[str]
) -> np.ndarray:
    """Modality index (into :data:`MODALITY_TOKENS`) of every row of ``vocab``.

    The features' rows take their modality; the special tokens theirs; every other row (the
    checkpoint's genes) is RNA.
    """
    index = {t: i for i, t in enumerate(MODALITY_TOKENS)}
    out = np.full(vocab.num_embeddings, index["RNA"], dtype=np.int64)
    for tok, mod in zip(tokens, modalities):
        out[vocab[tok]] = index[MODALITY_NAMES[mod]]
    for special in (PAD_TOKEN, CLS_TOKEN, EOC_TOKEN):
        if special in vocab:
            out[vocab[special]] = index[special]
    return out


def bin_by_modality(
    X: np.ndarray | sp.spmatrix,
    modalities: Sequence[str],
    n_bins: int,
    *,
    atac_values: str = "binary",
    seed: int = 0,
) -> sp.csr_matrix:
    """Per-cell value bins computed within each modality (the tutorial's preprocessing).

    RNA and protein: a cell's non-zero values of that modality are cut into ``n_bins - 1``
    quantile bins of that cell (:func:`scgpt.preprocess.bin_row`, ties broken at random).
    The tutorial normalises RNA to 1e4 counts and log1p-transforms it first, and leaves
    proteins unnormalised; per-cell quantile bins do not change under a per-cell scaling or
    a monotone transform, so binning the counts gives the same bins. ATAC (peak counts of
    0, 1, 2): ``"binary"`` gives every open peak the value 1 (accessibility is what a peak
    count says; per-cell quantile bins of values that are nearly all 1 would be random tie
    breaks), ``"binned"`` bins them like the other modalities. Zeros stay zero (they are
    not tokens).

    Parameters
    ----------
    X
        Cells x features counts.
    modalities
        ``"rna"``, ``"protein"`` or ``"atac"`` per feature.
    n_bins
        Bins including the zero bin (51).
    atac_values
        One of :data:`ATAC_VALUES`.
    seed
        Seed of the tie breaks (drawn once, as the tutorial bins once before training).

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 bins, same shape and sparsity as ``X``.
    """
    if atac_values not in ATAC_VALUES:
        raise ValueError(f"atac_values must be one of {ATAC_VALUES}, got {atac_values!r}")
    csr = sp.csr_matrix(X, dtype=np.float32, copy=True)
    csr.sort_indices()
    mods = np.asarray(modalities).astype(str)
    if mods.shape[0] != csr.shape[1]:
        raise ValueError(f"{mods.shape[0]} modalities for {csr.shape[1]} features")
    codes = pd.Categorical(mods, categories=list(MODALITY_NAMES)).codes
    atac = list(MODALITY_NAMES).index("atac")
    rng = np.random.default_rng(seed)
    out = np.zeros_like(csr.data)
    for i in range(csr.shape[0]):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        data, col_mod = csr.data[lo:hi], codes[csr.indices[lo:hi]]
        for k in np.unique(col_mod):
            sel = np.flatnonzero((col_mod == k) & (data != 0))
            if sel.size == 0:
                continue
            if k == atac and atac_values == "binary":
                out[lo + sel] = 1.0
            else:
                out[lo + sel] = bin_row(data[sel], n_bins, rng=rng)
    csr.data = out
    csr.eliminate_zeros()
    return csr


def multiomic_model(
    base: TransformerModel,
    vocab: GeneVocab,
    tokens: Sequence[str],
    modalities: Sequence[str],
    *,
    num_batch_labels: int,
    dab: bool,
    nlayers: int | None,
    dropout: float,
    pretrained: bool,
    seed: int,
) -> tuple[TransformerModel, GeneVocab, np.ndarray]:
    """The multi-omic model over the checkpoint's vocabulary extended by the features.

    Parameters
    ----------
    base
        The checkpoint's model (its configuration fixes the width, heads, bins and values).
    vocab
        Its vocabulary.
    tokens, modalities
        Token (:func:`feature_tokens`) and modality of every input feature.
    num_batch_labels
        Batches (batch embedding and discriminator).
    dab
        Add the adversarial batch discriminator (DAR).
    nlayers
        Transformer layers (the tutorial's 4); ``None``: the checkpoint's.
    dropout
        Dropout (the tutorial's 0.2).
    pretrained
        Copy the checkpoint's embedding rows (every existing token keeps its row; the new
        tokens' rows are appended, freshly initialised) and the embedding LayerNorm, as the
        tutorial does; everything else starts new. ``False`` copies nothing ("from scratch").
    seed
        Seed of the initialisation.

    Returns
    -------
    model, vocab, token_modality
        The new model (on ``base``'s device, ``model.vocab`` set), the extended vocabulary and
        the modality index of every vocabulary row.
    """
    ext = extend_vocab(vocab, tokens)
    token_modality = token_modalities(ext, tokens, modalities)
    cfg = base.config.replace(
        ntoken=ext.num_embeddings,
        nlayers=int(nlayers) if nlayers is not None else base.config.nlayers,
        dropout=float(dropout),
        use_mod=True,
        ntokens_mod=len(MODALITY_TOKENS),
        mod_pad_id=MODALITY_TOKENS.index(PAD_TOKEN),
        use_batch_labels=True,
        num_batch_labels=int(num_batch_labels),
        do_dab=bool(dab),
        domain_spec_batchnorm=False,
        explicit_zero_prob=False,
        do_mvc=True,
        use_generative=False,
        use_pert_flags=False,
        n_cls=1,
        cell_emb_style="cls",
        expr_decoder_style="mlp",
    )
    torch.manual_seed(seed)
    model = TransformerModel(cfg)
    n_old = vocab.num_embeddings
    if pretrained:
        old = base.state_dict()
        rows = model.encoder.embedding.weight.detach().clone()
        rows[:n_old] = old["encoder.embedding.weight"].to(rows)
        state = {
            "encoder.embedding.weight": rows,
            "encoder.enc_norm.weight": old["encoder.enc_norm.weight"],
            "encoder.enc_norm.bias": old["encoder.enc_norm.bias"],
        }
        load_state_dict_checked(
            model, state, source="the pre-trained gene embedding", partial_expected=True
        )
    n_new = ext.num_embeddings - n_old
    counts = np.bincount(token_modality[n_old:], minlength=len(MODALITY_TOKENS))
    logger.info(
        "scGPT multi-omics: %d tokens (%d from the checkpoint%s, %d new: %s), %d layers, "
        "d_model %d, %s",
        ext.num_embeddings,
        n_old,
        " with pre-trained rows" if pretrained else "",
        n_new,
        {MODALITY_TOKENS[i]: int(c) for i, c in enumerate(counts) if c},
        cfg.nlayers,
        cfg.d_model,
        "pre-trained embedding" if pretrained else "from scratch",
    )
    model.vocab = ext
    return model.to(base.device), ext, token_modality


def finetune_multiomics(
    model: ModelLike,
    adata: AnnData,
    *,
    vocab: GeneVocab | None = None,
    batch_key: str = "batch",
    modality_key: str = "modality",
    pretrained: bool = True,
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
    schedule_gamma: float = 0.95,
    adam_eps: float = 1e-4,
    layer: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> MultiomicsResult:
    """Fine-tune scGPT for multi-omic integration (tutorial settings) and embed every cell.

    Parameters
    ----------
    model
        Checkpoint folder, model or ``(model, vocab, config)``: the source of the embedding
        rows (``pretrained``) and of the architecture's width.
    adata
        Cells x features of every modality, raw counts in ``X`` (or ``layer``);
        ``var[modality_key]`` in {"rna", "protein", "atac"}; ``obs[batch_key]``. A cell's
        unmeasured modalities are zero columns and so contribute no tokens (mosaic data).
    vocab
        Vocabulary when ``model`` is a bare model.
    batch_key, modality_key
        ``obs`` column of the batch, ``var`` column of the modality.
    pretrained
        Copy the checkpoint's gene embedding and its LayerNorm (``False``: from scratch).
    epochs, lr, batch_size, schedule_gamma, adam_eps
        Training settings (tutorial: 25, 1e-3, 16, 0.95, 1e-4).
    max_len
        Tokens per cell including ``<cls>``, in training and in the embedding (cells with
        more non-zero features are sampled down); ``None``: every feature + ``<cls>`` (the
        tutorial's).
    mask_ratio
        Fraction of a cell's values masked for GEP / GEPC.
    dab_weight
        Weight of the adversarial batch loss (DAR; 0 disables it; off with one batch).
    nlayers, dropout
        Transformer layers (``None``: the checkpoint's) and dropout.
    atac_values
        ``"binary"`` or ``"binned"`` (see :func:`bin_by_modality`).
    val_fraction
        Cells held out (drawn by ``seed``) to keep the lowest-validation-MSE epoch.
    layer
        Layer with the counts instead of ``X``.
    device, precision, max_grad_norm, seed, progress
        As in :func:`~scgpt.finetune.finetune_integration`.

    Returns
    -------
    MultiomicsResult
        ``embedding``: the L2-normalised ``<cls>`` embedding of every cell (n_cells x d).
    """
    base, base_vocab = load_for_finetune(model, vocab, device)
    mods = feature_modalities(adata, modality_key)
    if batch_key not in adata.obs.columns:
        raise KeyError(
            f"scGPT multi-omics: obs has no batch column {batch_key!r}; it has {list(adata.obs)}"
        )
    counts = adata.layers[layer] if layer is not None else adata.X
    counts = sp.csr_matrix(counts, dtype=np.float32)
    check_expression(counts, f"layers[{layer!r}]" if layer is not None else "X")
    cats = sorted(adata.obs[batch_key].astype(str).unique())
    dab = dab_weight > 0 and len(cats) > 1
    if dab_weight > 0 and not dab:
        logger.info("scGPT multi-omics: one batch, no adversarial batch loss")
    tokens = feature_tokens(adata.var_names, mods, base_vocab)
    m, ext, token_modality = multiomic_model(
        base,
        base_vocab,
        tokens,
        mods,
        num_batch_labels=len(cats),
        dab=dab,
        nlayers=nlayers,
        dropout=dropout,
        pretrained=pretrained,
        seed=seed,
    )
    binned = bin_by_modality(counts, mods, m.config.n_bins, atac_values=atac_values, seed=seed)
    data = AnnData(
        X=binned,
        obs=pd.DataFrame(
            {batch_key: adata.obs[batch_key].astype(str).to_numpy()},
            index=pd.Index(adata.obs_names.astype(str)),
        ),
        var=pd.DataFrame({TOKEN_COL: tokens}, index=pd.Index(adata.var_names.astype(str))),
    )
    res = finetune_integration(
        m,
        data,
        batch_key,
        vocab=ext,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_len=int(max_len) if max_len is not None else adata.n_vars + 1,
        mask_ratio=mask_ratio,
        gep=True,
        mvc=True,
        ecs_weight=0.0,
        ecs_threshold=m.config.ecs_threshold,
        dab_weight=dab_weight if dab else 0.0,
        dsbn=False,
        use_batch_labels=True,
        explicit_zero_prob=False,
        include_zero_genes=False,
        group_batches=False,
        val_fraction=val_fraction,
        schedule_gamma=schedule_gamma,
        adam_eps=adam_eps,
        gene_col=TOKEN_COL,
        binning=False,
        token_modality=token_modality,
        obsm_key=None,
        device=m.device,
        precision=precision,
        max_grad_norm=max_grad_norm,
        seed=seed,
        progress=progress,
    )
    return MultiomicsResult(
        model=res.model,
        embedding=res.embedding,
        batch_categories=res.batch_categories,
        history=res.history,
        n_validation=res.n_validation,
        vocab=ext,
        token_modality=token_modality,
        tokens=tokens,
    )
