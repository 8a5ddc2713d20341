"""The pre-training corpus of the demo: the training cells of the configured datasets."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp

from benchmark.failed_datasets import check_standard_file
from benchmark.io import write_h5ad

log = logging.getLogger(__name__)

HELD_OUT_SPLITS = frozenset({"query", "test", "val"})
"""Cells of these splits are evaluation data and never enter pre-training."""


def build_pretraining_corpus(
    dataset_paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]
) -> ad.AnnData:
    """Concatenate the training cells (RNA counts) of standard datasets into one corpus.

    Query, validation and test cells (``obs["split"]``) are left out so that no task is
    evaluated on cells the model saw during pre-training; non-RNA features
    (``var["modality"] != "rna"``) are dropped. Genes are the union over datasets (a gene
    missing from a dataset counts as zero there).

    Returns
    -------
    The corpus, also written to ``out_path`` (obs ``source`` names the dataset).
    """
    parts = []
    for path in dataset_paths:
        check_standard_file(path)  # a failed dataset cannot enter a corpus
        adata = ad.read_h5ad(path)
        name = os.path.splitext(os.path.basename(path))[0]
        keep = np.ones(adata.n_obs, dtype=bool)
        if "split" in adata.obs:
            keep &= ~adata.obs["split"].astype(str).isin(HELD_OUT_SPLITS).to_numpy()
        adata = adata[keep]
        if "modality" in adata.var:
            adata = adata[:, adata.var["modality"].astype(str) == "rna"]
        part = ad.AnnData(
            X=sp.csr_matrix(adata.X, dtype=np.float32),
            obs={"source": [name] * adata.n_obs},
        )
        part.obs_names = [f"{name}:{cell}" for cell in adata.obs_names]
        part.var_names = adata.var_names
        log.info("%s: %d training cells x %d genes", name, part.n_obs, part.n_vars)
        parts.append(part)
    if not parts:
        raise ValueError("the pre-training corpus needs at least one dataset")
    corpus = ad.concat(parts, join="outer", fill_value=0)
    corpus.X = sp.csr_matrix(corpus.X, dtype=np.float32)
    corpus.obs["source"] = corpus.obs["source"].astype("category")
    log.info("corpus: %d cells x %d genes", corpus.n_obs, corpus.n_vars)
    write_h5ad(corpus, out_path)
    return corpus
