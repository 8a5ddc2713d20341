"""A registry file with a local ``path:`` source: checked against its sha256 and copied.

A dataset whose file is already on disk (the real subsets committed in
``benchmark/data/real/``, or a user's own h5ad) goes through the same download rule and the
same loaders as a downloaded one: the rule copies it into ``data/downloads/`` after checking
its digest, so the standardisation reads one place whatever the source, and the original is
only ever read (never moved, linked or modified).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from benchmark.io import atomic_path
from benchmark.sources.download import DownloadError, sha256sum

__all__ = ["copy_local"]

log = logging.getLogger(__name__)


def copy_local(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str,
    size: int | None = None,
) -> Path:
    """Copy a local registry file to ``dest`` once its size and sha256 match the registry's.

    Parameters
    ----------
    source
        The file (an absolute path: the registry resolves a relative ``path:`` against the
        registry file that declares it).
    dest
        Where the download rule wants the file; written atomically (never half a file).
    sha256
        Expected hex digest (required for local files: it is what says the file is the one
        the registry entry describes).
    size
        Expected size in bytes, or ``None``.

    Returns
    -------
    ``dest``.

    Raises
    ------
    FileNotFoundError
        If ``source`` is not a file.
    DownloadError
        If its size or digest differs from the registry's, or it changed while being copied.
    """
    src, out = Path(source), Path(dest)
    if not src.is_file():
        raise FileNotFoundError(
            f"{src}: local registry file does not exist (a relative path: is resolved against "
            "the folder of the registry file that declares it)"
        )
    expected = sha256.strip().lower().removeprefix("sha256:")
    actual_size = src.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(
            f"{src}: size {actual_size} bytes, the registry says {size}",
            url=str(src),
            expected=str(size),
            actual=str(actual_size),
        )
    digest = sha256sum(src)
    if digest != expected:
        raise DownloadError(
            f"{src}: sha256 {digest}, the registry says {expected} (the file changed, or the "
            "registry entry describes another file: update its sha256 if the change is intended)",
            url=str(src),
            expected=expected,
            actual=digest,
        )
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
        # Checked again on the copy: a file rewritten between the two reads must not pass.
        copied = sha256sum(tmp)
        if copied != expected:
            raise DownloadError(
                f"{src}: changed while being copied (copy has sha256 {copied}, expected "
                f"{expected})",
                url=str(src),
                expected=expected,
                actual=copied,
            )
    log.info("%s: sha256 verified, copied to %s", src, out)
    return out
