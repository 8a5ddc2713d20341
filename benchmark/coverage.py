"""Gene coverage of scGPT vocabularies, recorded in each scGPT run's ``run.json``.

A scGPT model only reads the genes its vocabulary knows (the others get the ``<pad>`` token
or are dropped). Two coverages say what a run could use: the vocabulary of the checkpoint the
run used (the demo's ``sim_atlas`` model was pre-trained on simulated genes and the demo's
PBMC genes, so it knows few real genes), and the official vocabulary of the released
CELLxGENE-census scGPT models (committed in ``benchmark/data/real/scgpt_vocab/``), i.e. what
the paper's whole-human model would know of the same data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anndata as ad

from benchmark.sources.genes import gene_coverage

__all__ = ["OFFICIAL_VOCAB", "rna_genes", "vocabulary_coverage"]

OFFICIAL_VOCAB = (
    Path(__file__).parent / "data" / "real" / "scgpt_vocab" / "default_census_vocab.json"
)
"""The official scGPT gene vocabulary (60,694 symbols; bowang-lab/scGPT, MIT)."""


def rna_genes(adata: ad.AnnData) -> list[str]:
    """Gene features of ``adata``: every var name, or the ``var["modality"] == "rna"`` ones."""
    if "modality" in adata.var.columns:
        return [str(g) for g in adata.var_names[adata.var["modality"].astype(str) == "rna"]]
    return [str(g) for g in adata.var_names]


def vocabulary_coverage(
    adata: ad.AnnData, checkpoint: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """Share of the data's genes in the checkpoint's and in the official scGPT vocabulary.

    Parameters
    ----------
    adata
        The standard dataset (multi-omic: its RNA features only).
    checkpoint
        Folder holding the run's ``vocab.json``; ``None`` records the official one only.

    Returns
    -------
    ``{"n_genes", "checkpoint": {...}, "official_scgpt": {...}}``, each part as
    :meth:`~benchmark.sources.genes.CoverageReport.as_dict` (matched genes, fraction, examples
    of unmatched ones); a part whose vocabulary file is missing is ``None``.
    """
    genes = rna_genes(adata)
    record: dict[str, Any] = {"n_genes": len(genes)}
    sources = {"official_scgpt": OFFICIAL_VOCAB}
    if checkpoint is not None:
        sources = {"checkpoint": Path(checkpoint) / "vocab.json", **sources}
    for key, path in sources.items():
        if not path.is_file():
            record[key] = None
            continue
        vocab = json.loads(path.read_text(encoding="utf-8"))
        record[key] = {"vocab": str(path), **gene_coverage(genes, vocab).as_dict()}
    return record
