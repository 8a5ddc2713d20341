"""Pre-training scGPT on a streamed ``.h5ad`` corpus: ``pretrain(config)`` or ``python -m scgpt.pretrain``.

Features: generative objective with the paper's attention mask (or the masked, MLM-like
objective), the cell-prompt second pass, DDP under ``torchrun`` (process group from the
environment, rank-sharded stream), bf16 autocast on CUDA, gradient accumulation, AdamW with
linear warm-up + cosine decay, checkpoints every N steps with exact resume (model,
optimiser, scheduler, every rank's RNG states and the stream position), a loss CSV (and
TensorBoard when available), a ``data_fractions`` series, and a final export in the
released layout (``args.json``, ``vocab.json``, ``best_model.pt``; the weights are those of
the last step, there is no validation split).

Example YAML (the tiny demo model: ~600 steps on 5,000 cells x 400 genes; with the default
released-scale settings a small model stays longer on the "predict each gene's mean" plateau,
a higher learning rate gets it past that in a few hundred steps)::

    data: data/corpus/            # an .h5ad or a folder of .h5ad shards (raw counts)
    output_dir: results/pretrain
    d_model: 64
    nlayers: 2
    nhead: 4
    d_hid: 64
    dropout: 0.1
    max_seq_len: 256
    batch_size: 32
    epochs: 4
    lr: 0.003
    warmup_steps: 30
    cell_prompt_after: 300

Run it with ``python -m scgpt.pretrain --config run.yaml`` or, on several GPUs,
``torchrun --nproc_per_node 4 -m scgpt.pretrain --config run.yaml``.
"""

# Lazy like the package root: ``scgpt.pretrain.config`` is read at every workflow parse.

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "PretrainConfig": "scgpt.pretrain.config",
    "PretrainObjective": "scgpt.pretrain.objective",
    "main": "scgpt.pretrain.run",
    "pretrain": "scgpt.pretrain.run",
    "warmup_cosine": "scgpt.pretrain.objective",
}
"""Public name -> the module that defines it (imported on first use)."""

__all__ = ["PretrainConfig", "PretrainObjective", "main", "pretrain", "warmup_cosine"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
