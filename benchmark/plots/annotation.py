"""Annotation / reference-mapping figures: confusion matrices, embedding UMAPs, metric bars.

Inputs are the run folders the harness wrote (``predictions.csv``, ``embedding.npy``,
``scores.json``, ``run.json``); failed runs are skipped. Per method, the confusion matrix
and UMAP use its lowest seed; the bar chart shows mean +- SE over all successful seeds.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.io import read_json
from benchmark.metrics.annotation import row_normalised_confusion
from benchmark.plots import category_colors, new_figure, save_figure, umap_coordinates

log = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_confusion(
    matrix: pd.DataFrame, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Heat map of a row-normalised confusion matrix (rows true, columns predicted)."""
    n_rows, n_cols = matrix.shape
    fig = new_figure(1.6 + 0.42 * n_cols, 1.4 + 0.38 * n_rows)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            v = matrix.iat[i, j]
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")  # fmt: skip
    ax.set_xticks(
        range(n_cols), [str(c) for c in matrix.columns], rotation=60, ha="right", fontsize=7
    )
    ax.set_yticks(range(n_rows), [str(r) for r in matrix.index], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true type")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_label_umap(
    coords: np.ndarray,
    truth: Sequence[str],
    predicted: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Two UMAP panels (true type, predicted type) with one palette and one legend."""
    truth = np.asarray(truth, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    labels = sorted(set(truth) | set(predicted))
    palette = category_colors(labels)
    fig = new_figure(9.5, 4.2)
    grid = fig.add_gridspec(1, 3, width_ratios=[4, 4, 2.2])
    point = float(np.clip(3000 / max(len(truth), 1), 1.0, 25))
    order = np.random.default_rng(0).permutation(len(truth))
    for col, (name, values) in enumerate([("true type", truth), ("predicted type", predicted)]):
        ax = fig.add_subplot(grid[0, col])
        colors = np.array([palette[v] for v in values])
        ax.scatter(coords[order, 0], coords[order, 1], c=colors[order], s=point, linewidths=0,
                   rasterized=True)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1", fontsize=7)
        ax.set_ylabel("UMAP 2", fontsize=7)
    legend_ax = fig.add_subplot(grid[0, 2])
    legend_ax.axis("off")
    handles = [
        legend_ax.scatter([], [], color=palette[label], s=20, label=label) for label in labels
    ]
    legend_ax.legend(handles=handles, loc="center left", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_metric_bars(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per metric, one bar per method (``summary`` rows), mean +- SE.

    ``summary`` has an index of method labels and columns ``<metric>`` and ``<metric>_se``.
    """
    import matplotlib

    methods = list(summary.index)
    n_methods = max(len(methods), 1)
    fig = new_figure(1.5 + 1.3 * len(metrics) + 0.15 * n_methods, 3.6)
    ax = fig.add_subplot()
    width = 0.8 / n_methods
    cmap = matplotlib.colormaps["tab10" if n_methods <= 10 else "tab20"]
    x = np.arange(len(metrics))
    for i, method in enumerate(methods):
        means = [float(summary.at[method, m]) for m in metrics]
        ses = [float(summary.at[method, f"{m}_se"]) for m in metrics]
        ses = [0.0 if math.isnan(s) else s for s in ses]
        ax.bar(x + (i - (n_methods - 1) / 2) * width, means, width, yerr=ses, capsize=2,
               label=str(method), color=cmap(i % cmap.N))  # fmt: skip
    ax.set_xticks(x, list(metrics))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _ok_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[dict]:
    runs = []
    for run_dir in map(Path, run_dirs):
        run_file = run_dir / "run.json"
        if not run_file.exists() or not (run_dir / "predictions.csv").exists():
            continue
        run = read_json(run_file)
        if run.get("status") != "ok":
            continue
        scores_file = run_dir / "scores.json"
        runs.append(
            {
                "dir": run_dir,
                "method": str(run.get("method", run_dir.parent.name)),
                "label": str(run.get("label", run.get("method", run_dir.parent.name))),
                "seed": int(run.get("seed", 0)),
                "scores": read_json(scores_file) if scores_file.exists() else {},
            }
        )
    return runs


def annotation_figures(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    metrics: Sequence[str],
    title: str = "annotation",
) -> list[Path]:
    """Draw every annotation figure for one dataset; return the files written.

    Files: ``confusion_<method>.png`` (row-normalised), ``umap_<method>.png`` (when the run
    saved ``embedding.npy``; coloured by true and predicted type) and ``metrics.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = _ok_runs(run_dirs)
    written: list[Path] = []
    if not runs:
        log.warning("%s: no successful runs to draw", title)
        return written

    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)

    for method, method_runs in sorted(by_method.items()):
        first = min(method_runs, key=lambda r: r["seed"])
        preds = pd.read_csv(first["dir"] / "predictions.csv", dtype=str, keep_default_na=False)
        truth_labels = sorted(preds["true"].unique())
        extra = sorted(set(preds["predicted"]) - set(truth_labels))
        matrix = row_normalised_confusion(
            preds["true"], preds["predicted"], labels=truth_labels + extra
        ).loc[truth_labels]
        written.append(
            plot_confusion(
                matrix,
                out_dir / f"confusion_{_safe(method)}.png",
                title=f"{title} — {first['label']} (seed {first['seed']})",
            )
        )
        emb_file = first["dir"] / "embedding.npy"
        if emb_file.exists():
            embedding = np.load(emb_file)
            if embedding.ndim == 2 and embedding.shape[0] == len(preds) and len(preds) > 3:
                written.append(
                    plot_label_umap(
                        umap_coordinates(embedding, seed=0),
                        preds["true"],
                        preds["predicted"],
                        out_dir / f"umap_{_safe(method)}.png",
                        title=f"{title} — {first['label']} query embedding (seed {first['seed']})",
                    )
                )

    rows = {}
    for _, method_runs in sorted(by_method.items()):
        label = method_runs[0]["label"]
        row = {}
        for metric in metrics:
            values = np.asarray(
                [
                    r["scores"].get(metric)
                    for r in method_runs
                    if r["scores"].get(metric) is not None
                ],
                dtype=float,
            )
            row[metric] = float(values.mean()) if values.size else math.nan
            row[f"{metric}_se"] = (
                float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
            )
        rows[label] = row
    summary = pd.DataFrame.from_dict(rows, orient="index")
    written.append(plot_metric_bars(summary, metrics, out_dir / "metrics.png", title=title))
    return written
