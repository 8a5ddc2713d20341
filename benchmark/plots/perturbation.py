"""Perturbation figures: the paper's Fig. 3b-style DE-gene plot and Pearson-delta bars.

Drawn with the shared helpers of :mod:`benchmark.plots` (matplotlib's object API on the Agg
canvas, no pyplot; PNGs written atomically).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmark.plots import new_figure, save_figure

_COLOURS = (
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


def plot_de_changes(
    condition: str,
    genes: Sequence[str],
    observed: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Observed and predicted change over control on a condition's top DE genes (Fig. 3b).

    Parameters
    ----------
    condition
        Condition name (used in the title).
    genes
        The DE genes, in plotting order.
    observed
        ``(n_cells, n_genes)`` per-cell expression minus the control mean (box plots; the
        observed mean is a black bar).
    predicted
        Method label -> ``(n_genes,)`` predicted mean minus the control mean (markers).
    path
        PNG to write.
    title
        Figure title; defaults to ``condition``.
    """
    observed = np.asarray(observed, dtype=float)
    if observed.ndim != 2 or observed.shape[1] != len(genes):
        raise ValueError(
            f"observed must be (n_cells, {len(genes)}) for condition {condition!r}, "
            f"got shape {observed.shape}"
        )
    positions = np.arange(1, len(genes) + 1)
    fig = new_figure(max(6.0, 0.45 * len(genes) + 2.5), 4.2)
    ax = fig.add_subplot()
    ax.boxplot(
        observed,
        positions=positions,
        showfliers=False,
        widths=0.6,
        medianprops={"linewidth": 0},
        boxprops={"color": "#888888"},
        whiskerprops={"color": "#888888"},
        capprops={"color": "#888888"},
    )
    ax.scatter(
        positions, observed.mean(axis=0), marker="_", s=200, color="black", label="observed mean"
    )
    n_methods = max(len(predicted), 1)
    offsets = np.linspace(-0.2, 0.2, n_methods) if n_methods > 1 else np.zeros(1)
    for k, (label, values) in enumerate(predicted.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != (len(genes),):
            raise ValueError(
                f"prediction of {label!r} for {condition!r} has shape {values.shape}, "
                f"expected ({len(genes)},)"
            )
        ax.scatter(
            positions + offsets[k],
            values,
            s=22,
            color=_COLOURS[k % len(_COLOURS)],
            label=label,
            zorder=3,
        )
    ax.axhline(0.0, linestyle="--", color="green", linewidth=0.8)
    ax.set_xticks(positions)
    ax.set_xticklabels(list(genes), rotation=90)
    ax.set_xlim(0.3, len(genes) + 0.7)
    ax.set_ylabel("change in expression over control")
    ax.set_title(title or condition)
    ax.legend(fontsize=7, loc="best", frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save_figure(fig, path, dpi=120)


def plot_metric_bars(
    labels: Sequence[str],
    means: Sequence[float],
    errors: Sequence[float],
    path: str | os.PathLike[str],
    *,
    metric: str = "pearson_delta",
    title: str = "",
) -> Path:
    """Bar chart of one metric per method (mean with standard-error bars over seeds).

    A NaN mean (an undefined metric, e.g. Pearson of a constant prediction) draws no bar and
    is labelled "undefined".
    """
    if not (len(labels) == len(means) == len(errors)):
        raise ValueError(
            f"labels, means and errors differ in length: {len(labels)}, {len(means)}, {len(errors)}"
        )
    means_arr = np.asarray(means, dtype=float)
    errors_arr = np.nan_to_num(np.asarray(errors, dtype=float), nan=0.0)
    x = np.arange(len(labels))
    fig = new_figure(max(4.0, 0.9 * len(labels) + 1.5), 3.8)
    ax = fig.add_subplot()
    heights = np.nan_to_num(means_arr, nan=0.0)
    colours = [_COLOURS[k % len(_COLOURS)] for k in range(len(labels))]
    ax.bar(x, heights, yerr=errors_arr, color=colours, capsize=3)
    for k, value in enumerate(means_arr):
        text = "undefined" if np.isnan(value) else f"{value:.3f}"
        ax.annotate(
            text,
            (x[k], heights[k]),
            textcoords="offset points",
            xytext=(0, 3 if heights[k] >= 0 else -12),
            ha="center",
            fontsize=7,
        )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(list(labels), rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save_figure(fig, path, dpi=120)
