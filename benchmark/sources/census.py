"""Nested subsets of the CELLxGENE census as pre-training shards (the paper's data-size series).

The registry's ``cellxgene_census`` corpus entry gives the census build, the organism and
scGPT's per-partition queries (``data/cellxgene/data_config.py``). A subset of ``k`` cells is
the first ``k`` of one seeded order of the union of the partitions' cells
(:func:`benchmark.transfer.series.subset_order`), so subsets of one census build are nested. Needs the
``cellxgene-census`` package (``envs/census.yaml``) and network access.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.io import write_h5ad, write_json
from benchmark.transfer.series import subset_order

log = logging.getLogger(__name__)


def census_queries(census: Mapping[str, Any], partitions: str | Sequence[str]) -> dict[str, str]:
    """The value filters of the named partitions of a registry ``census`` block.

    ``partitions`` is a list of query names, or the name of a list in the block (e.g.
    ``whole_human``, the partitions of the whole-human model).

    Raises
    ------
    KeyError
        Naming a partition that is not under ``census.queries``.
    """
    queries = census.get("queries") or {}
    names = census[partitions] if isinstance(partitions, str) else list(partitions)
    missing = [name for name in names if name not in queries]
    if missing:
        raise KeyError(
            f"census partitions {missing} are not under census.queries; known: {sorted(queries)}"
        )
    return {name: queries[name] for name in names}


def export_census_subset(
    out_dir: str | os.PathLike[str],
    *,
    census: Mapping[str, Any],
    partitions: str | Sequence[str] = "whole_human",
    cells: int | None = None,
    seed: int = 0,
    shard_cells: int | None = None,
) -> list[Path]:
    """Write ``cells`` census cells (raw counts, gene symbols) as ``.h5ad`` shards.

    Parameters
    ----------
    out_dir
        Folder of the shards (``shard_00000.h5ad``, ...) and ``subset.json`` (the query,
        census version, seed and cell count).
    census
        The registry entry's ``census`` block (``version``, ``organism``, ``queries``, ...).
    partitions
        Query names, or the name of a list of them in ``census`` (default ``whole_human``).
    cells
        Subset size (None: every cell of the partitions).
    seed
        Seed of the order the subset is drawn in.
    shard_cells
        Cells per shard (default ``census["partition_cells"]``, scGPT's 200,000).

    Returns
    -------
    list of pathlib.Path
        The shards written.
    """
    import cellxgene_census
    from tqdm.auto import tqdm

    queries = census_queries(census, partitions)
    organism = census["organism"]
    shard_cells = int(shard_cells or census.get("partition_cells") or 200_000)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with cellxgene_census.open_soma(census_version=census["version"]) as soma:
        obs = soma["census_data"][organism].obs
        ids = np.unique(
            np.concatenate(
                [
                    obs.read(value_filter=query, column_names=["soma_joinid"])
                    .concat()
                    .to_pandas()["soma_joinid"]
                    .to_numpy()
                    for query in tqdm(queries.values(), desc="census queries")
                ]
            )
        )
        order = subset_order(ids.size, seed)
        if cells is not None:
            if not 1 <= cells <= ids.size:
                raise ValueError(f"census subset: {cells} cells requested, {ids.size} match")
            order = order[:cells]
        chosen = np.sort(ids[order])
        log.info("census %s: %d of %d cells", census["version"], chosen.size, ids.size)
        shards = []
        for i, start in enumerate(tqdm(range(0, chosen.size, shard_cells), desc="shards")):
            adata = cellxgene_census.get_anndata(
                soma,
                organism=organism,
                measurement_name="RNA",
                X_name="raw",
                obs_coords=chosen[start : start + shard_cells],
            )
            adata.var_names = adata.var["feature_name"].astype(str).to_numpy()
            adata.var_names_make_unique()
            path = out / f"shard_{i:05d}.h5ad"
            write_h5ad(adata, path)
            shards.append(path)
    write_json(
        {
            "census_version": census["version"],
            "organism": organism,
            "partitions": list(queries),
            "seed": seed,
            "cells": int(chosen.size),
            "matching_cells": int(ids.size),
        },
        out / "subset.json",
    )
    return shards
