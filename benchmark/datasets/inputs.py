"""Where a loader input's bytes are: a raw file, a (nested) zip member, a gzipped file.

An input may live inside a downloaded archive: ``member`` is the path inside the zip, one
element per nesting level (a zip inside a zip). A member not found under its exact path is
searched by file name, nested zips included, so a member path that the registry could not
verify still resolves. Extracted and decompressed files are cached in
``<raw_dir>/.extracted/``. A file placed directly in ``raw_dir`` under the member's file name
(e.g. fetched by hand from a Drive folder) is used as is.
"""

from __future__ import annotations

import gzip
import logging
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import anndata as ad

from benchmark.datasets.archives import ArchiveError, copy_bounded, expansion_limit
from benchmark.datasets.errors import DatasetError
from benchmark.datasets.schema import DatasetEntry, InputSpec
from benchmark.io import atomic_path

__all__ = ["input_label", "listing", "read_h5ad", "require_file", "resolve_input"]

log = logging.getLogger(__name__)


def resolve_input(name: str, entry: DatasetEntry, spec: InputSpec, raw_dir: Path) -> Path:
    """Local path of an input: the raw file, or its (nested) archive member, extracted.

    Raises
    ------
    DatasetError
        If the file is not in ``raw_dir`` (naming what is), is not a zip although a member
        is asked for, or holds no such member (naming some that it holds).
    """
    file_spec = entry.file(spec.file)
    if spec.member:
        # A file fetched by hand into raw_dir under the member's name takes precedence.
        direct = raw_dir / PurePosixPath(spec.member[-1]).name
        if direct.is_file() and direct.name != spec.file:
            return _decompress_if_gz(direct, raw_dir)
    path = require_file(name, raw_dir, spec.file)
    if not spec.member:
        return _decompress_if_gz(path, raw_dir) if file_spec.format == "h5ad.gz" else path
    for depth, member in enumerate(spec.member):
        target = _cache_path(raw_dir, spec.file, *spec.member[: depth + 1])
        if not target.exists():
            _extract_member(name, path, member, target)
        path = target
    return _decompress_if_gz(path, raw_dir)


def read_h5ad(path: Path) -> ad.AnnData:
    """Read an h5ad file; a file that is not one raises :class:`DatasetError` naming it."""
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types; name the file
        raise DatasetError(f"{path}: cannot be read as h5ad ({type(err).__name__}: {err})") from err


def require_file(name: str, raw_dir: Path, file: str) -> Path:
    """``raw_dir / file``, or :class:`DatasetError` naming the files that are present."""
    path = raw_dir / file
    if not path.exists():
        raise DatasetError(
            f"{name}: file {file!r} not found in {raw_dir} (present: {listing(raw_dir)})"
        )
    return path


def listing(folder: Path, limit: int = 20) -> list[str]:
    """Up to ``limit`` file names under ``folder`` (the extraction cache left out)."""
    if not folder.is_dir():
        return []
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    names = [n for n in names if not n.startswith(".extracted")]
    return names[:limit] + (["..."] if len(names) > limit else [])


def input_label(spec: InputSpec) -> str:
    """``file!member!inner_member`` (recorded in ``uns["standardisation"]``)."""
    return "!".join([spec.file, *spec.member])


def _cache_path(raw_dir: Path, *parts: str) -> Path:
    """Flat cache file for an archive member chain (keeps the member's suffix)."""
    return raw_dir / ".extracted" / "!".join(p.replace("/", "__") for p in parts)


def _decompress_if_gz(path: Path, raw_dir: Path) -> Path:
    if path.suffix != ".gz":
        return path
    target = _cache_path(raw_dir, path.name[:-3])
    if not target.exists():
        log.info("decompressing %s", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        limit = expansion_limit(path.stat().st_size)
        try:
            with gzip.open(path, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                copy_bounded(src, dst, limit=limit, archive=path, what="its gzip stream")
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise ArchiveError(f"{path}: not a complete gzip file ({err})") from err
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
        limit = expansion_limit(archive_path.stat().st_size)
        _copy_chain(archive, chain, target, archive_path=archive_path, limit=limit)


def _copy_chain(
    archive: zipfile.ZipFile,
    chain: tuple[str, ...],
    target: Path,
    *,
    archive_path: Path,
    limit: int,
) -> None:
    # Every level is bounded by the outer file's limit: the sizes a zip declares are checked
    # first (a bomb is refused before it is read), the bytes produced while copying too.
    info = archive.getinfo(chain[0])
    what = f"member {' -> '.join(chain)!r}"
    if info.file_size > limit:
        raise ArchiveError(
            f"{archive_path}: {what} declares {info.file_size:,} bytes, more than the "
            f"{limit:,} allowed from a {archive_path.stat().st_size:,}-byte archive; refused as "
            "a decompression bomb"
        )
    if len(chain) == 1:
        with archive.open(info) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            copy_bounded(src, dst, limit=limit, archive=archive_path, what=what)
        return
    with archive.open(info) as fh, zipfile.ZipFile(fh) as nested:
        _copy_chain(nested, chain[1:], target, archive_path=archive_path, limit=limit)
