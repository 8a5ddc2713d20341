"""A randomly initialised scGPT checkpoint folder for tests (no pre-training needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scgpt import GeneVocab, save_pretrained
from scgpt.model import ModelConfig, TransformerModel

TINY_CONFIG: dict[str, Any] = dict(d_model=32, nhead=4, d_hid=32, nlayers=1, n_bins=11, dropout=0.0)


def random_checkpoint(folder: str | Path, genes: Sequence[str], *, seed: int, **config: Any) -> str:
    """Save a seeded random model over ``genes`` in the released layout; return the folder.

    ``config`` overrides :data:`TINY_CONFIG` (any :class:`~scgpt.model.ModelConfig` field).
    """
    vocab = GeneVocab.from_genes(list(genes))
    cfg = ModelConfig(
        ntoken=vocab.num_embeddings, pad_token_id=vocab.pad_id, **{**TINY_CONFIG, **config}
    )
    torch.manual_seed(seed)
    return str(save_pretrained(TransformerModel(cfg), vocab, cfg, folder))
