"""scGPT as a library: load released checkpoints, pre-train, fine-tune and embed cells.

No flash-attn needed: attention runs on PyTorch's ``scaled_dot_product_attention`` (fused on
GPU, bf16 autocast, and a CPU path). This package imports neither ``benchmark`` nor
``baselines``.

Quick start::

    import scgpt
    model, vocab, config = scgpt.load_pretrained("scGPT_human")
    scgpt.embed_cells(adata, (model, vocab, config))   # -> adata.obsm["X_scGPT"]
"""

from scgpt.checkpoint import (
    CheckpointMismatchError,
    LoadReport,
    load_pretrained,
    load_state_dict_checked,
    map_genes,
    save_pretrained,
)
from scgpt.corpus import ShardedCorpus
from scgpt.data import CellDataset, Collator, LengthBucketSampler, length_sorted_batches
from scgpt.embed import embed_cells, gene_embeddings
from scgpt.finetune import (
    ClassifierResult,
    IntegrationResult,
    MultiomicsResult,
    PerturbationResult,
    adapt_model,
    finetune_classifier,
    finetune_integration,
    finetune_multiomics,
    predict_classifier,
    predict_perturbation,
    train_perturbation_model,
)
from scgpt.masking import (
    GenerativeBatch,
    build_generative_mask,
    generative_attention_mask,
    mask_values,
    split_for_generation,
)
from scgpt.model import ModelConfig, TransformerModel
from scgpt.preprocess import bin_matrix, bin_row, filter_genes_to_vocab, preprocess_adata
from scgpt.pretrain import PretrainConfig, pretrain
from scgpt.tokenize import pad_batch, tokenize_and_pad, tokenize_cell
from scgpt.vocab import SPECIAL_TOKENS, GeneMatchReport, GeneVocab

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
