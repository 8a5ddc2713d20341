"""``ModelConfig``: every architecture choice of the scGPT model, mirroring ``args.json``."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUT_EMB_STYLES = ("continuous", "category", "scaling")
CELL_EMB_STYLES = ("cls", "avg-pool", "w-pool")
DSBN_CHOICES = (False, True, "dsbn", "do_affine", "batchnorm")
EXPR_DECODER_STYLES = ("mlp", "affine")

# args.json key (official scripts and tutorials) -> ModelConfig field
_ARGS_ALIASES: dict[str, str] = {
    "embsize": "d_model",
    "layer_size": "d_model",
    "nheads": "nhead",
    "n_layers_cls": "nlayers_cls",
    "MVC": "do_mvc",
    "GEPC": "do_mvc",
    "USE_GENERATIVE_TRAINING": "use_generative",
    "generative_training": "use_generative",
    "ecs_thres": "ecs_threshold",
    "DSBN": "domain_spec_batchnorm",
    "DAB": "do_dab",
    "ADV": "do_dab",
    "INPUT_BATCH_LABELS": "use_batch_labels",
    "max_len": "max_seq_len",
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a scGPT :class:`~scgpt.model.TransformerModel`.

    Attributes
    ----------
    ntoken
        Rows of the gene embedding (vocabulary size).
    pad_token_id
        Index of ``<pad>`` (padding row of the gene embedding).
    d_model
        Embedding size (``embsize`` in ``args.json``; 512 released).
    nhead
        Attention heads (``nheads``; 8).
    d_hid
        Feed-forward width (512).
    nlayers
        Transformer layers (12).
    nlayers_cls
        Layers of the classification head (3).
    n_cls
        Classes of the classification head; 1 = no head.
    dropout
        Dropout (0.2).
    pad_token
        Name of the padding token.
    pad_value, mask_value
        Values of padded and masked positions (-2 and -1).
    n_bins
        Value bins including the zero bin (51).
    max_seq_len
        Sequence length used in training (1200); longer inputs still run.
    input_emb_style
        ``"continuous"`` (value MLP), ``"category"`` (bin embedding) or ``"scaling"``.
    cell_emb_style
        ``"cls"``, ``"avg-pool"`` (mean over non-padding tokens) or ``"w-pool"``
        (value-weighted sum, L2-normalised).
    explicit_zero_prob
        Add Bernoulli "non-zero" heads to the expression and MVC decoders.
    do_mvc
        Masked value prediction from the cell embedding (MVC / GEPC decoder).
    mvc_decoder_style
        ``"inner product"`` or ``"inner product, detach"``.
    use_batch_labels
        Concatenate a batch embedding to the decoder inputs.
    num_batch_labels
        Number of batches (needed by ``use_batch_labels``, DSBN and DAB).
    domain_spec_batchnorm
        ``False``; ``True``/``"dsbn"`` (affine-free batch norm per batch); ``"do_affine"``;
        or ``"batchnorm"`` (one shared batch norm, the perturbation model's input norm).
    do_dab
        Domain-adversarial batch discriminator on the cell embedding.
    ecs_threshold
        Elastic cell similarity threshold (0.8 in the integration tutorial).
    use_generative
        Has the generative ``flag_encoder`` (released whole-human models do).
    use_mod
        Modality embedding (multi-omic model, the official ``use_mod``): one embedding per
        token's modality (RNA, protein, ATAC and the special tokens), added to the batch
        embedding and concatenated to the inputs of the expression and MVC decoders.
    ntokens_mod
        Rows of the modality embedding (needed by ``use_mod``).
    mod_pad_id
        Padding row of the modality embedding (the modality of ``<pad>``; ``None``: none).
    use_pert_flags
        Perturbation-flag embedding added to the input (perturbation model).
    pert_pad_id
        Padding row of the perturbation-flag embedding (0 as in the official tutorial:
        flag 0 = not perturbed / padding, 1 = perturbed).
    expr_decoder_style
        ``"mlp"``: the released 3-layer expression decoder (``decoder.fc``); ``"affine"``:
        ``A(h) * x + b(h)`` on the input value ``x`` (:class:`~scgpt.model.AffineExprDecoder`,
        the official perturbation model's decoder; needs the input values, so the generative
        pass cannot use it).
    norm_scheme
        ``"post"`` (released) or ``"pre"`` layer norm.
    layer_norm_eps
        LayerNorm epsilon of the transformer layers.
    max_value
        Clamp of the continuous value encoder (512).
    legacy_gen_attention
        Reproduce the official flash generator, whose generated tokens' attention output
        skips ``out_proj``; ``False`` (default) applies ``out_proj`` to every token.
    extra
        Other ``args.json`` entries, kept for round trips.
    """

    ntoken: int
    pad_token_id: int = 0
    d_model: int = 512
    nhead: int = 8
    d_hid: int = 512
    nlayers: int = 12
    nlayers_cls: int = 3
    n_cls: int = 1
    dropout: float = 0.2
    pad_token: str = "<pad>"
    pad_value: float = -2.0
    mask_value: float = -1.0
    n_bins: int = 51
    max_seq_len: int = 1200
    input_emb_style: str = "continuous"
    cell_emb_style: str = "cls"
    explicit_zero_prob: bool = False
    do_mvc: bool = True
    mvc_decoder_style: str = "inner product"
    use_batch_labels: bool = False
    num_batch_labels: int | None = None
    domain_spec_batchnorm: bool | str = False
    do_dab: bool = False
    ecs_threshold: float = 0.8
    use_generative: bool = True
    use_mod: bool = False
    ntokens_mod: int | None = None
    mod_pad_id: int | None = None
    use_pert_flags: bool = False
    pert_pad_id: int = 0
    expr_decoder_style: str = "mlp"
    norm_scheme: str = "post"
    layer_norm_eps: float = 1e-5
    max_value: float = 512.0
    legacy_gen_attention: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.d_model % self.nhead:
            raise ValueError(f"d_model={self.d_model} must be divisible by nhead={self.nhead}")
        if self.input_emb_style not in INPUT_EMB_STYLES:
            raise ValueError(
                f"input_emb_style must be one of {INPUT_EMB_STYLES}, got {self.input_emb_style!r}"
            )
        if self.cell_emb_style not in CELL_EMB_STYLES:
            raise ValueError(
                f"cell_emb_style must be one of {CELL_EMB_STYLES}, got {self.cell_emb_style!r}"
            )
        if self.domain_spec_batchnorm not in DSBN_CHOICES:
            raise ValueError(
                f"domain_spec_batchnorm must be one of {DSBN_CHOICES}, got {self.domain_spec_batchnorm!r}"
            )
        if self.expr_decoder_style not in EXPR_DECODER_STYLES:
            raise ValueError(
                f"expr_decoder_style must be one of {EXPR_DECODER_STYLES}, got {self.expr_decoder_style!r}"
            )
        if self.norm_scheme not in ("pre", "post"):
            raise ValueError(f"norm_scheme must be 'pre' or 'post', got {self.norm_scheme!r}")
        needs_batches = self.use_batch_labels or self.do_dab or self.uses_dsbn
        if needs_batches and not self.num_batch_labels:
            raise ValueError(
                "num_batch_labels is required with use_batch_labels, do_dab or domain-specific batch norm"
            )
        if self.use_mod and not self.ntokens_mod:
            raise ValueError(
                "ntokens_mod (rows of the modality embedding) is required with use_mod"
            )
        if self.mod_pad_id is not None and not (
            self.ntokens_mod and 0 <= self.mod_pad_id < self.ntokens_mod
        ):
            raise ValueError(
                f"mod_pad_id={self.mod_pad_id} outside the modality embedding of {self.ntokens_mod}"
            )
        if not 0 <= self.pad_token_id < self.ntoken:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} outside the vocabulary of {self.ntoken}"
            )
        if self.mvc_decoder_style not in ("inner product", "inner product, detach"):
            raise ValueError(f"unsupported mvc_decoder_style {self.mvc_decoder_style!r}")

    # derived -------------------------------------------------------------------------------
    @property
    def uses_dsbn(self) -> bool:
        """Whether a per-batch (domain-specific) batch norm is used."""
        return self.domain_spec_batchnorm in (True, "dsbn", "do_affine")

    @property
    def n_input_bins(self) -> int:
        """Rows of the category value embedding: bins plus the pad and mask values."""
        return self.n_bins + 2

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # args.json ---------------------------------------------------------------------------
    @classmethod
    def from_args_json(
        cls,
        args: str | os.PathLike[str] | Mapping[str, Any],
        *,
        ntoken: int,
        pad_token_id: int,
        source: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> ModelConfig:
        """Build from an official (or our) ``args.json``.

        Parameters
        ----------
        args
            Path to ``args.json`` or its parsed content.
        ntoken
            Vocabulary size (from ``vocab.json``; ``args.json`` does not hold it).
        pad_token_id
            Index of the pad token in the vocabulary.
        source
            The file ``args`` was read from, named in errors (default: ``args`` if it is a
            path).
        **overrides
            Field values taking precedence over the file.

        Returns
        -------
        ModelConfig

        Raises
        ------
        CorruptCheckpointError
            A value of the file has the wrong type (the message names the file, the key, the
            value and the expected type) or an invalid value.
        """
        if not isinstance(args, Mapping):
            path = Path(args)
            if not path.is_file():
                raise FileNotFoundError(f"args.json not found: {path}")
            args = read_args_json(path)
            source = source or path
        where = str(source) if source is not None else "args.json"
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "ntoken", "pad_token_id"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        key_of: dict[str, str] = {}  # field -> the args.json key it was read from
        # aliases first so that our own field names (written by to_args_json) win
        for key, val in args.items():
            if key in _ARGS_ALIASES and _ARGS_ALIASES[key] in names:
                if _ARGS_ALIASES[key] not in values:
                    values[_ARGS_ALIASES[key]] = val
                    key_of[_ARGS_ALIASES[key]] = key
        for key, val in args.items():
            if key in names:
                values[key] = val
                key_of[key] = key
            elif key not in _ARGS_ALIASES:
                extra[key] = val
        hints = typing.get_type_hints(cls)
        for name, key in key_of.items():
            if name not in overrides:
                values[name] = _typed_arg(values[name], hints[name], where, key, name)
        if "pre_norm" in args and "norm_scheme" not in args:
            values["norm_scheme"] = "pre" if args["pre_norm"] else "post"
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(
                f"unknown ModelConfig field(s) {sorted(unknown)}; fields: {sorted(names)}"
            )
        values.update(overrides)
        for key in ("pad_value", "mask_value", "dropout", "ecs_threshold", "max_value"):
            if key in values and values[key] is not None:
                values[key] = float(values[key])
        try:
            return cls(ntoken=int(ntoken), pad_token_id=int(pad_token_id), extra=extra, **values)
        except ValueError as err:  # __post_init__'s checks of values and their combinations
            raise CorruptCheckpointError(f"{where}: invalid model configuration: {err}") from None

    def to_args_json(self) -> dict[str, Any]:
        """``args.json`` content: the official key names plus every field of this config.

        The official loaders read ``embsize``, ``nheads``, ``d_hid``, ``nlayers``,
        ``n_layers_cls``, ``dropout``, ``n_bins``, ``pad_token``, ``pad_value``,
        ``mask_value``, ``input_emb_style``, ``max_seq_len`` and ``MVC``; they are all written.
        """
        out: dict[str, Any] = dict(self.extra)
        out.update(
            embsize=self.d_model,
            nheads=self.nhead,
            d_hid=self.d_hid,
            nlayers=self.nlayers,
            n_layers_cls=self.nlayers_cls,
            dropout=self.dropout,
            n_bins=self.n_bins,
            pad_token=self.pad_token,
            pad_value=self.pad_value,
            mask_value=self.mask_value,
            max_seq_len=self.max_seq_len,
            input_emb_style=self.input_emb_style,
            input_style="binned",
            MVC=self.do_mvc,
            USE_GENERATIVE_TRAINING=self.use_generative,
            ecs_thres=self.ecs_threshold,
            DSBN=self.domain_spec_batchnorm,
            pre_norm=self.norm_scheme == "pre",
        )
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "ntoken", "pad_token_id"):
                out[f.name] = getattr(self, f.name)
        return out


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _typed_arg(value: Any, hint: Any, source: str, key: str, field_name: str) -> Any:
    """``value`` of ``args.json`` key ``key`` as field ``field_name``'s type (ints and floats
    converted where exact), or :class:`CorruptCheckpointError` naming file, key, value, type.

    A wrong type would otherwise surface far from the file, e.g. ``'str' object cannot be
    interpreted as an integer`` while the layers are built.
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and (isinstance(value, bool) or (type(value) is int and value in (0, 1))):
            return bool(value)  # official scripts sometimes write flags as 0 / 1
        if option is int and type(value) is int:
            return value
        if option is int and type(value) is float and value.is_integer():
            return int(value)
        if option is float and type(value) in (int, float):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(
        "null"
        if option is type(None)
        else _TYPE_WORDS.get(option, getattr(option, "__name__", str(option)))
        for option in options
    )
    shown = "" if key == field_name else f" (ModelConfig.{field_name})"
    raise CorruptCheckpointError(
        f"{source}: {key!r}{shown} is {value!r} ({type(value).__name__}); expected {expected}"
    )


class CorruptCheckpointError(ValueError):
    """A checkpoint file that exists but cannot be what it claims to be (the message names it)."""


def read_args_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint's ``args.json``, naming the file when it is not a JSON object."""
    path = Path(path)
    try:
        args = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(
            f"{path} is not valid JSON ({err}); expected the model's hyper-parameters as a "
            "JSON object (args.json of a released checkpoint)"
        ) from None
    if not isinstance(args, dict):
        raise CorruptCheckpointError(
            f"{path}: expected a JSON object of hyper-parameters, got {type(args).__name__}"
        )
    return args
