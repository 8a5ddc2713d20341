"""Applying an entry's source keys: which obs columns become the standard keys, which var
column tells the modality, and where the raw counts are (``counts:``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from benchmark.datasets.errors import DatasetError
from benchmark.datasets.schema import DatasetEntry, ModalitySpec
from benchmark.datasets.standard import as_category, looks_like_counts, prefix_proteins

__all__ = ["assign_modalities", "map_obs", "select_counts", "select_rows"]

log = logging.getLogger(__name__)


def select_rows(
    name: str, adata: ad.AnnData, entry: DatasetEntry, *, where: str, record: dict[str, Any]
) -> ad.AnnData:
    """The cells the entry's ``rows:`` keeps (all cells without one); noted in ``record``.

    Raises
    ------
    DatasetError
        If the column is not in ``where``'s obs, or no cell has a kept value (naming the
        values the column holds).
    """
    rows = entry.rows
    if rows is None:
        return adata
    if rows.column not in adata.obs.columns:
        raise DatasetError(
            f"{name}: obs column {rows.column!r} (registry rows.column) not in {where}; "
            f"obs columns: {list(adata.obs.columns)}"
        )
    values = adata.obs[rows.column].astype(str)
    keep = values.isin(list(rows.keep)).to_numpy()
    if not keep.any():
        raise DatasetError(
            f"{name}: no cell of {where} has obs {rows.column!r} in {list(rows.keep)}; "
            f"values present: {sorted(values.unique())[:20]}"
        )
    dropped = values[~keep].value_counts()
    record["rows"] = {
        "column": rows.column,
        "kept": list(rows.keep),
        "n_kept": int(keep.sum()),
        "dropped": {str(k): int(v) for k, v in dropped.items()},
    }
    log.info(
        "%s: kept %d cells (%s in %s), dropped %s",
        name,
        keep.sum(),
        rows.column,
        list(rows.keep),
        record["rows"]["dropped"],
    )
    return adata[keep].copy()


def map_obs(
    name: str,
    obs: pd.DataFrame,
    entry: DatasetEntry,
    *,
    role: str,
    where: str,
    record: dict[str, Any],
) -> pd.DataFrame:
    """The entry's ``obs:`` mapping applied to one input's obs (a copy).

    Each standard key is filled from its source column (renamed, as categorical strings), a
    constant, or ``role`` (``{from: input}``); a same-named source column that the registry
    does not map is kept as ``<key>_source``. ``record["obs"]`` notes what filled each key.

    Raises
    ------
    DatasetError
        If a mapped source column is not in the input (``where``), naming the columns present.
    """
    obs = obs.copy()
    renames = record.setdefault("obs", {})
    for key, source in entry.obs.items():
        if source.column is not None and source.column not in obs.columns:
            raise DatasetError(
                f"{name}: obs column {source.column!r} (registry obs.{key}) not in {where}; "
                f"obs columns: {list(obs.columns)}"
            )
        if key in obs.columns and source.column != key:
            # A same-named source column the registry does not map is kept under a new name.
            obs[f"{key}_source"] = obs.pop(key)
        if source.column is not None:
            obs[key] = as_category(obs.pop(source.column))
        elif source.constant is not None:
            obs[key] = pd.Categorical([source.constant] * len(obs))
        else:
            obs[key] = pd.Categorical([role] * len(obs))
        renames[key] = source.describe()
    return obs


def assign_modalities(name: str, adata: ad.AnnData, spec: ModalitySpec) -> ad.AnnData:
    """``var["modality"]`` from a var column through the entry's ``modalities.map``; protein
    features get the protein prefix (their source name kept in ``var["feature_name"]``)."""
    if spec.column not in adata.var.columns:
        raise DatasetError(
            f"{name}: var column {spec.column!r} (registry modalities.column) is missing; "
            f"var columns: {list(adata.var.columns)}"
        )
    values = adata.var[spec.column].astype(str)
    unknown = sorted(set(values) - set(spec.map))
    if unknown:
        raise DatasetError(
            f"{name}: var {spec.column!r} values {unknown} are not in registry modalities.map "
            f"{dict(spec.map)}"
        )
    var = adata.var.copy()
    var["modality"] = values.map(spec.map).to_numpy()
    protein = var["modality"].to_numpy() == "protein"
    if protein.any():
        renamed = prefix_proteins(var[protein])
        names = var.index.astype(str).to_numpy().copy()
        names[protein] = renamed.index.to_numpy()
        var["feature_name"] = var.index.astype(str)
        var.index = names
    adata = adata.copy()
    adata.var = var
    return adata


def select_counts(
    name: str, adata: ad.AnnData, entry: DatasetEntry, where: Path
) -> tuple[ad.AnnData, str, str]:
    """Put the entry's counts in X; return (adata, where they came from, what X holds)."""
    spec = entry.counts
    not_counts = entry.x_kind or "as in the source (not raw counts)"
    if spec == "none":
        return adata, "X", not_counts
    if spec == "X":
        return adata, "X", "counts"
    if spec.startswith("layers/"):
        key = spec.split("/", 1)[1]
        if key not in adata.layers:
            raise DatasetError(
                f"{name}: layer {key!r} (registry counts) not in {where.name}; layers: "
                f"{list(adata.layers.keys())}"
            )
        return _with_x(adata, adata.layers[key]), spec, "counts"
    if spec == "raw":
        if adata.raw is None:
            raise DatasetError(f"{name}: registry counts: raw, but {where.name} has no .raw")
        return _from_raw(adata), "raw", "counts"
    # auto
    if "counts" in adata.layers and looks_like_counts(adata.layers["counts"]):
        return _with_x(adata, adata.layers["counts"]), "layers/counts", "counts"
    if adata.raw is not None and looks_like_counts(adata.raw.X):
        return _from_raw(adata), "raw", "counts"
    if looks_like_counts(adata.X):
        return adata, "X", "counts"
    log.warning("%s: no raw counts found in %s; X is kept as is", name, where.name)
    return adata, "X", not_counts


def _with_x(adata: ad.AnnData, matrix: Any) -> ad.AnnData:
    # A new object rather than adata.copy(): no second copy of a large X in memory. The
    # other slots ride along so that standardisation records what it drops.
    return ad.AnnData(
        X=matrix,
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        varm=dict(adata.varm),
        obsp=dict(adata.obsp),
        layers=dict(adata.layers),
    )


def _from_raw(adata: ad.AnnData) -> ad.AnnData:
    raw = adata.raw
    return ad.AnnData(
        X=raw.X,
        obs=adata.obs.copy(),
        var=raw.var.copy(),
        uns=adata.uns,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        layers=dict(adata.layers) if raw.var_names.equals(adata.var_names) else None,
    )
