"""What a downloaded file is, from its first bytes: the check before a first digest is pinned.

A registry file with ``sha256: null`` trusts its first download; an HTML error page served
with ``200``, a gzipped body where a table was expected or a text where an archive was
expected must not become that trusted file. :func:`check_format` tells them apart by magic
numbers and text-ness (not a parse); :func:`format_from_name` guesses a format from a file
name where the registry gives none.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_format", "format_from_name"]

_MAGIC = {
    "hdf5": b"\x89HDF\r\n\x1a\n",
    "gzip": b"\x1f\x8b",
    "zip": b"PK\x03\x04",
    "empty zip": b"PK\x05\x06",
}
#: What each registry format must start with (h5ad may carry a user block of 512 * 2^k bytes).
_FORMAT_MAGIC = {
    "h5ad": ("hdf5",),
    "h5": ("hdf5",),
    "h5ad.gz": ("gzip",),
    "tar.gz": ("gzip",),
    "gz": ("gzip",),
    "zip": ("zip", "empty zip"),
    "npz": ("zip", "empty zip"),
    "pt": ("zip",),
}
_TEXT_FORMATS = frozenset({"csv", "tsv", "txt", "json", "gmt"})
_SUFFIX_FORMATS = {
    ".h5ad": "h5ad",
    ".h5": "h5",
    ".zip": "zip",
    ".npz": "npz",
    ".pkl": "pkl",
    ".pickle": "pkl",
    ".pt": "pt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".json": "json",
    ".gmt": "gmt",
    ".html": "html",
    ".htm": "html",
}


def format_from_name(name: str) -> str | None:
    lower = name.lower()
    for compound in ("h5ad.gz", "tar.gz"):
        if lower.endswith("." + compound):
            return compound
    if lower.endswith((".tgz", ".gz")):
        return "gz"
    return _SUFFIX_FORMATS.get(Path(lower).suffix)


def _describe(head: bytes) -> str:
    """A few words on what a file that starts with ``head`` is."""
    for label, magic in _MAGIC.items():
        if head.startswith(magic):
            return f"{label} data"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if text.startswith(b"<?xml"):
        return "an XML document"
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if not head:
        return "an empty file"
    if b"\x00" in head:
        return "binary data"
    return f"text starting {head[:40]!r}"


def check_format(path: str | os.PathLike[str], file_format: str | None) -> str | None:
    """Say what is wrong when ``path`` is evidently not a ``file_format`` file, else ``None``.

    A cheap check of the first bytes, not a parse: archives and HDF5 by their magic numbers,
    pickles by their protocol header, text formats by being text (and not an HTML page or
    compressed data). Unknown formats (``None`` or a name not listed) only refuse HTML pages
    and empty files.

    Returns
    -------
    str or None
        What the file looks like instead ("an HTML page", "gzip data", ...), or ``None``.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    what = _describe(head)
    if file_format == "html":
        return what if what == "an empty file" else None
    if what in ("an HTML page", "an empty file"):
        return what
    if file_format in ("h5ad", "h5"):
        with open(path, "rb") as fh:
            # HDF5 looks for its signature at 0, 512, 1024, 2048, ... (a user block).
            for offset in (0, 512, 1024, 2048, 4096):
                fh.seek(offset)
                if fh.read(8) == _MAGIC["hdf5"]:
                    return None
        return what
    if file_format in _FORMAT_MAGIC:
        ok = any(head.startswith(_MAGIC[m]) for m in _FORMAT_MAGIC[file_format])
        # Legacy (non-zip) torch files are pickles; they are refused later by weights_only.
        if file_format == "pt" and what == "a Python pickle":
            return None
        return None if ok else what
    if file_format == "pkl":
        # Protocols 0-1 are text-like; only refuse what is evidently something else.
        return what if what.endswith((" data", "document")) and what != "binary data" else None
    if file_format in _TEXT_FORMATS:
        if not what.startswith("text"):
            return what
        if file_format == "json" and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(
            (b"{", b"[")
        ):
            return what
        return None
    return None
