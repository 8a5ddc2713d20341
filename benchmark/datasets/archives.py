"""Downloaded archives read without trusting them.

A downloaded archive may be hostile even when its checksum matches (a ``sha256: null`` entry
trusts its first download). So no library extracts one unchecked:

- tar members are all checked before anything is written: no absolute path, no ``..``, no
  link of any kind (10x and the other sources ship none), no device or FIFO, no name twice;
  then each regular file is copied out by this module (never ``extractall``) into a staging
  folder, which is renamed into place (whole or absent);
- every decompression (tar, zip member, ``.gz``) is bounded: at most
  ``max(MAX_EXPANSION_RATIO x the archive's size, MIN_EXPANSION_LIMIT)`` bytes come out, so a
  few-MB archive cannot fill the disk. The limit is checked on the sizes an archive declares
  and again on the bytes actually produced (headers can lie).

``SCGPT_BENCH_MAX_EXPANSION_RATIO`` raises the ratio for a legitimate, unusually compressible
source; the error names the variable.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from benchmark.datasets.errors import DatasetError

__all__ = [
    "MAX_EXPANSION_RATIO",
    "MIN_EXPANSION_LIMIT",
    "ArchiveError",
    "copy_bounded",
    "expansion_limit",
    "extract_tar",
]

#: Decompressed bytes allowed per compressed byte (real count matrices compress 3-20x).
MAX_EXPANSION_RATIO = 100
#: Small archives may always expand to this many bytes.
MIN_EXPANSION_LIMIT = 256 * 1024**2
RATIO_ENV = "SCGPT_BENCH_MAX_EXPANSION_RATIO"
_CHUNK = 1 << 22


class ArchiveError(DatasetError):
    """An archive holds a member that may not be extracted, or expands beyond the limit."""


def expansion_limit(compressed_bytes: int) -> int:
    """Most bytes an archive of ``compressed_bytes`` may expand to (see the module docstring)."""
    raw = os.environ.get(RATIO_ENV)
    try:
        ratio = float(raw) if raw else MAX_EXPANSION_RATIO
    except ValueError:
        raise ValueError(
            f"{RATIO_ENV}={raw!r}: expected a number (bytes out per byte in)"
        ) from None
    if ratio <= 0:
        raise ValueError(f"{RATIO_ENV}={raw!r}: expected a positive number")
    return max(int(ratio * compressed_bytes), MIN_EXPANSION_LIMIT)


def _too_large(archive: Path, what: str, produced: int, limit: int) -> ArchiveError:
    return ArchiveError(
        f"{archive}: {what} expands to more than {limit:,} bytes ({produced:,} so far) from a "
        f"{archive.stat().st_size:,}-byte archive; refused as a decompression bomb. If the "
        f"source is genuine, raise {RATIO_ENV} (now {os.environ.get(RATIO_ENV) or MAX_EXPANSION_RATIO})"
    )


def copy_bounded(
    src: BinaryIO, dst: BinaryIO, *, limit: int, archive: Path, what: str, already: int = 0
) -> int:
    """Copy ``src`` to ``dst``, refusing to write more than ``limit`` bytes in all.

    Parameters
    ----------
    src, dst
        Open binary streams (a decompressing reader and the output file).
    limit
        Most bytes allowed, counting ``already`` (bytes an earlier member of the same archive
        produced).
    archive, what
        Named in the error: the archive file and the member or stream.

    Returns
    -------
    int
        ``already`` plus the bytes copied.

    Raises
    ------
    ArchiveError
        As soon as the output would pass ``limit``; the caller discards the partial output.
    """
    produced = already
    while True:
        # Read at most one byte past the limit: enough to know it was passed.
        chunk = src.read(min(_CHUNK, limit - produced + 1))
        if not chunk:
            return produced
        produced += len(chunk)
        if produced > limit:
            raise _too_large(archive, what, produced, limit)
        dst.write(chunk)


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    problem = None
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problem = "an absolute path"
    elif ".." in parts or any(".." in PurePosixPath(p.replace("\\", "/")).parts for p in parts):
        problem = "a '..' component"
    elif member.issym() or member.islnk():
        problem = f"a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        problem = "a device, FIFO or other special file"
    if problem:
        raise ArchiveError(
            f"{archive}: member {name!r} is {problem}; refused (nothing was extracted)"
        )


def extract_tar(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a (compressed) tar archive into the folder ``dest``, safely and atomically.

    Parameters
    ----------
    archive
        A ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
    dest
        Folder to create; it appears only when every member was extracted. An existing
        ``dest`` is returned as is (an earlier extraction).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ArchiveError
        If the file is not a tar archive, a member is an absolute path, has a ``..``
        component, is a link or a special file, or the members expand beyond
        :func:`expansion_limit`. The message names the archive and the member; nothing is
        left behind.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    limit = expansion_limit(archive.stat().st_size)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"{archive}: not a readable tar archive ({err})") from err
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tar:
            # Reading the whole member list walks the compressed stream once; a size bomb
            # declares its sizes in the headers and is refused here, before any byte is written.
            members = tar.getmembers()
            declared = 0
            seen: set[str] = set()
            for member in members:
                _check_member(archive, member)
                key = str(PurePosixPath(member.name))
                if key in seen and not member.isdir():
                    raise ArchiveError(
                        f"{archive}: member {member.name!r} appears twice; refused (nothing "
                        "was extracted)"
                    )
                seen.add(key)
                declared += member.size
                if declared > limit:
                    raise _too_large(archive, f"member {member.name!r}", declared, limit)
            produced = 0
            for member in members:
                target = staging / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - regular files always have data
                    raise ArchiveError(f"{archive}: member {member.name!r} has no data")
                with src, open(target, "xb") as out:
                    produced = copy_bounded(
                        src,
                        out,
                        limit=limit,
                        archive=archive,
                        what=f"member {member.name!r}",
                        already=produced,
                    )
        os.replace(staging, dest)
    except (tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive}: corrupt tar archive ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
