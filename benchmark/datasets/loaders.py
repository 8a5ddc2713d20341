"""One loader per source format (``format:`` of a ``kind: dataset`` entry).

Each loader reads the entry's inputs from ``raw_dir`` into one AnnData with the standard obs
keys, records what it did in ``record`` (stored as ``uns["standardisation"]``), and leaves
gene harmonisation and validation to :func:`benchmark.datasets.standardise.standardise`.

``h5ad``
    One ``data`` input, or several inputs told apart by ``split: {by: files}`` (reference
    and query files, concatenated in registry order). ``.h5ad.gz`` is decompressed.
    ``modalities:`` maps a var column (e.g. ``feature_types``) to modalities.
``gears``
    GEARS' processed ``perturb_processed.h5ad``; ``split: {by: gears}`` recomputes GEARS'
    split with GEARS' own code (same GO filter and seed as ``PertData.prepare_split``) or reads
    a ``split`` input (a pickled ``{"train": [...], "val": [...], "test": [...]}``).
``scvi_pbmc``
    scvi-tools' ``pbmc_dataset`` assembled from its downloaded files (tarballs extracted and
    the metadata pickle read by this package's safe readers, never by scvi-tools).
``paired_h5ad``
    One h5ad per modality (inputs named ``rna``, ``protein``, ``atac``), same cells.
``scmomat``
    scMoMaT's mosaic folder layout (features x cells ``.npz`` per batch and modality).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.datasets.archives import extract_tar
from benchmark.datasets.errors import DatasetError
from benchmark.datasets.fields import MODALITIES
from benchmark.datasets.inputs import (
    input_label,
    listing,
    read_h5ad,
    require_file,
    resolve_input,
)
from benchmark.datasets.schema import DatasetEntry
from benchmark.datasets.source_keys import assign_modalities, map_obs, select_counts, select_rows
from benchmark.datasets.splits import gears_split, split_from_obs, split_from_sets
from benchmark.datasets.standard import prefix_proteins
from contract.conditions import format_condition, normalise_condition, parse_condition

__all__ = ["LOADERS"]

log = logging.getLogger(__name__)


def load_pickle(path: str | Path, *, numpy: bool = False, pandas: bool = False) -> Any:
    """:func:`scgpt.safe_pickle.load_pickle`, imported when a loader needs it.

    Importing ``scgpt`` imports torch (~2 s of CPU); every Snakemake invocation parses the
    workflow, which imports this module (``benchmark.workflow`` -> ``benchmark.datasets``),
    and most never unpickle anything.
    """
    from scgpt.safe_pickle import load_pickle as safe_load_pickle

    return safe_load_pickle(path, numpy=numpy, pandas=pandas)


def _load_h5ad(name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]) -> ad.AnnData:
    if entry.split.by == "files":
        roles = entry.split.roles
    else:
        roles = {"data": None}
    parts = []
    counts_used = set()
    for role, label in roles.items():
        path = resolve_input(name, entry, entry.inputs[role], raw_dir)
        part = select_rows(name, read_h5ad(path), entry, where=path.name, record=record)
        part, counts_desc, x_kind = select_counts(name, part, entry, path)
        counts_used.add((counts_desc, x_kind))
        part.obs = map_obs(
            name, part.obs, entry, role=label or role, where=path.name, record=record
        )
        if label is not None:
            part.obs["split"] = pd.Categorical([label] * part.n_obs)
        if entry.split.by == "obs":
            part.obs["split"] = split_from_obs(name, part.obs, entry.split, path.name)
        parts.append((role, part))
    if len(counts_used) > 1:
        raise DatasetError(f"{name}: inputs differ in what X holds: {sorted(counts_used)}")
    ((counts_desc, x_kind),) = counts_used
    record["x"], record["counts_from"] = x_kind, counts_desc
    record["inputs"] = {role: str(input_label(entry.inputs[role])) for role in roles}
    if len(parts) == 1:
        adata = parts[0][1]
    else:
        adata = _concat_parts(name, parts, record)
    if entry.modalities is not None:
        adata = assign_modalities(name, adata, entry.modalities)
    if entry.split.by != "none":
        record["split"] = {
            "by": entry.split.by,
            "counts": {str(k): int(v) for k, v in adata.obs["split"].value_counts().items()},
        }
    return adata


def _concat_parts(
    name: str, parts: list[tuple[str, ad.AnnData]], record: dict[str, Any]
) -> ad.AnnData:
    for role, part in parts:
        if not part.var_names.is_unique:
            # Gene intersection needs unique names; repeats get anndata's "-1" suffixes.
            log.warning("%s: %s has repeated gene names; suffixing them", name, role)
            part.var_names_make_unique()
            record.setdefault("var_names_made_unique", []).append(role)
    names = [p.obs_names for _, p in parts]
    all_names = pd.Index(np.concatenate([n.to_numpy() for n in names]))
    if not all_names.is_unique:
        for role, part in parts:
            part.obs_names = [f"{role}:{cell}" for cell in part.obs_names]
        record["obs_names_prefixed"] = "role:cell (cell names repeat across inputs)"
    shared = parts[0][1].var_names
    for _, part in parts[1:]:
        shared = shared.intersection(part.var_names, sort=False)
    if len(shared) == 0:
        raise DatasetError(
            f"{name}: the inputs share no gene; e.g. {[list(p.var_names[:3]) for _, p in parts]}"
        )
    lost = {
        role: int(part.n_vars - len(shared)) for role, part in parts if part.n_vars != len(shared)
    }
    if lost:
        log.warning("%s: genes not in every input are dropped: %s", name, lost)
        record["genes_dropped_not_shared"] = lost
    # Fill a var column missing from some parts from the parts that have it (the MS query
    # file is indexed by the reference's gene names in scGPT's tutorial).
    var = parts[0][1].var.loc[shared].copy()
    for _, part in parts[1:]:
        extra = part.var.loc[shared]
        for column in extra.columns:
            if column not in var.columns:
                var[column] = extra[column]
            else:
                var[column] = var[column].where(var[column].notna(), extra[column])
    adatas = [part[:, shared].copy() for _, part in parts]
    for part in adatas:
        part.var = var.copy()
    # var is identical across parts; "outer" keeps obs columns that only some inputs have.
    adata = ad.concat(adatas, axis=0, join="outer", merge="first", uns_merge="first")
    for column in ("split", "cell_type", "batch", "condition"):
        if column in adata.obs.columns:
            adata.obs[column] = adata.obs[column].astype(str).astype("category")
    return adata


def _load_scvi_pbmc(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    """scvi-tools' ``pbmc_dataset`` (PBMC 4k + 8k), assembled here from its downloaded files.

    The same cells, genes, batches and labels as ``scvi.data.pbmc_dataset``, without letting
    scvi-tools extract the 10x tarballs unchecked or ``pd.read_pickle`` the metadata (either
    could write outside ``data/`` or run code from a hostile download): the tarballs go
    through :func:`benchmark.datasets.archives.extract_tar`, the pickle through an
    allow-list unpickler that builds numpy and pandas data only.
    """
    missing = [f.name for f in entry.files if not (raw_dir / f.name).exists()]
    if missing:
        raise DatasetError(
            f"{name}: files missing in {raw_dir}: {missing} (present: {listing(raw_dir)})"
        )
    tarballs = {
        PurePosixPath(f.name).parts[0]: raw_dir / f.name
        for f in entry.files
        if f.format == "tar.gz"
    }
    if set(tarballs) != {"pbmc8k", "pbmc4k"}:
        raise DatasetError(
            f"{name}: format scvi_pbmc expects the tar.gz files pbmc8k/... and pbmc4k/...; the "
            f"registry lists {sorted(tarballs)}"
        )
    metadata_path = raw_dir / "pbmc_metadata.pickle"
    metadata = load_pickle(metadata_path, pandas=True)
    if not isinstance(metadata, dict) or not {"barcodes", "clusters", "list_clusters"} <= set(
        metadata
    ):
        raise DatasetError(
            f"{name}: {metadata_path} should be a dict with 'barcodes', 'clusters' and "
            f"'list_clusters'; got {type(metadata).__name__}"
            + (f" with keys {sorted(metadata)}" if isinstance(metadata, dict) else "")
        )
    gene_info = pd.read_csv(raw_dir / "gene_info_pbmc.csv")
    if "ENSG" not in gene_info.columns:
        raise DatasetError(
            f"{name}: gene_info_pbmc.csv has no 'ENSG' column; columns: {list(gene_info.columns)}"
        )
    # scvi-tools' order: pbmc8k is batch 0, pbmc4k batch 1.
    parts = [
        _read_10x_tarball(name, tarballs[key], raw_dir / ".extracted" / key)
        for key in ("pbmc8k", "pbmc4k")
    ]
    barcodes = np.concatenate([part.obs_names.to_numpy() for part in parts])
    adata = ad.concat(parts, join="inner", merge="same", label="batch", keys=["0", "1"])
    adata.obs_names = barcodes.astype(str)
    # As scvi-tools: a barcode in both batches maps to its last occurrence.
    position = {barcode: i for i, barcode in enumerate(barcodes.astype(str))}
    metadata_barcodes = np.asarray(metadata["barcodes"].index.to_numpy()).ravel().astype(str)
    # Cells the metadata lists that 10x's filtered matrices no longer hold (barcodes ending
    # in -11: 49 cells) are skipped; their labels are skipped with them.
    found = [position[b] for b in metadata_barcodes if b in position]
    labelled = np.asarray([not b.endswith("11") for b in metadata_barcodes], dtype=bool)
    adata = adata[np.asarray(found, dtype=np.int64)].copy()
    clusters = np.asarray(metadata["clusters"]).ravel()[labelled]
    if len(clusters) != adata.n_obs:
        raise DatasetError(
            f"{name}: {metadata_path} labels {len(clusters)} cells but {adata.n_obs} of its "
            "barcodes are in the 10x matrices; the metadata and the tarballs do not match"
        )
    cell_types = np.asarray(metadata["list_clusters"]).ravel().astype(str)
    genes = [g for g in gene_info["ENSG"].astype(str) if g in set(adata.var_names)]
    adata = adata[:, genes].copy()
    adata.obs["batch"] = adata.obs["batch"].astype(np.int64)
    adata.obs["labels"] = clusters.astype(np.int64)
    adata.obs["str_labels"] = cell_types[clusters.astype(np.int64)]
    record["built_as"] = "scvi-tools pbmc_dataset (assembled by the benchmark)"
    adata, counts_desc, x_kind = select_counts(name, adata, entry, raw_dir)
    record["x"], record["counts_from"] = x_kind, counts_desc
    adata.obs = map_obs(
        name, adata.obs, entry, role="data", where=metadata_path.name, record=record
    )
    return adata


def _read_10x_tarball(name: str, tarball: Path, folder: Path) -> ad.AnnData:
    """A 10x ``filtered_gene_bc_matrices`` tarball, safely extracted, read as scvi-tools does."""
    import scanpy as sc

    extract_tar(tarball, folder)
    matrices = sorted(
        p.parent for p in folder.rglob("*") if p.name in ("matrix.mtx", "matrix.mtx.gz")
    )
    if not matrices:
        raise DatasetError(f"{name}: {tarball} holds no matrix.mtx (files: {listing(folder)})")
    adata = sc.read_10x_mtx(matrices[0], var_names="gene_ids")
    adata.var_names_make_unique()
    sc.pp.filter_cells(adata, min_counts=1)
    sc.pp.filter_genes(adata, min_counts=1)
    return adata


def _load_paired(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    parts = {}
    kinds = set()
    for modality in MODALITIES:
        if modality not in entry.inputs:
            continue
        path = resolve_input(name, entry, entry.inputs[modality], raw_dir)
        part = read_h5ad(path)
        part, _, x_kind = select_counts(name, part, entry, path)
        kinds.add(x_kind)
        part.var["modality"] = modality
        parts[modality] = (part, path)
    first_modality = next(iter(parts))
    first, first_path = parts[first_modality]
    cells = first.obs_names
    for part, _ in parts.values():
        cells = cells.intersection(part.obs_names, sort=False)
    if len(cells) == 0:
        raise DatasetError(
            f"{name}: the modality files share no cell name; e.g. "
            f"{ {m: list(p.obs_names[:2]) for m, (p, _) in parts.items()} }"
        )
    unpaired = {
        m: int(p.n_obs - len(cells)) for m, (p, _) in parts.items() if p.n_obs != len(cells)
    }
    if unpaired:
        log.warning("%s: cells not measured in every modality are dropped: %s", name, unpaired)
        record["cells_dropped_unpaired"] = unpaired
    obs = map_obs(
        name,
        first.obs.loc[cells].copy(),
        entry,
        role=first_modality,
        where=first_path.name,
        record=record,
    )
    blocks, vars_ = [], []
    for modality, (part, _) in parts.items():
        part = part[cells]
        var = part.var.copy()
        if modality == "protein":
            var = prefix_proteins(var)
        blocks.append(sp.csr_matrix(part.X, dtype=np.float32))
        vars_.append(var)
    record["x"] = "counts" if kinds == {"counts"} else "/".join(sorted(kinds))
    record["inputs"] = {m: input_label(entry.inputs[m]) for m in parts}
    var = pd.concat(vars_, axis=0, join="outer")
    return ad.AnnData(X=sp.hstack(blocks, format="csr"), obs=obs, var=var, uns=dict(first.uns))


def _load_scmomat(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    assert entry.mosaic is not None
    features = {}
    for modality, file in entry.mosaic.features.items():
        path = require_file(name, raw_dir, file)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        features[modality] = pd.Index(names)
    obs_parts, rows = [], []
    for batch, files in entry.mosaic.batches.items():
        meta_path = require_file(name, raw_dir, files["meta"])
        meta = pd.read_csv(meta_path, index_col=0)
        blocks = {}
        for modality in features:
            if modality not in files:
                continue
            matrix = sp.load_npz(require_file(name, raw_dir, files[modality]))
            # scMoMaT stores features x cells.
            if matrix.shape != (len(features[modality]), len(meta)):
                raise DatasetError(
                    f"{name}: {files[modality]} is {matrix.shape[0]} x {matrix.shape[1]}, expected "
                    f"{len(features[modality])} {modality} features x {len(meta)} cells of "
                    f"{files['meta']}"
                )
            blocks[modality] = sp.csr_matrix(matrix.T, dtype=np.float32)
        obs = meta.copy()
        obs.index = [f"{batch}:{cell}" for cell in meta.index.astype(str)]
        obs = map_obs(name, obs, entry, role=batch, where=files["meta"], record=record)
        for modality in MODALITIES:
            if modality in features:
                obs[f"has_{modality}"] = modality in blocks
        row = [
            blocks.get(
                modality, sp.csr_matrix((len(meta), len(features[modality])), dtype=np.float32)
            )
            for modality in features
        ]
        rows.append(sp.hstack(row, format="csr"))
        obs_parts.append(obs)
    var_parts = []
    for modality, index in features.items():
        var = pd.DataFrame({"modality": modality}, index=index.astype(str))
        if modality == "protein":
            var = prefix_proteins(var)
        var_parts.append(var)
    obs = pd.concat(obs_parts, axis=0)
    record["x"] = "counts"
    record["counts_from"] = "X (features x cells npz, transposed)"
    record["mosaic"] = {
        b: sorted(k for k in f if k != "meta") for b, f in entry.mosaic.batches.items()
    }
    return ad.AnnData(X=sp.vstack(rows, format="csr"), obs=obs, var=pd.concat(var_parts))


def _load_gears(
    name: str, entry: DatasetEntry, raw_dir: Path, record: dict[str, Any]
) -> ad.AnnData:
    path = resolve_input(name, entry, entry.inputs["data"], raw_dir)
    adata = select_rows(name, read_h5ad(path), entry, where=path.name, record=record)
    adata, counts_desc, x_kind = select_counts(name, adata, entry, path)
    record["x"], record["counts_from"] = x_kind, counts_desc
    record["inputs"] = {"data": input_label(entry.inputs["data"])}
    source_condition = entry.obs["condition"].column
    if source_condition is None or source_condition not in adata.obs.columns:
        raise DatasetError(
            f"{name}: obs column {source_condition!r} (registry obs.condition) not in {path.name}; "
            f"obs columns: {list(adata.obs.columns)}"
        )
    conditions = adata.obs[source_condition].astype(str)
    original_conditions = conditions.copy()
    grammar: dict[str, str] = {}
    if entry.control is not None:
        # Another control name (PerturBench's "control", singles without a filler: "KLF1"):
        # re-spelled in GEARS' grammar before GEARS' split reads them.
        grammar = _grammar_of(name, conditions.unique(), entry.control)
        conditions = conditions.map(grammar)
        adata.obs[source_condition] = conditions.to_numpy()
        record["control"] = entry.control
    split = None
    if "split" in entry.inputs:
        split_path = resolve_input(name, entry, entry.inputs["split"], raw_dir)
        set2conditions = load_pickle(split_path)
        split = split_from_sets(conditions, set2conditions)
        record["split"] = {"by": "file", "file": input_label(entry.inputs["split"])}
    elif entry.split.by == "gears":
        gene2go = _load_pickle_input(name, entry, "gene2go", raw_dir)
        pert_genes = _load_pickle_input(name, entry, "pert_genes", raw_dir)
        gene_names = (
            adata.var[entry.genes.symbol_column].astype(str).tolist()
            if entry.genes.symbol_column in adata.var.columns
            else list(adata.var_names.astype(str))
        )
        split, info = gears_split(
            conditions, entry.split, gene_names=gene_names, gene2go=gene2go, pert_genes=pert_genes
        )
        record["split"] = info["record"]
        adata.uns["split_subgroups"] = info["subgroups"]
    adata.obs = map_obs(name, adata.obs, entry, role="data", where=path.name, record=record)
    if split is not None:
        adata.obs["split"] = pd.Categorical(split.to_numpy())
        record.setdefault("split", {})["counts"] = {
            str(k): int(v) for k, v in adata.obs["split"].value_counts().items()
        }
    if grammar:
        adata.obs["condition_source"] = original_conditions.to_numpy()
        record["conditions_respelled"] = int(sum(k != v for k, v in grammar.items()))
    # Standard spelling of conditions ("ctrl+A" -> "A+ctrl", "B+A" -> "A+B").
    original = adata.obs["condition"].astype(str)
    unique = original.unique()
    spelled = {c: normalise_condition(c) for c in unique}
    if any(k != v for k, v in spelled.items()):
        adata.obs["condition_source"] = original.to_numpy()
        adata.obs["condition"] = original.map(spelled).astype("category")
        record["conditions_respelled"] = int(sum(k != v for k, v in spelled.items()))
        if "split_subgroups" in adata.uns:
            adata.uns["split_subgroups"] = {
                part: {sg: [spelled.get(c, c) for c in conds] for sg, conds in groups.items()}
                for part, groups in adata.uns["split_subgroups"].items()
            }
    return adata


def _grammar_of(name: str, conditions: Any, control: str) -> dict[str, str]:
    """Source condition -> the suite's spelling (``ctrl``, ``A+ctrl``, ``A+B``).

    Raises
    ------
    DatasetError
        If a name cannot be parsed (an empty part, a gene named twice), naming it.
    """
    spelled = {}
    for condition in conditions:
        try:
            spelled[str(condition)] = format_condition(
                parse_condition(str(condition), control=control)
            )
        except ValueError as err:
            raise DatasetError(f"{name}: condition {condition!r}: {err}") from None
    return spelled


def _load_pickle_input(name: str, entry: DatasetEntry, role: str, raw_dir: Path) -> Any:
    if role not in entry.inputs:
        return None
    # GEARS' gene2go / gene-list pickles hold plain dicts, sets and lists: nothing else is built.
    return load_pickle(resolve_input(name, entry, entry.inputs[role], raw_dir))


LOADERS: dict[str, Callable[[str, DatasetEntry, Path, dict[str, Any]], ad.AnnData]] = {
    "h5ad": _load_h5ad,
    "gears": _load_gears,
    "scvi_pbmc": _load_scvi_pbmc,
    "paired_h5ad": _load_paired,
    "scmomat": _load_scmomat,
}
