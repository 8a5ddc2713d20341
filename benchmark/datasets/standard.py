"""The standard dataset contract: validate and write the standard AnnData, and the helpers
that shape any source into it.

The standard AnnData (CONTRIBUTING.md): ``X`` raw counts as CSR float32 where the source has
them (else the source's values, described in ``uns["standardisation"]["x"]``), ``var_names``
gene symbols with ``var["gene_id"]`` where known, obs ``cell_type`` / ``batch`` /
``condition`` / ``split`` as the tasks need, and for multi-omic sets one AnnData with
``var["modality"]`` in {"rna", "protein", "atac"} (protein features are prefixed ``prot_``,
as in the demo simulator, so that they never collide with gene symbols).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.datasets.errors import DatasetError
from benchmark.datasets.fields import MODALITIES, PROTEIN_PREFIX
from benchmark.io import write_h5ad
from contract.conditions import parse_condition

__all__ = [
    "as_category",
    "looks_like_counts",
    "plain",
    "prefix_proteins",
    "tidy_frame",
    "validate_standard",
    "write_standard",
]

log = logging.getLogger(__name__)


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
    adata.uns = plain(dict(adata.uns))
    write_h5ad(adata, path)
    log.info("wrote %s (%d cells x %d features)", path, adata.n_obs, adata.n_vars)


def _duplicates(index: pd.Index) -> list[str]:
    return [str(v) for v in index[index.duplicated()].unique()[:5]]


def looks_like_counts(matrix: Any, n_sample: int = 200_000) -> bool:
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


def as_category(values: pd.Series) -> pd.Categorical:
    """Values as categorical strings, missing values kept missing (h5ad-storable obs)."""
    text = values.astype(object).where(values.notna(), None)
    text = text.map(lambda v: None if v is None else str(v))
    return pd.Categorical(text)


def tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns -> categorical strings (h5ad cannot store mixed-type object columns)."""
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = as_category(frame[column])
    return frame


def prefix_proteins(var: pd.DataFrame) -> pd.DataFrame:
    """Protein features renamed ``prot_<name>`` (source name in ``var["feature_name"]``)."""
    var = var.copy()
    var["feature_name"] = var.index.astype(str)
    var.index = [
        n if n.startswith(PROTEIN_PREFIX) else PROTEIN_PREFIX + n for n in var.index.astype(str)
    ]
    return var


def plain(value: Any) -> Any:
    """Nested value with only h5ad-storable types (None dropped, tuples -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
