"""Figures of perturbation-space expansion (Fig. 3c-e) and reverse perturbation (Fig. 3g).

Drawn with the shared helpers of :mod:`benchmark.plots` (matplotlib's object API on the Agg
canvas, no pyplot; PNGs written atomically).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmark.plots import category_colors, new_figure, save_figure


def plot_expansion_map(
    umap: np.ndarray,
    clusters: Sequence[str],
    dominant: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Predicted responses on the UMAP, coloured by Leiden cluster, each labelled by its
    dominant gene at the cluster's centre (Fig. 3c-d)."""
    umap = np.asarray(umap, dtype=float)
    clusters = np.asarray(clusters).astype(str)
    dominant = np.asarray(dominant).astype(str)
    if umap.shape != (clusters.size, 2) or dominant.size != clusters.size:
        raise ValueError(
            f"umap {umap.shape}, clusters {clusters.size}, dominant {dominant.size}: expected "
            "(n, 2), n, n"
        )
    names = sorted(set(clusters), key=lambda c: (len(c), c))
    colours = category_colors(names)
    fig = new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    for name in names:
        mask = clusters == name
        ax.scatter(umap[mask, 0], umap[mask, 1], s=8, color=colours[name], linewidths=0)
        centre = np.median(umap[mask], axis=0)
        ax.annotate(f"{dominant[mask][0]}+X", centre, fontsize=8, ha="center", weight="bold")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "predicted perturbation responses")
    return save_figure(fig, path)


def plot_gene_over_map(
    umap: np.ndarray,
    values: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Predicted expression of chosen target genes over the map, one panel each (Fig. 3e)."""
    umap = np.asarray(umap, dtype=float)
    fig = new_figure(4.2 * max(len(values), 1), 4.0)
    for k, (gene, v) in enumerate(values.items(), start=1):
        v = np.asarray(v, dtype=float)
        if v.shape != (umap.shape[0],):
            raise ValueError(f"values of {gene!r}: shape {v.shape}, expected ({umap.shape[0]},)")
        ax = fig.add_subplot(1, len(values), k)
        order = np.argsort(v)  # high values drawn last, on top
        art = ax.scatter(umap[order, 0], umap[order, 1], c=v[order], s=8, cmap="viridis")
        fig.colorbar(art, ax=ax, shrink=0.8)
        ax.set_title(f"predicted {gene}")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_topk_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    ks: Sequence[int],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Correct and relevant rates at top 1..k per method (Fig. 3g), two panels."""
    fig = new_figure(9.0, 3.8)
    colours = category_colors(list(curves))
    for j, kind in enumerate(("correct", "relevant"), start=1):
        ax = fig.add_subplot(1, 2, j)
        for label, entry in curves.items():
            values = np.asarray(entry[kind], dtype=float)
            if values.shape != (len(ks),):
                raise ValueError(f"{label!r} {kind}: shape {values.shape}, expected ({len(ks)},)")
            ax.plot(list(ks), values, marker="o", color=colours[label], label=label)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("top k")
        ax.set_ylabel(f"{kind} rate")
        ax.set_title(kind)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
