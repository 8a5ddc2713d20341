"""Field types of the registry schema: the choices (``Literal``), the constrained strings
and numbers, and the small validators behind them (each message names the wrong value and
what was expected). The models that use them are in :mod:`benchmark.datasets.schema`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, StrictFloat, StrictStr

from benchmark.sources.genes import DUPLICATE_POLICIES
from contract.tasks import TASKS as METHOD_TASKS

__all__ = [
    "CHECKPOINT_FILES",
    "COUNTS_SOURCES",
    "FILE_FORMATS",
    "FORMATS",
    "GEARS_SPLITS",
    "KINDS",
    "MODALITIES",
    "PROTEIN_PREFIX",
    "SPLIT_METHODS",
    "STANDARD_OBS",
    "TASKS",
    "VERIFICATION",
    "FieldError",
    "drop_nulls",
    "keyed",
]

# --- choices ---------------------------------------------------------------------------------
TASKS = (*METHOD_TASKS, "pretraining")
"""Tasks a registry entry may list: every task methods register for, and pre-training."""
FORMATS: dict[str, tuple[str, ...]] = {
    "builtin": ("builtin",),
    "dataset": ("h5ad", "gears", "scvi_pbmc", "paired_h5ad", "scmomat"),
    "resource": ("pickle", "table"),  # table: a delimited text file a task reads itself
    "corpus": ("census",),
}
"""Loader formats each kind of entry may use."""

# Choices kept elsewhere (the method registry, the gene module, FORMATS) become Literals here
# at import time, so that the schema follows them instead of repeating them.
TaskName = Literal[TASKS]  # type: ignore[valid-type]
DuplicatePolicy = Literal[DUPLICATE_POLICIES]  # type: ignore[valid-type]
Format = Literal[tuple(f for formats in FORMATS.values() for f in formats)]  # type: ignore[valid-type]
Kind = Literal["builtin", "dataset", "resource", "corpus"]
FileFormat = Literal["h5ad", "h5ad.gz", "zip", "tar.gz", "pkl", "npz", "csv", "txt", "json"]
Verification = Literal["verified", "partial", "unverified", "builtin"]
SplitMethod = Literal["none", "files", "obs", "gears"]
GearsSplit = Literal["simulation", "simulation_single"]
Modality = Literal["rna", "protein", "atac"]
StandardObs = Literal["cell_type", "batch", "condition", "split"]

KINDS: tuple[str, ...] = get_args(Kind)
FILE_FORMATS: tuple[str, ...] = get_args(FileFormat)
VERIFICATION: tuple[str, ...] = get_args(Verification)
SPLIT_METHODS: tuple[str, ...] = get_args(SplitMethod)
GEARS_SPLITS: tuple[str, ...] = get_args(GearsSplit)
MODALITIES: tuple[str, ...] = get_args(Modality)
STANDARD_OBS: tuple[str, ...] = get_args(StandardObs)
COUNTS_SOURCES = ("X", "raw", "none", "auto")  # or "layers/<key>"
CHECKPOINT_FILES = ("args.json", "vocab.json", "best_model.pt")
PROTEIN_PREFIX = "prot_"
"""Prefix of protein features, so that they never collide with gene symbols."""

_DRIVE_ID_RE = re.compile(r"^[-\w]+$")


class FieldError(ValueError):
    """A validator's finding about a key below the model it validates.

    ``where`` is the path from that model (e.g. ``("inputs", "data", "file")``); the registry
    loader appends it to pydantic's location so that the message names the key.
    """

    def __init__(self, where: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.where = where


# --- field types -----------------------------------------------------------------------------
def _one_or_many(value: Any) -> Any:
    """A single string where a list is expected means a list of one."""
    return (value,) if isinstance(value, str) else value


def _int_as_str(value: Any) -> Any:
    """An integer constant (``{constant: 1}``) is stored as its text, like every obs value."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _hex_digest(n_digits: int) -> Callable[[str], str]:
    pattern = re.compile(rf"^[0-9a-f]{{{n_digits}}}$")

    def check(value: str) -> str:
        if not pattern.match(value.lower()):
            raise ValueError(f"{value!r}: expected {n_digits} hex digits or null")
        return value.lower()

    return check


def _drive_id(value: str) -> str:
    if not _DRIVE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not a Google Drive id")
    return value


def _counts_source(value: str) -> str:
    if value not in COUNTS_SOURCES and not re.match(r"^layers/\S+$", value):
        raise ValueError(f"{value!r}: expected one of {COUNTS_SOURCES} or 'layers/<key>'")
    return value


def _fraction(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{value}: expected a fraction in (0, 1)")
    return value


def _obs_key(value: str) -> str:
    if value not in STANDARD_OBS or value == "split":
        raise ValueError(
            f"standard obs key must be one of {[k for k in STANDARD_OBS if k != 'split']} "
            "(split is set by the split: section)"
        )
    return value


def drop_nulls(value: Any) -> Any:
    """``{key: null}`` items of a mapping field mean "not given"."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    return value


def keyed(model: type[BaseModel], shorthand: str | None = None) -> Callable[[Any], Any]:
    """Before-validator of a mapping ``key -> item`` whose items know their key.

    Each item gets its key as ``model.KEY_FIELD`` (an entry's ``name``, an input's ``role``);
    with ``shorthand``, a plain string item means ``{shorthand: item}``.
    """
    field = getattr(model, "KEY_FIELD", None)
    assert field is not None, f"{model.__name__} has no KEY_FIELD"

    def fill(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # the mapping schema reports the wrong type
        out = {}
        for key, item in value.items():
            if shorthand is not None and isinstance(item, str):
                item = {shorthand: item}
            if isinstance(item, Mapping):
                if field in item:
                    raise FieldError(
                        (key, field), f"the {field} is the key ({key!r}); leave it out"
                    )
                item = {**item, field: str(key)}
            out[key] = item
        return out

    return fill


# Strings are strict: YAML reads `1`, `yes` or `2023-05-08` as other types, and a key that
# needs quotes should fail loudly rather than be stringified.
Text = StrictStr
Texts = Annotated[tuple[StrictStr, ...], BeforeValidator(_one_or_many)]
# Mapping keys are the exception: a batch or dataset called `1:` is read as an int.
KeyText = Annotated[StrictStr, BeforeValidator(str)]
DriveId = Annotated[StrictStr, AfterValidator(_drive_id)]
Sha256 = Annotated[StrictStr, AfterValidator(_hex_digest(64))]
Md5 = Annotated[StrictStr, AfterValidator(_hex_digest(32))]
Fraction = Annotated[StrictFloat, AfterValidator(_fraction)]
ObsKey = Annotated[StrictStr, AfterValidator(_obs_key)]
StandardObsKeys = Annotated[tuple[StandardObs, ...], BeforeValidator(_one_or_many)]
CountsSource = Annotated[StrictStr, AfterValidator(_counts_source)]
Constant = Annotated[StrictStr, BeforeValidator(_int_as_str)]
