"""The dataset registry (``config/datasets.yaml``) and the loaders that standardise each source.

Every dataset the benchmark uses has one registry entry: where its files come from (URL or
Google Drive id, checksum, size, format), which tasks use it, and how its source columns map
to the standard keys. Four kinds of entry exist:

``builtin``
    Demo data made by a Python builder (``builder: "module:function"``, ``params``).
``dataset``
    Downloaded files that :func:`standardise` turns into one standard AnnData.
``resource``
    A file a method needs as is (GEARS' ``gene2go_all.pkl``); no standard AnnData.
``corpus``
    The pre-training corpus (CELLxGENE census query); streamed, not standardised here.

Modules, in the order a dataset goes through them:

``schema``
    The registry's schema as pydantic models (one per part of an entry); they are also the
    validated entries the rest of the package reads.
``fields``
    The schema's field types: choices (``Literal``) and constrained values.
``registry``
    :func:`load_registry` and the :class:`Registry` mapping with the workflow's look-ups;
    validation errors become :class:`RegistryError` messages naming file, entry and key.
``builtin``
    Builtin (demo) datasets: builder parameter checks and :func:`build_builtin`.
``inputs``
    Where an input's bytes are: a raw file, a (nested) zip member, a gzipped file.
``loaders``
    One loader per source format (``h5ad``, ``gears``, ``scvi_pbmc``, ``paired_h5ad``,
    ``scmomat``).
``source_keys``
    An entry's obs column mapping, modality column and counts location applied to a source.
``splits``
    ``obs["split"]``: GEARS' split (GEARS' own code), a stored split file, an obs column.
``standardise``
    :func:`standardise` (loader, then gene harmonisation, tidying, validation) and
    :func:`prepare_standard_dataset`, the workflow's entry point for any dataset.
``standard``
    The standard AnnData contract: :func:`validate_standard`, :func:`write_standard`.

The standard AnnData (CONTRIBUTING.md): ``X`` raw counts as CSR float32 where the source has
them (else the source's values, described in ``uns["standardisation"]["x"]``), ``var_names``
gene symbols with ``var["gene_id"]`` where known, obs ``cell_type`` / ``batch`` /
``condition`` / ``split`` as the tasks need, and for multi-omic sets one AnnData with
``var["modality"]`` in {"rna", "protein", "atac"}. ``split`` values: ``reference`` /
``query`` for annotation sets, ``train`` / ``val`` / ``test`` for perturbation sets
(``excluded`` for cells whose perturbed genes GEARS cannot place in its GO graph). The
source's layers, ``obsm``, ``varm`` and ``obsp`` are dropped; its ``uns`` is kept.
"""

from __future__ import annotations

from benchmark.datasets.builtin import build_builtin, check_builder_params
from benchmark.datasets.errors import DatasetError, RegistryError
from benchmark.datasets.fields import TASKS
from benchmark.datasets.registry import Registry, load_registry, raw_files
from benchmark.datasets.schema import CheckpointEntry, DatasetEntry, FileSpec, InputSpec
from benchmark.datasets.splits import gears_split
from benchmark.datasets.standard import validate_standard, write_standard
from benchmark.datasets.standardise import prepare_standard_dataset, standardise

# The names the single-module version exported; the choices (KINDS, FORMATS, ...) and the
# other models are in benchmark.datasets.fields and benchmark.datasets.schema.
__all__ = [
    "TASKS",
    "CheckpointEntry",
    "DatasetEntry",
    "DatasetError",
    "FileSpec",
    "InputSpec",
    "Registry",
    "RegistryError",
    "build_builtin",
    "check_builder_params",
    "gears_split",
    "load_registry",
    "prepare_standard_dataset",
    "raw_files",
    "standardise",
    "validate_standard",
    "write_standard",
]
