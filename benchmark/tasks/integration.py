"""Multi-batch integration (scGPT paper, Fig. 3 / Supp. Table 3): one embedding per method.

What a method receives (the same for every method, built by :meth:`IntegrationTask.prepare`):
an AnnData of all cells x the task's shared HVGs with

- ``X``: raw counts, CSR float32 (also in ``layers["counts"]``);
- ``layers["log1p"]``: counts scaled to 10,000 per cell (library size over *all* genes of
  the dataset, before HVG selection) then ``log1p``, CSR float32;
- ``obs["batch"]``: the batch (categorical of str) and nothing else (no cell types);
- ``obs_names`` / ``var_names``: the dataset's cell names and gene symbols in dataset order
  (``var`` keeps ``gene_id`` where the dataset has it, and scanpy's ``highly_variable_rank``,
  NaN when all genes are kept);
- ``uns["integration"]``: ``{"batch_key", "n_hvg", "normalization"}``.

HVGs: ``n_hvg`` (the paper's 1,200; all genes when the dataset has fewer) chosen once per
dataset with scanpy's ``seurat_v3`` flavour on the counts, batch-aware (``batch_key``).

A method returns an ``n_cells x d`` array in the order of ``obs_names``. The harness writes
``embedding.npy`` and ``cells.csv`` and scores it with
:func:`benchmark.metrics.integration.integration_scores` against ``obs["cell_type"]`` and
``obs["batch"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
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
from benchmark.tasks.base import Task, drop_empty_cells

N_HVG = 1200
"""HVGs shared by all methods (the paper's number)."""

TARGET_SUM = 1e4
"""Counts per cell after library-size normalisation (before ``log1p``)."""

CELL_TYPE_KEY = "cell_type"
BATCH_KEY = "batch"


class IntegrationTask(Task):
    """Batch integration: counts of several batches in, one cell embedding out.

    Parameters
    ----------
    n_hvg
        Shared HVGs (paper: 1,200).
    n_neighbors
        k of the scoring graph (scIB: 15).
    x_pre_comps
        PCs of the log-normalised HVGs used as the unintegrated reference of
        ``pcr_comparison`` (0 turns that score off).
    kbet
        Also score kBET per label (slow to start: ~35 s of numba compilation per process).
    clustering
        NMI/ARI clustering: ``"louvain"`` (scib 1.0.3, the paper's) or ``"leiden"`` (scib
        1.1.7); the config's ``tasks.integration.metrics.clustering``. Recorded in every
        ``scores.json`` as ``clustering`` and stated under the table.
    """

    name = "integration"
    metrics = HEADLINE_METRICS
    paper_table = "integration.csv"
    required_obs = (CELL_TYPE_KEY, BATCH_KEY)

    metric_options: tuple[str, ...] = ("clustering",)
    """Keys of the config's ``tasks.integration.metrics`` (see :meth:`with_metric_options`)."""

    def __init__(
        self,
        n_hvg: int = N_HVG,
        n_neighbors: int = 15,
        x_pre_comps: int = 50,
        kbet: bool = False,
        clustering: str = "louvain",
    ) -> None:
        if n_hvg < 2:
            raise ValueError(f"integration task: n_hvg must be >= 2; got {n_hvg}")
        check_clustering(clustering, "integration task: metrics.clustering")
        self.clustering = clustering
        self.n_hvg = n_hvg
        self.n_neighbors = n_neighbors
        self.x_pre_comps = x_pre_comps
        self.kbet = kbet

    def with_metric_options(self, options: dict[str, Any] | None) -> IntegrationTask:
        """A copy scored with the config's ``tasks.integration.metrics`` options.

        Raises
        ------
        ValueError
            For a key other than :attr:`metric_options` or an unknown clustering.
        """
        options = self.check_metric_options(options)
        return IntegrationTask(
            n_hvg=self.n_hvg,
            n_neighbors=self.n_neighbors,
            x_pre_comps=self.x_pre_comps,
            kbet=self.kbet,
            clustering=options.get("clustering", self.clustering),
        )

    # ------------------------------------------------------------------ prepare
    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Shared HVGs, counts + log-normalised layers, batch only; truth kept aside."""
        import scanpy as sc

        for key in self.required_obs:
            if key not in adata.obs:
                raise KeyError(
                    f"integration: dataset lacks obs column {key!r}; it has {list(adata.obs.columns)}"
                )
            n_missing = int(adata.obs[key].isna().sum())
            if n_missing:
                raise ValueError(f"integration: obs[{key!r}] is missing for {n_missing} cells")
        if not adata.obs_names.is_unique:
            raise ValueError("integration: dataset obs_names are not unique")
        if not adata.var_names.is_unique:
            raise ValueError("integration: dataset var_names are not unique")
        counts = _counts(adata)
        adata, counts = drop_empty_cells(adata, counts, self.name)
        batch = adata.obs[BATCH_KEY].astype(str).to_numpy()
        n_batches = len(np.unique(batch))
        if n_batches < 2:
            raise ValueError(
                f"integration: obs[{BATCH_KEY!r}] has {n_batches} batch; integration needs >= 2"
            )

        full = ad.AnnData(
            X=counts,
            obs=pd.DataFrame({BATCH_KEY: pd.Categorical(batch)}, index=adata.obs_names.copy()),
            var=pd.DataFrame(index=adata.var_names.copy()),
        )
        hvg_rank = self._select_hvgs(full)
        hvg = hvg_rank.index.tolist()

        full.layers["log1p"] = full.X.copy()
        sc.pp.normalize_total(full, target_sum=TARGET_SUM, layer="log1p")
        sc.pp.log1p(full, layer="log1p")

        sub = full[:, hvg]
        var = pd.DataFrame(index=pd.Index(hvg, name=None))
        if "gene_id" in adata.var:
            var["gene_id"] = adata.var.loc[hvg, "gene_id"].astype(str).to_numpy()
        var["highly_variable_rank"] = hvg_rank.to_numpy()
        method_input = ad.AnnData(
            X=sp.csr_matrix(sub.X, dtype=np.float32),
            obs=full.obs.copy(),
            var=var,
            layers={
                "counts": sp.csr_matrix(sub.X, dtype=np.float32),
                "log1p": sp.csr_matrix(sub.layers["log1p"], dtype=np.float32),
            },
            uns={
                "integration": {
                    "batch_key": BATCH_KEY,
                    "n_hvg": len(hvg),
                    "normalization": f"normalize_total(target_sum={TARGET_SUM:g}) + log1p",
                }
            },
        )
        truth = {
            CELL_TYPE_KEY: adata.obs[CELL_TYPE_KEY].astype(str).to_numpy(),
            BATCH_KEY: batch,
            "log1p": method_input.layers["log1p"].copy(),
        }
        return {
            "args": (method_input,),
            "truth": truth,
            "obs_names": adata.obs_names.to_numpy().astype(str),
            "hvg": hvg,
        }

    def _select_hvgs(self, full: ad.AnnData) -> pd.Series:
        """The dataset's ``n_hvg`` HVGs (seurat_v3 on counts, per batch), in dataset order.

        Returns scanpy's ``highly_variable_rank`` (median rank over batches, lower = more
        variable) indexed by gene; NaN ranks when every expressed gene is kept.
        """
        import scanpy as sc

        expressed = np.asarray((full.X > 0).sum(axis=0)).ravel() > 0
        if int(expressed.sum()) <= self.n_hvg:
            return pd.Series(np.nan, index=full.var_names[expressed], dtype=float)
        tmp = full[:, expressed].copy()
        sc.pp.highly_variable_genes(
            tmp, flavor="seurat_v3", n_top_genes=self.n_hvg, batch_key=BATCH_KEY, subset=False
        )
        chosen = tmp.var.loc[tmp.var["highly_variable"].to_numpy(), "highly_variable_rank"]
        return chosen.astype(float)

    # ------------------------------------------------------------------ call/save/score
    def call(self, func: Any, inputs: dict[str, Any], *, seed: int, params: dict[str, Any]) -> Any:
        """Call the method and check that it returned one finite row per cell."""
        output = func(*inputs["args"], seed=seed, **params)
        return _check_embedding(output, len(inputs["obs_names"]))

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """``embedding.npy`` (float32, cells x d) and ``cells.csv`` (its row names)."""
        outdir = Path(outdir)
        embedding = _check_embedding(output, len(inputs["obs_names"]))
        paths = [outdir / "embedding.npy", outdir / "cells.csv"]
        write_npy(embedding, paths[0])
        write_csv(pd.DataFrame({"cell": inputs["obs_names"]}), paths[1], index=False)
        return paths

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """The paper's scIB scores (see :mod:`benchmark.metrics.integration`) plus extras.

        Scores the labels leave undefined (one cell type, ...) are NaN and listed with their
        reason under ``"undefined"`` (``{score: reason}``), which the table shows.
        """
        from contract.pca import pca_embedding

        truth = inputs["truth"]
        embedding = _check_embedding(output, len(inputs["obs_names"]))
        x_pre = None
        if self.x_pre_comps > 0:
            x_pre = pca_embedding(truth["log1p"], n_comps=self.x_pre_comps, seed=seed)
        scores = integration_scores(
            embedding,
            truth[CELL_TYPE_KEY],
            truth[BATCH_KEY],
            seed=seed,
            n_neighbors=self.n_neighbors,
            clustering=self.clustering,
            x_pre=x_pre,
            kbet=self.kbet,
        )
        scores["n_dims"] = float(embedding.shape[1])
        scores["clustering"] = self.clustering  # the definition behind nmi/ari, for the table
        undefined = undefined_scores(truth[CELL_TYPE_KEY], truth[BATCH_KEY])
        if undefined:  # why a score is NaN, recorded for the table's status note
            scores["undefined"] = undefined
        return scores

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """UMAP grid (cell type, batch) per method and the scIB-style metric table."""
        from benchmark.plots.integration import integration_figures

        return integration_figures(run_dirs, dataset_path, out_dir, metrics=self.metrics)


def _counts(adata: ad.AnnData) -> sp.csr_matrix:
    """Raw counts as CSR float32: ``layers["counts"]`` if present, else ``X``; checked."""
    where = "layers['counts']" if "counts" in adata.layers else "X"
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(matrix, dtype=np.float32)
    values = counts.data
    if values.size and (values.min() < 0 or not np.all(values == np.round(values))):
        raise ValueError(
            f"integration: {where} must hold raw counts (non-negative integers) for the "
            "seurat_v3 HVGs and count-based methods; found non-integer or negative values"
        )
    return counts


def _check_embedding(output: Any, n_cells: int) -> np.ndarray:
    embedding = np.asarray(output, dtype=np.float32)
    if embedding.ndim != 2 or embedding.shape[0] != n_cells or embedding.shape[1] < 1:
        raise ValueError(
            f"integration method must return an array of shape ({n_cells}, d); "
            f"got {getattr(output, 'shape', type(output).__name__)}"
        )
    if not np.isfinite(embedding).all():
        bad = int((~np.isfinite(embedding)).any(axis=1).sum())
        raise ValueError(f"integration method returned non-finite values for {bad} cells")
    return embedding


TASK = IntegrationTask()
"""The task object the harness uses (``benchmark.tasks.get_task("integration")``)."""
