"""A dataset whose standardisation failed: a record in place of its standard ``.h5ad``.

One dataset that cannot be built must not block its task's other datasets and table. The
standardise rule writes this record where the ``.h5ad`` would be; the runner turns it into
failed rows carrying the error (:func:`check_standard_file`). The record is JSON text, not
HDF5, so no h5ad reader can take it for a dataset. This module imports nothing heavy: every
run's process checks its dataset with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmark.io import read_json, write_json

__all__ = [
    "FAILURE_KIND",
    "FailedDatasetError",
    "check_standard_file",
    "standardisation_failure",
    "write_standardisation_failure",
]

FAILURE_KIND = "scgpt-bench standardisation failure"
"""``kind`` of the JSON record that stands in for a standard ``.h5ad`` whose build failed."""


class FailedDatasetError(ValueError):
    """The dataset file is a record of a failed standardisation; the message carries its error."""


def write_standardisation_failure(
    path: str | os.PathLike[str],
    dataset: str,
    error: BaseException,
    *,
    log_path: str | os.PathLike[str] | None = None,
) -> None:
    """Record at ``path`` (the standard ``.h5ad``'s place) that building ``dataset`` failed.

    Parameters
    ----------
    path
        Where the standard ``.h5ad`` would be.
    dataset
        Registry name of the dataset.
    error
        Why it failed (its type and message are recorded).
    log_path
        The job's log, which holds the traceback.
    """
    write_json(
        {
            "kind": FAILURE_KIND,
            "status": "failed",
            "dataset": dataset,
            "error": f"{type(error).__name__}: {error}",
            "log": None if log_path is None else str(log_path),
            "retry": "fix the cause, then delete this file: the next run rebuilds the dataset",
        },
        path,
    )


def standardisation_failure(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The failure record at ``path`` (:func:`write_standardisation_failure`), else ``None``.

    Only the first byte of an h5ad is read (an HDF5 file never starts with ``{``).
    """
    with open(path, "rb") as handle:
        if handle.read(1) != b"{":
            return None
    try:
        record = read_json(path)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("kind") == FAILURE_KIND else None


def check_standard_file(path: str | os.PathLike[str], dataset: str | None = None) -> None:
    """Raise :class:`FailedDatasetError` if ``path`` records a failed standardisation.

    Raises
    ------
    FailedDatasetError
        With the recorded error, the job log and how to retry, e.g. ``dataset 'x' failed
        standardisation: DatasetError: ... (recorded in data/standard/x.h5ad; log:
        logs/standardise/x.log); fix the cause, then delete data/standard/x.h5ad: ...``.
    """
    record = standardisation_failure(path)
    if record is None:
        return
    name = dataset or record.get("dataset") or Path(path).stem
    where = f"; log: {record['log']}" if record.get("log") else ""
    raise FailedDatasetError(
        f"dataset {name!r} failed standardisation: {record.get('error')} (recorded in {path}"
        f"{where}); fix the cause, then delete {path}: the next run rebuilds it"
    )
