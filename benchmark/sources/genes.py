"""Gene identifiers: tell symbols from Ensembl ids, map ids to symbols, measure coverage.

The standard dataset names its genes by symbol (``var_names``) and keeps the Ensembl id, where
known, in ``var["gene_id"]``. Sources name genes either way: scvi-tools' PBMC 10k and the MS
set use Ensembl ids with a symbol column beside them; most others use symbols.
:func:`harmonise_genes` turns either into the standard form, and :func:`gene_coverage` says how
many of a dataset's genes a model vocabulary knows.

Duplicate symbols
-----------------
Several Ensembl ids can map to one symbol (paralogue annotations, retired ids). Three policies:

``"sum"``
    Add the columns of a symbol's genes (``X`` and every layer). Right for raw counts: the
    reads of one symbol are the sum of its ids' reads. ``var["gene_id"]`` joins the ids
    with ``";"``. The default for count data.
``"first"``
    Keep the first column of each symbol and drop the others. Right for normalised or
    log-transformed values, which do not add up.
``"make_unique"``
    Keep every column and suffix repeats ``-1``, ``-2``, ... (anndata's convention). Keeps the
    column order and count, which GEARS' index-based ``uns`` entries rely on.
``"auto"``
    ``"sum"`` when ``X`` holds counts, else ``"first"``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "DUPLICATE_POLICIES",
    "CoverageReport",
    "HarmoniseReport",
    "detect_id_type",
    "gene_coverage",
    "harmonise_genes",
    "is_ensembl",
    "read_gene_mapping",
    "strip_version",
    "translate_gene_lists",
]

log = logging.getLogger(__name__)

ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?$")
"""Ensembl gene ids of any species (``ENSG…`` human, ``ENSMUSG…`` mouse), optional version."""

DUPLICATE_POLICIES = ("sum", "first", "make_unique", "auto")
_N_EXAMPLES = 10


def is_ensembl(name: str) -> bool:
    """Whether ``name`` is an Ensembl gene id (``ENSG00000141510``, version suffix allowed)."""
    return bool(ENSEMBL_RE.match(str(name)))


def strip_version(ids: Iterable[str]) -> list[str]:
    """Drop the ``.<version>`` suffix of Ensembl ids (other names are returned unchanged)."""
    return [i.split(".", 1)[0] if is_ensembl(i) else i for i in map(str, ids)]


def detect_id_type(names: Iterable[str], *, threshold: float = 0.9) -> str:
    """Classify gene names as ``"ensembl"``, ``"symbol"``, ``"mixed"`` or ``"empty"``.

    Parameters
    ----------
    names
        Gene names (``var_names``).
    threshold
        Fraction of Ensembl-looking names above which the set is ``"ensembl"`` (and below
        ``1 - threshold`` of which it is ``"symbol"``).
    """
    names = [str(n) for n in names]
    if not names:
        return "empty"
    fraction = sum(is_ensembl(n) for n in names) / len(names)
    if fraction >= threshold:
        return "ensembl"
    if fraction <= 1.0 - threshold:
        return "symbol"
    return "mixed"


# --- coverage --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverageReport:
    """How many genes of a dataset a vocabulary contains.

    Attributes
    ----------
    n_genes
        Number of gene names checked.
    n_matched
        How many of them are in the vocabulary.
    fraction
        ``n_matched / n_genes`` (0.0 for no genes).
    unmatched_examples
        Up to ten names not in the vocabulary, in dataset order.
    """

    n_genes: int
    n_matched: int
    fraction: float
    unmatched_examples: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain-type dict (for ``uns`` and JSON)."""
        out = asdict(self)
        out["unmatched_examples"] = list(self.unmatched_examples)
        return out

    def __str__(self) -> str:
        text = f"{self.n_matched}/{self.n_genes} genes in vocabulary ({self.fraction:.1%})"
        if self.unmatched_examples:
            text += f"; not found e.g. {', '.join(self.unmatched_examples)}"
        return text


def gene_coverage(
    var_names: Iterable[str], vocabulary: Collection[str] | Mapping[str, Any]
) -> CoverageReport:
    """Count the genes of ``var_names`` present in ``vocabulary``.

    Parameters
    ----------
    var_names
        The dataset's gene names (symbols, for the scGPT vocabularies).
    vocabulary
        Known gene names: a collection, or a mapping such as scGPT's ``vocab.json``
        (``{gene: index}``), whose keys are used.

    Examples
    --------
    >>> gene_coverage(["A", "B", "C", "D"], {"A": 0, "C": 1, "<pad>": 2})
    CoverageReport(n_genes=4, n_matched=2, fraction=0.5, unmatched_examples=('B', 'D'))
    """
    names = [str(n) for n in var_names]
    vocab = set(vocabulary.keys() if isinstance(vocabulary, Mapping) else vocabulary)
    hits = [n in vocab for n in names]
    n_matched = int(sum(hits))
    unmatched = tuple(n for n, hit in zip(names, hits) if not hit)[:_N_EXAMPLES]
    fraction = n_matched / len(names) if names else 0.0
    return CoverageReport(len(names), n_matched, fraction, unmatched)


# --- mapping tables --------------------------------------------------------------------------
def read_gene_mapping(
    path: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    symbol_column: str | None = None,
) -> dict[str, str]:
    """Read an Ensembl id -> symbol table (CSV or TSV, with a header line).

    Parameters
    ----------
    path
        The table. The delimiter is sniffed (comma, tab or semicolon).
    id_column, symbol_column
        Column names. When not given, the id column is the first whose values are mostly
        Ensembl ids and the symbol column the first other column.

    Returns
    -------
    dict
        Version-less Ensembl id -> symbol (rows with an empty symbol are skipped).

    Raises
    ------
    ValueError
        Naming the file and the columns it has when a column is missing or no id column is
        found.
    """
    path = Path(path)
    text = path.read_text()
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",\t;")
        sep = dialect.delimiter
    except csv.Error:
        sep = "\t" if "\t" in text.splitlines()[0] else ","
    table = pd.read_csv(path, sep=sep, dtype=str)
    columns = list(table.columns)
    if id_column is None:
        for column in columns:
            values = table[column].dropna().head(200)
            if len(values) and detect_id_type(values) == "ensembl":
                id_column = column
                break
        else:
            raise ValueError(f"{path}: no column of Ensembl ids found; columns: {columns}")
    if symbol_column is None:
        others = [c for c in columns if c != id_column]
        if not others:
            raise ValueError(f"{path}: needs a symbol column besides {id_column!r}")
        symbol_column = others[0]
    for column in (id_column, symbol_column):
        if column not in table.columns:
            raise ValueError(f"{path}: column {column!r} not found; columns: {columns}")
    table = table[[id_column, symbol_column]].dropna()
    table = table[table[symbol_column].str.strip() != ""]
    return dict(zip(strip_version(table[id_column]), table[symbol_column].str.strip()))


# --- harmonisation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HarmoniseReport:
    """What :func:`harmonise_genes` did.

    Attributes
    ----------
    id_type
        What the input names were (:func:`detect_id_type`).
    symbol_source
        Where symbols came from: ``"var_names"``, ``"var[<column>]"``, ``"mapping"`` or a
        combination joined by ``"+"``.
    n_input, n_output
        Genes before and after merging duplicate symbols.
    n_without_symbol
        Genes for which no symbol was found (they keep their id as name).
    n_duplicated_symbols
        Symbols that more than one input gene mapped to.
    duplicates
        The duplicate policy applied.
    without_symbol_examples, duplicated_examples
        Up to ten examples of each.
    """

    id_type: str
    symbol_source: str
    n_input: int
    n_output: int
    n_without_symbol: int
    n_duplicated_symbols: int
    duplicates: str
    without_symbol_examples: tuple[str, ...] = ()
    duplicated_examples: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain-type dict (for ``uns`` and JSON)."""
        out = asdict(self)
        out["without_symbol_examples"] = list(self.without_symbol_examples)
        out["duplicated_examples"] = list(self.duplicated_examples)
        return out


def _clean_symbol(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text if text and text.lower() not in {"nan", "none"} else None


def harmonise_genes(
    adata: ad.AnnData,
    *,
    symbol_column: str | None = None,
    id_column: str | None = None,
    mapping: Mapping[str, str] | None = None,
    duplicates: str = "auto",
    is_counts: bool = True,
) -> tuple[ad.AnnData, HarmoniseReport]:
    """Rename genes to symbols, keep ids in ``var["gene_id"]`` and make the names unique.

    Symbols are looked up, per gene, in ``var[symbol_column]`` first, then in ``mapping``
    (Ensembl id, version ignored -> symbol), then taken from ``var_names`` when those are not
    Ensembl ids; a gene without a symbol keeps its id as name. Ids come from ``var_names``
    when they are Ensembl ids, else from ``var[id_column]``.

    Parameters
    ----------
    adata
        Input; not modified.
    symbol_column, id_column
        var columns holding symbols and ids (ignored when absent from ``var``; a missing
        ``symbol_column`` with Ensembl ``var_names`` and no ``mapping`` is an error).
    mapping
        Ensembl id -> symbol table (e.g. :func:`read_gene_mapping`).
    duplicates
        ``"sum"``, ``"first"``, ``"make_unique"`` or ``"auto"`` (see the module docstring).
    is_counts
        Whether ``X`` holds counts (decides ``"auto"``).

    Returns
    -------
    (AnnData, HarmoniseReport)
        The renamed data (``varm`` is dropped when columns are merged) and the report.

    Raises
    ------
    ValueError
        If the names are Ensembl ids and there is no symbol source, or the policy is unknown.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates={duplicates!r}: expected one of {DUPLICATE_POLICIES}")
    policy = ("sum" if is_counts else "first") if duplicates == "auto" else duplicates
    names = [str(n) for n in adata.var_names]
    id_type = detect_id_type(names)
    var = adata.var
    has_symbol_column = symbol_column is not None and symbol_column in var.columns
    if id_type in ("ensembl", "mixed") and not has_symbol_column and mapping is None:
        raise ValueError(
            f"gene names look like Ensembl ids ({names[:3]}...) but no symbol source was "
            f"given: set a var column holding symbols (var columns: {list(var.columns)}) "
            "or a mapping file"
        )
    column_symbols = (
        [_clean_symbol(v) for v in var[symbol_column].tolist()]
        if has_symbol_column
        else [None] * len(names)
    )
    map_table = {strip_version([k])[0]: v for k, v in (mapping or {}).items()}
    symbols: list[str] = []
    sources: set[str] = set()
    without: list[str] = []
    for name, from_column in zip(names, column_symbols):
        if from_column is not None:
            symbols.append(from_column)
            sources.add(f"var[{symbol_column}]")
            continue
        mapped = _clean_symbol(map_table.get(strip_version([name])[0])) if map_table else None
        if mapped is not None:
            symbols.append(mapped)
            sources.add("mapping")
        elif not is_ensembl(name):
            symbols.append(name)
            sources.add("var_names")
        else:
            symbols.append(name)
            without.append(name)
    if any(is_ensembl(n) for n in names):
        ids: list[str | None] = [n if is_ensembl(n) else None for n in names]
    elif id_column is not None and id_column in var.columns:
        ids = [_clean_symbol(v) for v in var[id_column].tolist()]
    else:
        ids = [None] * len(names)

    counts = pd.Series(symbols).value_counts()
    duplicated = [s for s in dict.fromkeys(symbols) if counts[s] > 1]
    out = adata.copy()
    out.var = out.var.copy()
    if any(i is not None for i in ids):
        out.var["gene_id"] = [i if i is not None else "" for i in ids]
    with warnings.catch_warnings():
        # Repeated symbols are resolved right below; anndata's warning would only be noise.
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        out.var_names = pd.Index(symbols, dtype=object)
    if duplicated:
        out = _resolve_duplicates(out, policy)
    report = HarmoniseReport(
        id_type=id_type,
        symbol_source="+".join(sorted(sources)) or "none",
        n_input=len(names),
        n_output=out.n_vars,
        n_without_symbol=len(without),
        n_duplicated_symbols=len(duplicated),
        duplicates=policy,
        without_symbol_examples=tuple(without[:_N_EXAMPLES]),
        duplicated_examples=tuple(duplicated[:_N_EXAMPLES]),
    )
    if without:
        log.warning("%d genes have no symbol and keep their id, e.g. %s", len(without), without[:3])
    if duplicated:
        log.info(
            "%d symbols occur more than once (e.g. %s): %s", len(duplicated), duplicated[:3], policy
        )
    return out, report


def _resolve_duplicates(adata: ad.AnnData, policy: str) -> ad.AnnData:
    names = adata.var_names.to_numpy().astype(str)
    if policy == "make_unique":
        adata.var_names_make_unique()
        return adata
    codes, uniques = pd.factorize(names)
    first = np.array([np.flatnonzero(codes == k)[0] for k in range(len(uniques))])
    if policy == "first":
        return adata[:, first].copy()
    # "sum": X @ A with A the gene -> symbol indicator matrix keeps X sparse.
    indicator = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), codes)),
        shape=(len(codes), len(uniques)),
    )
    var = adata.var.iloc[first].copy()
    if "gene_id" in adata.var.columns:
        joined = (
            adata.var["gene_id"]
            .astype(str)
            .groupby(codes)
            .agg(lambda s: ";".join(v for v in s if v))
        )
        var["gene_id"] = joined.to_numpy()
    layers = {key: _sum_columns(value, indicator) for key, value in adata.layers.items()}
    return ad.AnnData(
        X=_sum_columns(adata.X, indicator),
        obs=adata.obs.copy(),
        var=var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        layers=layers,
    )


def _sum_columns(matrix: Any, indicator: sp.csr_matrix) -> Any:
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix @ indicator, dtype=np.float32)
    return np.asarray(matrix @ indicator, dtype=np.float32)


def translate_gene_lists(value: Any, rename: Mapping[str, str]) -> Any:
    """Rename gene names inside nested ``uns`` values (dicts / lists / arrays of names).

    Lists or arrays whose every element is a key of ``rename`` are translated; everything else
    is returned unchanged. Used for GEARS' differential-expression lists, which name genes by
    the source's ``var_names``.
    """
    if isinstance(value, Mapping):
        return {k: translate_gene_lists(v, rename) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "OUS" and value.ndim == 1:
        items = [str(v) for v in value]
        if items and all(v in rename for v in items):
            return np.array([rename[v] for v in items], dtype=object)
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if items and all(isinstance(v, str) and v in rename for v in items):
            return [rename[v] for v in items]
    return value
