"""Shared figure helpers (matplotlib, no pyplot state): UMAP grids, metric tables, saving.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, so nothing here
depends on (or changes) the process's matplotlib backend, and files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from benchmark.io import atomic_path

MISSING_COLOR = "#d9d9d9"


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (independent of pyplot and the current backend)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG (or the format of the suffix) atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def category_colors(categories: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A distinct colour per category (tab10 / tab20, then an evenly spaced hsv wheel)."""
    import matplotlib

    n = len(categories)
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        colors = [cmap(i) for i in range(n)]
    elif n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        colors = [cmap(i) for i in range(n)]
    else:
        cmap = matplotlib.colormaps["hsv"]
        colors = [cmap(i / n) for i in range(n)]
    return dict(zip(categories, colors))


UMAP_LAYOUT_EPOCHS = 200
"""Layout epochs of the figures' UMAPs (:func:`umap_coordinates`)."""


def umap_coordinates(embedding: np.ndarray, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of an embedding the way scanpy draws one (kNN graph, then ``tl.umap``).

    200 layout epochs (umap-learn's choice above 10,000 cells; below it, 500): the figures'
    UMAPs were half of every figure job's time, and 200 epochs already settle a layout of a
    few thousand cells.
    """
    import anndata as ad
    import scanpy as sc

    from benchmark.numba_cache import cache_umap_kernels

    cache_umap_kernels()
    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(embedding.shape[0])]))
    tmp.obsm["X_emb"] = np.asarray(embedding, dtype=np.float32)
    k = max(2, min(n_neighbors, embedding.shape[0] - 1))
    sc.pp.neighbors(tmp, n_neighbors=k, use_rep="X_emb", random_state=seed)
    sc.tl.umap(tmp, random_state=seed, maxiter=UMAP_LAYOUT_EPOCHS)
    return np.asarray(tmp.obsm["X_umap"])


def scatter_grid(
    coords: Mapping[str, np.ndarray],
    obs: pd.DataFrame,
    color_keys: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    panel_size: float = 3.2,
) -> Path:
    """One row per embedding (``coords``: name -> n x 2, rows aligned with ``obs``), one
    column per obs key in ``color_keys``; a legend per column under the grid."""
    names = list(coords)
    if not names:
        raise ValueError("scatter_grid: no embeddings to draw")
    n_rows, n_cols = len(names), len(color_keys)
    palettes = {}
    for key in color_keys:
        cats = sorted(pd.Series(obs[key]).astype(str).unique())
        palettes[key] = category_colors(cats)
    legend_rows = max(math.ceil(len(p) / 3) for p in palettes.values())
    legend_height = 0.22 * legend_rows + 0.3
    fig = new_figure(panel_size * n_cols + 0.8, panel_size * n_rows + legend_height)
    grid = fig.add_gridspec(
        n_rows + 1, n_cols, height_ratios=[panel_size] * n_rows + [legend_height]
    )
    point = float(np.clip(3000 / max(len(obs), 1), 0.5, 20))
    order = np.random.default_rng(0).permutation(len(obs))  # no batch drawn on top of all
    for r, name in enumerate(names):
        xy = np.asarray(coords[name])
        for c, key in enumerate(color_keys):
            ax = fig.add_subplot(grid[r, c])
            values = obs[key].astype(str).to_numpy()
            colors = np.array([palettes[key][v] for v in values])
            ax.scatter(
                xy[order, 0], xy[order, 1], c=colors[order], s=point, linewidths=0, rasterized=True
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(key)
            if c == 0:
                ax.set_ylabel(name)
    for c, key in enumerate(color_keys):
        ax = fig.add_subplot(grid[n_rows, c])
        ax.axis("off")
        handles = [
            ax.scatter([], [], color=color, s=20, label=cat) for cat, color in palettes[key].items()
        ]
        ax.legend(handles=handles, loc="upper center", ncol=3, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def metric_table(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    groups: Mapping[str, str] | None = None,
    cmap: str = "YlGnBu",
) -> Path:
    """A scib-style results table: rows = methods, columns = metrics, value in each cell.

    Each column is coloured on its own scale (higher = darker); NaN cells are grey with
    "—". ``groups`` (metric -> group name) draws group labels above the columns.
    """
    import matplotlib

    values = table.astype(float)
    n_rows, n_cols = values.shape
    fig = new_figure(1.6 + 0.85 * n_cols, 1.1 + 0.4 * n_rows + (0.6 if groups else 0.3))
    ax = fig.add_subplot()
    colormap = matplotlib.colormaps[cmap]
    for j, col in enumerate(values.columns):
        column = values[col].to_numpy()
        finite = column[np.isfinite(column)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        for i, v in enumerate(column):
            if np.isfinite(v):
                level = 0.5 if hi == lo else (v - lo) / (hi - lo)
                face = colormap(0.15 + 0.7 * level)
                text, dark = f"{v:.3f}", level > 0.55
            else:
                face, text, dark = MISSING_COLOR, "—", False
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="white"))
            ax.text(
                j + 0.5,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    # Header drawn in data coordinates above the rows: metric names, then group names.
    header = 1.6 if groups else 0.8
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, -header)
    ax.set_xticks([])
    ax.set_yticks(np.arange(n_rows) + 0.5, [str(r) for r in values.index])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    for j, col in enumerate(values.columns):
        name = str(col).replace("_", "\n", 1)
        ax.text(j + 0.5, -0.1, name, ha="center", va="bottom", fontsize=8)
    if groups:
        spans: list[tuple[str, int, int]] = []
        for j, col in enumerate(values.columns):
            group = groups.get(col, "")
            if spans and spans[-1][0] == group:
                spans[-1] = (group, spans[-1][1], j + 1)
            else:
                spans.append((group, j, j + 1))
        for group, start, stop in spans:
            if not group:
                continue
            ax.text(
                (start + stop) / 2,
                -1.05,
                group,
                ha="center",
                va="bottom",
                fontsize=9,
                weight="bold",
            )
            ax.plot([start + 0.08, stop - 0.08], [-1.0, -1.0], color="black", linewidth=0.8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


__all__ = [
    "category_colors",
    "metric_table",
    "new_figure",
    "save_figure",
    "scatter_grid",
    "umap_coordinates",
]
