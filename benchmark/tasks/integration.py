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

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.tasks.base import drop_empty_cells
from benchmark.tasks.embedding import BATCH_KEY, CELL_TYPE_KEY, EmbeddingTask, raw_counts

N_HVG = 1200
"""HVGs shared by all methods (the paper's number)."""

TARGET_SUM = 1e4
"""Counts per cell after library-size normalisation (before ``log1p``)."""


@dataclass(frozen=True, kw_only=True)
class IntegrationTask(EmbeddingTask):
    """Batch integration: counts of several batches in, one cell embedding out.

    Parameters
    ----------
    n_hvg
        Shared HVGs (paper: 1,200).
    kbet
        Also score kBET per label (slow to start: ~35 s of numba compilation per process).
    n_neighbors, x_pre_comps, clustering
        Scoring, as :class:`~benchmark.tasks.embedding.EmbeddingTask`; ``x_pre_comps`` PCs
        of the log-normalised HVGs are ``pcr_comparison``'s unintegrated reference.
    """

    n_hvg: int = N_HVG
    kbet: bool = False

    name = "integration"
    paper_table = "integration.csv"
    figure_title = "Integration"

    def __post_init__(self) -> None:
        if self.n_hvg < 2:
            raise ValueError(f"integration task: n_hvg must be >= 2; got {self.n_hvg}")
        super().__post_init__()

    # ------------------------------------------------------------------ prepare
    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Shared HVGs, counts + log-normalised layers, batch only; truth kept aside."""
        import scanpy as sc

        self._check_obs(adata)
        self._check_names(adata)
        counts = raw_counts(adata, self.name, "for the seurat_v3 HVGs and count-based methods")
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

    # ------------------------------------------------------------------ score
    def _scoring_options(self, truth: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """PCs of the log-normalised HVGs as ``x_pre``, and whether to score kBET."""
        return {"x_pre": self._x_pre(truth["log1p"], seed=seed), "kbet": self.kbet}


TASK = IntegrationTask()
"""The task object the harness uses (``benchmark.tasks.get_task("integration")``)."""
