"""How ``obs["split"]`` is made: GEARS' perturbation split (with GEARS' own code), a stored
GEARS split file, or a source obs column mapped to split values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.datasets.errors import DatasetError
from benchmark.datasets.schema import SplitSpec

__all__ = ["gears_split", "split_from_obs", "split_from_sets"]


def gears_split(
    conditions: pd.Series,
    spec: SplitSpec,
    *,
    gene_names: Sequence[str],
    gene2go: Mapping[str, Any] | None = None,
    pert_genes: Sequence[str] | None = None,
) -> tuple[pd.Series, dict[str, Any]]:
    """GEARS' perturbation split, computed with GEARS' own ``DataSplitter``.

    As ``PertData.load`` + ``prepare_split``: conditions whose genes are not in the GO graph
    (genes of ``pert_genes``, or of the dataset when not given, that ``gene2go`` knows) are
    left out (split ``"excluded"``); the others are split by ``DataSplitter`` with the
    entry's method, seed and fractions; control cells are ``"train"``.

    Parameters
    ----------
    conditions
        Per-cell GEARS condition strings, in the file's order (GEARS' order matters).
    spec
        ``SplitSpec(by="gears", ...)``.
    gene_names
        The dataset's gene symbols (GEARS' ``var["gene_name"]``).
    gene2go
        GEARS' ``gene2go_all.pkl`` (gene -> GO terms); ``None`` skips the GO filter.
    pert_genes
        GEARS' ``essential_all_data_pert_genes.pkl`` (the default perturbation graph's genes).

    Returns
    -------
    (Series, dict)
        Split per cell (same index) and ``{"record": ..., "subgroups": ...}``.
    """
    from gears.data_utils import DataSplitter  # heavy (torch_geometric); only this split needs it

    conditions = conditions.astype(str)
    record: dict[str, Any] = {
        "by": "gears",
        "method": spec.method,
        "seed": spec.seed,
        "train_gene_set_size": spec.train_gene_set_size,
        "combo_seen2_train_frac": spec.combo_seen2_train_frac,
    }
    keep = np.ones(len(conditions), dtype=bool)
    if gene2go is not None:
        if pert_genes is not None:
            essential = list(pert_genes)
            record["go_filter"] = "gene2go x pert_genes (GEARS default_pert_graph=True)"
        else:
            perturbed = {g for c in conditions.unique() for g in c.split("+") if g != "ctrl"}
            essential = list(gene_names) + sorted(perturbed)
            record["go_filter"] = "gene2go x dataset genes (GEARS default_pert_graph=False)"
        pert_names = {g for g in essential if g in gene2go}

        def in_go(condition: str) -> bool:
            return condition == "ctrl" or all(
                g == "ctrl" or g in pert_names for g in condition.split("+")
            )

        ok = {c: in_go(c) for c in conditions.unique()}
        keep = conditions.map(ok).to_numpy(dtype=bool)
        record["excluded_conditions"] = sorted(c for c, good in ok.items() if not good)
    else:
        record["go_filter"] = "none (no gene2go input)"
    kept_conditions = conditions[keep].to_numpy()
    kept = ad.AnnData(
        obs=pd.DataFrame(
            {"condition": kept_conditions},
            index=[str(i) for i in range(len(kept_conditions))],
        )
    )
    # DataSplitter seeds numpy's global generator: restore the caller's state afterwards.
    state = np.random.get_state()  # noqa: NPY002
    try:
        splitter = DataSplitter(kept, split_type=spec.method)
        result = splitter.split_data(
            train_gene_set_size=spec.train_gene_set_size,
            combo_seen2_train_frac=spec.combo_seen2_train_frac,
            seed=spec.seed,
        )
    finally:
        np.random.set_state(state)  # noqa: NPY002
    split_kept = kept.obs["split"].astype(object)
    if split_kept.isna().any():
        missing = sorted(kept.obs["condition"][split_kept.isna()].unique())[:5]
        raise DatasetError(f"GEARS split left conditions without a split, e.g. {missing}")
    split = pd.Series("excluded", index=conditions.index, dtype=object)
    split[keep] = split_kept.to_numpy()
    subgroups: dict[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        for key, groups in result[1].items():
            subgroups[key.replace("_subgroup", "")] = {
                str(sg): [str(c) for c in conds] for sg, conds in groups.items()
            }
    return split, {"record": record, "subgroups": subgroups}


def split_from_sets(
    conditions: pd.Series, set2conditions: Mapping[str, Sequence[str]]
) -> pd.Series:
    """Split per cell from a stored GEARS split (``{"train": [conditions], ...}``); cells of
    conditions it does not list are ``"excluded"``."""
    lookup = {}
    for part, conds in set2conditions.items():
        for condition in conds:
            lookup[str(condition)] = str(part)
    return conditions.astype(str).map(lookup).fillna("excluded")


def split_from_obs(name: str, obs: pd.DataFrame, spec: SplitSpec, where: str) -> pd.Categorical:
    """Split per cell from a source column (``split: {by: obs, column, values}``).

    Raises
    ------
    DatasetError
        If the column is missing, or holds values that no split lists.
    """
    if spec.column not in obs.columns:
        raise DatasetError(
            f"{name}: obs column {spec.column!r} (registry split.column) not in {where}; "
            f"obs columns: {list(obs.columns)}"
        )
    lookup = {str(v): label for label, values in spec.values.items() for v in values}
    values = obs[spec.column].astype(str)
    split = values.map(lookup)
    unknown = sorted(values[split.isna()].unique())
    if unknown:
        raise DatasetError(
            f"{name}: obs {spec.column!r} values {unknown[:5]} are in no split of the registry "
            f"(split.values: {dict(spec.values)})"
        )
    return pd.Categorical(split.to_numpy())
