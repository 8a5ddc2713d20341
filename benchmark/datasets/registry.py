"""Reading ``config/datasets.yaml``: the :class:`Registry` mapping and :func:`load_registry`.

A user's own registry files add entries to the built-in one (``load_registry(base,
extra=[...])``, the config's ``registries:``): nothing is copied, and a relative ``path`` in
any file (a committed checkpoint, a local dataset file) resolves against the folder of the
file that declares it.

The entries' schema is in :mod:`benchmark.datasets.schema`; this module validates the whole
file against it and turns pydantic's errors into :class:`RegistryError` messages that name
the file, the entry and the key (``config/datasets.yaml: datasets.ms.files[0].url: ...``),
one line per problem.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from benchmark.datasets.errors import RegistryError
from benchmark.datasets.fields import FieldError
from benchmark.datasets.schema import CheckpointEntry, DatasetEntry, RegistryFile
from benchmark.yamlfile import YamlFileError, load_yaml

__all__ = ["Registry", "load_registry", "raw_files"]


class Registry(Mapping[str, DatasetEntry]):
    """All registry entries: a read-only mapping name -> :class:`DatasetEntry`.

    Also has :attr:`checkpoints` and the look-ups the workflow rules use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        datasets: dict[str, DatasetEntry],
        checkpoints: dict[str, CheckpointEntry],
        origins: Mapping[str, str] | None = None,
        checkpoint_origins: Mapping[str, str] | None = None,
    ) -> None:
        self.path = str(path)
        self.datasets = datasets
        self.checkpoints = checkpoints
        # Registry file that declares each entry (relative paths resolve against its folder).
        self.origins = dict(origins or dict.fromkeys(datasets, self.path))
        self.checkpoint_origins = dict(checkpoint_origins or dict.fromkeys(checkpoints, self.path))

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
        """``{"url", "path", "sha256", "size", "md5", "format"}`` of one raw file (for the
        download rule); ``path`` (a local file, absolute) or ``url`` is ``None``."""
        spec = self.entry(dataset).file(filename)
        return {
            "url": spec.source_url,
            "path": self._resolve(spec.path, self.origins.get(dataset, self.path)),
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
        distinct = {(src["url"], src["path"], src["sha256"]) for src in sources.values()}
        if len(distinct) > 1:
            raise RegistryError(
                f"{self.path}: file name {filename!r} has different sources in datasets "
                f"{sorted(sources)}; give the files distinct names"
            )
        return next(iter(sources.values()))

    def checkpoint_source(self, name: str) -> dict[str, Any]:
        """Source of a checkpoint (see :meth:`CheckpointEntry.source`).

        A committed checkpoint's relative ``path`` is resolved against the registry file's
        folder, so that the workflow finds it from any working directory (``--directory``).
        """
        try:
            source = self.checkpoints[name].source()
        except KeyError:
            raise KeyError(
                f"checkpoint {name!r} is not in {self.path}; known: {sorted(self.checkpoints)}"
            ) from None
        source["path"] = self._resolve(
            source.get("path"), self.checkpoint_origins.get(name, self.path)
        )
        return source

    @staticmethod
    def _resolve(path: str | None, registry_file: str) -> str | None:
        """A ``path`` of an entry, absolute: a relative one is taken from its registry file's folder."""
        if not path:
            return None
        if os.path.isabs(path):
            return path
        return str((Path(registry_file).parent / path).resolve())


def load_registry(
    path: str | os.PathLike[str] = "config/datasets.yaml",
    *,
    extra: Sequence[str | os.PathLike[str]] = (),
) -> Registry:
    """Read and validate the dataset registry, and any registry files that add entries to it.

    Parameters
    ----------
    path
        The built-in registry (``config/datasets.yaml``).
    extra
        Further registry files (a user's own datasets), same format; their entries are added,
        none may redefine an entry of an earlier file.

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
        Naming the file, the entry and the field that is missing or wrong (every problem
        found, one per line), or an entry name declared in two files.
    """
    registry = _load_one(path)
    for other_path in extra:
        other = _load_one(other_path)
        for kind, own, origins, theirs, their_origins in (
            ("dataset", registry.datasets, registry.origins, other.datasets, other.origins),
            (
                "checkpoint",
                registry.checkpoints,
                registry.checkpoint_origins,
                other.checkpoints,
                other.checkpoint_origins,
            ),
        ):
            for name, entry in theirs.items():
                if name in own:
                    raise RegistryError(
                        f"{other_path}: {kind} {name!r} is already declared in {origins[name]}; "
                        "an added registry file adds entries and cannot redefine one (choose "
                        "another name)"
                    )
                own[name] = entry
                origins[name] = their_origins[name]
    return registry


def _load_one(path: str | os.PathLike[str]) -> Registry:
    """One registry file, validated (see :func:`load_registry`)."""
    path = Path(path)
    try:
        # A dataset or field given twice would silently keep its last entry: refused.
        raw = load_yaml(path)
    except YamlFileError as err:
        raise RegistryError(str(err)) from None
    try:
        parsed = RegistryFile.model_validate(raw)
    except ValidationError as err:
        # pydantic's own rendering repeats each problem with its internals; ours is complete.
        raise RegistryError(describe_errors(err, str(path))) from None
    return Registry(path, dict(parsed.datasets), dict(parsed.checkpoints))


def raw_files(entry: DatasetEntry) -> list[tuple[str | None, str, str | None, int | None]]:
    """``(url, filename, sha256, size)`` of every file the download rule fetches for ``entry``
    (``url`` is ``None`` for a local ``path`` file)."""
    return [(spec.source_url, spec.name, spec.sha256, spec.size) for spec in entry.files]


# --- pydantic errors -> registry messages ----------------------------------------------------
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def describe_errors(err: ValidationError, path: str) -> str:
    """One ``<path>: <location>: <problem>`` line per problem of a registry validation.

    Unknown keys of one mapping are reported together, with the keys that mapping allows.
    """
    lines: dict[str, list[str]] = {}
    unknown: dict[tuple[str | int, ...], list[str]] = {}
    for error in err.errors():
        # "[key]" marks a problem with a mapping's key rather than its value.
        loc = tuple(part for part in error["loc"] if part != "[key]")
        kind = error["type"]
        value = error.get("input")
        if kind == "extra_forbidden":
            if loc[:-1] not in unknown:
                lines.setdefault(_where(loc[:-1]), [])
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        if kind == "value_error":
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, FieldError):
                loc = (*loc, *cause.where)
            message = str(cause)
        elif kind == "missing":
            message = "missing (required)"
        elif kind == "literal_error":
            message = f"{value!r} is not one of {error['ctx']['expected']}"
        elif kind in _EXPECTED:
            message = f"expected {_EXPECTED[kind]}, got {type(value).__name__} {_short(value)}"
        else:
            message = f"{error['msg']} (got {_short(value)})"
        lines.setdefault(_where(loc), []).append(message)
    for loc, keys in unknown.items():
        message = f"unknown field(s) {sorted(keys)}"
        allowed = _allowed_keys(loc)
        if allowed:
            message += f"; allowed: {allowed}"
        lines[_where(loc)].append(message)
    return "\n".join(
        f"{path}: {where}: {message}" for where, messages in lines.items() for message in messages
    )


def _where(loc: tuple[str | int, ...]) -> str:
    """``("datasets", "ms", "files", 0, "url")`` -> ``datasets.ms.files[0].url``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Keys the model at ``loc`` (below :class:`RegistryFile`) accepts; [] if not a model."""
    annotation: Any = RegistryFile
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {f.alias or name: f for name, f in annotation.model_fields.items()}
            if part not in fields:
                return []
            annotation = fields[part].annotation
        elif get_origin(annotation) in (dict, tuple, list):
            # The value type of a mapping, the item type of a list.
            args = get_args(annotation)
            annotation = args[-1] if get_origin(annotation) is dict else args[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return []
    key_field = getattr(annotation, "KEY_FIELD", None)
    return sorted(
        f.alias or name for name, f in annotation.model_fields.items() if name != key_field
    )


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation
