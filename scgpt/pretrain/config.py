"""Options of a pre-training run (``PretrainConfig``), readable from YAML."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class OptionRangeError(ValueError):
    """A pre-training option outside the values it can take.

    Attributes
    ----------
    option
        The option's name (a :class:`PretrainConfig` field).
    detail
        What is wrong, without the name (e.g. ``"must be > 0; got -1.0"``).
    """

    def __init__(self, option: str, detail: str) -> None:
        self.option = option
        self.detail = detail
        super().__init__(f"{option} {detail}")


# Allowed values of the numeric options, as (lowest, lowest included, highest, highest
# included); None for no bound. An option may be None where its type allows it (= off).
_RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    **dict.fromkeys(
        (
            "d_model",
            "nlayers",
            "nhead",
            "d_hid",
            "n_bins",
            "max_seq_len",
            "epochs",
            "max_steps",
            "chunk_size",
            "num_threads",
            "save_every",
            "keep_checkpoints",
            "log_every",
            "stop_after_steps",
        ),
        (1, True, None, False),
    ),
    **dict.fromkeys(
        ("warmup_steps", "prefetch", "seed", "cell_prompt_after", "weight_decay", "max_grad_norm"),
        (0, True, None, False),
    ),
    "lr": (0, False, None, False),
    "normalize_total": (0, False, None, False),
    "dropout": (0, True, 1, False),
    "min_lr_ratio": (0, True, 1, True),
}


def _range_text(low: float | None, low_in: bool, high: float | None, high_in: bool) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def _outside(
    value: float, low: float | None, low_in: bool, high: float | None, high_in: bool
) -> bool:
    below = low is not None and (value < low if low_in else value <= low)
    above = high is not None and (value > high if high_in else value >= high)
    return below or above


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run needs (the YAML file holds the same keys).

    Attributes
    ----------
    data
        ``.h5ad`` file or folder of shards with raw counts.
    output_dir
        Run folder: ``checkpoints/``, ``loss.csv``, ``tb/``, ``model/`` (the export).
    vocab_path
        ``vocab.json`` to use (default: from ``init_checkpoint``, else built from the corpus).
    gene_col
        ``var`` column with gene symbols (``None``: ``var_names``).
    init_checkpoint
        Start from a released / saved model folder instead of random weights (its
        architecture and vocabulary are used; the architecture options below are ignored).
    d_model, nlayers, nhead, d_hid, dropout, n_bins, max_seq_len, input_emb_style, pad_value, mask_value, do_mvc, explicit_zero_prob
        Architecture (released: 512, 12, 8, 512, 0.2, 51, 1200, continuous, -2, -1, True, False).
    objective
        ``"generative"`` (paper) or ``"mlm"`` (masked values).
    gen_ratios
        Fractions of genes to generate, one drawn per batch.
    mask_ratios
        Masking fractions for ``objective="mlm"``.
    cell_prompt_after
        From this optimizer step on, add the cell-prompt pass (the ``<cls>`` embedding of the
        first pass, detached, replaces the ``<cls>`` input); ``None`` disables it.
    batch_size
        Cells per micro-batch per rank (released: 32 per GPU).
    grad_accum_steps
        Micro-batches per optimizer step.
    lr, weight_decay, betas, warmup_steps, min_lr_ratio, max_grad_norm
        AdamW and schedule (linear warm-up, cosine decay to ``min_lr_ratio * lr``).
    epochs, max_steps
        Length of the run (``max_steps`` optimizer steps wins when given).
    chunk_size, normalize_total, log1p, prefetch
        Streaming: rows read at once, per-cell normalisation, batches prepared ahead.
    data_fractions
        Pre-train one model per fraction of the corpus (the paper's data-size series).
    seed, device, precision, num_threads
        Reproducibility and hardware (``precision="auto"``: bf16 autocast on CUDA).
    save_every, keep_checkpoints, log_every
        Checkpoint interval (optimizer steps), checkpoints kept, logging interval.
    resume
        Continue from the newest checkpoint in ``output_dir`` if there is one.
    stop_after_steps
        Stop (with a checkpoint) after this many steps in this invocation, e.g. to fit a job
        time limit; the next call resumes.
    tensorboard, progress
        Write TensorBoard events (if importable) and show a tqdm bar.
    extra
        Free-form metadata, recorded in ``run_config.json`` and the exported ``args.json``.
    """

    data: str
    output_dir: str
    vocab_path: str | None = None
    gene_col: str | None = None
    init_checkpoint: str | None = None
    d_model: int = 512
    nlayers: int = 12
    nhead: int = 8
    d_hid: int = 512
    dropout: float = 0.2
    n_bins: int = 51
    max_seq_len: int = 1200
    input_emb_style: str = "continuous"
    pad_value: float = -2.0
    mask_value: float = -1.0
    do_mvc: bool = True
    explicit_zero_prob: bool = False
    objective: str = "generative"
    gen_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    cell_prompt_after: int | None = 1000
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 10_000
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    epochs: int = 1
    max_steps: int | None = None
    chunk_size: int = 4096
    normalize_total: float | None = 1e4
    log1p: bool = True
    prefetch: int = 4
    data_fractions: tuple[float, ...] | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = True
    stop_after_steps: int | None = None
    tensorboard: bool = True
    progress: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.objective not in ("generative", "mlm"):
            raise ValueError(f"objective must be 'generative' or 'mlm', got {self.objective!r}")
        if self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("batch_size and grad_accum_steps must be >= 1")
        for r in (*self.gen_ratios, *self.mask_ratios):
            if not 0.0 < r < 1.0:
                raise ValueError(f"generation / mask ratios must be in (0, 1), got {r}")
        if self.data_fractions is not None:
            for f in self.data_fractions:
                if not 0.0 < f <= 1.0:
                    raise ValueError(f"data_fractions must be in (0, 1], got {f}")
        # Values a run would accept and then act on wrongly: lr <= 0 never learns (or climbs
        # the loss), epochs 0 exports an untrained model, save_every 0 divides by zero.
        for name, bounds in _RANGES.items():
            value = getattr(self, name)
            if value is not None and _outside(value, *bounds):
                raise OptionRangeError(name, f"must be {_range_text(*bounds)}; got {value!r}")
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise OptionRangeError("betas", f"must be in [0, 1); got {list(self.betas)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainConfig:
        """Build from a mapping, naming any unknown key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise KeyError(
                f"unknown pre-training option(s) {unknown}; valid options: {sorted(names - {'extra'})}"
            )
        vals = dict(values)
        for key in ("gen_ratios", "mask_ratios", "betas", "data_fractions"):
            if vals.get(key) is not None:
                vals[key] = tuple(float(x) for x in vals[key])
        for key in ("data", "output_dir"):
            if key not in vals:
                raise KeyError(f"pre-training config needs {key!r}")
        return cls(**vals)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PretrainConfig:
        """Read a YAML file of options."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of options")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the options."""
        return dataclasses.asdict(self)
