"""The two errors of the dataset package; every message names the dataset or file and the key."""

from __future__ import annotations

__all__ = ["DatasetError", "RegistryError"]


class DatasetError(ValueError):
    """A dataset cannot be loaded or does not meet the standard; the message names the
    dataset, the key and what exists instead."""


class RegistryError(DatasetError):
    """A registry entry is malformed; the message names the file, the entry and the field."""
