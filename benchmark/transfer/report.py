"""Table and figures of the transfer series (``results/tables/transfer.{csv,md}``,
``results/figures/transfer/``): scores per pre-trained model beside the from-scratch and PCA
references and the paper's published values."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.io import atomic_path, write_csv, write_text
from benchmark.tables import collect_runs, paper_values, standard_error
from benchmark.transfer.series import HEADLINE, REFERENCE

COLUMNS = [
    "series", "model", "label", "cells", "task", "dataset", "method", "metric",
    "mean", "se", "n_seeds", "status", "paper", "paper_source",
]  # fmt: skip
REFERENCE_LABELS = {"scgpt_scratch": "from scratch", "pca": "PCA", "pca_knn": "PCA + kNN"}


def _model_of(run_file: str | os.PathLike[str]) -> str:
    """``<results>/transfer/<model>/<task>/<dataset>/<method>/seed<k>/run.json`` -> model."""
    return Path(run_file).parents[4].name


def transfer_table(
    run_files: Iterable[str | os.PathLike[str]],
    section: Mapping[str, Any],
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per series, model, task, dataset and headline metric: mean and SE over seeds.

    Parameters
    ----------
    run_files
        ``run.json`` files under ``<results>/transfer/<model>/...`` (the model is read from
        the path; the rest from the run record, the scores from ``scores.json`` beside it).
    section
        The config's ``transfer`` section (series, models, labels, pre-training cells).
    paper
        Published values (``benchmark/paper/transfer.csv``: series, model, task, dataset,
        method, metric, value, source); matched on every key.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`. Reference rows (``model == "reference"``) are repeated in
        every series that has their (task, dataset).
    """
    files = [str(f) for f in run_files]
    runs = collect_runs(files)
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs["model"] = [_model_of(f) for f in files]
    models = section.get("models") or {}
    lookup = {}
    if paper is not None and not paper.empty:
        for _, row in paper.iterrows():
            key = (
                row["series"], row["model"], row["task"], row["dataset"], row["method"],
                row["metric"],
            )  # fmt: skip
            lookup[key] = (float(row["value"]), str(row.get("source", "")))
    rows = []
    for series, spec in section["series"].items():
        for task, datasets in spec["tasks"].items():
            for dataset in datasets:
                here = runs[(runs["task"] == task) & (runs["dataset"] == dataset)]
                entries = [(m, section["methods"][task]) for m in spec["models"]]
                entries += [(REFERENCE, m) for m in (section.get("references") or {}).get(task, [])]
                for model, method in entries:
                    group = here[(here["model"] == model) & (here["method"] == method)]
                    ok = group[group["status"] == "ok"]
                    model_spec = models.get(model, {})
                    label = (
                        REFERENCE_LABELS.get(method, method)
                        if model == REFERENCE
                        else model_spec.get("label", model)
                    )
                    for metric in HEADLINE.get(task, ()):
                        values = ok[metric].astype(float).tolist() if metric in ok else []
                        values = [v for v in values if not math.isnan(v)]
                        value, source = lookup.get(
                            (series, model, task, dataset, method, metric), (math.nan, "")
                        )
                        rows.append(
                            {
                                "series": series,
                                "model": model,
                                "label": label,
                                "cells": model_spec.get("cells") if model != REFERENCE else None,
                                "task": task,
                                "dataset": dataset,
                                "method": method,
                                "metric": metric,
                                "mean": float(np.mean(values)) if values else math.nan,
                                "se": standard_error(values),
                                "n_seeds": len(values),
                                "status": (
                                    "missing"
                                    if group.empty
                                    else "ok"
                                    if len(ok) == len(group)
                                    else "failed"
                                    if ok.empty
                                    else "partial"
                                ),
                                "paper": value,
                                "paper_source": source,
                            }
                        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(mean: float, se: float, paper: float) -> str:
    text = "—" if math.isnan(mean) else f"{mean:.3f}"
    if not math.isnan(mean) and not math.isnan(se):
        text += f" ± {se:.3f}"
    if not math.isnan(paper):
        text += f" ({paper:.3f})"
    return text


def to_markdown(table: pd.DataFrame, section: Mapping[str, Any], notes: Iterable[str] = ()) -> str:
    """Render the table: per series, one row per model, one column per task/dataset/metric."""
    lines = [
        "# Transfer: scaling and context series (paper Supp. Fig. 13)",
        "",
        "Measured mean ± standard error over seeds "
        f"({', '.join(map(str, section.get('seeds', [])))}); the paper's value in parentheses "
        "where it publishes one for the same model, task and dataset. `—`: not run or failed "
        "(see transfer.csv `status`). Reference rows (from scratch: the series' architecture "
        "randomly initialised; PCA) do not depend on pre-training.",
        "",
        *(f"- {note}" for note in notes),
    ]
    for series in section["series"]:
        part = table[table["series"] == series]
        if part.empty:
            continue
        columns = list(
            dict.fromkeys(zip(part["task"], part["dataset"], part["metric"], strict=True))
        )
        lines += ["", f"## {series}", ""]
        header = ["model", "pre-training cells", *(f"{t} {d} {m}" for t, d, m in columns)]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for (model, label), group in part.groupby(["model", "label"], sort=False):
            by_key = {(r.task, r.dataset, r.metric): r for r in group.itertuples()}
            cells = group["cells"].dropna()
            row = [
                f"{label} (`{model}`)" if model != REFERENCE else label,
                f"{int(cells.iloc[0]):,}" if not cells.empty else "—",
            ]
            for key in columns:
                r = by_key.get(key)
                row.append("" if r is None else _cell(r.mean, r.se, r.paper))
            lines.append("| " + " | ".join(row) + " |")
    published = table.dropna(subset=["paper"])
    if not published.empty:
        lines += ["", "Paper values' sources:", ""]
        for source in sorted(set(published["paper_source"])):
            lines.append(f"- {source}")
    return "\n".join(lines) + "\n"


def write_transfer_table(
    run_files: Iterable[str | os.PathLike[str]],
    section: Mapping[str, Any],
    out_csv: str | os.PathLike[str],
    out_md: str | os.PathLike[str],
    *,
    paper_table: str | None = "transfer.csv",
    notes: Iterable[str] = (),
) -> pd.DataFrame:
    """Build :func:`transfer_table` and write it as CSV and Markdown."""
    paper = paper_values(paper_table) if paper_table else None
    table = transfer_table(run_files, section, paper)
    write_csv(table, out_csv, index=False)
    write_text(to_markdown(table, section, notes), out_md)
    return table


def plot_transfer(table: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """``scaling.png`` (score vs pre-training cells) and ``context.png`` (contexts ranked).

    Scaling: one panel per (task, dataset), one line per metric over pre-training cells (log
    x), the from-scratch score of the same metric as a dashed horizontal line and PCA as a
    dotted one. Context: one panel per (task, dataset, metric), models sorted by score, the
    references as vertical lines. A series named ``scaling*`` (e.g. ``scaling_3500``) is drawn
    like the scaling one, any other like the context series.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for series in dict.fromkeys(table["series"]):
        part = table[table["series"] == series]
        models = part[part["model"] != REFERENCE]
        refs = part[part["model"] == REFERENCE]
        numeric_cells = pd.to_numeric(models["cells"], errors="coerce")
        if (
            series.startswith("scaling")
            and numeric_cells.notna().all()
            and numeric_cells.nunique() > 1
        ):
            fig = _plot_scaling(plt, models.assign(cells=numeric_cells), refs)
        else:
            fig = _plot_ranking(plt, models, refs)
        path = out / f"{series}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(path)
    return written


def _plot_scaling(plt: Any, models: pd.DataFrame, refs: pd.DataFrame) -> Any:
    panels = list(dict.fromkeys(zip(models["task"], models["dataset"], strict=True)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (task, dataset) in zip(axes[0], panels, strict=True):
        here = models[(models["task"] == task) & (models["dataset"] == dataset)]
        for i, (metric, group) in enumerate(here.groupby("metric", sort=False)):
            color = f"C{i}"
            group = group.sort_values("cells")
            ax.errorbar(
                group["cells"], group["mean"], yerr=group["se"].fillna(0.0), marker="o",
                color=color, label=metric, capsize=2,
            )  # fmt: skip
            ref = refs[(refs["task"] == task) & (refs["dataset"] == dataset)]
            for _, r in ref[ref["metric"] == metric].iterrows():
                style = "--" if r["method"] == "scgpt_scratch" else ":"
                ax.axhline(r["mean"], color=color, linestyle=style, linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training cells")
        ax.set_ylabel("score")
        ax.set_title(f"{task}\n{dataset}", fontsize=9)
        ax.legend(fontsize=7, title="-- scratch  ·· PCA", title_fontsize=7)
    fig.tight_layout()
    return fig


def _plot_ranking(plt: Any, models: pd.DataFrame, refs: pd.DataFrame) -> Any:
    panels = list(
        dict.fromkeys(zip(models["task"], models["dataset"], models["metric"], strict=True))
    )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.0 * len(panels), 0.4 * models["label"].nunique() + 1.6),
        squeeze=False,
    )  # fmt: skip
    for ax, (task, dataset, metric) in zip(axes[0], panels, strict=True):
        here = models[
            (models["task"] == task) & (models["dataset"] == dataset) & (models["metric"] == metric)
        ].sort_values("mean")
        ax.barh(here["label"], here["mean"], xerr=here["se"].fillna(0.0), color="C0", capsize=2)
        ref = refs[
            (refs["task"] == task) & (refs["dataset"] == dataset) & (refs["metric"] == metric)
        ]
        for i, (_, r) in enumerate(ref.iterrows()):
            ax.axvline(r["mean"], color=f"C{i + 1}", linestyle="--", label=r["label"])
        ax.set_title(f"{task} {dataset}\n{metric}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        if not ref.empty:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
