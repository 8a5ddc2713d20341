"""The report's compact figures per task, drawn from the task table alone (no run folders).

- :func:`task_heatmap`: methods x metrics per dataset in the scib style: each metric coloured
  on its own scale within the dataset (better = darker, lower-is-better metrics flipped), the
  value in the cell, an aggregate bar (mean of the scaled scores) on the right, methods
  sorted by it; failed rows hatched with the reason below, budget-limited rows marked ``†``.
- :func:`paper_scatter`: measured vs published values where the paper reports the same
  dataset and method (``None`` when it reports none).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.patches import Rectangle

from benchmark.plots import MISSING_COLOR, new_figure, save_figure
from benchmark.tables import BUDGET_MARK

LOWER_IS_BETTER = frozenset({"mse", "mse_de", "mae", "rank", "mean_rank"})
"""Metrics where smaller is better (flipped before colouring and aggregating)."""

NOT_SCORES = frozenset({"n_programs", "n_clusters", "n_conditions"})
"""Table columns that count things rather than score them: left out of the heat map."""

DPI = 100  # the figures are embedded in the report pages: keep them small


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (``mse_*`` too)."""
    return metric in LOWER_IS_BETTER or metric.startswith("mse_")


def heatmap_metrics(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` of ``table`` that are scores and have at least one value."""
    return [
        m
        for m in metrics
        if m in table and m not in NOT_SCORES and table[m].astype(float).notna().any()
    ]


def scaled_scores(values: pd.DataFrame) -> pd.DataFrame:
    """Each column min-max scaled to [0, 1] with 1 = best (NaN kept; a constant column 0.5)."""
    out = values.astype(float).copy()
    for col in out:
        column = out[col]
        lo, hi = column.min(), column.max()
        if pd.isna(lo):
            continue
        scaled = (column - lo) / (hi - lo) if hi > lo else column * 0 + 0.5
        out[col] = 1 - scaled if lower_is_better(str(col)) else scaled
    return out


def _row_label(row: pd.Series) -> str:
    label = str(row.get("label", row["method"]))
    if isinstance(row.get("budget_limited"), str):
        label += f" {BUDGET_MARK}"
    if row.get("status") == "partial":
        label += " (partial)"
    return label


def _format(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def task_heatmap(
    table: pd.DataFrame, metrics: Sequence[str], path: str | os.PathLike[str], *, title: str
) -> Path | None:
    """Draw the task's heat map (module docstring); ``None`` when no metric has a value.

    Parameters
    ----------
    table
        The task table (:func:`benchmark.tables.write_task_table`'s CSV).
    metrics
        The task's headline metrics, in column order.
    path
        The PNG to write.
    title
        The figure title (the task's name).
    """
    import matplotlib

    columns = heatmap_metrics(table, metrics)
    if not columns:
        return None
    datasets = list(dict.fromkeys(table["dataset"]))
    n_cols = len(columns) + 1  # + the aggregate bar
    notes: list[str] = []
    labels: list[tuple[float, str]] = []
    colormap = matplotlib.colormaps["YlGnBu"]
    # One axes, datasets stacked in data units (1 per row): a dataset's name takes a row.
    n_units = len(table) + 1.2 * len(datasets)
    n_notes = int((table["status"] == "failed").sum()) + (
        table["method"][table["budget_limited"].notna()].nunique()
        if "budget_limited" in table
        else 0
    )
    # Inches: title 0.35, metric names and rows 0.3 per unit (1.3 units of header), notes below.
    notes_height = 0.1 + 0.12 * min(8, n_notes)
    height = 0.35 + 0.3 * (n_units + 1.3) + notes_height
    fig = new_figure(3.4 + 0.78 * n_cols, height)
    fig.set_layout_engine("none")  # fixed margins: row labels left, notes below
    ax = fig.add_axes((0.3, notes_height / height, 0.68, 1 - (0.35 + notes_height) / height))
    y = 0.0
    for dataset in datasets:
        rows = table[table["dataset"] == dataset].reset_index(drop=True)
        values = rows[columns].astype(float)
        values.loc[rows["status"] == "failed"] = math.nan  # a failed row has no scores
        scores = scaled_scores(values)
        aggregate = scores.mean(axis=1, skipna=True)
        order = aggregate.fillna(-1).sort_values(ascending=False, kind="stable").index
        ax.text(-0.05, y + 0.75, str(dataset), ha="right", va="center", fontsize=8.5, weight="bold")
        ax.plot([-2.5, n_cols], [y + 1.1, y + 1.1], color="#999", lw=0.6, clip_on=False)
        y += 1.2
        for r in order:
            row = rows.loc[r]
            failed = row.get("status") == "failed"
            for j, metric in enumerate(columns):
                value, level = float(row[metric]), scores.at[r, metric]
                if failed:
                    face, text, dark = MISSING_COLOR, "failed" if j == 0 else "", False
                elif math.isnan(value):
                    face, text, dark = MISSING_COLOR, "—", False
                else:
                    face = colormap(0.12 + 0.75 * level)
                    text, dark = _format(value), level > 0.55
                ax.add_patch(
                    Rectangle(
                        (j, y),
                        1,
                        1,
                        facecolor=face,
                        edgecolor="white",
                        hatch="//" if failed else None,
                    )
                )
                ax.text(j + 0.5, y + 0.5, text, ha="center", va="center", fontsize=7.5,
                        color="white" if dark else "black")  # fmt: skip
            bar = aggregate[r]
            if not math.isnan(bar):
                ax.add_patch(
                    Rectangle((len(columns) + 0.05, y + 0.2), 0.9 * bar, 0.6, color="#4a7ab5")
                )
                ax.text(len(columns) + 0.08, y + 0.5, f"{bar:.2f}", va="center", fontsize=7,
                        color="white" if bar > 0.35 else "black")  # fmt: skip
            labels.append((y + 0.5, _row_label(row)))
            if failed and isinstance(row.get("error"), str):
                notes.append(
                    f"{dataset} / {row['label']}: failed: {row['error'].splitlines()[0][:110]}"
                )
            if isinstance(row.get("budget_limited"), str):
                note = (
                    f"{BUDGET_MARK} {row['label']}: budget-limited ({row['budget_limited'][:100]})"
                )
                if note not in notes:
                    notes.append(note)
            y += 1
    ax.set_xlim(0, n_cols)
    ax.set_ylim(y, -1.3)
    ax.set_xticks([])
    ax.set_yticks([p for p, _ in labels], [t for _, t in labels], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    for j, metric in enumerate([*columns, "aggregate"]):
        name = metric.replace("_", "\n", 1) + (
            "\n(lower\nbetter)" if lower_is_better(metric) else ""
        )
        ax.text(j + 0.5, -0.1, name, ha="center", va="bottom", fontsize=7)
    fig.suptitle(title, fontsize=11, x=0.01, y=0.995, ha="left", va="top")
    if notes:
        fig.text(
            0.01, 0.005, "\n".join(notes[:8]), fontsize=6.5, va="bottom", ha="left", color="#7a0000"
        )
    return save_figure(fig, path, dpi=DPI)


def paper_scatter(
    table: pd.DataFrame, metrics: Sequence[str], path: str | os.PathLike[str], *, title: str
) -> Path | None:
    """Measured (mean ± SE) against published values on the same dataset and method.

    Uses the table's ``<metric>_paper`` columns. Returns ``None`` (writes nothing) when the
    paper reports none of the table's (dataset, method, metric) values.
    """
    points = []
    for _, row in table.iterrows():
        for metric in metrics:
            paper = row.get(f"{metric}_paper", math.nan)
            value = row.get(metric, math.nan)
            if pd.isna(paper) or pd.isna(value):
                continue
            se = row.get(f"{metric}_se", math.nan)
            points.append(
                (float(paper), float(value), 0.0 if pd.isna(se) else float(se), metric, row)
            )
    if not points:
        return None
    fig = new_figure(4.6, 4.2)
    ax = fig.add_subplot()
    names = sorted({p[3] for p in points})
    markers = dict(zip(names, "osD^v<>pP*", strict=False))
    for paper, value, se, metric, _row in points:
        ax.errorbar(paper, value, yerr=se, fmt=markers.get(metric, "o"), ms=5, alpha=0.8,
                    label=metric)  # fmt: skip
    lo = min(min(p[0], p[1]) for p in points) - 0.05
    hi = max(max(p[0], p[1]) for p in points) + 0.05
    ax.plot([lo, hi], [lo, hi], color="#888", lw=0.8, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("published (same dataset and method)")
    ax.set_ylabel("measured (mean ± SE)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=DPI)
