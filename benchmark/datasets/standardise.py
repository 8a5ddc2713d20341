"""Turning a dataset's downloaded files into the standard AnnData, and the one entry point
the workflow calls for any dataset, builtin or downloaded: :func:`prepare_standard_dataset`.

:func:`standardise` runs the entry's loader (:mod:`benchmark.datasets.loaders`), then the
steps every source shares: drop layers/obsm/varm/obsp/varp, harmonise gene identifiers
(:mod:`benchmark.sources.genes`), tidy obs/var for h5ad, record vocabulary coverage, and validate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.datasets.builtin import build_builtin, check_builder_params
from benchmark.datasets.errors import DatasetError
from benchmark.datasets.inputs import resolve_input
from benchmark.datasets.loaders import LOADERS
from benchmark.datasets.registry import Registry, load_registry
from benchmark.datasets.schema import DatasetEntry
from benchmark.datasets.standard import plain, tidy_frame, validate_standard, write_standard
from benchmark.failed_datasets import write_standardisation_failure
from benchmark.io import DiskFullError, disk_full_error, is_disk_full
from benchmark.sources.genes import (
    CoverageReport,
    detect_id_type,
    gene_coverage,
    harmonise_genes,
    read_gene_mapping,
    translate_gene_lists,
)

__all__ = ["prepare_or_record_failure", "prepare_standard_dataset", "standardise"]

log = logging.getLogger(__name__)


def prepare_standard_dataset(
    dataset: str,
    output: str | os.PathLike[str],
    *,
    raw_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    registry: Registry | str | os.PathLike[str] = "config/datasets.yaml",
    vocabulary: Collection[str] | str | os.PathLike[str] | None = None,
) -> ad.AnnData:
    """Build (builtin) or standardise (downloaded) one dataset and write it to ``output``.

    Parameters
    ----------
    dataset
        Registry name.
    output
        Standard ``.h5ad`` path.
    raw_dir
        Folder of the downloaded files (not needed for builtin entries).
    params
        Builder parameters (builtin entries only; the config's ``datasets.<name>``).
    registry
        A loaded :class:`Registry` or the registry file.
    vocabulary
        Optional gene vocabulary (collection, or a scGPT ``vocab.json`` path) whose coverage is
        recorded in ``uns["standardisation"]["coverage"]``.
    """
    reg = registry if isinstance(registry, Registry) else load_registry(registry)
    entry = reg.entry(dataset)
    if isinstance(vocabulary, str | os.PathLike):
        vocabulary = list(json.loads(Path(vocabulary).read_text()))
    if entry.kind == "builtin":
        adata = build_builtin(dataset, entry, params)
        if vocabulary is not None:
            _record_coverage(adata, vocabulary)
    else:
        if params:
            check_builder_params(dataset, entry, params)  # raises: not a builtin entry
        if raw_dir is None:
            raise DatasetError(f"{dataset}: raw_dir is required for a {entry.kind} entry")
        adata = standardise(dataset, entry, raw_dir, vocabulary=vocabulary)
    write_standard(adata, output)
    return adata


def prepare_or_record_failure(
    dataset: str,
    output: str | os.PathLike[str],
    *,
    log_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> ad.AnnData | None:
    """:func:`prepare_standard_dataset`, recording a failure at ``output`` instead of raising it.

    A dataset that cannot be built must not block its task's other datasets: the failure is
    logged with its traceback (in the job's log) and written to ``output`` as a record
    (:func:`~benchmark.failed_datasets.write_standardisation_failure`), which the runner
    turns into failed rows carrying this error. A full disk or exhausted memory is the
    machine's problem, not the dataset's: it is raised, so the job fails and the next run
    retries it.

    Parameters
    ----------
    dataset, output
        As for :func:`prepare_standard_dataset`.
    log_path
        The job's log, named in the record.
    **kwargs
        Further arguments of :func:`prepare_standard_dataset`.

    Returns
    -------
    The standard AnnData, or ``None`` when the failure was recorded.
    """
    try:
        return prepare_standard_dataset(dataset, output, **kwargs)
    except Exception as err:
        if isinstance(err, MemoryError | DiskFullError):
            raise
        if is_disk_full(err):  # e.g. extracting an archive: name the file all the same
            raise disk_full_error(getattr(err, "filename", None) or output, err) from err
        log.error(
            "standardising %s failed; recorded in %s, so its rows are marked failed and the "
            "task's other datasets still run: %s: %s",
            dataset,
            output,
            type(err).__name__,
            err,
            exc_info=True,
        )
        write_standardisation_failure(output, dataset, err, log_path=log_path)
        return None


def standardise(
    name: str,
    entry: DatasetEntry,
    raw_dir: str | os.PathLike[str],
    *,
    vocabulary: Collection[str] | None = None,
) -> ad.AnnData:
    """Turn a dataset's downloaded files into the standard AnnData.

    Parameters
    ----------
    name
        Dataset name (for messages and ``uns``).
    entry
        Its registry entry (``kind: dataset``).
    raw_dir
        Folder holding the entry's files (``data/raw/<name>``).
    vocabulary
        Optional gene vocabulary; its coverage of the RNA genes is logged and stored.

    Returns
    -------
    AnnData
        Validated standard dataset; ``uns["standardisation"]`` records the source files, the
        counts used, obs renames, the split, gene harmonisation and coverage.

    Raises
    ------
    DatasetError
        If the entry is not standardisable, a file or column is missing (named, with what
        exists), or the result fails :func:`validate_standard`.
    """
    if entry.kind != "dataset":
        hint = "use build_builtin" if entry.kind == "builtin" else "it is used as is"
        raise DatasetError(f"{name}: a {entry.kind} entry has no standard AnnData ({hint})")
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DatasetError(f"{name}: raw folder {raw_dir} does not exist")
    loader = LOADERS[entry.format]
    record: dict[str, Any] = {
        "dataset": name,
        "source": "registry",
        "format": entry.format,
        "verification": entry.verification,
        "files": {
            spec.name: spec.url
            or (f"path:{spec.path} (sha256 {spec.sha256})" if spec.path else None)
            or f"drive:{spec.drive_id}"
            for spec in entry.files
        },
    }
    adata = loader(name, entry, raw_dir, record)
    adata = _finalise(name, entry, adata, record, raw_dir, vocabulary)
    return adata


def _finalise(
    name: str,
    entry: DatasetEntry,
    adata: ad.AnnData,
    record: dict[str, Any],
    raw_dir: Path,
    vocabulary: Collection[str] | None,
) -> ad.AnnData:
    dropped = [
        f"{slot}[{key}]"
        for slot in ("layers", "obsm", "varm", "obsp", "varp")
        for key in getattr(adata, slot).keys()
    ]
    adata = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), uns=dict(adata.uns))
    if dropped:
        record["dropped"] = dropped
    if "split" in adata.obs.columns and "split" not in record:
        # A source column called "split" is not the standard split; keep it under a new name.
        adata.obs["split_source"] = adata.obs.pop("split")
        record["obs"] = {**record.get("obs", {}), "split_source": "split"}
    adata = _harmonise(name, entry, adata, record, raw_dir)
    adata.obs = tidy_frame(adata.obs)
    adata.var = tidy_frame(adata.var)
    if vocabulary is not None:
        record["coverage"] = _coverage(adata, vocabulary).as_dict()
    record["n_obs"], record["n_vars"] = int(adata.n_obs), int(adata.n_vars)
    adata.uns["standardisation"] = plain(record)
    required_var = tuple(entry.required_var) + (("modality",) if entry.multimodal else ())
    return validate_standard(
        adata, name, required_obs=entry.standard_obs, required_var=required_var
    )


def _coverage(adata: ad.AnnData, vocabulary: Collection[str]) -> CoverageReport:
    genes = adata.var_names
    if "modality" in adata.var.columns:
        genes = genes[adata.var["modality"].astype(str).to_numpy() == "rna"]
    report = gene_coverage(genes, vocabulary)
    log.info("gene coverage: %s", report)
    return report


def _record_coverage(adata: ad.AnnData, vocabulary: Collection[str]) -> None:
    record = dict(adata.uns.get("standardisation", {}))
    record["coverage"] = _coverage(adata, vocabulary).as_dict()
    adata.uns["standardisation"] = plain(record)


def _harmonise(
    name: str, entry: DatasetEntry, adata: ad.AnnData, record: dict[str, Any], raw_dir: Path
) -> ad.AnnData:
    spec = entry.genes
    mapping = None
    if spec.mapping is not None:
        path = resolve_input(name, entry, entry.inputs[spec.mapping.input], raw_dir)
        mapping = read_gene_mapping(
            path, id_column=spec.mapping.id_column, symbol_column=spec.mapping.symbol_column
        )
    is_rna = (
        adata.var["modality"].astype(str).to_numpy() == "rna"
        if "modality" in adata.var.columns
        else np.ones(adata.n_vars, dtype=bool)
    )
    rna = adata if is_rna.all() else adata[:, is_rna].copy()
    detected = detect_id_type(rna.var_names)
    if spec.id_type != "auto" and detected != spec.id_type:
        log.warning(
            "%s: registry says gene ids are %s but they look like %s (e.g. %s)",
            name,
            spec.id_type,
            detected,
            list(rna.var_names[:3]),
        )
    try:
        rna, report = harmonise_genes(
            rna,
            symbol_column=spec.symbol_column,
            id_column=spec.id_column,
            mapping=mapping,
            duplicates=spec.duplicates,
            is_counts=record.get("x") == "counts",
        )
    except ValueError as err:
        raise DatasetError(f"{name}: {err}") from err
    record["genes"] = report.as_dict()
    log.info(
        "%s: %d genes (%s ids, symbols from %s), %d without symbol, %d duplicated symbols (%s)",
        name,
        report.n_output,
        report.id_type,
        report.symbol_source,
        report.n_without_symbol,
        report.n_duplicated_symbols,
        report.duplicates,
    )
    if report.n_input == report.n_output:
        # GEARS-style uns entries name genes by the source's var_names: rename them too.
        rename = dict(zip(adata.var_names[is_rna].astype(str), rna.var_names.astype(str)))
        if any(k != v for k, v in rename.items()):
            rna.uns = translate_gene_lists(dict(rna.uns), rename)
    if is_rna.all():
        return rna
    other = adata[:, ~is_rna].copy()
    var = pd.concat([rna.var, other.var], axis=0, join="outer")
    X = sp.hstack([sp.csr_matrix(rna.X), sp.csr_matrix(other.X)], format="csr")
    return ad.AnnData(X=X, obs=adata.obs.copy(), var=var, uns=rna.uns)
