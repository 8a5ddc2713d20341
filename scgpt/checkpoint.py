"""Reading and writing checkpoints in the released layout (``args.json``, ``vocab.json``, ``best_model.pt``).

Loading maps the official names onto this implementation (packed ``self_attn.Wqkv`` as
released; the older ``self_attn.in_proj_weight`` / ``in_proj_bias`` of
``nn.TransformerEncoderLayer`` checkpoints; ``module.`` / ``_orig_mod.`` prefixes of DDP and
``torch.compile``), reports missing, unexpected and shape-mismatched keys by name and refuses a
shape mismatch unless told to skip it.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scgpt._utils import logger, torch_save_atomic, write_json_atomic
from scgpt.model import ModelConfig, TransformerModel
from scgpt.model.config import CorruptCheckpointError, read_args_json
from scgpt.vocab import GeneVocab, map_genes

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "LoadReport",
    "check_weights_file",
    "convert_state_dict",
    "load_pretrained",
    "load_state_dict_checked",
    "load_weights",
    "map_genes",
    "read_args_json",
    "save_pretrained",
]

ARGS_FILE = "args.json"
VOCAB_FILE = "vocab.json"
MODEL_FILE = "best_model.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint tensor has a different shape from the model's."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded.

    Attributes
    ----------
    loaded
        Keys copied into the model.
    missing
        Model keys absent from the checkpoint (left at their initial values, e.g. new heads).
    unexpected
        Checkpoint keys the model has no place for (ignored).
    mismatched
        ``(key, checkpoint shape, model shape)`` of skipped tensors.
    renamed
        ``{checkpoint key: model key}`` for keys that were mapped.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every key matched in name and shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.renamed:
            lines.append(
                f"renamed {len(self.renamed)} keys (e.g. {next(iter(self.renamed.items()))})"
            )
        if self.missing:
            lines.append(f"missing (kept initial values) {len(self.missing)}: {self.missing[:10]}")
        if self.unexpected:
            lines.append(f"unexpected (ignored) {len(self.unexpected)}: {self.unexpected[:10]}")
        if self.mismatched:
            shown = [
                f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}"
                for k, a, b in self.mismatched[:10]
            ]
            lines.append(f"shape mismatch (skipped) {len(self.mismatched)}: {shown}")
        return "; ".join(lines)


_PREFIXES = ("module.", "_orig_mod.", "model.")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map official / wrapped key names to this implementation's names.

    Parameters
    ----------
    state_dict
        A state dict as saved by the official code, DDP or ``torch.compile``.

    Returns
    -------
    converted, renamed
        The converted dict and ``{old key: new key}`` for every key that changed.
    """
    out: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    for key, val in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                # "model." only when it wraps a full scGPT state dict, never inside a name
                if new.startswith(p) and (
                    p != "model." or new[len(p) :].split(".")[0] in _TOP_LEVEL
                ):
                    new = new[len(p) :]
                    changed = True
        new = new.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight")
        new = new.replace("self_attn.in_proj_bias", "self_attn.Wqkv.bias")
        if new in out:
            raise ValueError(
                f"checkpoint keys {renamed.get(new, new)!r} and {key!r} both map to {new!r}"
            )
        out[new] = val
        if new != key:
            renamed[key] = new
    return out, renamed


_TOP_LEVEL = {
    "encoder",
    "flag_encoder",
    "value_encoder",
    "batch_encoder",
    "dsbn",
    "bn",
    "pert_encoder",
    "mod_encoder",
    "transformer_encoder",
    "decoder",
    "cls_decoder",
    "mvc_decoder",
    "grad_reverse_discriminator",
}


def _mismatch_message(
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], where: str
) -> str:
    parts = []
    for key, ck, md in mismatched:
        msg = f"{key}: checkpoint shape {tuple(ck)}, model shape {tuple(md)}"
        if key == "encoder.embedding.weight" and ck[1:] == md[1:]:
            msg += (
                f" (vocabulary size mismatch: the checkpoint has {ck[0]} tokens, the vocabulary "
                f"{md[0]}; use the vocab.json released with this checkpoint)"
            )
        parts.append(msg)
    return (
        f"{len(mismatched)} tensor(s) of {where} do not fit the model: "
        + "; ".join(parts[:10])
        + ". Pass skip_mismatched=True to leave them at their initial values."
    )


def load_state_dict_checked(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict_shapes: bool = True,
    skip_mismatched: bool = False,
    source: str = "the checkpoint",
    partial_expected: bool = False,
) -> LoadReport:
    """Load ``state_dict`` into ``model`` after name mapping, with a full report.

    Parameters
    ----------
    model
        Target model.
    state_dict
        Checkpoint tensors (official or our names).
    strict_shapes
        Raise :class:`CheckpointMismatchError` on any shape mismatch (default).
    skip_mismatched
        Skip mismatched tensors instead (same as ``strict_shapes=False``).
    source
        Name of the checkpoint for messages.
    partial_expected
        The caller builds new modules on purpose (fine-tuning heads), so missing or skipped
        keys are logged as information, not as a warning that a run's reader must see.

    Returns
    -------
    LoadReport
    """
    converted, renamed = convert_state_dict(state_dict)
    target = model.state_dict()
    report = LoadReport(renamed=renamed)
    to_load: dict[str, torch.Tensor] = {}
    for key, val in converted.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(val.shape) != tuple(target[key].shape):
            report.mismatched.append((key, tuple(val.shape), tuple(target[key].shape)))
        else:
            to_load[key] = val
    report.missing = [k for k in target if k not in converted]
    if report.mismatched and strict_shapes and not skip_mismatched:
        raise CheckpointMismatchError(_mismatch_message(report.mismatched, source))
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    level = logging.INFO if report.ok or partial_expected else logging.WARNING
    logger.log(level, "loading %s: %s", source, report)
    return report


def read_state_dict(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read a plain state dict (or one wrapped under ``state_dict`` / ``model`` keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    obj = load_weights(path, map_location)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def check_weights_file(path: str | os.PathLike[str]) -> int:
    """Cheap checks that ``path`` can be PyTorch weights: not empty, not a text or HTML page.

    Returns
    -------
    The file size in bytes.

    Raises
    ------
    CorruptCheckpointError
        Naming the file and what it looks like instead.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes): delete it and download again")
    with path.open("rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"{", b"<head")):
        raise CorruptCheckpointError(
            f"{path} is a text/HTML page ({size} bytes), not PyTorch weights: the download "
            "probably saved an error or sign-in page; delete it and download again"
        )
    return size


def load_weights(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; a file that is not a weights file is named.

    The one way this package reads a ``.pt`` file (released checkpoints, fine-tuned models,
    pre-training step files): tensors and plain Python values only, never executed.

    torch's own messages suggest ``weights_only=False`` (which would run arbitrary code from
    the file) or are bare ``EOFError`` / zip errors; this says what the file looks like instead.
    """
    path = Path(path)
    size = check_weights_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # Raised for files that unpickle to something other than tensors (and for garbage);
        # never retry with weights_only=False: that would execute code from the file.
        raise CorruptCheckpointError(
            f"{path} ({size} bytes) is not a PyTorch weights file of tensors only; it was "
            f"refused without being executed ({str(err).splitlines()[0]})"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(
            f"{path} ({size} bytes) is truncated or not a PyTorch weights file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); "
            "delete it and download again"
        ) from None


def _infer_presence(
    args: Mapping[str, Any], sd: Mapping[str, torch.Tensor], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Structural flags the state dict shows and ``args.json`` does not state."""
    out: dict[str, Any] = {}
    stated = set(args) | set(overrides)
    if not stated & {"use_generative", "USE_GENERATIVE_TRAINING", "generative_training"}:
        out["use_generative"] = "flag_encoder.weight" in sd
    if not stated & {"do_mvc", "MVC", "GEPC"}:
        out["do_mvc"] = any(k.startswith("mvc_decoder.") for k in sd)
    if "explicit_zero_prob" not in stated:
        out["explicit_zero_prob"] = any(k.startswith("decoder.zero_logit.") for k in sd)
    if "input_emb_style" not in stated and "value_encoder.embedding.weight" in sd:
        out["input_emb_style"] = "category"
    return out


def load_pretrained(
    folder: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    strict_shapes: bool = True,
    skip_mismatched: bool = False,
    model_file: str = MODEL_FILE,
    **overrides: Any,
) -> tuple[TransformerModel, GeneVocab, ModelConfig]:
    """Load a released (or :func:`save_pretrained`) scGPT checkpoint folder.

    Parameters
    ----------
    folder
        Folder with ``args.json``, ``vocab.json`` and ``best_model.pt``.
    map_location
        Where to load the tensors (the model is built on CPU and moved there).
    strict_shapes
        Refuse shape mismatches (the error names every key with both shapes).
    skip_mismatched
        Keep mismatched tensors at their initial values instead of refusing.
    model_file
        Weights file name inside ``folder``.
    **overrides
        :class:`~scgpt.model.ModelConfig` fields to change, e.g. ``n_cls=10`` for a new
        classifier head or ``dropout=0.0``.

    Returns
    -------
    model, vocab, config
        The model in eval mode (``model.vocab`` and ``model.load_report`` are set), its
        vocabulary and configuration.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    for name in (ARGS_FILE, VOCAB_FILE, model_file):
        if not (folder / name).is_file():
            present = sorted(p.name for p in folder.iterdir())
            raise FileNotFoundError(f"{folder} has no {name} (found: {present})")
    args = read_args_json(folder / ARGS_FILE)
    pad_token = str(overrides.get("pad_token", args.get("pad_token", "<pad>")))
    vocab = GeneVocab.from_file(folder / VOCAB_FILE, pad_token=pad_token)
    if pad_token not in vocab:
        raise ValueError(f"{folder / VOCAB_FILE} has no pad token {pad_token!r}")
    if "<cls>" not in vocab:
        logger.warning("%s has no '<cls>' token: cell embeddings need it", folder / VOCAB_FILE)
    sd = read_state_dict(folder / model_file, map_location="cpu")
    converted, _ = convert_state_dict(sd)
    inferred = _infer_presence(args, converted, overrides)
    config = ModelConfig.from_args_json(
        args,
        ntoken=vocab.num_embeddings,
        pad_token_id=vocab[pad_token],
        source=folder / ARGS_FILE,
        **{**inferred, **overrides},
    )
    model = TransformerModel(config)
    report = load_state_dict_checked(
        model,
        sd,
        strict_shapes=strict_shapes,
        skip_mismatched=skip_mismatched,
        source=str(folder / model_file),
    )
    model.vocab = vocab
    model.load_report = report  # type: ignore[attr-defined]
    model.to(map_location)
    model.eval()
    return model, vocab, config


def save_pretrained(
    model: TransformerModel,
    vocab: GeneVocab,
    config: ModelConfig | None,
    folder: str | os.PathLike[str],
    *,
    extra_args: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``args.json``, ``vocab.json`` and ``best_model.pt`` (released layout), atomically.

    Parameters
    ----------
    model
        Model to save (its state dict uses the released key names, incl. packed ``Wqkv``).
    vocab
        Its vocabulary.
    config
        Its configuration (``None``: ``model.config``).
    folder
        Output folder (created).
    extra_args
        Additional ``args.json`` entries (e.g. training hyper-parameters).

    Returns
    -------
    Path
        ``folder``.
    """
    config = config or model.config
    if vocab.num_embeddings != config.ntoken:
        raise ValueError(
            f"vocabulary has {vocab.num_embeddings} rows but the model's embedding has {config.ntoken}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = model.module if hasattr(model, "module") else model
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in raw.state_dict().items()}
    args = config.to_args_json()
    if extra_args:
        args.update(extra_args)
    vocab.to_file(folder / VOCAB_FILE)
    write_json_atomic(args, folder / ARGS_FILE)
    torch_save_atomic(state, folder / MODEL_FILE)
    return folder
