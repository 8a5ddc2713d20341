"""scGPT as a library: load released checkpoints, pre-train, fine-tune and embed cells.

No flash-attn needed: attention runs on PyTorch's ``scaled_dot_product_attention`` (fused on
GPU, bf16 autocast, and a CPU path). This package imports neither ``benchmark`` nor
``baselines``.

Quick start::

    import scgpt
    model, vocab, config = scgpt.load_pretrained("scGPT_human")
    scgpt.embed_cells(adata, (model, vocab, config))   # -> adata.obsm["X_scGPT"]
"""

# Names are imported when first used (PEP 562): importing ``scgpt`` (or any of its submodules,
# which runs this file first) no longer imports torch, so tools that only need a light part
# (the workflow's plan, the safe pickle reader) start in a fraction of a second.

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "CellDataset": "scgpt.data",
    "CheckpointMismatchError": "scgpt.checkpoint",
    "ClassifierResult": "scgpt.finetune",
    "Collator": "scgpt.data",
    "GeneMatchReport": "scgpt.vocab",
    "GeneVocab": "scgpt.vocab",
    "GenerativeBatch": "scgpt.masking",
    "IntegrationResult": "scgpt.finetune",
    "LengthBucketSampler": "scgpt.data",
    "LoadReport": "scgpt.checkpoint",
    "ModelConfig": "scgpt.model",
    "MultiomicsResult": "scgpt.finetune",
    "PerturbationResult": "scgpt.finetune",
    "PretrainConfig": "scgpt.pretrain",
    "SPECIAL_TOKENS": "scgpt.vocab",
    "ShardedCorpus": "scgpt.corpus",
    "TransformerModel": "scgpt.model",
    "adapt_model": "scgpt.finetune",
    "bin_matrix": "scgpt.preprocess",
    "bin_row": "scgpt.preprocess",
    "build_generative_mask": "scgpt.masking",
    "embed_cells": "scgpt.embed",
    "filter_genes_to_vocab": "scgpt.preprocess",
    "finetune_classifier": "scgpt.finetune",
    "finetune_integration": "scgpt.finetune",
    "finetune_multiomics": "scgpt.finetune",
    "gene_embeddings": "scgpt.embed",
    "generative_attention_mask": "scgpt.masking",
    "length_sorted_batches": "scgpt.data",
    "load_pretrained": "scgpt.checkpoint",
    "load_state_dict_checked": "scgpt.checkpoint",
    "map_genes": "scgpt.checkpoint",
    "mask_values": "scgpt.masking",
    "pad_batch": "scgpt.tokenize",
    "predict_classifier": "scgpt.finetune",
    "predict_perturbation": "scgpt.finetune",
    "preprocess_adata": "scgpt.preprocess",
    "pretrain": "scgpt.pretrain",
    "save_pretrained": "scgpt.checkpoint",
    "split_for_generation": "scgpt.masking",
    "tokenize_and_pad": "scgpt.tokenize",
    "tokenize_cell": "scgpt.tokenize",
    "train_perturbation_model": "scgpt.finetune",
}
"""Public name -> the module that defines it (imported on first use)."""

__all__ = [
    "SPECIAL_TOKENS",
    "CellDataset",
    "CheckpointMismatchError",
    "ClassifierResult",
    "Collator",
    "GeneMatchReport",
    "GeneVocab",
    "GenerativeBatch",
    "IntegrationResult",
    "LengthBucketSampler",
    "LoadReport",
    "ModelConfig",
    "MultiomicsResult",
    "PerturbationResult",
    "PretrainConfig",
    "ShardedCorpus",
    "TransformerModel",
    "adapt_model",
    "bin_matrix",
    "bin_row",
    "build_generative_mask",
    "embed_cells",
    "filter_genes_to_vocab",
    "finetune_classifier",
    "finetune_integration",
    "finetune_multiomics",
    "gene_embeddings",
    "generative_attention_mask",
    "length_sorted_batches",
    "load_pretrained",
    "load_state_dict_checked",
    "map_genes",
    "mask_values",
    "pad_batch",
    "predict_classifier",
    "predict_perturbation",
    "preprocess_adata",
    "pretrain",
    "save_pretrained",
    "split_for_generation",
    "tokenize_and_pad",
    "tokenize_cell",
    "train_perturbation_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
