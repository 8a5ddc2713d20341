"""Atomic writes: every file the benchmark produces appears whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class DiskFullError(OSError):
    """No space left on the device (or the quota) while writing a file.

    The message names the file being written and the free space left in its folder, which
    the underlying error (numpy's ``600000 requested and 310240 written``, h5py's ``file write
    failed``) does not.
    """


# The ways a full disk shows up when the writer does not raise OSError(ENOSPC) itself: numpy's
# short write (``ndarray.tofile`` inside ``np.save``) and HDF5's message (h5py, anndata).
_DISK_FULL_TEXT = re.compile(
    r"\d+ requested and \d+ written|No space left on device|Disk quota exceeded|errno = 28\b"
    r"|errno = 122\b",
    re.IGNORECASE,
)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) reports a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _DISK_FULL_TEXT.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_space(folder: str | os.PathLike[str]) -> str:
    """Free space of the file system holding ``folder``, in words (``"unknown"`` if unreadable)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if free >= size:
            return f"{free / size:.1f} {unit}"
    return f"{free} bytes"


def disk_full_error(path: str | os.PathLike[str], err: BaseException) -> DiskFullError:
    """A :class:`DiskFullError` naming ``path``, its folder's free space and the original error."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on device (or disk quota exceeded) while writing {path} "
        f"({free_space(folder)} free in "
        f"{folder}); free space or point results_dir/data_dir at a larger disk, then run "
        f"again ({detail})",
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the target's suffix so that writers choosing a format by
    extension (AnnData, numpy, pandas) behave as for the final name. Whatever goes wrong, the
    temporary file is removed (nothing partial is left); a full disk is raised as
    :class:`DiskFullError` naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix
        )
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(target, err) from err
        raise
    # mkstemp makes the file private (0600); the result gets the usual permissions instead,
    # so that collaborators (and a cluster's other accounts) can read the results.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except Exception as err:
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(target, err) from err
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN becomes ``null``)."""
    text = json.dumps(_nan_to_none(obj), indent=2, default=_json_default, allow_nan=False)
    write_text(text + "\n", path)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, np.floating) and np.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text, so not JSON ({err})") from None


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_npy(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a numpy array atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_h5ad(adata: Any, path: str | os.PathLike[str]) -> None:
    """Write an AnnData atomically (gzip-free for speed)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def write_csv(frame: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
