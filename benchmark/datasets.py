"""The dataset registry (``config/datasets.yaml``) and the loaders that standardise each source.

Every dataset the benchmark uses has one registry entry: where its files come from (URL or
Google Drive id, checksum, size, format), which tasks use it, and how its source columns map
to the standard keys. Four kinds of entry exist:

``builtin``
    Demo data made by a Python builder (``builder: "module:function"``, ``params``).
``dataset``
    Downloaded files that :func:`standardise` turns into one standard AnnData.
``resource``
    A file a method needs as is (GEARS' ``gene2go_all.pkl``); no standard AnnData.
``corpus``
    The pre-training corpus (CELLxGENE census query); streamed, not standardised here.

The standard AnnData (CONTRIBUTING.md): ``X`` raw counts as CSR float32 where the source has
them (else the source's values, described in ``uns["standardisation"]["x"]``), ``var_names``
gene symbols with ``var["gene_id"]`` where known, obs ``cell_type`` / ``batch`` /
``condition`` / ``split`` as the tasks need, and for multi-omic sets one AnnData with
``var["modality"]`` in {"rna", "protein", "atac"} (protein features are prefixed ``prot_``,
as in the demo simulator, so that they never collide with gene symbols). ``split`` values:
``reference`` / ``query`` for annotation sets, ``train`` / ``val`` / ``test`` for
perturbation sets (``excluded`` for cells whose perturbed genes GEARS cannot place in its GO
graph). The source's layers, ``obsm``, ``varm`` and ``obsp`` are dropped; its ``uns`` is kept.

Loader formats (``format:``)
----------------------------
``h5ad``
    One ``data`` input, or several inputs told apart by ``split: {by: files}`` (reference
    and query files, concatenated in registry order). ``.h5ad.gz`` is decompressed.
    ``modalities:`` maps a var column (e.g. ``feature_types``) to modalities.
``gears``
    GEARS' processed ``perturb_processed.h5ad``; ``split: {by: gears}`` recomputes GEARS'
    split with GEARS' own code (same GO filter and seed as ``PertData.prepare_split``) or reads
    a ``split`` input (a pickled ``{"train": [...], "val": [...], "test": [...]}``).
``scvi_pbmc``
    scvi-tools' ``pbmc_dataset`` built offline from its downloaded files.
``paired_h5ad``
    One h5ad per modality (inputs named ``rna``, ``protein``, ``atac``), same cells.
``scmomat``
    scMoMaT's mosaic folder layout (features x cells ``.npz`` per batch and modality).

Archives
--------
An input may live inside a downloaded archive: ``member:`` is the path inside the zip, one
element per nesting level (a zip inside a zip). A member not found under its exact path is
searched by file name, nested zips included, so a member path that the registry could not
verify still resolves. Extracted files are cached in ``<raw_dir>/.extracted/``. A file placed
directly in ``raw_dir`` under the member's file name (e.g. fetched by hand from the Drive
folder) is used as is.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from baselines.registry import TASKS as METHOD_TASKS
from benchmark.conditions import normalise_condition, parse_condition
from benchmark.genes import (
    DUPLICATE_POLICIES,
    detect_id_type,
    gene_coverage,
    harmonise_genes,
    read_gene_mapping,
    translate_gene_lists,
)
from benchmark.io import atomic_path, write_h5ad

__all__ = [
    "CheckpointEntry",
    "DatasetEntry",
    "DatasetError",
    "FileSpec",
    "InputSpec",
    "Registry",
    "RegistryError",
    "build_builtin",
    "gears_split",
    "load_registry",
    "prepare_standard_dataset",
    "raw_files",
    "standardise",
    "validate_standard",
    "write_standard",
]

log = logging.getLogger(__name__)

TASKS = (*METHOD_TASKS, "pretraining")
"""Tasks a registry entry may list: every task methods register for, and pre-training."""
KINDS = ("builtin", "dataset", "resource", "corpus")
FORMATS = {
    "builtin": ("builtin",),
    "dataset": ("h5ad", "gears", "scvi_pbmc", "paired_h5ad", "scmomat"),
    "resource": ("pickle",),
    "corpus": ("census",),
}
FILE_FORMATS = ("h5ad", "h5ad.gz", "zip", "tar.gz", "pkl", "npz", "csv", "txt", "json")
STANDARD_OBS = ("cell_type", "batch", "condition", "split")
MODALITIES = ("rna", "protein", "atac")
PROTEIN_PREFIX = "prot_"
COUNTS_SOURCES = ("X", "raw", "none", "auto")  # or "layers/<key>"
VERIFICATION = ("verified", "partial", "unverified", "builtin")
SPLIT_METHODS = ("none", "files", "obs", "gears")
GEARS_SPLITS = ("simulation", "simulation_single")
CHECKPOINT_FILES = ("args.json", "vocab.json", "best_model.pt")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_DRIVE_ID_RE = re.compile(r"^[-\w]+$")
_BUILDER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class DatasetError(ValueError):
    """A dataset cannot be loaded or does not meet the standard; the message names the
    dataset, the key and what exists instead."""


class RegistryError(DatasetError):
    """A registry entry is malformed; the message names the file, the entry and the field."""


# --- registry model --------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    """One file to download into ``data/raw/<dataset>/``.

    Attributes
    ----------
    name
        File name under the dataset's raw folder (may contain ``/``).
    url, drive_id
        Where it comes from: an HTTP(S) URL, or a Google Drive *file* id.
    sha256, md5, size
        Expected digest(s) and size in bytes; ``None`` = unknown (the downloader records the
        sha256 on first download).
    format
        ``h5ad``, ``h5ad.gz``, ``zip``, ``tar.gz``, ``pkl``, ``npz``, ``csv``, ``txt``, ``json``.
    note
        Provenance and caveats.
    """

    name: str
    url: str | None = None
    drive_id: str | None = None
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    format: str = "h5ad"
    note: str | None = None

    @property
    def source_url(self) -> str:
        """The URL to fetch (Drive ids become Drive download URLs)."""
        if self.url is not None:
            return self.url
        from benchmark.download import google_drive_url

        return google_drive_url(str(self.drive_id))


@dataclass(frozen=True)
class InputSpec:
    """Where one loader input is: a downloaded file, or a member (chain) inside it."""

    role: str
    file: str
    member: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObsSource:
    """How one standard obs key is filled: a source column, a constant, or the input's role."""

    column: str | None = None
    constant: str | None = None
    from_input: bool = False

    def describe(self) -> str:
        if self.column is not None:
            return self.column
        if self.constant is not None:
            return f"constant {self.constant!r}"
        return "input role"


@dataclass(frozen=True)
class SplitSpec:
    """How ``obs["split"]`` is made.

    ``by``: ``none``; ``files`` (``roles`` maps input role -> split value); ``obs``
    (``column`` and ``values``: split value -> source values); ``gears`` (``method``,
    ``seed``, ``train_gene_set_size``, ``combo_seen2_train_frac``).
    """

    by: str = "none"
    roles: dict[str, str] = field(default_factory=dict)
    column: str | None = None
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    method: str = "simulation"
    seed: int = 1
    train_gene_set_size: float = 0.75
    combo_seen2_train_frac: float = 0.75


@dataclass(frozen=True)
class GeneSpec:
    """Gene identifiers of the source (see :mod:`benchmark.genes`)."""

    id_type: str = "auto"
    symbol_column: str | None = None
    id_column: str | None = None
    mapping_input: str | None = None
    mapping_id_column: str | None = None
    mapping_symbol_column: str | None = None
    duplicates: str = "auto"


@dataclass(frozen=True)
class ModalitySpec:
    """Modality of each feature of a single multi-omic file: ``var[column]`` values -> modality."""

    column: str
    map: dict[str, str]


@dataclass(frozen=True)
class MosaicSpec:
    """scMoMaT layout: per batch, modality -> matrix file (features x cells) and ``meta``."""

    features: dict[str, str]
    batches: dict[str, dict[str, str]]


@dataclass(frozen=True)
class DatasetEntry:
    """One validated registry entry (see the module docstring and ``config/datasets.yaml``)."""

    name: str
    kind: str
    description: str
    tasks: tuple[str, ...]
    verification: str
    format: str
    files: tuple[FileSpec, ...] = ()
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    obs: dict[str, ObsSource] = field(default_factory=dict)
    split: SplitSpec = field(default_factory=SplitSpec)
    genes: GeneSpec = field(default_factory=GeneSpec)
    counts: str = "auto"
    x_kind: str | None = None
    modalities: ModalitySpec | None = None
    mosaic: MosaicSpec | None = None
    builder: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    required_obs: tuple[str, ...] = ()
    required_var: tuple[str, ...] = ()
    census: dict[str, Any] = field(default_factory=dict)
    alternatives: tuple[str, ...] = ()
    paper: str | None = None
    note: str | None = None

    def file(self, name: str) -> FileSpec:
        """The file spec called ``name``."""
        for spec in self.files:
            if spec.name == name:
                return spec
        raise DatasetError(
            f"{self.name}: no file {name!r} in the registry; files: {[f.name for f in self.files]}"
        )

    @property
    def standard_obs(self) -> tuple[str, ...]:
        """obs keys the standard AnnData of this entry has (and validation requires)."""
        if self.required_obs or self.kind == "builtin":
            return self.required_obs
        keys = [k for k in STANDARD_OBS if k in self.obs]
        if self.split.by != "none" and "split" not in keys:
            keys.append("split")
        return tuple(keys)

    @property
    def multimodal(self) -> bool:
        """Whether the standard AnnData carries ``var["modality"]``."""
        return (
            self.modalities is not None
            or self.format in ("paired_h5ad", "scmomat")
            or "modality" in self.required_var
        )


@dataclass(frozen=True)
class CheckpointEntry:
    """A released scGPT checkpoint (a Google Drive folder with args/vocab/model files)."""

    name: str
    description: str
    drive_folder_id: str | None
    url: str | None
    files: tuple[str, ...]
    sha256: dict[str, str]
    verification: str
    note: str | None = None

    def source(self) -> dict[str, Any]:
        """Plain dict for the fetch rule: folder id, URL, files, digests, note."""
        url = self.url or f"https://drive.google.com/drive/folders/{self.drive_folder_id}"
        return {
            "name": self.name,
            "kind": "google_drive_folder" if self.drive_folder_id else "url",
            "drive_folder_id": self.drive_folder_id,
            "url": url,
            "files": list(self.files),
            "sha256": dict(self.sha256),
            "note": self.note,
        }


class Registry(Mapping[str, DatasetEntry]):
    """All registry entries: a read-only mapping name -> :class:`DatasetEntry`.

    Also has :attr:`checkpoints` and the look-ups the workflow rules use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        datasets: dict[str, DatasetEntry],
        checkpoints: dict[str, CheckpointEntry],
    ) -> None:
        self.path = str(path)
        self.datasets = datasets
        self.checkpoints = checkpoints

    def __getitem__(self, name: str) -> DatasetEntry:
        return self.entry(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)

    def __repr__(self) -> str:
        return f"Registry({self.path!r}, {len(self.datasets)} datasets, {len(self.checkpoints)} checkpoints)"

    def entry(self, name: str) -> DatasetEntry:
        """The entry called ``name``; ``KeyError`` naming the known datasets otherwise."""
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(
                f"dataset {name!r} is not in {self.path}; known: {sorted(self.datasets)}"
            ) from None

    def file_names(self, dataset: str) -> list[str]:
        """Raw file names of a dataset (empty for builtin and corpus entries)."""
        return [spec.name for spec in self.entry(dataset).files]

    def file_source(self, dataset: str, filename: str) -> dict[str, Any]:
        """``{"url", "sha256", "size", "md5", "format"}`` of one raw file (for the download rule)."""
        spec = self.entry(dataset).file(filename)
        return {
            "url": spec.source_url,
            "sha256": spec.sha256,
            "size": spec.size,
            "md5": spec.md5,
            "format": spec.format,
        }

    def download_source(self, filename: str) -> dict[str, Any]:
        """Source of a download by file name, shared by every dataset that lists it.

        Datasets that come from one bundle (hPancreas, MS and myeloid share scGPT's figshare
        zip) name the same file, which is then downloaded once.

        Raises
        ------
        RegistryError
            If no dataset lists ``filename``, or two list it with different sources.
        """
        sources = {
            name: self.file_source(name, filename)
            for name, entry in self.datasets.items()
            if any(spec.name == filename for spec in entry.files)
        }
        if not sources:
            raise RegistryError(f"{self.path}: no dataset lists a file named {filename!r}")
        distinct = {(src["url"], src["sha256"]) for src in sources.values()}
        if len(distinct) > 1:
            raise RegistryError(
                f"{self.path}: file name {filename!r} has different sources in datasets "
                f"{sorted(sources)}; give the files distinct names"
            )
        return next(iter(sources.values()))

    def checkpoint_source(self, name: str) -> dict[str, Any]:
        """Source of a released checkpoint (see :meth:`CheckpointEntry.source`)."""
        try:
            return self.checkpoints[name].source()
        except KeyError:
            raise KeyError(
                f"checkpoint {name!r} is not in {self.path}; known: {sorted(self.checkpoints)}"
            ) from None


# --- registry parsing ------------------------------------------------------------------------
class _Ctx:
    """Field path for error messages: ``config/datasets.yaml: datasets.ms.files[0].url``."""

    def __init__(self, path: str, where: str) -> None:
        self.path = path
        self.where = where

    def sub(self, key: str | int) -> _Ctx:
        if isinstance(key, int):
            return _Ctx(self.path, f"{self.where}[{key}]")
        return _Ctx(self.path, f"{self.where}.{key}")

    def error(self, message: str) -> RegistryError:
        return RegistryError(f"{self.path}: {self.where}: {message}")


_ENTRY_KEYS = {
    "kind",
    "description",
    "tasks",
    "verification",
    "format",
    "files",
    "inputs",
    "obs",
    "split",
    "genes",
    "counts",
    "x_kind",
    "modalities",
    "mosaic",
    "builder",
    "params",
    "required_obs",
    "required_var",
    "census",
    "alternatives",
    "paper",
    "note",
}
_FILE_KEYS = {"name", "url", "drive_id", "sha256", "md5", "size", "format", "note"}


def _check_keys(value: Mapping[str, Any], allowed: Collection[str], ctx: _Ctx) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ctx.error(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _req(value: Mapping[str, Any], key: str, ctx: _Ctx, types: type | tuple[type, ...]) -> Any:
    if key not in value or value[key] is None:
        raise ctx.sub(key).error("missing (required)")
    return _typed(value[key], ctx.sub(key), types)


def _opt(
    value: Mapping[str, Any],
    key: str,
    ctx: _Ctx,
    types: type | tuple[type, ...],
    default: Any = None,
) -> Any:
    if key not in value or value[key] is None:
        return default
    return _typed(value[key], ctx.sub(key), types)


def _typed(value: Any, ctx: _Ctx, types: type | tuple[type, ...]) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        raise ctx.error(f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    if not isinstance(value, types):
        raise ctx.error(
            f"expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__} {value!r}"
        )
    return value


def _choice(value: Any, options: Collection[str], ctx: _Ctx) -> str:
    if value not in options:
        raise ctx.error(f"{value!r} is not one of {sorted(options)}")
    return value


def _str_list(value: Any, ctx: _Ctx) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    _typed(value, ctx, list)
    for i, item in enumerate(value):
        _typed(item, ctx.sub(i), str)
    return tuple(value)


def _parse_file(value: Any, ctx: _Ctx) -> FileSpec:
    _typed(value, ctx, dict)
    _check_keys(value, _FILE_KEYS, ctx)
    name = _req(value, "name", ctx, str)
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or not parts or name.startswith("."):
        raise ctx.sub("name").error(f"{name!r} must be a relative path inside the raw folder")
    url = _opt(value, "url", ctx, str)
    drive_id = _opt(value, "drive_id", ctx, str)
    if (url is None) == (drive_id is None):
        raise ctx.error("give exactly one of url or drive_id")
    if url is not None and not re.match(r"^https?://", url):
        raise ctx.sub("url").error(f"{url!r} is not an http(s):// URL")
    if drive_id is not None and not _DRIVE_ID_RE.match(drive_id):
        raise ctx.sub("drive_id").error(f"{drive_id!r} is not a Google Drive id")
    sha256 = _opt(value, "sha256", ctx, str)
    if sha256 is not None and not _SHA256_RE.match(sha256.lower()):
        raise ctx.sub("sha256").error(f"{sha256!r}: expected 64 hex digits or null")
    md5 = _opt(value, "md5", ctx, str)
    if md5 is not None and not _MD5_RE.match(md5.lower()):
        raise ctx.sub("md5").error(f"{md5!r}: expected 32 hex digits or null")
    size = _opt(value, "size", ctx, int)
    if size is not None and size <= 0:
        raise ctx.sub("size").error(f"{size}: expected a positive number of bytes or null")
    fmt = _choice(_req(value, "format", ctx, str), FILE_FORMATS, ctx.sub("format"))
    return FileSpec(
        name=name,
        url=url,
        drive_id=drive_id,
        sha256=sha256.lower() if sha256 else None,
        md5=md5.lower() if md5 else None,
        size=size,
        format=fmt,
        note=_opt(value, "note", ctx, str),
    )


def _parse_inputs(value: Any, files: Collection[str], ctx: _Ctx) -> dict[str, InputSpec]:
    if value is None:
        return {}
    _typed(value, ctx, dict)
    inputs = {}
    for role, spec in value.items():
        sub = ctx.sub(role)
        if isinstance(spec, str):
            spec = {"file": spec}
        _typed(spec, sub, dict)
        _check_keys(spec, {"file", "member"}, sub)
        file = _req(spec, "file", sub, str)
        if file not in files:
            raise sub.sub("file").error(
                f"{file!r} is not one of this entry's files {sorted(files)}"
            )
        member = _str_list(spec.get("member"), sub.sub("member"))
        inputs[role] = InputSpec(role=role, file=file, member=member)
    return inputs


def _parse_obs(value: Any, ctx: _Ctx) -> dict[str, ObsSource]:
    if value is None:
        return {}
    _typed(value, ctx, dict)
    out = {}
    for key, spec in value.items():
        sub = ctx.sub(key)
        if key not in STANDARD_OBS or key == "split":
            raise sub.error(
                f"standard obs key must be one of {[k for k in STANDARD_OBS if k != 'split']} "
                "(split is set by the split: section)"
            )
        if spec is None:
            continue
        if isinstance(spec, str):
            out[key] = ObsSource(column=spec)
            continue
        _typed(spec, sub, dict)
        _check_keys(spec, {"constant", "from"}, sub)
        if "constant" in spec:
            out[key] = ObsSource(
                constant=str(_typed(spec["constant"], sub.sub("constant"), (str, int)))
            )
        elif spec.get("from") == "input":
            out[key] = ObsSource(from_input=True)
        else:
            raise sub.error("expected a column name, {constant: value} or {from: input}")
    return out


def _parse_split(value: Any, inputs: Mapping[str, InputSpec], ctx: _Ctx) -> SplitSpec:
    if value is None:
        return SplitSpec()
    _typed(value, ctx, dict)
    _check_keys(
        value,
        {
            "by",
            "roles",
            "column",
            "values",
            "method",
            "seed",
            "train_gene_set_size",
            "combo_seen2_train_frac",
        },
        ctx,
    )
    by = _choice(_req(value, "by", ctx, str), SPLIT_METHODS, ctx.sub("by"))
    if by == "files":
        roles = _req(value, "roles", ctx, dict)
        if not roles:
            raise ctx.sub("roles").error("name at least one input role -> split value")
        for role, label in roles.items():
            if role not in inputs:
                raise (
                    ctx.sub("roles")
                    .sub(role)
                    .error(f"{role!r} is not an input of this entry ({sorted(inputs)})")
                )
            _typed(label, ctx.sub("roles").sub(role), str)
        return SplitSpec(by=by, roles=dict(roles))
    if by == "obs":
        column = _req(value, "column", ctx, str)
        raw_values = _req(value, "values", ctx, dict)
        values = {k: _str_list(v, ctx.sub("values").sub(k)) for k, v in raw_values.items()}
        return SplitSpec(by=by, column=column, values=values)
    if by == "gears":
        method = _choice(
            _opt(value, "method", ctx, str, "simulation"), GEARS_SPLITS, ctx.sub("method")
        )
        fractions = {}
        for key in ("train_gene_set_size", "combo_seen2_train_frac"):
            frac = float(_opt(value, key, ctx, (int, float), 0.75))
            if not 0.0 < frac < 1.0:
                raise ctx.sub(key).error(f"{frac}: expected a fraction in (0, 1)")
            fractions[key] = frac
        return SplitSpec(by=by, method=method, seed=_opt(value, "seed", ctx, int, 1), **fractions)
    return SplitSpec()


def _parse_genes(value: Any, inputs: Mapping[str, InputSpec], ctx: _Ctx) -> GeneSpec:
    if value is None:
        return GeneSpec()
    _typed(value, ctx, dict)
    _check_keys(value, {"id_type", "symbol_column", "id_column", "mapping", "duplicates"}, ctx)
    id_type = _choice(
        _opt(value, "id_type", ctx, str, "auto"), ("auto", "symbol", "ensembl"), ctx.sub("id_type")
    )
    duplicates = _choice(
        _opt(value, "duplicates", ctx, str, "auto"), DUPLICATE_POLICIES, ctx.sub("duplicates")
    )
    mapping = _opt(value, "mapping", ctx, dict)
    mapping_input = mapping_id = mapping_symbol = None
    if mapping is not None:
        sub = ctx.sub("mapping")
        _check_keys(mapping, {"input", "id_column", "symbol_column"}, sub)
        mapping_input = _req(mapping, "input", sub, str)
        if mapping_input not in inputs:
            raise sub.sub("input").error(f"{mapping_input!r} is not an input ({sorted(inputs)})")
        mapping_id = _opt(mapping, "id_column", sub, str)
        mapping_symbol = _opt(mapping, "symbol_column", sub, str)
    return GeneSpec(
        id_type=id_type,
        symbol_column=_opt(value, "symbol_column", ctx, str),
        id_column=_opt(value, "id_column", ctx, str),
        mapping_input=mapping_input,
        mapping_id_column=mapping_id,
        mapping_symbol_column=mapping_symbol,
        duplicates=duplicates,
    )


def _parse_entry(name: str, value: Any, ctx: _Ctx) -> DatasetEntry:
    if not _NAME_RE.match(name):
        raise ctx.error("dataset names use letters, digits, '_' and '-' only")
    _typed(value, ctx, dict)
    _check_keys(value, _ENTRY_KEYS, ctx)
    kind = _choice(_req(value, "kind", ctx, str), KINDS, ctx.sub("kind"))
    description = _req(value, "description", ctx, str)
    tasks = _str_list(_req(value, "tasks", ctx, list), ctx.sub("tasks"))
    for i, task in enumerate(tasks):
        _choice(task, TASKS, ctx.sub("tasks").sub(i))
    verification = _choice(
        _opt(value, "verification", ctx, str, "builtin" if kind == "builtin" else None),
        VERIFICATION,
        ctx.sub("verification"),
    )
    fmt = _choice(
        _opt(value, "format", ctx, str, "builtin" if kind == "builtin" else None),
        FORMATS[kind],
        ctx.sub("format"),
    )
    common = {
        "name": name,
        "kind": kind,
        "description": description,
        "tasks": tasks,
        "verification": verification,
        "format": fmt,
        "alternatives": _str_list(value.get("alternatives"), ctx.sub("alternatives")),
        "paper": _opt(value, "paper", ctx, str),
        "note": _opt(value, "note", ctx, str),
        "required_obs": _str_list(value.get("required_obs"), ctx.sub("required_obs")),
        "required_var": _str_list(value.get("required_var"), ctx.sub("required_var")),
    }
    for i, key in enumerate(common["required_obs"]):
        _choice(key, STANDARD_OBS, ctx.sub("required_obs").sub(i))
    if kind == "builtin":
        builder = _req(value, "builder", ctx, str)
        if not _BUILDER_RE.match(builder):
            raise ctx.sub("builder").error(f"{builder!r}: expected 'package.module:function'")
        extra = sorted(set(value) & {"files", "inputs", "obs", "split", "genes", "census"})
        if extra:
            raise ctx.error(f"builtin entries take builder and params, not {extra}")
        return DatasetEntry(
            **common, builder=builder, params=dict(_opt(value, "params", ctx, dict, {}))
        )
    if kind == "corpus":
        census = _req(value, "census", ctx, dict)
        for key in ("version", "organism"):
            _req(census, key, ctx.sub("census"), str)
        return DatasetEntry(**common, census=dict(census))
    files_raw = _req(value, "files", ctx, list)
    if not files_raw:
        raise ctx.sub("files").error("at least one file is required")
    files = tuple(_parse_file(f, ctx.sub("files").sub(i)) for i, f in enumerate(files_raw))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ctx.sub("files").error(f"file names repeat: {names}")
    inputs = _parse_inputs(value.get("inputs"), names, ctx.sub("inputs"))
    if kind == "resource":
        return DatasetEntry(**common, files=files, inputs=inputs)
    counts = _opt(value, "counts", ctx, str, "auto")
    if counts not in COUNTS_SOURCES and not re.match(r"^layers/\S+$", counts):
        raise ctx.sub("counts").error(
            f"{counts!r}: expected one of {COUNTS_SOURCES} or 'layers/<key>'"
        )
    modalities = None
    if value.get("modalities") is not None:
        sub = ctx.sub("modalities")
        mods = _typed(value["modalities"], sub, dict)
        _check_keys(mods, {"column", "map"}, sub)
        mapping = _req(mods, "map", sub, dict)
        for src, mod in mapping.items():
            _choice(mod, MODALITIES, sub.sub("map").sub(str(src)))
        modalities = ModalitySpec(
            column=_req(mods, "column", sub, str), map={str(k): v for k, v in mapping.items()}
        )
    mosaic = None
    if fmt == "scmomat":
        sub = ctx.sub("mosaic")
        raw = _req(value, "mosaic", ctx, dict)
        _check_keys(raw, {"features", "batches"}, sub)
        features = _req(raw, "features", sub, dict)
        for mod, file in features.items():
            _choice(mod, MODALITIES, sub.sub("features").sub(mod))
            _choice(file, names, sub.sub("features").sub(mod))
        batches = {}
        for batch, files_of in _req(raw, "batches", sub, dict).items():
            bsub = sub.sub("batches").sub(str(batch))
            _typed(files_of, bsub, dict)
            if "meta" not in files_of:
                raise bsub.sub("meta").error("missing (required: the cells' metadata CSV)")
            for key, file in files_of.items():
                if key != "meta":
                    _choice(key, list(features), bsub.sub(key))
                _choice(file, names, bsub.sub(key))
            batches[str(batch)] = dict(files_of)
        mosaic = MosaicSpec(features=dict(features), batches=batches)
    elif not inputs and fmt != "scvi_pbmc":
        raise ctx.sub("inputs").error("missing (required: which file holds the data)")
    obs = _parse_obs(value.get("obs"), ctx.sub("obs"))
    split = _parse_split(value.get("split"), inputs, ctx.sub("split"))
    if fmt == "gears":
        if "data" not in inputs:
            raise ctx.sub("inputs").sub("data").error("missing (GEARS' perturb_processed.h5ad)")
        if "condition" not in obs:
            raise ctx.sub("obs").sub("condition").error("missing (GEARS' condition column)")
    elif fmt == "h5ad" and split.by != "files" and "data" not in inputs:
        raise (
            ctx.sub("inputs")
            .sub("data")
            .error(
                f"missing: a single-file h5ad entry reads input 'data' (inputs: {sorted(inputs)})"
            )
        )
    if fmt == "paired_h5ad":
        bad = sorted(set(inputs) - set(MODALITIES))
        if bad or not inputs:
            raise ctx.sub("inputs").error(
                f"paired_h5ad inputs are named by modality {MODALITIES}; got {sorted(inputs)}"
            )
    return DatasetEntry(
        **common,
        files=files,
        inputs=inputs,
        obs=obs,
        split=split,
        genes=_parse_genes(value.get("genes"), inputs, ctx.sub("genes")),
        counts=counts,
        x_kind=_opt(value, "x_kind", ctx, str),
        modalities=modalities,
        mosaic=mosaic,
    )


def _parse_checkpoint(name: str, value: Any, ctx: _Ctx) -> CheckpointEntry:
    _typed(value, ctx, dict)
    _check_keys(
        value,
        {"description", "drive_folder_id", "url", "files", "sha256", "verification", "note"},
        ctx,
    )
    folder = _opt(value, "drive_folder_id", ctx, str)
    url = _opt(value, "url", ctx, str)
    if folder is None and url is None:
        raise ctx.error("give drive_folder_id or url")
    if folder is not None and not _DRIVE_ID_RE.match(folder):
        raise ctx.sub("drive_folder_id").error(f"{folder!r} is not a Google Drive id")
    files = _str_list(value.get("files", list(CHECKPOINT_FILES)), ctx.sub("files"))
    missing = sorted(set(CHECKPOINT_FILES) - set(files))
    if missing:
        raise ctx.sub("files").error(
            f"a checkpoint needs {list(CHECKPOINT_FILES)}; missing {missing}"
        )
    digests = _opt(value, "sha256", ctx, dict, {})
    for file, digest in digests.items():
        if digest is not None and not _SHA256_RE.match(str(digest).lower()):
            raise ctx.sub("sha256").sub(file).error(f"{digest!r}: expected 64 hex digits or null")
    return CheckpointEntry(
        name=name,
        description=_req(value, "description", ctx, str),
        drive_folder_id=folder,
        url=url,
        files=files,
        sha256={k: str(v).lower() for k, v in digests.items() if v is not None},
        verification=_choice(
            _req(value, "verification", ctx, str), VERIFICATION, ctx.sub("verification")
        ),
        note=_opt(value, "note", ctx, str),
    )


def load_registry(path: str | os.PathLike[str] = "config/datasets.yaml") -> Registry:
    """Read and validate the dataset registry.

    Returns
    -------
    Registry
        A mapping dataset name -> :class:`DatasetEntry`, with ``.datasets``,
        ``.checkpoints`` and the workflow's look-ups.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    RegistryError
        Naming the file, the entry and the field that is missing or wrong.
    """
    path = Path(path)
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML ({err})") from err
    ctx = _Ctx(str(path), "(top level)")
    _typed(raw, ctx, dict)
    _check_keys(raw, {"version", "datasets", "checkpoints"}, ctx)
    datasets_raw = _req(raw, "datasets", ctx, dict)
    datasets = {
        str(name): _parse_entry(str(name), value, _Ctx(str(path), f"datasets.{name}"))
        for name, value in datasets_raw.items()
    }
    checkpoints = {
        str(name): _parse_checkpoint(str(name), value, _Ctx(str(path), f"checkpoints.{name}"))
        for name, value in (_opt(raw, "checkpoints", ctx, dict, {}) or {}).items()
    }
    return Registry(path, datasets, checkpoints)


def raw_files(entry: DatasetEntry) -> list[tuple[str, str, str | None, int | None]]:
    """``(url, filename, sha256, size)`` of every file the download rule fetches for ``entry``."""
    return [(spec.source_url, spec.name, spec.sha256, spec.size) for spec in entry.files]


# --- builtin datasets ------------------------------------------------------------------------
def _import_builder(path: str, name: str) -> Callable[..., Any]:
    module_name, func_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DatasetError(
            f"{name}: builder module {module_name!r} cannot be imported ({err})"
        ) from err
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise DatasetError(
            f"{name}: builder {path!r}: {module_name} has no {func_name!r}"
        ) from None


def check_builder_params(
    name: str, entry: DatasetEntry, params: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Check a builtin entry's builder parameters without building anything.

    The workflow calls this at plan time, so that a mistyped key in the config's
    ``datasets.<name>`` fails a dry run instead of the job (which would first remove the
    dataset's finished standard file).

    Returns
    -------
    builder, merged
        The builder function and the entry's ``params`` overridden by ``params``.

    Raises
    ------
    DatasetError
        If the entry is not builtin, a key is not a parameter of the builder (naming it and
        the accepted ones) or a value's type differs from the type of the builder's default.
    """
    if entry.kind != "builtin" or entry.builder is None:
        if params:
            raise DatasetError(
                f"{name}: config datasets.{name} sets builder parameters {sorted(params)}, "
                f"but {name} is a {entry.kind} entry, not builtin"
            )
        raise DatasetError(f"{name}: not a builtin entry (kind {entry.kind!r})")
    builder = _import_builder(entry.builder, name)
    merged = {**entry.params, **dict(params or {})}
    signature = inspect.signature(builder)
    accepts_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    accepted = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(k for k in merged if k not in accepted)
    if unknown and not accepts_any:
        raise DatasetError(
            f"{name}: builder {entry.builder} does not accept parameter(s) {unknown}; "
            f"accepted: {list(accepted)}"
        )
    for key, value in merged.items():
        default = accepted[key].default if key in accepted else inspect.Parameter.empty
        if not _same_kind(value, default):
            raise DatasetError(
                f"{name}: parameter {key}={value!r} of builder {entry.builder} should be of "
                f"type {type(default).__name__} like its default {default!r}"
            )
    return builder, merged


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` may replace ``default`` (ints for floats; anything for None defaults)."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, int | str):
        return isinstance(value, type(default))
    return True


def build_builtin(
    name: str, entry: DatasetEntry, params: Mapping[str, Any] | None = None
) -> ad.AnnData:
    """Make a builtin (demo) dataset with its builder and check it meets the standard.

    Parameters
    ----------
    name
        Dataset name (for messages).
    entry
        Its registry entry (``builder``, default ``params``).
    params
        Overrides of the entry's ``params`` (the config's ``datasets.<name>``).

    Raises
    ------
    DatasetError
        If the entry is not builtin, a parameter is not accepted by the builder (naming it and
        the accepted ones), the builder does not return an AnnData, or the result fails
        :func:`validate_standard`.
    """
    builder, merged = check_builder_params(name, entry, params)
    log.info("%s: building with %s(%s)", name, entry.builder, merged)
    adata = builder(**merged)
    if not isinstance(adata, ad.AnnData):
        raise DatasetError(
            f"{name}: builder {entry.builder} returned {type(adata).__name__}, expected AnnData"
        )
    x_kind = "counts" if _looks_like_counts(adata.X) else "as built"
    adata.uns["standardisation"] = _plain(
        {
            "dataset": name,
            "source": "builtin",
            "builder": entry.builder,
            "params": merged,
            "x": x_kind,
        }
    )
    return validate_standard(
        adata, name, required_obs=entry.standard_obs, required_var=entry.required_var
    )


# --- validation ------------------------------------------------------------------------------
def _duplicates(index: pd.Index) -> list[str]:
    return [str(v) for v in index[index.duplicated()].unique()[:5]]


def validate_standard(
    adata: ad.AnnData,
    dataset: str,
    required_obs: Sequence[str] = (),
    *,
    required_var: Sequence[str] = (),
) -> ad.AnnData:
    """Check an AnnData against the standard dataset contract; convert ``X`` to CSR float32.

    Checks: the required obs columns exist and have no missing values; obs and var names are
    unique; ``X`` is finite and non-negative; ``condition`` values parse as GEARS conditions;
    ``var["modality"]`` values are known modalities.

    Parameters
    ----------
    adata
        The dataset; ``X`` is converted in place.
    dataset
        Name used in messages.
    required_obs, required_var
        Columns the tasks need.

    Returns
    -------
    AnnData
        ``adata`` itself.

    Raises
    ------
    DatasetError
        Naming the dataset, the failing key and what exists (e.g. the obs columns).
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DatasetError(f"{dataset}: empty dataset ({adata.n_obs} cells x {adata.n_vars} genes)")
    for key in required_obs:
        if key not in adata.obs.columns:
            raise DatasetError(
                f"{dataset}: obs column {key!r} is missing; obs columns: {list(adata.obs.columns)}"
            )
        n_missing = int(adata.obs[key].isna().sum())
        if n_missing:
            raise DatasetError(f"{dataset}: obs column {key!r} has {n_missing} missing values")
    for key in required_var:
        if key not in adata.var.columns:
            raise DatasetError(
                f"{dataset}: var column {key!r} is missing; var columns: {list(adata.var.columns)}"
            )
    if not adata.obs_names.is_unique:
        raise DatasetError(
            f"{dataset}: cell names (obs_names) are not unique, e.g. {_duplicates(adata.obs_names)}"
        )
    if not adata.var_names.is_unique:
        raise DatasetError(
            f"{dataset}: gene names (var_names) are not unique, e.g. {_duplicates(adata.var_names)}"
        )
    X = adata.X
    if X is None:
        raise DatasetError(f"{dataset}: X is empty (None)")
    if not isinstance(X, sp.csr_matrix | sp.csr_array) or X.dtype != np.float32:
        X = sp.csr_matrix(X, dtype=np.float32)
    values = X.data
    if values.size:
        if not np.all(np.isfinite(values)):
            raise DatasetError(
                f"{dataset}: X has {int((~np.isfinite(values)).sum())} NaN/inf values"
            )
        minimum = float(values.min())
        if minimum < 0:
            raise DatasetError(
                f"{dataset}: X has negative values (min {minimum:g}); expected raw counts or "
                "non-negative normalised values"
            )
    X.sort_indices()
    adata.X = X
    if "condition" in adata.obs.columns:
        bad = []
        for value in adata.obs["condition"].dropna().astype(str).unique():
            try:
                parse_condition(value)
            except ValueError:
                bad.append(value)
        if bad:
            raise DatasetError(
                f"{dataset}: obs 'condition' has values that are not 'ctrl', 'A+ctrl' or 'A+B': "
                f"{bad[:5]}"
            )
    if "modality" in adata.var.columns:
        unknown = sorted(set(adata.var["modality"].astype(str)) - set(MODALITIES))
        if unknown:
            raise DatasetError(
                f"{dataset}: var 'modality' has unknown values {unknown}; expected {list(MODALITIES)}"
            )
    return adata


def write_standard(adata: ad.AnnData, path: str | os.PathLike[str]) -> None:
    """Write a standard AnnData atomically (:func:`benchmark.io.write_h5ad`)."""
    adata.uns = _plain(dict(adata.uns))
    write_h5ad(adata, path)
    log.info("wrote %s (%d cells x %d features)", path, adata.n_obs, adata.n_vars)


def prepare_standard_dataset(
    dataset: str,
    output: str | os.PathLike[str],
    *,
    raw_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    registry: Registry | str | os.PathLike[str] = "config/datasets.yaml",
    vocabulary: Collection[str] | str | os.PathLike[str] | None = None,
) -> ad.AnnData:
    """Build (builtin) or standardise (downloaded) one dataset and write it to ``output``.

    Parameters
    ----------
    dataset
        Registry name.
    output
        Standard ``.h5ad`` path.
    raw_dir
        Folder of the downloaded files (not needed for builtin entries).
    params
        Builder parameters (builtin entries only; the config's ``datasets.<name>``).
    registry
        A loaded :class:`Registry` or the registry file.
    vocabulary
        Optional gene vocabulary (collection, or a scGPT ``vocab.json`` path) whose coverage is
        recorded in ``uns["standardisation"]["coverage"]``.
    """
    reg = registry if isinstance(registry, Registry) else load_registry(registry)
    entry = reg.entry(dataset)
    if isinstance(vocabulary, str | os.PathLike):
        vocabulary = list(json.loads(Path(vocabulary).read_text()))
    if entry.kind == "builtin":
        adata = build_builtin(dataset, entry, params)
        if vocabulary is not None:
            _record_coverage(adata, vocabulary)
    else:
        if params:
            check_builder_params(dataset, entry, params)  # raises: not a builtin entry
        if raw_dir is None:
            raise DatasetError(f"{dataset}: raw_dir is required for a {entry.kind} entry")
        adata = standardise(dataset, entry, raw_dir, vocabulary=vocabulary)
    write_standard(adata, output)
    return adata


# --- standardisation -------------------------------------------------------------------------
def standardise(
    name: str,
    entry: DatasetEntry,
    raw_dir: str | os.PathLike[str],
    *,
    vocabulary: Collection[str] | None = None,
) -> ad.AnnData:
    """Turn a dataset's downloaded files into the standard AnnData.

    Parameters
    ----------
    name
        Dataset name (for messages and ``uns``).
    entry
        Its registry entry (``kind: dataset``).
    raw_dir
        Folder holding the entry's files (``data/raw/<name>``).
    vocabulary
        Optional gene vocabulary; its coverage of the RNA genes is logged and stored.

    Returns
    -------
    AnnData
        Validated standard dataset; ``uns["standardisation"]`` records the source files, the
        counts used, obs renames, the split, gene harmonisation and coverage.

    Raises
    ------
    DatasetError
        If the entry is not standardisable, a file or column is missing (named, with what
        exists), or the result fails :func:`validate_standard`.
    """
    if entry.kind != "dataset":
        hint = "use build_builtin" if entry.kind == "builtin" else "it is used as is"
        raise DatasetError(f"{name}: a {entry.kind} entry has no standard AnnData ({hint})")
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DatasetError(f"{name}: raw folder {raw_dir} does not exist")
    loader = _LOADERS[entry.format]
    record: dict[str, Any] = {
        "dataset": name,
        "source": "registry",
        "format": entry.format,
        "verification": entry.verification,
        "files": {spec.name: spec.url or f"drive:{spec.drive_id}" for spec in entry.files},
    }
    adata = loader(name, entry, raw_dir, record)
    adata = _finalise(name, entry, adata, record, raw_dir, vocabulary)
    return adata


def _finalise(
    name: str,
    entry: DatasetEntry,
    adata: ad.AnnData,
    record: dict[str, Any],
    raw_dir: Path,
    vocabulary: Collection[str] | None,
) -> ad.AnnData:
    dropped = [
        f"{slot}[{key}]"
        for slot in ("layers", "obsm", "varm", "obsp", "varp")
        for key in getattr(adata, slot).keys()
    ]
    adata = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), uns=dict(adata.uns))
    if dropped:
        record["dropped"] = dropped
    if "split" in adata.obs.columns and "split" not in record:
        # A source column called "split" is not the standard split; keep it under a new name.
        adata.obs["split_source"] = adata.obs.pop("split")
        record["obs"] = {**record.get("obs", {}), "split_source": "split"}
    adata = _harmonise(name, entry, adata, record, raw_dir)
    adata.obs = _tidy_frame(adata.obs)
    adata.var = _tidy_frame(adata.var)
    if vocabulary is not None:
        record["coverage"] = _coverage(adata, vocabulary).as_dict()
    record["n_obs"], record["n_vars"] = int(adata.n_obs), int(adata.n_vars)
    adata.uns["standardisation"] = _plain(record)
    required_var = tuple(entry.required_var) + (("modality",) if entry.multimodal else ())
    return validate_standard(
        adata, name, required_obs=entry.standard_obs, required_var=required_var
    )


def _coverage(adata: ad.AnnData, vocabulary: Collection[str]) -> Any:
    genes = adata.var_names
    if "modality" in adata.var.columns:
        genes = genes[adata.var["modality"].astype(str).to_numpy() == "rna"]
    report = gene_coverage(genes, vocabulary)
    log.info("gene coverage: %s", report)
    return report


def _record_coverage(adata: ad.AnnData, vocabulary: Collection[str]) -> None:
    record = dict(adata.uns.get("standardisation", {}))
    record["coverage"] = _coverage(adata, vocabulary).as_dict()
    adata.uns["standardisation"] = _plain(record)


def _harmonise(
    name: str, entry: DatasetEntry, adata: ad.AnnData, record: dict[str, Any], raw_dir: Path
) -> ad.AnnData:
    spec = entry.genes
    mapping = None
    if spec.mapping_input is not None:
        path = _resolve_input(name, entry, entry.inputs[spec.mapping_input], raw_dir)
        mapping = read_gene_mapping(
            path, id_column=spec.mapping_id_column, symbol_column=spec.mapping_symbol_column
        )
    is_rna = (
        adata.var["modality"].astype(str).to_numpy() == "rna"
        if "modality" in adata.var.columns
        else np.ones(adata.n_vars, dtype=bool)
    )
    rna = adata if is_rna.all() else adata[:, is_rna].copy()
    detected = detect_id_type(rna.var_names)
    if spec.id_type != "auto" and detected != spec.id_type:
        log.warning(
            "%s: registry says gene ids are %s but they look like %s (e.g. %s)",
            name,
            spec.id_type,
            detected,
            list(rna.var_names[:3]),
        )
    try:
        rna, report = harmonise_genes(
            rna,
            symbol_column=spec.symbol_column,
            id_column=spec.id_column,
            mapping=mapping,
            duplicates=spec.duplicates,
            is_counts=record.get("x") == "counts",
        )
    except ValueError as err:
        raise DatasetError(f"{name}: {err}") from err
    record["genes"] = report.as_dict()
    log.info(
        "%s: %d genes (%s ids, symbols from %s), %d without symbol, %d duplicated symbols (%s)",
        name,
        report.n_output,
        report.id_type,
        report.symbol_source,
        report.n_without_symbol,
        report.n_duplicated_symbols,
        report.duplicates,
    )
    if report.n_input == report.n_output:
        # GEARS-style uns entries name genes by the source's var_names: rename them too.
        rename = dict(zip(adata.var_names[is_rna].astype(str), rna.var_names.astype(str)))
        if any(k != v for k, v in rename.items()):
            rna.uns = translate_gene_lists(dict(rna.uns), rename)
    if is_rna.all():
        return rna
    other = adata[:, ~is_rna].copy()
    var = pd.concat([rna.var, other.var], axis=0, join="outer")
    X = sp.hstack([sp.csr_matrix(rna.X), sp.csr_matrix(other.X)], format="csr")
    return ad.AnnData(X=X, obs=adata.obs.copy(), var=var, uns=rna.uns)


# --- loaders ---------------------------------------------------------------------------------
def _load_h5ad(name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]) -> ad.AnnData:
    if entry.split.by == "files":
        roles = entry.split.roles
    else:
        roles = {"data": None}
    parts = []
    counts_used = set()
    for role, label in roles.items():
        path = _resolve_input(name, entry, entry.inputs[role], raw_dir)
        part = _read_h5ad(path)
        part, counts_desc, x_kind = _select_counts(name, part, entry, path)
        counts_used.add((counts_desc, x_kind))
        part.obs = _map_obs(
            name, part.obs, entry, role=label or role, where=path.name, record=record
        )
        if label is not None:
            part.obs["split"] = pd.Categorical([label] * part.n_obs)
        if entry.split.by == "obs":
            part.obs["split"] = _split_from_obs(name, part.obs, entry.split, path.name)
        parts.append((role, part))
    if len(counts_used) > 1:
        raise DatasetError(f"{name}: inputs differ in what X holds: {sorted(counts_used)}")
    ((counts_desc, x_kind),) = counts_used
    record["x"], record["counts_from"] = x_kind, counts_desc
    record["inputs"] = {role: str(_input_label(entry.inputs[role])) for role in roles}
    if len(parts) == 1:
        adata = parts[0][1]
    else:
        adata = _concat_parts(name, parts, record)
    if entry.modalities is not None:
        adata = _assign_modalities(name, adata, entry.modalities)
    if entry.split.by != "none":
        record["split"] = {
            "by": entry.split.by,
            "counts": {str(k): int(v) for k, v in adata.obs["split"].value_counts().items()},
        }
    return adata


def _concat_parts(
    name: str, parts: list[tuple[str, ad.AnnData]], record: dict[str, Any]
) -> ad.AnnData:
    for role, part in parts:
        if not part.var_names.is_unique:
            # Gene intersection needs unique names; repeats get anndata's "-1" suffixes.
            log.warning("%s: %s has repeated gene names; suffixing them", name, role)
            part.var_names_make_unique()
            record.setdefault("var_names_made_unique", []).append(role)
    names = [p.obs_names for _, p in parts]
    all_names = pd.Index(np.concatenate([n.to_numpy() for n in names]))
    if not all_names.is_unique:
        for role, part in parts:
            part.obs_names = [f"{role}:{cell}" for cell in part.obs_names]
        record["obs_names_prefixed"] = "role:cell (cell names repeat across inputs)"
    shared = parts[0][1].var_names
    for _, part in parts[1:]:
        shared = shared.intersection(part.var_names, sort=False)
    if len(shared) == 0:
        raise DatasetError(
            f"{name}: the inputs share no gene; e.g. {[list(p.var_names[:3]) for _, p in parts]}"
        )
    lost = {
        role: int(part.n_vars - len(shared)) for role, part in parts if part.n_vars != len(shared)
    }
    if lost:
        log.warning("%s: genes not in every input are dropped: %s", name, lost)
        record["genes_dropped_not_shared"] = lost
    # Fill a var column missing from some parts from the parts that have it (the MS query
    # file is indexed by the reference's gene names in scGPT's tutorial).
    var = parts[0][1].var.loc[shared].copy()
    for _, part in parts[1:]:
        extra = part.var.loc[shared]
        for column in extra.columns:
            if column not in var.columns:
                var[column] = extra[column]
            else:
                var[column] = var[column].where(var[column].notna(), extra[column])
    adatas = [part[:, shared].copy() for _, part in parts]
    for part in adatas:
        part.var = var.copy()
    # var is identical across parts; "outer" keeps obs columns that only some inputs have.
    adata = ad.concat(adatas, axis=0, join="outer", merge="first", uns_merge="first")
    for column in ("split", "cell_type", "batch", "condition"):
        if column in adata.obs.columns:
            adata.obs[column] = adata.obs[column].astype(str).astype("category")
    return adata


def _load_scvi_pbmc(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    missing = [f.name for f in entry.files if not (raw_dir / f.name).exists()]
    if missing:
        raise DatasetError(
            f"{name}: files missing in {raw_dir}: {missing} (present: {_listing(raw_dir)})"
        )
    import scvi  # heavy; only this loader needs it

    # With every file already in save_path, scvi-tools downloads nothing.
    adata = scvi.data.pbmc_dataset(save_path=str(raw_dir), remove_extracted_data=False)
    adata, counts_desc, x_kind = _select_counts(name, adata, entry, raw_dir)
    record["x"], record["counts_from"] = x_kind, counts_desc
    adata.obs = _map_obs(
        name, adata.obs, entry, role="data", where="scvi pbmc_dataset", record=record
    )
    return adata


def _load_paired(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    parts = {}
    kinds = set()
    for modality in MODALITIES:
        if modality not in entry.inputs:
            continue
        path = _resolve_input(name, entry, entry.inputs[modality], raw_dir)
        part = _read_h5ad(path)
        part, _, x_kind = _select_counts(name, part, entry, path)
        kinds.add(x_kind)
        part.var["modality"] = modality
        parts[modality] = (part, path)
    first_modality = next(iter(parts))
    first, first_path = parts[first_modality]
    cells = first.obs_names
    for part, _ in parts.values():
        cells = cells.intersection(part.obs_names, sort=False)
    if len(cells) == 0:
        raise DatasetError(
            f"{name}: the modality files share no cell name; e.g. "
            f"{ {m: list(p.obs_names[:2]) for m, (p, _) in parts.items()} }"
        )
    unpaired = {
        m: int(p.n_obs - len(cells)) for m, (p, _) in parts.items() if p.n_obs != len(cells)
    }
    if unpaired:
        log.warning("%s: cells not measured in every modality are dropped: %s", name, unpaired)
        record["cells_dropped_unpaired"] = unpaired
    obs = _map_obs(
        name,
        first.obs.loc[cells].copy(),
        entry,
        role=first_modality,
        where=first_path.name,
        record=record,
    )
    blocks, vars_ = [], []
    for modality, (part, _) in parts.items():
        part = part[cells]
        var = part.var.copy()
        if modality == "protein":
            var = _prefix_proteins(var)
        blocks.append(sp.csr_matrix(part.X, dtype=np.float32))
        vars_.append(var)
    record["x"] = "counts" if kinds == {"counts"} else "/".join(sorted(kinds))
    record["inputs"] = {m: _input_label(entry.inputs[m]) for m in parts}
    var = pd.concat(vars_, axis=0, join="outer")
    return ad.AnnData(X=sp.hstack(blocks, format="csr"), obs=obs, var=var, uns=dict(first.uns))


def _load_scmomat(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    assert entry.mosaic is not None
    features = {}
    for modality, file in entry.mosaic.features.items():
        path = _require_file(name, raw_dir, file)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        features[modality] = pd.Index(names)
    obs_parts, rows = [], []
    for batch, files in entry.mosaic.batches.items():
        meta_path = _require_file(name, raw_dir, files["meta"])
        meta = pd.read_csv(meta_path, index_col=0)
        blocks = {}
        for modality in features:
            if modality not in files:
                continue
            matrix = sp.load_npz(_require_file(name, raw_dir, files[modality]))
            # scMoMaT stores features x cells.
            if matrix.shape != (len(features[modality]), len(meta)):
                raise DatasetError(
                    f"{name}: {files[modality]} is {matrix.shape[0]} x {matrix.shape[1]}, expected "
                    f"{len(features[modality])} {modality} features x {len(meta)} cells of "
                    f"{files['meta']}"
                )
            blocks[modality] = sp.csr_matrix(matrix.T, dtype=np.float32)
        obs = meta.copy()
        obs.index = [f"{batch}:{cell}" for cell in meta.index.astype(str)]
        obs = _map_obs(name, obs, entry, role=batch, where=files["meta"], record=record)
        for modality in MODALITIES:
            if modality in features:
                obs[f"has_{modality}"] = modality in blocks
        row = [
            blocks.get(
                modality, sp.csr_matrix((len(meta), len(features[modality])), dtype=np.float32)
            )
            for modality in features
        ]
        rows.append(sp.hstack(row, format="csr"))
        obs_parts.append(obs)
    var_parts = []
    for modality, index in features.items():
        var = pd.DataFrame({"modality": modality}, index=index.astype(str))
        if modality == "protein":
            var = _prefix_proteins(var)
        var_parts.append(var)
    obs = pd.concat(obs_parts, axis=0)
    record["x"] = "counts"
    record["counts_from"] = "X (features x cells npz, transposed)"
    record["mosaic"] = {
        b: sorted(k for k in f if k != "meta") for b, f in entry.mosaic.batches.items()
    }
    return ad.AnnData(X=sp.vstack(rows, format="csr"), obs=obs, var=pd.concat(var_parts))


def _load_gears(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    path = _resolve_input(name, entry, entry.inputs["data"], raw_dir)
    adata = _read_h5ad(path)
    adata, counts_desc, x_kind = _select_counts(name, adata, entry, path)
    record["x"], record["counts_from"] = x_kind, counts_desc
    record["inputs"] = {"data": _input_label(entry.inputs["data"])}
    source_condition = entry.obs["condition"].column
    if source_condition is None or source_condition not in adata.obs.columns:
        raise DatasetError(
            f"{name}: obs column {source_condition!r} (registry obs.condition) not in {path.name}; "
            f"obs columns: {list(adata.obs.columns)}"
        )
    conditions = adata.obs[source_condition].astype(str)
    split = None
    if "split" in entry.inputs:
        split_path = _resolve_input(name, entry, entry.inputs["split"], raw_dir)
        with open(split_path, "rb") as fh:
            set2conditions = pickle.load(fh)
        split = _split_from_sets(conditions, set2conditions)
        record["split"] = {"by": "file", "file": _input_label(entry.inputs["split"])}
    elif entry.split.by == "gears":
        gene2go = _load_pickle_input(name, entry, "gene2go", raw_dir)
        pert_genes = _load_pickle_input(name, entry, "pert_genes", raw_dir)
        gene_names = (
            adata.var[entry.genes.symbol_column].astype(str).tolist()
            if entry.genes.symbol_column in adata.var.columns
            else list(adata.var_names.astype(str))
        )
        split, info = gears_split(
            conditions, entry.split, gene_names=gene_names, gene2go=gene2go, pert_genes=pert_genes
        )
        record["split"] = info["record"]
        adata.uns["split_subgroups"] = info["subgroups"]
    adata.obs = _map_obs(name, adata.obs, entry, role="data", where=path.name, record=record)
    if split is not None:
        adata.obs["split"] = pd.Categorical(split.to_numpy())
        record.setdefault("split", {})["counts"] = {
            str(k): int(v) for k, v in adata.obs["split"].value_counts().items()
        }
    # Standard spelling of conditions ("ctrl+A" -> "A+ctrl", "B+A" -> "A+B").
    original = adata.obs["condition"].astype(str)
    unique = original.unique()
    spelled = {c: normalise_condition(c) for c in unique}
    if any(k != v for k, v in spelled.items()):
        adata.obs["condition_source"] = original.to_numpy()
        adata.obs["condition"] = original.map(spelled).astype("category")
        record["conditions_respelled"] = int(sum(k != v for k, v in spelled.items()))
        if "split_subgroups" in adata.uns:
            adata.uns["split_subgroups"] = {
                part: {sg: [spelled.get(c, c) for c in conds] for sg, conds in groups.items()}
                for part, groups in adata.uns["split_subgroups"].items()
            }
    return adata


def _load_pickle_input(name: str, entry: DatasetEntry, role: str, raw_dir: Path) -> Any:
    if role not in entry.inputs:
        return None
    with open(_resolve_input(name, entry, entry.inputs[role], raw_dir), "rb") as fh:
        return pickle.load(fh)


_LOADERS: dict[str, Callable[[str, DatasetEntry, Path, dict[str, Any]], ad.AnnData]] = {
    "h5ad": _load_h5ad,
    "gears": _load_gears,
    "scvi_pbmc": _load_scvi_pbmc,
    "paired_h5ad": _load_paired,
    "scmomat": _load_scmomat,
}


# --- GEARS split -----------------------------------------------------------------------------
def gears_split(
    conditions: pd.Series,
    spec: SplitSpec,
    *,
    gene_names: Sequence[str],
    gene2go: Mapping[str, Any] | None = None,
    pert_genes: Sequence[str] | None = None,
) -> tuple[pd.Series, dict[str, Any]]:
    """GEARS' perturbation split, computed with GEARS' own ``DataSplitter``.

    As ``PertData.load`` + ``prepare_split``: conditions whose genes are not in the GO graph
    (genes of ``pert_genes``, or of the dataset when not given, that ``gene2go`` knows) are
    left out (split ``"excluded"``); the others are split by ``DataSplitter`` with the
    entry's method, seed and fractions; control cells are ``"train"``.

    Parameters
    ----------
    conditions
        Per-cell GEARS condition strings, in the file's order (GEARS' order matters).
    spec
        ``SplitSpec(by="gears", ...)``.
    gene_names
        The dataset's gene symbols (GEARS' ``var["gene_name"]``).
    gene2go
        GEARS' ``gene2go_all.pkl`` (gene -> GO terms); ``None`` skips the GO filter.
    pert_genes
        GEARS' ``essential_all_data_pert_genes.pkl`` (the default perturbation graph's genes).

    Returns
    -------
    (Series, dict)
        Split per cell (same index) and ``{"record": ..., "subgroups": ...}``.
    """
    from gears.data_utils import DataSplitter  # heavy (torch_geometric); only this split needs it

    conditions = conditions.astype(str)
    record: dict[str, Any] = {
        "by": "gears",
        "method": spec.method,
        "seed": spec.seed,
        "train_gene_set_size": spec.train_gene_set_size,
        "combo_seen2_train_frac": spec.combo_seen2_train_frac,
    }
    keep = np.ones(len(conditions), dtype=bool)
    if gene2go is not None:
        if pert_genes is not None:
            essential = list(pert_genes)
            record["go_filter"] = "gene2go x pert_genes (GEARS default_pert_graph=True)"
        else:
            perturbed = {g for c in conditions.unique() for g in c.split("+") if g != "ctrl"}
            essential = list(gene_names) + sorted(perturbed)
            record["go_filter"] = "gene2go x dataset genes (GEARS default_pert_graph=False)"
        pert_names = {g for g in essential if g in gene2go}

        def in_go(condition: str) -> bool:
            return condition == "ctrl" or all(
                g == "ctrl" or g in pert_names for g in condition.split("+")
            )

        ok = {c: in_go(c) for c in conditions.unique()}
        keep = conditions.map(ok).to_numpy(dtype=bool)
        record["excluded_conditions"] = sorted(c for c, good in ok.items() if not good)
    else:
        record["go_filter"] = "none (no gene2go input)"
    kept_conditions = conditions[keep].to_numpy()
    kept = ad.AnnData(
        obs=pd.DataFrame(
            {"condition": kept_conditions},
            index=[str(i) for i in range(len(kept_conditions))],
        )
    )
    # DataSplitter seeds numpy's global generator: restore the caller's state afterwards.
    state = np.random.get_state()  # noqa: NPY002
    try:
        splitter = DataSplitter(kept, split_type=spec.method)
        result = splitter.split_data(
            train_gene_set_size=spec.train_gene_set_size,
            combo_seen2_train_frac=spec.combo_seen2_train_frac,
            seed=spec.seed,
        )
    finally:
        np.random.set_state(state)  # noqa: NPY002
    split_kept = kept.obs["split"].astype(object)
    if split_kept.isna().any():
        missing = sorted(kept.obs["condition"][split_kept.isna()].unique())[:5]
        raise DatasetError(f"GEARS split left conditions without a split, e.g. {missing}")
    split = pd.Series("excluded", index=conditions.index, dtype=object)
    split[keep] = split_kept.to_numpy()
    subgroups: dict[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        for key, groups in result[1].items():
            subgroups[key.replace("_subgroup", "")] = {
                str(sg): [str(c) for c in conds] for sg, conds in groups.items()
            }
    return split, {"record": record, "subgroups": subgroups}


def _split_from_sets(
    conditions: pd.Series, set2conditions: Mapping[str, Sequence[str]]
) -> pd.Series:
    lookup = {}
    for part, conds in set2conditions.items():
        for condition in conds:
            lookup[str(condition)] = str(part)
    return conditions.astype(str).map(lookup).fillna("excluded")


def _split_from_obs(name: str, obs: pd.DataFrame, spec: SplitSpec, where: str) -> pd.Categorical:
    if spec.column not in obs.columns:
        raise DatasetError(
            f"{name}: obs column {spec.column!r} (registry split.column) not in {where}; "
            f"obs columns: {list(obs.columns)}"
        )
    lookup = {str(v): label for label, values in spec.values.items() for v in values}
    values = obs[spec.column].astype(str)
    split = values.map(lookup)
    unknown = sorted(values[split.isna()].unique())
    if unknown:
        raise DatasetError(
            f"{name}: obs {spec.column!r} values {unknown[:5]} are in no split of the registry "
            f"(split.values: {dict(spec.values)})"
        )
    return pd.Categorical(split.to_numpy())


# --- helpers ---------------------------------------------------------------------------------
def _map_obs(
    name: str,
    obs: pd.DataFrame,
    entry: DatasetEntry,
    *,
    role: str,
    where: str,
    record: dict[str, Any],
) -> pd.DataFrame:
    obs = obs.copy()
    renames = record.setdefault("obs", {})
    for key, source in entry.obs.items():
        if source.column is not None and source.column not in obs.columns:
            raise DatasetError(
                f"{name}: obs column {source.column!r} (registry obs.{key}) not in {where}; "
                f"obs columns: {list(obs.columns)}"
            )
        if key in obs.columns and source.column != key:
            # A same-named source column the registry does not map is kept under a new name.
            obs[f"{key}_source"] = obs.pop(key)
        if source.column is not None:
            obs[key] = _as_category(obs.pop(source.column))
        elif source.constant is not None:
            obs[key] = pd.Categorical([source.constant] * len(obs))
        else:
            obs[key] = pd.Categorical([role] * len(obs))
        renames[key] = source.describe()
    return obs


def _as_category(values: pd.Series) -> pd.Categorical:
    text = values.astype(object).where(values.notna(), None)
    text = text.map(lambda v: None if v is None else str(v))
    return pd.Categorical(text)


def _tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns -> categorical strings (h5ad cannot store mixed-type object columns)."""
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = _as_category(frame[column])
    return frame


def _prefix_proteins(var: pd.DataFrame) -> pd.DataFrame:
    var = var.copy()
    var["feature_name"] = var.index.astype(str)
    var.index = [
        n if n.startswith(PROTEIN_PREFIX) else PROTEIN_PREFIX + n for n in var.index.astype(str)
    ]
    return var


def _assign_modalities(name: str, adata: ad.AnnData, spec: ModalitySpec) -> ad.AnnData:
    if spec.column not in adata.var.columns:
        raise DatasetError(
            f"{name}: var column {spec.column!r} (registry modalities.column) is missing; "
            f"var columns: {list(adata.var.columns)}"
        )
    values = adata.var[spec.column].astype(str)
    unknown = sorted(set(values) - set(spec.map))
    if unknown:
        raise DatasetError(
            f"{name}: var {spec.column!r} values {unknown} are not in registry modalities.map "
            f"{dict(spec.map)}"
        )
    var = adata.var.copy()
    var["modality"] = values.map(spec.map).to_numpy()
    protein = var["modality"].to_numpy() == "protein"
    if protein.any():
        renamed = _prefix_proteins(var[protein])
        names = var.index.astype(str).to_numpy().copy()
        names[protein] = renamed.index.to_numpy()
        var["feature_name"] = var.index.astype(str)
        var.index = names
    adata = adata.copy()
    adata.var = var
    return adata


def _looks_like_counts(matrix: Any, n_sample: int = 200_000) -> bool:
    """Whether a matrix holds non-negative integers (checked on up to ``n_sample`` values)."""
    if matrix is None:
        return False
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if values.size == 0:
        return True
    if values.size > n_sample:
        values = values[:: max(1, values.size // n_sample)]
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(values >= 0) and np.all(np.floor(values) == values))


def _select_counts(
    name: str, adata: ad.AnnData, entry: DatasetEntry, where: Path
) -> tuple[ad.AnnData, str, str]:
    """Put the entry's counts in X; return (adata, where they came from, what X holds)."""
    spec = entry.counts
    not_counts = entry.x_kind or "as in the source (not raw counts)"
    if spec == "none":
        return adata, "X", not_counts
    if spec == "X":
        return adata, "X", "counts"
    if spec.startswith("layers/"):
        key = spec.split("/", 1)[1]
        if key not in adata.layers:
            raise DatasetError(
                f"{name}: layer {key!r} (registry counts) not in {where.name}; layers: "
                f"{list(adata.layers.keys())}"
            )
        return _with_x(adata, adata.layers[key]), spec, "counts"
    if spec == "raw":
        if adata.raw is None:
            raise DatasetError(f"{name}: registry counts: raw, but {where.name} has no .raw")
        return _from_raw(adata), "raw", "counts"
    # auto
    if "counts" in adata.layers and _looks_like_counts(adata.layers["counts"]):
        return _with_x(adata, adata.layers["counts"]), "layers/counts", "counts"
    if adata.raw is not None and _looks_like_counts(adata.raw.X):
        return _from_raw(adata), "raw", "counts"
    if _looks_like_counts(adata.X):
        return adata, "X", "counts"
    log.warning("%s: no raw counts found in %s; X is kept as is", name, where.name)
    return adata, "X", not_counts


def _with_x(adata: ad.AnnData, matrix: Any) -> ad.AnnData:
    # A new object rather than adata.copy(): no second copy of a large X in memory. The
    # other slots ride along so that _finalise records what it drops.
    return ad.AnnData(
        X=matrix,
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        varm=dict(adata.varm),
        obsp=dict(adata.obsp),
        layers=dict(adata.layers),
    )


def _from_raw(adata: ad.AnnData) -> ad.AnnData:
    raw = adata.raw
    return ad.AnnData(
        X=raw.X,
        obs=adata.obs.copy(),
        var=raw.var.copy(),
        uns=adata.uns,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        layers=dict(adata.layers) if raw.var_names.equals(adata.var_names) else None,
    )


def _read_h5ad(path: Path) -> ad.AnnData:
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types; name the file
        raise DatasetError(f"{path}: cannot be read as h5ad ({type(err).__name__}: {err})") from err


def _listing(folder: Path, limit: int = 20) -> list[str]:
    if not folder.is_dir():
        return []
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    names = [n for n in names if not n.startswith(".extracted")]
    return names[:limit] + (["..."] if len(names) > limit else [])


def _require_file(name: str, raw_dir: Path, file: str) -> Path:
    path = raw_dir / file
    if not path.exists():
        raise DatasetError(
            f"{name}: file {file!r} not found in {raw_dir} (present: {_listing(raw_dir)})"
        )
    return path


def _input_label(spec: InputSpec) -> str:
    return "!".join([spec.file, *spec.member])


def _cache_path(raw_dir: Path, *parts: str) -> Path:
    """Flat cache file for an archive member chain (keeps the member's suffix)."""
    return raw_dir / ".extracted" / "!".join(p.replace("/", "__") for p in parts)


def _resolve_input(name: str, entry: DatasetEntry, spec: InputSpec, raw_dir: Path) -> Path:
    """Local path of an input: the raw file, or its (nested) archive member, extracted."""
    file_spec = entry.file(spec.file)
    if spec.member:
        # A file fetched by hand into raw_dir under the member's name takes precedence.
        direct = raw_dir / PurePosixPath(spec.member[-1]).name
        if direct.is_file() and direct.name != spec.file:
            return _decompress_if_gz(direct, raw_dir)
    path = _require_file(name, raw_dir, spec.file)
    if not spec.member:
        return _decompress_if_gz(path, raw_dir) if file_spec.format == "h5ad.gz" else path
    for depth, member in enumerate(spec.member):
        target = _cache_path(raw_dir, spec.file, *spec.member[: depth + 1])
        if not target.exists():
            _extract_member(name, path, member, target)
        path = target
    return _decompress_if_gz(path, raw_dir)


def _decompress_if_gz(path: Path, raw_dir: Path) -> Path:
    if path.suffix != ".gz":
        return path
    target = _cache_path(raw_dir, path.name[:-3])
    if not target.exists():
        log.info("decompressing %s", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 24)
    return target


def _find_member(archive: zipfile.ZipFile, member: str) -> tuple[str, ...] | None:
    """Path (chain through nested zips) of ``member`` in ``archive``: exact, else by file name."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if member in names:
        return (member,)
    base = PurePosixPath(member).name
    suffix = [n for n in names if n.endswith("/" + member) or PurePosixPath(n).name == base]
    exact_suffix = [n for n in suffix if n.endswith(member)]
    if exact_suffix:
        return (sorted(exact_suffix, key=len)[0],)
    if suffix:
        return (sorted(suffix, key=len)[0],)
    for inner in names:
        if inner.lower().endswith(".zip"):
            with archive.open(inner) as fh, zipfile.ZipFile(fh) as nested:
                found = _find_member(nested, member)
            if found:
                return (inner, *found)
    return None


def _extract_member(name: str, archive_path: Path, member: str, target: Path) -> None:
    if not zipfile.is_zipfile(archive_path):
        raise DatasetError(
            f"{name}: {archive_path.name} is not a zip archive, so member {member!r} cannot be read"
        )
    with zipfile.ZipFile(archive_path) as archive:
        chain = _find_member(archive, member)
        if chain is None:
            examples = [n for n in archive.namelist() if not n.endswith("/")][:15]
            raise DatasetError(
                f"{name}: {member!r} not found in {archive_path.name} (nested zips searched); "
                f"it holds e.g. {examples}"
            )
        log.info("%s: extracting %s from %s", name, " -> ".join(chain), archive_path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_chain(archive, chain, target)


def _copy_chain(archive: zipfile.ZipFile, chain: tuple[str, ...], target: Path) -> None:
    if len(chain) == 1:
        with archive.open(chain[0]) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 24)
        return
    with archive.open(chain[0]) as fh, zipfile.ZipFile(fh) as nested:
        _copy_chain(nested, chain[1:], target)


def _plain(value: Any) -> Any:
    """Nested value with only h5ad-storable types (None dropped, tuples -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
