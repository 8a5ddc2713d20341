"""Integration figures: UMAPs per method (cell type, batch) and a scIB-style metric table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.io import read_json
from benchmark.plots import metric_table, scatter_grid, umap_coordinates

log = logging.getLogger(__name__)

UMAP_FILE = "integration_umap.png"
TABLE_FILE = "integration_metrics.png"

_GROUPS = {
    "avg_bio": "Bio conservation",
    "nmi": "Bio conservation",
    "ari": "Bio conservation",
    "asw_cell": "Bio conservation",
    "avg_batch": "Batch correction",
    "asw_batch": "Batch correction",
    "graph_conn": "Batch correction",
    "overall": "Aggregate",
}


def _read_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per run folder: method, label, seed, status, dataset, scores."""
    rows = []
    for run_dir in map(Path, run_dirs):
        run_file = run_dir / "run.json"
        if not run_file.exists():
            log.warning("integration figures: %s has no run.json; skipped", run_dir)
            continue
        run = read_json(run_file)
        scores_file = run_dir / "scores.json"
        scores = read_json(scores_file) if scores_file.exists() else {}
        rows.append(
            {
                "dir": run_dir,
                "method": run["method"],
                "label": run.get("label", run["method"]),
                "seed": run["seed"],
                "dataset": run.get("dataset", ""),
                "status": run["status"],
                **{k: v for k, v in scores.items() if k != "status"},
            }
        )
    return pd.DataFrame(rows)


def integration_figures(
    run_dirs: Sequence[str | os.PathLike[str]],
    dataset_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    metrics: Sequence[str],
    seed: int = 0,
    prefix: str = "integration",
    title: str = "Integration",
) -> list[Path]:
    """Draw ``<prefix>_umap.png`` and ``<prefix>_metrics.png`` for one dataset.

    Parameters
    ----------
    run_dirs
        ``results/integration/<dataset>/<method>/seed<k>/`` folders (failed runs included).
    dataset_path
        The standard h5ad the runs used (for ``obs["cell_type"]`` and ``obs["batch"]``).
    out_dir
        Where the PNGs go.
    metrics
        Columns of the metric table.
    seed
        UMAP seed.
    prefix, title
        File-name prefix and figure-title start (the multi-omic task draws the same figures
        as ``multiomics_*.png``).

    Returns
    -------
    The files written (none when no run succeeded).
    """
    out_dir = Path(out_dir)
    runs = _read_runs(run_dirs)
    if runs.empty:
        return []
    ok = runs[runs["status"] == "ok"]
    written: list[Path] = []
    dataset = str(runs["dataset"].iloc[0])

    if not ok.empty:
        backed = ad.read_h5ad(dataset_path, backed="r")
        try:
            obs = backed.obs[["cell_type", "batch"]].copy()
        finally:
            backed.file.close()
        coords: dict[str, np.ndarray] = {}
        for label, group in ok.sort_values(["label", "seed"]).groupby("label", sort=False):
            run_dir = Path(group["dir"].iloc[0])  # lowest seed
            emb_file = run_dir / "embedding.npy"
            if not emb_file.exists():
                continue
            embedding = np.load(emb_file)
            cells = pd.read_csv(run_dir / "cells.csv")["cell"].astype(str)
            position = pd.Series(np.arange(len(cells)), index=cells)
            embedding = embedding[position.reindex(obs.index.astype(str)).to_numpy()]
            coords[str(label)] = umap_coordinates(embedding, seed=seed)
        if coords:
            written.append(
                scatter_grid(
                    coords,
                    obs,
                    ["cell_type", "batch"],
                    out_dir / UMAP_FILE.replace("integration", prefix, 1),
                    title=f"{title}: {dataset}",
                )
            )

    table = pd.DataFrame(index=sorted(runs["label"].astype(str).unique()), columns=list(metrics))
    for label, group in runs.groupby("label"):
        good = group[group["status"] == "ok"]
        name = str(label)
        if good.empty:
            table = table.rename(index={name: f"{name} (failed)"})
            continue
        for metric in metrics:
            if metric in good:
                table.loc[name, metric] = pd.to_numeric(good[metric], errors="coerce").mean()
    table = table.astype(float)
    if "overall" in table:
        table = table.sort_values("overall", ascending=False, na_position="last")
    written.append(
        metric_table(
            table,
            out_dir / TABLE_FILE.replace("integration", prefix, 1),
            title=f"{title} scores: {dataset} (mean over seeds)",
            groups={m: _GROUPS[m] for m in metrics if m in _GROUPS},
        )
    )
    return written
