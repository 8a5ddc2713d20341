"""Multi-omic integration (scGPT paper, Fig. 4b-d / Supp. Table 4): one joint cell embedding.

Three settings, told apart by the data, not by the task: paired RNA + ATAC (10x Multiome
PBMC), paired RNA + protein over several batches (BMMC) and a mosaic (ASAP PBMC: RNA +
protein in some batches, ATAC + protein in others).

What a method receives (the same for every method, built by :meth:`MultiomicsTask.prepare`):
ONE AnnData of all cells x the selected features of every modality with

- ``X``: raw counts, CSR float32 (also in ``layers["counts"]``); features ordered RNA, then
  protein, then ATAC (dataset order within a modality);
- ``var["modality"]``: ``"rna"``, ``"protein"`` or ``"atac"`` (categorical); protein names
  carry the ``prot_`` prefix so they never collide with gene symbols;
- ``var["linked_gene"]``: the gene a protein or peak is linked to where the dataset says
  (simulator: a protein's coding gene, a peak's linked gene); NaN for RNA features and
  wherever no link is known;
- ``var["gene_id"]``, ``var["chrom"]``, ``var["chromStart"]``, ``var["chromEnd"]``: passed
  through where the dataset has them (genomic coordinates for scGLUE's proximity graph);
- ``layers["normalized"]``: each modality's standard normalisation, CSR float32, zero for a
  cell's absent modality: RNA ``log1p`` of counts scaled to 10,000 per cell (library size
  over *all* RNA genes of the dataset, before HVG selection); protein Seurat's CLR per cell
  (``log1p(x / exp(mean(log1p(x))))`` over the cell's proteins); ATAC Signac's TF-IDF
  (``log1p(x / cell total * n_cells_with_atac / peak total * 1e4)``) over the selected peaks;
- ``obs["batch"]``: the batch (categorical of str); ``obs["has_rna"]``, ``obs["has_protein"]``,
  ``obs["has_atac"]`` (bool): whether the cell's batch measured that modality (all True for
  paired data; a cell's absent modality is all zeros in ``X``, not measured zeros). No cell
  types;
- ``uns["multiomics"]``: ``{"modalities": [present modalities, in feature order],
  "mosaic": bool, "batch_key": "batch", "batch_modalities": {batch: [modalities]},
  "n_hvg", "n_hvp", "n_proteins", "normalization": {modality: description}}``.

Feature selection (once per dataset, for every method):

- RNA: ``n_hvg`` HVGs (the paper's 1,200; every expressed gene when fewer) with scanpy's
  ``seurat_v3`` flavour on the counts of the cells that have RNA, batch-aware when those
  cells come from several batches (as the integration task);
- protein: every protein;
- ATAC: the ``n_hvp`` (the paper's 4,000; all when fewer) most frequently open peaks among
  the cells that have ATAC (ranked by the number of cells with a non-zero count, then by
  total counts; Signac's ``FindTopFeatures`` ranks by total counts, which on binary-like
  peak counts is nearly the same order).

A method is ``f(adata, *, seed, **params) -> np.ndarray`` of shape ``n_cells x d`` in the
order of ``obs_names``. The harness writes ``embedding.npy`` and ``cells.csv`` and scores it
with :func:`benchmark.metrics.integration.integration_scores` (scib's definitions: AvgBIO;
AvgBATCH and Overall only when the data has more than one batch, else NaN, shown as ``—``)
against ``obs["cell_type"]`` and ``obs["batch"]``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.tasks.base import drop_empty_cells
from benchmark.tasks.embedding import BATCH_KEY, CELL_TYPE_KEY, EmbeddingTask, raw_counts

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("rna", "protein", "atac")
"""Modalities in feature order."""

N_HVG = 1200
"""RNA HVGs (the paper's / tutorial's number)."""

N_HVP = 4000
"""Highly variable (most frequently open) ATAC peaks (the paper's ``n_hvp``)."""

TARGET_SUM = 1e4
"""RNA counts per cell after library-size normalisation (before ``log1p``)."""

BATCH_METRICS: tuple[str, ...] = (
    "asw_batch",
    "graph_conn",
    "avg_batch",
    "overall",
    "ilisi",
    "kbet",
    "pcr_comparison",
    "graph_conn_scib_metrics",
)
"""Scores that describe batch mixing: NaN when the data has one batch."""

NORMALIZATION: dict[str, str] = {
    "rna": f"normalize_total(target_sum={TARGET_SUM:g}) over all RNA genes + log1p",
    "protein": "CLR per cell (Seurat margin 2): log1p(x / exp(mean(log1p(x))))",
    "atac": "TF-IDF (Signac method 1): log1p(x / cell total * n_atac_cells / peak total * 1e4)",
}
"""What ``layers["normalized"]`` holds for each modality."""


PASSED_VAR_COLUMNS = ("gene_id", "chrom", "chromStart", "chromEnd")
"""Dataset var columns handed to methods where present: gene ids and the genomic coordinates
scGLUE's proximity guidance graph needs (GLUE's processed 10x Multiome files carry them)."""


@dataclass(frozen=True, kw_only=True)
class MultiomicsTask(EmbeddingTask):
    """Multi-omic integration: counts of several modalities in, one joint cell embedding out.

    Parameters
    ----------
    n_hvg
        RNA HVGs (paper: 1,200).
    n_hvp
        ATAC peaks kept (paper: 4,000).
    n_neighbors, x_pre_comps, clustering
        Scoring, as :class:`~benchmark.tasks.embedding.EmbeddingTask`; ``x_pre_comps`` PCs
        of ``layers["normalized"]`` (all selected features) are ``pcr_comparison``'s
        unintegrated reference.
    """

    n_hvg: int = N_HVG
    n_hvp: int = N_HVP

    name = "multiomics"
    paper_table = "multiomics.csv"
    figure_title = "Multi-omic integration"

    def __post_init__(self) -> None:
        if self.n_hvg < 2 or self.n_hvp < 2:
            raise ValueError(
                f"multiomics task: n_hvg and n_hvp must be >= 2; got {self.n_hvg}, {self.n_hvp}"
            )
        super().__post_init__()

    # ------------------------------------------------------------------ prepare
    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Selected features of every modality, counts + normalised layers; truth kept aside.

        Raises
        ------
        KeyError
            If obs lacks ``cell_type`` / ``batch`` or var lacks ``modality``.
        ValueError
            For unknown modalities, non-count values, duplicated names, a cell with no
            modality, or a cell whose ``has_<modality>`` is False but whose values in that
            modality are not all zero.
        """
        self._check_dataset(adata)
        modality = adata.var["modality"].astype(str).to_numpy()
        counts = raw_counts(adata, self.name, "of every modality")
        adata, counts = drop_empty_cells(adata, counts, self.name)
        batch = adata.obs[BATCH_KEY].astype(str).to_numpy()
        has = _has_modalities(adata, counts, modality)
        present = [m for m in MODALITIES if (modality == m).any() and has[m].any()]
        if not present:
            raise ValueError("multiomics: no cell has any modality")

        columns: list[np.ndarray] = []
        normalized: list[sp.csr_matrix] = []
        hvg_rank = pd.Series(dtype=float)
        n_selected = {"rna": 0, "protein": 0, "atac": 0}
        for m in present:
            idx = np.flatnonzero(modality == m)
            block = counts[:, idx]
            if m == "rna":
                keep, hvg_rank = self._select_hvgs(
                    block[has[m]], batch[has[m]], adata.var_names[idx]
                )
                chosen = idx[keep]
                norm = _log_normalize(block)[:, keep]
            elif m == "protein":
                chosen = idx
                norm = _clr(block)
            else:
                keep = self._select_peaks(block[has[m]])
                chosen = idx[keep]
                norm = _tfidf(block[:, keep], has[m])
            n_selected[m] = len(chosen)
            columns.append(chosen)
            normalized.append(sp.csr_matrix(norm.multiply(has[m][:, None]), dtype=np.float32))
        chosen = np.concatenate(columns)

        sub_counts = sp.csr_matrix(counts[:, chosen], dtype=np.float32)
        var = pd.DataFrame(index=pd.Index(adata.var_names[chosen].astype(str), name=None))
        var["modality"] = pd.Categorical(modality[chosen], categories=list(MODALITIES))
        var["linked_gene"] = _linked_genes(adata, chosen, modality)
        for column in PASSED_VAR_COLUMNS:
            if column in adata.var:
                var[column] = adata.var[column].to_numpy()[chosen]
        var["highly_variable_rank"] = hvg_rank.reindex(var.index).to_numpy(dtype=float)
        obs = pd.DataFrame(
            {BATCH_KEY: pd.Categorical(batch)}, index=adata.obs_names.astype(str).copy()
        )
        for m in MODALITIES:
            obs[f"has_{m}"] = has[m]
        mosaic = any(not has[m].all() for m in present)
        batch_modalities = {
            b: [m for m in present if has[m][batch == b].any()] for b in sorted(set(batch))
        }
        method_input = ad.AnnData(
            X=sub_counts,
            obs=obs,
            var=var,
            layers={"counts": sub_counts.copy(), "normalized": sp.hstack(normalized, format="csr")},
            uns={
                "multiomics": {
                    "modalities": present,
                    "mosaic": bool(mosaic),
                    "batch_key": BATCH_KEY,
                    "batch_modalities": batch_modalities,
                    "n_hvg": n_selected["rna"],
                    "n_hvp": n_selected["atac"],
                    "n_proteins": n_selected["protein"],
                    "normalization": {m: NORMALIZATION[m] for m in present},
                }
            },
        )
        log.info(
            "multiomics: %d cells; modalities %s (mosaic: %s); %d HVGs, %d proteins, %d peaks",
            method_input.n_obs,
            present,
            mosaic,
            n_selected["rna"],
            n_selected["protein"],
            n_selected["atac"],
        )
        truth = {
            CELL_TYPE_KEY: adata.obs[CELL_TYPE_KEY].astype(str).to_numpy(),
            BATCH_KEY: batch,
            "normalized": method_input.layers["normalized"].copy(),
        }
        return {
            "args": (method_input,),
            "truth": truth,
            "obs_names": adata.obs_names.to_numpy().astype(str),
        }

    def _check_dataset(self, adata: ad.AnnData) -> None:
        self._check_obs(adata)
        if "modality" not in adata.var:
            raise KeyError(
                "multiomics: dataset lacks var column 'modality' (rna / protein / atac); "
                f"it has {list(adata.var.columns)}"
            )
        unknown = sorted(set(adata.var["modality"].astype(str)) - set(MODALITIES))
        if unknown:
            raise ValueError(
                f"multiomics: var['modality'] has unknown values {unknown}; expected {list(MODALITIES)}"
            )
        self._check_names(adata)

    def _select_hvgs(
        self, block: sp.csr_matrix, batch: np.ndarray, names: pd.Index
    ) -> tuple[np.ndarray, pd.Series]:
        """Column mask of the ``n_hvg`` HVGs (seurat_v3, per batch) and their ranks by name."""
        import scanpy as sc

        expressed = np.asarray((block > 0).sum(axis=0)).ravel() > 0
        if int(expressed.sum()) <= self.n_hvg:
            return expressed, pd.Series(np.nan, index=names[expressed].astype(str), dtype=float)
        tmp = ad.AnnData(
            X=block[:, expressed],
            obs=pd.DataFrame({BATCH_KEY: pd.Categorical(batch)}),
            var=pd.DataFrame(index=names[expressed].astype(str)),
        )
        sc.pp.highly_variable_genes(
            tmp,
            flavor="seurat_v3",
            n_top_genes=self.n_hvg,
            batch_key=BATCH_KEY if len(set(batch)) > 1 else None,
            subset=False,
        )
        keep = expressed.copy()
        keep[np.flatnonzero(expressed)] = tmp.var["highly_variable"].to_numpy()
        ranks = tmp.var.loc[tmp.var["highly_variable"].to_numpy(), "highly_variable_rank"]
        return keep, ranks.astype(float)

    def _select_peaks(self, block: sp.csr_matrix) -> np.ndarray:
        """Column mask of the ``n_hvp`` most frequently open peaks (ties: more counts first)."""
        n_open = np.asarray((block > 0).sum(axis=0)).ravel()
        total = np.asarray(block.sum(axis=0)).ravel()
        keep = n_open > 0
        if int(keep.sum()) <= self.n_hvp:
            return keep
        order = np.lexsort((-total, -n_open))[: self.n_hvp]
        keep = np.zeros(block.shape[1], dtype=bool)
        keep[order] = True
        return keep

    # ------------------------------------------------------------------ score
    def _scoring_options(self, truth: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """PCs of ``layers["normalized"]`` as ``x_pre``, when there are batches to mix."""
        if len(np.unique(truth[BATCH_KEY])) < 2:
            return {"x_pre": None}
        return {"x_pre": self._x_pre(truth["normalized"], seed=seed)}

    def _amend_scores(
        self, scores: dict[str, Any], undefined: dict[str, str], truth: dict[str, Any]
    ) -> None:
        """Batch scores NaN when there is one batch; ``n_batches``."""
        n_batches = len(np.unique(truth[BATCH_KEY]))
        if n_batches < 2:
            # One batch: nothing to mix (the paper reports no batch scores for such a set).
            why = undefined.get("asw_batch", "one batch: nothing to mix")
            for key in BATCH_METRICS:
                if key in scores:
                    scores[key] = math.nan
                    undefined[key] = why
        scores["n_batches"] = float(n_batches)


# ---------------------------------------------------------------------- helpers
def _has_modalities(
    adata: ad.AnnData, counts: sp.csr_matrix, modality: np.ndarray
) -> dict[str, np.ndarray]:
    """Per modality, which cells measured it: ``obs["has_<m>"]`` or, when absent, all cells.

    A cell marked as lacking a modality must have only zeros there (the standard mosaic
    form); anything else is an inconsistent dataset, not something to fix silently.
    """
    has = {}
    for m in MODALITIES:
        in_var = modality == m
        key = f"has_{m}"
        if not in_var.any():
            has[m] = np.zeros(adata.n_obs, dtype=bool)
            continue
        if key not in adata.obs:
            has[m] = np.ones(adata.n_obs, dtype=bool)
            continue
        values = adata.obs[key]
        if values.isna().any() or not set(values.astype(str)) <= {"True", "False"}:
            raise ValueError(f"multiomics: obs[{key!r}] must be boolean; got {values.dtype}")
        has[m] = values.astype(str).to_numpy() == "True"
        lacking = ~has[m]
        if lacking.any():
            nonzero = np.asarray(counts[lacking][:, in_var].sum(axis=1)).ravel() > 0
            if nonzero.any():
                example = adata.obs_names[np.flatnonzero(lacking)[np.flatnonzero(nonzero)[0]]]
                raise ValueError(
                    f"multiomics: {int(nonzero.sum())} cells have obs[{key!r}] False but "
                    f"non-zero {m} counts (e.g. {example!r})"
                )
    cells_without = ~np.logical_or.reduce([has[m] for m in MODALITIES])
    if cells_without.any():
        raise ValueError(
            f"multiomics: {int(cells_without.sum())} cells have no modality (all has_* False), "
            f"e.g. {adata.obs_names[np.flatnonzero(cells_without)[0]]!r}"
        )
    return has


def _linked_genes(adata: ad.AnnData, chosen: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """``var["linked_gene"]`` of the chosen protein / peak features; NaN for RNA and unknown."""
    out = np.full(len(chosen), np.nan, dtype=object)
    if "linked_gene" not in adata.var:
        return out
    linked = adata.var["linked_gene"].to_numpy()[chosen]
    for i, (value, m) in enumerate(zip(linked, modality[chosen], strict=True)):
        if m != "rna" and isinstance(value, str) and value:
            out[i] = value
    return out


def _log_normalize(block: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p`` of counts scaled to :data:`TARGET_SUM` per cell (zero rows stay zero)."""
    total = np.asarray(block.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, total, out=np.zeros_like(total, dtype=float), where=total > 0)
    out = sp.csr_matrix(sp.diags(scale) @ block, dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


def _clr(block: sp.csr_matrix) -> sp.csr_matrix:
    """Seurat's CLR per cell (margin 2): ``log1p(x / exp(sum(log1p(x)) / n_features))``."""
    dense = block.toarray().astype(np.float64)
    geo = np.exp(np.log1p(dense).sum(axis=1, keepdims=True) / max(dense.shape[1], 1))
    return sp.csr_matrix(np.log1p(dense / geo), dtype=np.float32)


def _tfidf(block: sp.csr_matrix, has: np.ndarray) -> sp.csr_matrix:
    """Signac's TF-IDF (method 1) with the IDF over the cells that have ATAC."""
    block = sp.csr_matrix(block, dtype=np.float64)
    cell_total = np.asarray(block.sum(axis=1)).ravel()
    tf = sp.diags(np.divide(1.0, cell_total, out=np.zeros_like(cell_total), where=cell_total > 0))
    peak_total = np.asarray(block[has].sum(axis=0)).ravel()
    idf = np.divide(
        float(has.sum()), peak_total, out=np.zeros_like(peak_total), where=peak_total > 0
    )
    out = sp.csr_matrix(tf @ block @ sp.diags(idf * 1e4), dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


TASK = MultiomicsTask()
"""The task object the harness uses (``benchmark.tasks.get_task("multiomics")``)."""
