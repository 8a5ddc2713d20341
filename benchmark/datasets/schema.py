"""The registry's schema: one pydantic model per part of a ``config/datasets.yaml`` entry.

The models are both the schema (declared fields, ``extra="forbid"``, ``Literal`` choices,
validators for the rules that span fields) and the validated entries the loaders read.
:func:`benchmark.datasets.registry.load_registry` turns their validation errors into
:class:`~benchmark.datasets.errors.RegistryError` messages of the form
``<file>: datasets.<name>.<key>: <problem>``.

Every model (through :class:`_Model`) treats a key written as ``null`` (or left empty) as
absent, so the default applies and a required key is reported missing; rejects unknown keys;
and is frozen. A validator that finds a problem below its own level raises :class:`FieldError`
with the path to it, so that the message names the key and not only the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from benchmark.datasets.errors import DatasetError
from benchmark.datasets.fields import (
    CHECKPOINT_FILES,
    FORMATS,
    MODALITIES,
    STANDARD_OBS,
    Constant,
    CountsSource,
    DriveId,
    DuplicatePolicy,
    FieldError,
    FileFormat,
    Format,
    Fraction,
    GearsSplit,
    KeyText,
    Kind,
    Md5,
    Modality,
    ObsKey,
    Sha256,
    SplitMethod,
    StandardObsKeys,
    TaskName,
    Text,
    Texts,
    Verification,
    drop_nulls,
    keyed,
)

__all__ = [
    "CheckpointEntry",
    "DatasetEntry",
    "FileSpec",
    "GeneMapping",
    "GeneSpec",
    "InputSpec",
    "ModalitySpec",
    "MosaicSpec",
    "ObsSource",
    "RegistryFile",
    "RowFilter",
    "SplitSpec",
]

_BUILDER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class _Model(BaseModel):
    """Base of every registry model: unknown keys are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    KEY_FIELD: ClassVar[str | None] = None
    """Field filled from the item's key in its parent mapping (not written in the YAML)."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # The registry writes unknowns as `sha256: null`: null means "not given", so the
        # default applies and a required key is reported missing rather than mistyped.
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


# --- parts of an entry -----------------------------------------------------------------------
class FileSpec(_Model):
    """One file to download into ``data/raw/<dataset>/``.

    Attributes
    ----------
    name
        File name under the dataset's raw folder (may contain ``/``).
    url, drive_id, path
        Where it comes from (exactly one): an HTTP(S) URL, a Google Drive *file* id, or a file
        on this machine (``path``: absolute, or relative to the folder of the registry file
        that declares the entry; checked against ``sha256`` and copied, never modified).
    sha256, md5, size
        Expected digest(s) (lower-cased) and size in bytes; ``None`` = unknown (the downloader
        records the sha256 on first download). A ``path`` file needs its ``sha256``.
    format
        ``h5ad``, ``h5ad.gz``, ``zip``, ``tar.gz``, ``pkl``, ``npz``, ``csv``, ``txt``, ``json``.
    note
        Provenance and caveats.
    """

    name: Text
    url: Text | None = None
    drive_id: DriveId | None = None
    path: Text | None = None
    sha256: Sha256 | None = None
    md5: Md5 | None = None
    size: StrictInt | None = None
    format: FileFormat
    note: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> FileSpec:
        parts = PurePosixPath(self.name).parts
        if self.name.startswith(("/", ".")) or ".." in parts or not parts:
            raise FieldError(
                ("name",), f"{self.name!r} must be a relative path inside the raw folder"
            )
        given = [k for k in ("url", "drive_id", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, drive_id or path (got {given or 'none'})")
        if self.path is not None and self.sha256 is None:
            raise FieldError(
                ("sha256",),
                f"missing: a local file (path {self.path!r}) needs its sha256 (sha256sum prints it)",
            )
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise FieldError(("url",), f"{self.url!r} is not an http(s):// URL")
        if self.size is not None and self.size <= 0:
            raise FieldError(("size",), f"{self.size}: expected a positive number of bytes or null")
        return self

    @property
    def source_url(self) -> str | None:
        """The URL to fetch (Drive ids become Drive download URLs); ``None`` for a local path."""
        if self.path is not None:
            return None
        if self.url is not None:
            return self.url
        from benchmark.sources.download import google_drive_url

        return google_drive_url(str(self.drive_id))


class InputSpec(_Model):
    """Where one loader input is: a downloaded file, or a member (chain) inside it.

    Written ``<role>: <file>`` or ``<role>: {file: ..., member: [...]}``; ``member`` has one
    element per nesting level (a zip inside a zip).
    """

    KEY_FIELD: ClassVar[str | None] = "role"

    role: Text
    file: Text
    member: Texts = ()


class ObsSource(_Model):
    """How one standard obs key is filled: a source column, a constant, or the input's role.

    Written as the column name, ``{constant: value}`` or ``{from: input}``.
    """

    column: Text | None = None
    constant: Constant | None = None
    from_: Literal["input"] | None = Field(None, alias="from")

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _exactly_one(self) -> ObsSource:
        if sum(v is not None for v in (self.column, self.constant, self.from_)) != 1:
            raise ValueError("expected a column name, {constant: value} or {from: input}")
        return self

    @property
    def from_input(self) -> bool:
        """Whether the value is the role (or batch) of the input the cell came from."""
        return self.from_ == "input"

    def describe(self) -> str:
        """What fills the key, for ``uns["standardisation"]["obs"]``."""
        if self.column is not None:
            return self.column
        if self.constant is not None:
            return f"constant {self.constant!r}"
        return "input role"


class SplitSpec(_Model):
    """How ``obs["split"]`` is made.

    ``by``: ``none``; ``files`` (``roles`` maps input role -> split value); ``obs``
    (``column`` and ``values``: split value -> source values); ``gears`` (``method``,
    ``seed``, ``train_gene_set_size``, ``combo_seen2_train_frac``, as GEARS'
    ``PertData.prepare_split``).
    """

    by: SplitMethod
    roles: dict[Text, Text] = Field(default_factory=dict)
    column: Text | None = None
    values: dict[KeyText, Texts] = Field(default_factory=dict)
    method: GearsSplit = "simulation"
    seed: StrictInt = 1
    train_gene_set_size: Fraction = 0.75
    combo_seen2_train_frac: Fraction = 0.75

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        if self.by == "files" and not self.roles:
            raise FieldError(("roles",), "name at least one input role -> split value")
        if self.by == "obs":
            for key in ("column", "values"):
                if key not in self.model_fields_set:
                    raise FieldError((key,), "missing (required with by: obs)")
        return self


class RowFilter(_Model):
    """Which cells of the source to keep: those whose ``obs[column]`` is one of ``keep``.

    For files that hold more than the dataset (PerturBench's development file holds the
    Norman 2019 rows and the glioma rows of another study).
    """

    column: Text
    keep: Texts

    @model_validator(mode="after")
    def _check(self) -> RowFilter:
        if not self.keep:
            raise FieldError(("keep",), "name at least one value of the column to keep")
        return self


class GeneMapping(_Model):
    """An input holding an id -> symbol table (see :func:`benchmark.sources.genes.read_gene_mapping`)."""

    input: Text
    id_column: Text | None = None
    symbol_column: Text | None = None


class GeneSpec(_Model):
    """Gene identifiers of the source (see :mod:`benchmark.sources.genes`)."""

    id_type: Literal["auto", "symbol", "ensembl"] = "auto"
    symbol_column: Text | None = None
    id_column: Text | None = None
    mapping: GeneMapping | None = None
    duplicates: DuplicatePolicy = "auto"


class ModalitySpec(_Model):
    """Modality of each feature of a single multi-omic file: ``var[column]`` values -> modality."""

    column: Text
    map: dict[KeyText, Modality]


class MosaicSpec(_Model):
    """scMoMaT layout: per batch, modality -> matrix file (features x cells) and ``meta``."""

    features: dict[Modality, Text]
    batches: dict[KeyText, dict[Text, Text]]

    @model_validator(mode="after")
    def _check(self) -> MosaicSpec:
        for batch, files in self.batches.items():
            if "meta" not in files:
                raise FieldError(
                    ("batches", batch, "meta"), "missing (required: the cells' metadata CSV)"
                )
            for key in files:
                if key != "meta" and key not in self.features:
                    raise FieldError(
                        ("batches", batch, key),
                        f"{key!r} is not 'meta' or a modality of features {sorted(self.features)}",
                    )
        return self


# --- entries ---------------------------------------------------------------------------------
class DatasetEntry(_Model):
    """One validated registry entry (see :mod:`benchmark.datasets` and ``config/datasets.yaml``).

    ``kind`` decides which fields apply: ``builtin`` takes ``builder`` and ``params``;
    ``corpus`` takes ``census`` (with ``version`` and ``organism``); ``resource`` takes
    ``files`` and ``inputs``; ``dataset`` takes files, inputs and how to standardise them.
    """

    KEY_FIELD: ClassVar[str | None] = "name"

    name: Text
    kind: Kind
    description: Text
    tasks: tuple[TaskName, ...]
    verification: Verification
    format: Format
    files: tuple[FileSpec, ...] = ()
    inputs: Annotated[dict[Text, InputSpec], BeforeValidator(keyed(InputSpec, "file"))] = Field(
        default_factory=dict
    )
    obs: Annotated[dict[ObsKey, ObsSource], BeforeValidator(drop_nulls)] = Field(
        default_factory=dict
    )
    rows: RowFilter | None = None
    control: Text | None = None
    split: SplitSpec = Field(default_factory=lambda: SplitSpec(by="none"))
    genes: GeneSpec = Field(default_factory=GeneSpec)
    counts: CountsSource = "auto"
    x_kind: Text | None = None
    modalities: ModalitySpec | None = None
    mosaic: MosaicSpec | None = None
    builder: Text | None = None
    params: dict[Text, Any] = Field(default_factory=dict)
    required_obs: StandardObsKeys = ()
    required_var: Texts = ()
    census: dict[Text, Any] = Field(default_factory=dict)
    alternatives: Texts = ()
    paper: Text | None = None
    note: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _builtin_defaults(cls, data: Any) -> Any:
        # A builtin entry's verification and format default to "builtin" (nothing to verify,
        # no loader); every other kind must state both.
        if isinstance(data, Mapping) and data.get("kind") == "builtin":
            data = {**data}
            for key in ("verification", "format"):
                if data.get(key) is None:
                    data[key] = "builtin"
        return data

    @model_validator(mode="after")
    def _check(self) -> DatasetEntry:
        if not _NAME_RE.match(self.name):
            raise FieldError(("name",), "dataset names use letters, digits, '_' and '-' only")
        if self.format not in FORMATS[self.kind]:
            raise FieldError(
                ("format",),
                f"{self.format!r} is not a format of a {self.kind} entry; expected one of "
                f"{list(FORMATS[self.kind])}",
            )
        if self.kind == "builtin":
            self._check_builtin()
        elif self.kind == "corpus":
            for key in ("version", "organism"):
                if not isinstance(self.census.get(key), str):
                    raise FieldError(("census", key), "missing or not a string (required)")
        else:
            self._check_files()
            if self.kind == "dataset":
                self._check_dataset()
        return self

    def _check_builtin(self) -> None:
        if self.builder is None:
            raise FieldError(("builder",), "missing (required)")
        if not _BUILDER_RE.match(self.builder):
            raise FieldError(("builder",), f"{self.builder!r}: expected 'package.module:function'")
        extra = sorted(
            self.model_fields_set & {"files", "inputs", "obs", "split", "genes", "census"}
        )
        if extra:
            raise ValueError(f"builtin entries take builder and params, not {extra}")

    def _check_files(self) -> None:
        names = [f.name for f in self.files]
        if not names:
            raise FieldError(("files",), "at least one file is required")
        if len(set(names)) != len(names):
            raise FieldError(("files",), f"file names repeat: {names}")
        for role, spec in self.inputs.items():
            if spec.file not in names:
                raise FieldError(
                    ("inputs", role, "file"),
                    f"{spec.file!r} is not one of this entry's files {sorted(names)}",
                )

    def _check_dataset(self) -> None:
        names = [f.name for f in self.files]
        inputs = sorted(self.inputs)
        if self.format == "scmomat":
            if self.mosaic is None:
                raise FieldError(("mosaic",), "missing (required by format scmomat)")
            references = [(("features", m), f) for m, f in self.mosaic.features.items()] + [
                (("batches", b, key), f)
                for b, files in self.mosaic.batches.items()
                for key, f in files.items()
            ]
            for where, file in references:
                if file not in names:
                    raise FieldError(
                        ("mosaic", *where), f"{file!r} is not one of this entry's files {names}"
                    )
        elif not self.inputs and self.format != "scvi_pbmc":
            raise FieldError(("inputs",), "missing (required: which file holds the data)")
        if self.split.by == "files":
            for role in self.split.roles:
                if role not in self.inputs:
                    raise FieldError(
                        ("split", "roles", role),
                        f"{role!r} is not an input of this entry ({inputs})",
                    )
        mapping = self.genes.mapping
        if mapping is not None and mapping.input not in self.inputs:
            raise FieldError(
                ("genes", "mapping", "input"), f"{mapping.input!r} is not an input ({inputs})"
            )
        if self.control is not None and self.format != "gears":
            raise FieldError(
                ("control",), "only a perturbation (format gears) entry names its control"
            )
        if self.format == "gears":
            if "data" not in self.inputs:
                raise FieldError(("inputs", "data"), "missing (GEARS' perturb_processed.h5ad)")
            if "condition" not in self.obs:
                raise FieldError(("obs", "condition"), "missing (GEARS' condition column)")
        elif self.format == "h5ad" and self.split.by != "files" and "data" not in self.inputs:
            raise FieldError(
                ("inputs", "data"),
                f"missing: a single-file h5ad entry reads input 'data' (inputs: {inputs})",
            )
        if self.format == "paired_h5ad" and (not inputs or set(inputs) - set(MODALITIES)):
            raise FieldError(
                ("inputs",),
                f"paired_h5ad inputs are named by modality {MODALITIES}; got {inputs}",
            )

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


class CheckpointEntry(_Model):
    """An scGPT checkpoint: a released one (Google Drive folder or URL) or one committed here.

    ``path`` names a folder (relative to the registry file's folder) holding a committed
    checkpoint, e.g. the demo's model pre-trained on the simulated atlas; it is copied, not
    downloaded, and every file's ``sha256`` is required so that the copy is checked.
    """

    KEY_FIELD: ClassVar[str | None] = "name"

    name: Text
    description: Text
    drive_folder_id: DriveId | None = None
    url: Text | None = None
    path: Text | None = None
    files: Texts = CHECKPOINT_FILES
    sha256: Annotated[dict[Text, Sha256], BeforeValidator(drop_nulls)] = Field(default_factory=dict)
    verification: Verification
    note: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> CheckpointEntry:
        if not _NAME_RE.match(self.name):
            raise FieldError(("name",), "checkpoint names use letters, digits, '_' and '-' only")
        for file_name in self.files:
            # Each becomes <staging>/<file> and data/checkpoints/<name>/<file>: a bare name only,
            # or a registry entry could write anywhere on the disk.
            if (
                not file_name
                or file_name.startswith(".")
                or any(sep in file_name for sep in ("/", "\\", "\0"))
            ):
                raise FieldError(
                    ("files",),
                    f"{file_name!r}: expected a bare file name (no '/', '\\', '..' or leading '.')",
                )
        given = [k for k in ("drive_folder_id", "url", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of drive_folder_id, url or path (got {given})")
        missing = sorted(set(CHECKPOINT_FILES) - set(self.files))
        if missing:
            raise FieldError(
                ("files",), f"a checkpoint needs {list(CHECKPOINT_FILES)}; missing {missing}"
            )
        if self.path is not None:
            unchecked = sorted(set(self.files) - set(self.sha256))
            if unchecked:
                raise FieldError(
                    ("sha256",), f"a committed (path) checkpoint needs the sha256 of {unchecked}"
                )
        return self

    def source(self) -> dict[str, Any]:
        """Plain dict for the fetch rule: kind, folder id / URL / path, files, digests, note."""
        if self.path is not None:
            kind, url = "local", None
        else:
            kind = "google_drive_folder" if self.drive_folder_id else "url"
            url = self.url or f"https://drive.google.com/drive/folders/{self.drive_folder_id}"
        return {
            "name": self.name,
            "kind": kind,
            "drive_folder_id": self.drive_folder_id,
            "url": url,
            "path": self.path,
            "files": list(self.files),
            "sha256": dict(self.sha256),
            "note": self.note,
        }


class RegistryFile(_Model):
    """The whole registry file: ``version``, ``datasets`` and ``checkpoints``."""

    version: StrictInt = 1
    datasets: Annotated[dict[KeyText, DatasetEntry], BeforeValidator(keyed(DatasetEntry))]
    checkpoints: Annotated[
        dict[KeyText, CheckpointEntry], BeforeValidator(keyed(CheckpointEntry))
    ] = Field(default_factory=dict)
