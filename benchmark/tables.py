"""Comparison tables: mean +- SE over seeds per dataset and method, the paper's value beside."""

from __future__ import annotations

import importlib.resources
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.io import read_json, write_csv, write_text
from benchmark.metrics.integration import CLUSTERINGS
from benchmark.metrics.perturbation import NAN_POLICIES


def collect_runs(run_files: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per run: the ``run.json`` fields with the ``scores.json`` metrics beside them.

    ``run_files`` are paths of ``run.json`` files; ``scores.json`` is read from the same folder.
    """
    rows = []
    for path in run_files:
        path = Path(path)
        run = read_json(path)
        scores_path = path.with_name("scores.json")
        scores = read_json(scores_path) if scores_path.exists() else {}
        row = {
            "task": run["task"],
            "dataset": run["dataset"],
            "method": run["method"],
            "label": run.get("label", run["method"]),
            "seed": run["seed"],
            "status": run["status"],
            "error": run.get("error"),
            "wall_seconds": run.get("wall_seconds"),
            "peak_memory_mb": run.get("peak_memory_mb"),
            "warning": (run.get("warnings") or [None])[0],
        }
        row.update({k: v for k, v in scores.items() if k not in ("status", "undefined")})
        # {score: reason} of the scores the data leave undefined (NaN), e.g. one cell type.
        undefined = scores.get("undefined") or run.get("undefined")
        row["undefined"] = dict(undefined) if isinstance(undefined, dict) else None
        rows.append(row)
    return pd.DataFrame(rows)


def undefined_note(
    undefined: Iterable[dict[str, str] | None], metrics: Sequence[str]
) -> str | None:
    """Why some of ``metrics`` are undefined (NaN) in the runs, in one line; ``None`` if none.

    Parameters
    ----------
    undefined
        Per run, the ``{score: reason}`` recorded in ``scores.json`` (``None`` for none).
    metrics
        The table's metrics: only these are named (the note explains the table's ``—``).

    Returns
    -------
    e.g. ``"nmi, ari, asw_cell, avg_bio, overall: one cell type ('T'): ..."``, reasons
    separated by ``"; "``.
    """
    by_reason: dict[str, list[str]] = {}
    for record in undefined:
        if not isinstance(record, dict):
            continue
        for metric in metrics:
            reason = record.get(metric)
            if reason is not None and metric not in by_reason.setdefault(str(reason), []):
                by_reason[str(reason)].append(metric)
    parts = [f"{', '.join(names)}: {reason}" for reason, names in by_reason.items() if names]
    return "; ".join(parts) or None


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN below 2 values."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size < 2:
        return math.nan
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def paper_values(table: str) -> pd.DataFrame:
    """The paper's published values for a task (``benchmark/paper/<table>``)."""
    ref = importlib.resources.files("benchmark") / "paper" / table
    with importlib.resources.as_file(ref) as path:
        return pd.read_csv(path)


def literature_values(task: str, datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Published values of other studies for ``task`` (``benchmark/paper/literature.csv``).

    The critics' numbers (Csendes et al., scPerturBench, PerturBench, Boiarsky et al.), each
    with its source, its setting and the suite's column that measures the same thing
    (``ours``, empty when the suite does not compute that metric). ``datasets``: keep only
    those datasets (the paper configuration's names).
    """
    table = paper_values("literature.csv")
    table = table[table["task"] == task]
    if datasets is not None:
        table = table[table["dataset"].isin(list(datasets))]
    return table.reset_index(drop=True)


def literature_markdown(literature: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """A Markdown section: each published value beside the suite's on the same dataset.

    The suite's value is the measured mean of ``ours`` for the row whose method label is the
    study's method (``label``); ``—`` when the suite does not run that method or metric.
    """
    if literature.empty:
        return []
    lines = [
        "## Published elsewhere, beside ours",
        "",
        "Values of later studies on the paper's datasets (`benchmark/paper/literature.csv`); "
        "their settings differ from ours where the setting column says so.",
        "",
        "| dataset | method | metric | published | ours | setting | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in literature.iterrows():
        ours = math.nan
        column = row.get("ours")
        if isinstance(column, str) and column in table and isinstance(row.get("label"), str):
            match = table[(table["dataset"] == row["dataset"]) & (table["label"] == row["label"])]
            if not match.empty:
                ours = float(match[column].iloc[0])
        cells = [
            str(row["dataset"]),
            str(row["method"]),
            str(row["metric"]),
            f"{float(row['value']):.4g}",
            "—" if math.isnan(ours) else f"{ours:.3f}",
            str(row["setting"]),
            str(row["source"]),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def aggregate(runs: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and SE of each metric per (dataset, method) over successful seeds.

    A (dataset, method) whose every seed failed stays in the table with status ``failed``
    and the first error, so failures are visible rather than silently missing.
    """
    rows = []
    for (dataset, method), group in runs.groupby(["dataset", "method"], sort=True):
        ok = group[group["status"] == "ok"]
        errors = group.loc[group["status"] != "ok", "error"].dropna().astype(str)
        row = {
            "dataset": dataset,
            "method": method,
            "label": group["label"].iloc[0],
            "n_seeds": len(ok),
            "status": "ok" if len(ok) == len(group) else ("failed" if ok.empty else "partial"),
            "error": errors.iloc[0] if not errors.empty else None,
            "warning": _first(group["warning"]) if "warning" in group else None,
            "undefined": (undefined_note(ok["undefined"], metrics) if "undefined" in ok else None),
            "wall_seconds": float(group["wall_seconds"].mean()),
            "peak_memory_mb": float(group["peak_memory_mb"].max()),
        }
        for metric in metrics:
            values = ok[metric].astype(float).tolist() if metric in ok else []
            row[metric] = (
                float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else math.nan
            )
            row[f"{metric}_se"] = standard_error(values)
        rows.append(row)
    return pd.DataFrame(rows)


def _first(values: pd.Series) -> str | None:
    """The first non-missing string of ``values`` (``None`` when there is none)."""
    present = values.dropna().astype(str)
    return present.iloc[0] if not present.empty else None


def add_paper_columns(
    table: pd.DataFrame, paper: pd.DataFrame | None, metrics: Sequence[str]
) -> pd.DataFrame:
    """Add ``<metric>_paper`` columns, matched on dataset and method label.

    ``in_paper`` says whether the row is one the paper reports: its method (label) is in the
    paper's table and, on a dataset of the paper's table, so is that (dataset, method) row.
    On other datasets (the demo's) the method decides. ``False`` marks the suite's additions
    (other methods, or a paper method on a paper dataset the paper did not run it on);
    ``None`` when the task has no paper table to compare with.
    """
    table = table.copy()
    for metric in metrics:
        table[f"{metric}_paper"] = math.nan
    if paper is None:
        table["in_paper"] = None
        return table
    lookup = paper.set_index(["dataset", "method"])
    paper_datasets, paper_methods = set(paper["dataset"]), set(paper["method"])
    table["in_paper"] = [
        row["label"] in paper_methods
        and (row["dataset"] not in paper_datasets or (row["dataset"], row["label"]) in lookup.index)
        for _, row in table.iterrows()
    ]
    for i, row in table.iterrows():
        key = (row["dataset"], row["label"])
        if key not in lookup.index:
            continue
        for metric in metrics:
            if metric in lookup.columns:
                table.at[i, f"{metric}_paper"] = lookup.at[key, metric]
    return table


def mark_budget_limited(table: pd.DataFrame, budget_limited: Mapping[str, str]) -> pd.DataFrame:
    """Add a ``budget_limited`` column: the reason for the rows of those methods, else ``None``."""
    table = table.copy()
    table["budget_limited"] = [budget_limited.get(m) for m in table["method"]]
    return table


def budget_notes(table: pd.DataFrame) -> list[str]:
    """One note per budget-limited method of ``table`` (its ``budget_limited`` column)."""
    if "budget_limited" not in table:
        return []
    limited = table.dropna(subset=["budget_limited"]).drop_duplicates("method")
    return [
        f"{BUDGET_MARK} {row['label']}: budget-limited ({row['budget_limited']}); "
        "no claim verdict is drawn from these rows."
        for _, row in limited.iterrows()
    ]


BUDGET_MARK = "†"
"""Marks a budget-limited method's rows in the Markdown tables."""


def _cell(mean: float, se: float, paper: float) -> str:
    if math.isnan(mean):
        text = "—"
    elif math.isnan(se):
        text = f"{mean:.3f}"
    else:
        text = f"{mean:.3f} ± {se:.3f}"
    if not math.isnan(paper):
        text += f" ({paper:.3f})"
    return text


DEFINITIONS: dict[str, tuple[str, dict[str, str]]] = {
    "clustering": ("NMI/ARI clustering", CLUSTERINGS),
    "nan_policy": ("Undefined Pearson correlations", NAN_POLICIES),
}
"""Scoring options a task records in ``scores.json`` -> (what they set, value descriptions)."""


def metric_definitions(runs: pd.DataFrame) -> list[str]:
    """One line per scoring option recorded in the runs (e.g. clustering, NaN policy).

    Runs scored with different settings of one option are not comparable; the line then says
    so instead of letting the table mix them silently.
    """
    notes = []
    for key, (what, described) in DEFINITIONS.items():
        if key not in runs:
            continue
        values = sorted(runs[key].dropna().astype(str).unique())
        if len(values) > 1:
            notes.append(
                f"{what}: MIXED across runs ({', '.join(values)}): rows scored with different "
                f"`{key}` settings are not comparable."
            )
        elif values:
            notes.append(f"{what}: `{key}: {values[0]}` ({described.get(values[0], '?')}).")
    return notes


def to_markdown(
    table: pd.DataFrame,
    metrics: Sequence[str],
    title: str,
    breakdown: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """Render the table: one row per dataset and method, ``mean ± SE (paper)`` per metric.

    ``breakdown`` metrics (columns of ``table`` too) follow in a second table; ``notes``
    (e.g. :func:`metric_definitions`) are listed under the header.
    """
    lines = [
        f"# {title}",
        "",
        "Measured mean ± standard error over seeds; the paper's value in parentheses where it "
        "reports one. `—`: not defined or not computed (see `status`). `(addition)`: a row "
        "the paper's table does not have (the suite's addition, not a paper row).",
        "",
        *(f"- {note}" for note in notes),
        *([""] if notes else []),
        *_markdown_rows(table, metrics),
    ]
    if breakdown:
        lines += ["", "## By group", "", *_markdown_rows(table, breakdown)]
    return "\n".join(lines) + "\n"


def _markdown_rows(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    header = ["dataset", "method", "seeds", *metrics, "time (s)", "status"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for _, row in table.iterrows():
        status = row["status"]
        if status != "ok" and isinstance(row.get("error"), str):
            status += f": {row['error'][:120]}".replace("|", "/").replace("\n", " ")
        else:
            # A `—` the data cause (e.g. one cell type) says why, before any warning.
            notes = []
            if isinstance(row.get("undefined"), str):
                notes.append(f"undefined: {row['undefined'][:200]}")
            if isinstance(row.get("warning"), str):
                notes.append(f"warning: {row['warning'][:120]}")
            if notes:
                status += f" ({'; '.join(notes)})".replace("|", "/").replace("\n", " ")
        cells = [
            str(row["dataset"]),
            str(row["label"])
            + (" (addition)" if row.get("in_paper") is False else "")
            + (f" {BUDGET_MARK}" if isinstance(row.get("budget_limited"), str) else ""),
            str(row["n_seeds"]),
            *(_cell(row[m], row[f"{m}_se"], row[f"{m}_paper"]) for m in metrics),
            f"{row['wall_seconds']:.1f}",
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_task_table(
    run_files: Iterable[str | os.PathLike[str]],
    metrics: Sequence[str],
    out_csv: str | os.PathLike[str],
    out_md: str | os.PathLike[str],
    *,
    title: str,
    paper_table: str | None = None,
    breakdown: Sequence[str] = (),
    budget_limited: Mapping[str, str] | None = None,
    task: str | None = None,
) -> pd.DataFrame:
    """Collect runs, aggregate over seeds, add the paper's values and write CSV + Markdown.

    ``breakdown``: further metrics, aggregated the same way and shown in a second table.
    ``budget_limited``: method -> why its budget is short (the config's
    ``tasks.<task>.budget_limited``): a ``budget_limited`` column and a marked row.
    ``task``: the task's name; other studies' published values on the table's datasets
    (:func:`literature_values`) follow in a last section.
    """
    runs = collect_runs(run_files)
    every = [*metrics, *(m for m in breakdown if m not in metrics)]
    table = aggregate(runs, every)
    table = add_paper_columns(table, paper_values(paper_table) if paper_table else None, every)
    table = mark_budget_limited(table, budget_limited or {})
    write_csv(table, out_csv, index=False)
    notes = metric_definitions(runs) + budget_notes(table)
    text = to_markdown(table, metrics, title, breakdown, notes=notes)
    if task is not None:
        section = literature_markdown(literature_values(task, table["dataset"]), table)
        if section:
            text += "\n" + "\n".join(section) + "\n"
    write_text(text, out_md)
    return table
