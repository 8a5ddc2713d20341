"""What the cell-embedding tasks share (batch integration and multi-omic integration).

A method of such a task returns an ``n_cells x d`` array in the order of the input's
``obs_names``. :class:`EmbeddingTask` calls it and checks one finite row per cell, writes
``embedding.npy`` and ``cells.csv``, and scores it with
:func:`benchmark.metrics.integration.integration_scores` against the ``cell_type`` and
``batch`` kept aside by the task's ``prepare`` (``inputs["truth"]``, ``inputs["obs_names"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.io import write_csv, write_npy
from benchmark.metrics.integration import (
    HEADLINE_METRICS,
    check_clustering,
    integration_scores,
    undefined_scores,
)
from benchmark.tasks.base import Task

if TYPE_CHECKING:
    import anndata as ad

CELL_TYPE_KEY = "cell_type"
BATCH_KEY = "batch"


@dataclass(frozen=True, kw_only=True)
class EmbeddingTask(Task):
    """A task whose methods embed cells; scored with scIB's metrics.

    Parameters
    ----------
    n_neighbors
        k of the scoring graph (scIB: 15).
    x_pre_comps
        PCs of the task's unintegrated matrix used as the reference of ``pcr_comparison``
        (0 turns that score off).
    clustering
        NMI/ARI clustering: ``"louvain"`` (scib 1.0.3, the paper's) or ``"leiden"`` (scib
        1.1.7); the config's ``tasks.<task>.metrics.clustering``. Recorded in every
        ``scores.json`` as ``clustering`` and stated under the table.
    """

    n_neighbors: int = 15
    x_pre_comps: int = 50
    clustering: str = "louvain"

    metrics = HEADLINE_METRICS
    required_obs = (CELL_TYPE_KEY, BATCH_KEY)
    metric_options = ("clustering",)

    figure_title: ClassVar[str]
    """Title of the UMAP and metric figures."""

    def __post_init__(self) -> None:
        check_clustering(self.clustering, f"{self.name} task: metrics.clustering")

    # ------------------------------------------------------------------ dataset checks
    def _check_obs(self, adata: ad.AnnData) -> None:
        """Every :attr:`required_obs` column is there and has a value for every cell."""
        for key in self.required_obs:
            if key not in adata.obs:
                raise KeyError(
                    f"{self.name}: dataset lacks obs column {key!r}; it has {list(adata.obs.columns)}"
                )
            n_missing = int(adata.obs[key].isna().sum())
            if n_missing:
                raise ValueError(f"{self.name}: obs[{key!r}] is missing for {n_missing} cells")

    def _check_names(self, adata: ad.AnnData) -> None:
        if not adata.obs_names.is_unique:
            raise ValueError(f"{self.name}: dataset obs_names are not unique")
        if not adata.var_names.is_unique:
            raise ValueError(f"{self.name}: dataset var_names are not unique")

    # ------------------------------------------------------------------ call/save/score
    def check_embedding(self, output: Any, n_cells: int) -> np.ndarray:
        """``output`` as float32 ``(n_cells, d)``, ``d >= 1``, all finite.

        Raises
        ------
        ValueError
            Naming the expected and the returned shape, or how many cells are not finite.
        """
        embedding = np.asarray(output, dtype=np.float32)
        if embedding.ndim != 2 or embedding.shape[0] != n_cells or embedding.shape[1] < 1:
            raise ValueError(
                f"{self.name} method must return an array of shape ({n_cells}, d); "
                f"got {getattr(output, 'shape', type(output).__name__)}"
            )
        if not np.isfinite(embedding).all():
            bad = int((~np.isfinite(embedding)).any(axis=1).sum())
            raise ValueError(f"{self.name} method returned non-finite values for {bad} cells")
        return embedding

    def call(self, func: Any, inputs: dict[str, Any], *, seed: int, params: dict[str, Any]) -> Any:
        """Call the method and check that it returned one finite row per cell."""
        output = func(*inputs["args"], seed=seed, **params)
        return self.check_embedding(output, len(inputs["obs_names"]))

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """``embedding.npy`` (float32, cells x d) and ``cells.csv`` (its row names)."""
        outdir = Path(outdir)
        embedding = self.check_embedding(output, len(inputs["obs_names"]))
        paths = [outdir / "embedding.npy", outdir / "cells.csv"]
        write_npy(embedding, paths[0])
        write_csv(pd.DataFrame({"cell": inputs["obs_names"]}), paths[1], index=False)
        return paths

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """The paper's scIB scores (see :mod:`benchmark.metrics.integration`) plus extras.

        Besides the metrics: ``n_dims`` (the embedding's width), ``clustering`` (the
        definition behind nmi/ari, for the table) and, where the labels leave scores
        undefined (one cell type, ...), those scores NaN and listed with their reason under
        ``"undefined"`` (``{score: reason}``), which the table shows.
        """
        truth = inputs["truth"]
        embedding = self.check_embedding(output, len(inputs["obs_names"]))
        scores = integration_scores(
            embedding,
            truth[CELL_TYPE_KEY],
            truth[BATCH_KEY],
            seed=seed,
            n_neighbors=self.n_neighbors,
            clustering=self.clustering,
            **self._scoring_options(truth, seed=seed),
        )
        undefined = undefined_scores(truth[CELL_TYPE_KEY], truth[BATCH_KEY])
        scores["n_dims"] = float(embedding.shape[1])
        self._amend_scores(scores, undefined, truth)
        scores["clustering"] = self.clustering
        if undefined:  # why a score is NaN, recorded for the table's status note
            scores["undefined"] = undefined
        return scores

    def _scoring_options(self, truth: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Further keyword arguments of ``integration_scores`` (``x_pre``, ``kbet``)."""
        return {}

    def _amend_scores(
        self, scores: dict[str, Any], undefined: dict[str, str], truth: dict[str, Any]
    ) -> None:
        """Task-specific changes to ``scores`` (and reasons in ``undefined``), in place."""

    def _x_pre(self, unintegrated: sp.spmatrix | np.ndarray, *, seed: int) -> np.ndarray | None:
        """``x_pre_comps`` PCs of the unintegrated matrix (``pcr_comparison``); None if 0."""
        from contract.pca import pca_embedding

        if self.x_pre_comps <= 0:
            return None
        return pca_embedding(unintegrated, n_comps=self.x_pre_comps, seed=seed)

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """UMAP grid (cell type, batch) per method and the scIB-style metric table."""
        from benchmark.plots.integration import integration_figures

        return integration_figures(
            run_dirs,
            dataset_path,
            out_dir,
            metrics=self.metrics,
            prefix=self.name,
            title=self.figure_title,
        )


def raw_counts(adata: ad.AnnData, task: str, purpose: str) -> sp.csr_matrix:
    """Raw counts as CSR float32: ``layers["counts"]`` if present, else ``X``; checked.

    Raises
    ------
    ValueError
        If they are not non-negative integers, naming ``task``, where they were read and
        ``purpose`` (what needs counts).
    """
    where = "layers['counts']" if "counts" in adata.layers else "X"
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(matrix, dtype=np.float32)
    values = counts.data
    if values.size and (values.min() < 0 or not np.all(values == np.round(values))):
        raise ValueError(
            f"{task}: {where} must hold raw counts (non-negative integers) {purpose}; "
            "found non-integer or negative values"
        )
    return counts
