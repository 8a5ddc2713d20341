"""Shared pieces of the scGPT task adapters: the model (pre-trained or from scratch) and genes.

The adapters (``baselines/scgpt_*.py``) are thin: the model, its fine-tuning and its
embeddings live in the :mod:`scgpt` library. What they share is here:

- :func:`load_model`: the checkpoint's model with its weights (``pretrained=True``) or the
  same architecture, built from the checkpoint's ``args.json`` / ``vocab.json``, with a
  seeded random initialisation (the paper's "scGPT (from scratch)" rows);
- :func:`vocabulary_genes`: the data restricted to the genes of the model's vocabulary, with
  the coverage logged and a clear error when no gene matches;
- :func:`register_scgpt`: one task function registered as ``scgpt`` and ``scgpt_scratch``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import anndata as ad
import numpy as np

from contract.registry import register

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])


def register_scgpt(task: str) -> Callable[[F], F]:
    """Register a function with a ``pretrained: bool`` parameter as two methods of ``task``.

    ``scgpt`` (label "scGPT") runs it with ``pretrained=True`` and ``scgpt_scratch`` (label
    "scGPT (from scratch)") with ``pretrained=False``: the same settings and defaults, the
    checkpoint's weights or a random initialisation of its architecture. ``pretrained`` is
    bound by the registration, not a parameter the config may set.
    """

    def decorator(func: F) -> F:
        register(task, "scgpt", label="scGPT", needs_checkpoint=True, bind={"pretrained": True})(
            func
        )
        register(
            task,
            "scgpt_scratch",
            label="scGPT (from scratch)",
            needs_checkpoint=True,
            bind={"pretrained": False},
        )(func)
        return func

    return decorator


def load_model(checkpoint: str | os.PathLike[str], *, pretrained: bool, seed: int):
    """The checkpoint's model and vocabulary, pre-trained or randomly initialised.

    Parameters
    ----------
    checkpoint
        Folder with ``args.json``, ``vocab.json`` and ``best_model.pt``.
    pretrained
        Keep the pre-trained weights; ``False`` builds the same architecture (configuration
        and vocabulary of the checkpoint) with a fresh initialisation seeded by ``seed``.
    seed
        Seed of the random initialisation (unused when ``pretrained``).

    Returns
    -------
    ``(model, vocab)``: a :class:`scgpt.model.TransformerModel` on CPU with ``model.vocab``
    set (the fine-tuning functions move it to the requested device).
    """
    import torch

    from scgpt import TransformerModel, load_pretrained

    # The weights are read either way: the state dict is what tells load_pretrained which
    # optional modules (MVC decoder, generative flags, zero heads) the architecture has.
    model, vocab, config = load_pretrained(checkpoint)
    if not pretrained:
        torch.manual_seed(seed)
        model = TransformerModel(config)
        model.vocab = vocab
        log.info(
            "scGPT from scratch: %d layers, d_model %d, random initialisation (seed %d) with "
            "the architecture of %s",
            config.nlayers,
            config.d_model,
            seed,
            checkpoint,
        )
    return model, vocab


def vocabulary_genes(adata: ad.AnnData, vocab, *, what: str, checkpoint: str) -> ad.AnnData:
    """``adata`` restricted to the genes (``var_names``) in the model's vocabulary.

    Logs the coverage; returns ``adata`` itself when every gene is covered.

    Raises
    ------
    ValueError
        When no gene of ``adata`` is in the vocabulary (naming the checkpoint and examples of
        both gene lists: a species or identifier mismatch is the usual cause).
    """
    covered = vocabulary_mask(adata.var_names, vocab, what=what, checkpoint=checkpoint)
    if covered.all():
        return adata
    log.info("scGPT (%s): dropping the %d genes outside the vocabulary", what, (~covered).sum())
    return adata[:, covered].copy()


def vocabulary_mask(genes, vocab, *, what: str, checkpoint: str) -> np.ndarray:
    """Boolean mask of ``genes`` found in ``vocab``; logs the coverage, raises on none."""
    from scgpt import map_genes

    names = [str(g) for g in genes]
    ids, report = map_genes(names, vocab, warn_below=0.0)
    if report.n_matched == 0:
        examples = vocab.genes[:5]
        raise ValueError(
            f"scGPT ({what}): none of the {report.n_total} genes of the data is in the "
            f"vocabulary of checkpoint {checkpoint} (vocab.json, {len(vocab)} tokens); data "
            f"genes e.g. {names[:5]}, vocabulary genes e.g. {examples}. Use a checkpoint whose "
            "vocabulary has the data's gene symbols (same species, symbols not Ensembl IDs)."
        )
    level = logging.INFO if report.fraction >= 0.5 else logging.WARNING
    log.log(level, "scGPT (%s): %s", what, report)
    return ids >= 0
