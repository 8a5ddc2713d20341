"""Report pages: the paper-comparison view and the run provenance, as standalone HTML.

``snakemake --report`` embeds both beside the tables and figures (rule ``report_pages``).
The comparison puts every measured value next to what the paper publishes for the same
method: on the same dataset (with the difference, coloured by size) and, since the demo's
datasets are not the paper's, on the paper's own datasets as context, each with its source.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io import read_json, write_text
from benchmark.tables import collect_runs, paper_values

#: |measured - paper| at or below this reads as agreement, above ``FAR`` as a disagreement.
CLOSE = 0.02
FAR = 0.05

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.close { background: #d9f2d9; } .mid { background: #fff3c4; } .far { background: #f8d0d0; }
.failed { color: #a40000; } .note { color: #555; font-size: 0.9em; }
"""


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _number(value: Any, se: Any = math.nan, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{float(value):.{digits}f}"
    if se is not None and not (isinstance(se, float) and math.isnan(se)):
        text += f" ± {float(se):.3f}"
    return text


def _difference_class(diff: float) -> str:
    size = abs(diff)
    return "close" if size <= CLOSE else ("mid" if size <= FAR else "far")


def comparison_rows(
    table: pd.DataFrame, metrics: Sequence[str], paper: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per (dataset, method, metric) of a task table with the paper's values beside.

    Parameters
    ----------
    table
        A task table as written by :func:`benchmark.tables.write_task_table` (its CSV).
    metrics
        The task's headline metrics.
    paper
        The paper's values for the task (``benchmark/paper/<file>``), or ``None``.

    Returns
    -------
    DataFrame
        ``dataset, method, metric, measured, se, paper_same_dataset, difference,
        paper_elsewhere`` (the paper's values for this method on its own datasets, as
        ``"dataset value"`` strings) and ``source``.
    """
    rows = []
    for _, row in table.iterrows():
        label = row["label"]
        published = paper[paper["method"] == label] if paper is not None else None
        for metric in metrics:
            if metric not in table:
                continue
            same = math.nan
            elsewhere: list[str] = []
            source = ""
            if published is not None and metric in published:
                for _, ref in published.iterrows():
                    value = ref[metric]
                    if pd.isna(value):
                        continue
                    if ref["dataset"] == row["dataset"]:
                        same = float(value)
                        source = str(ref.get("source", ""))
                    else:
                        elsewhere.append(f"{ref['dataset']} {float(value):.3f}")
                        source = source or str(ref.get("source", ""))
            measured = row[metric]
            rows.append(
                {
                    "dataset": row["dataset"],
                    "method": label,
                    "metric": metric,
                    "measured": measured,
                    "se": row.get(f"{metric}_se", math.nan),
                    "paper_same_dataset": same,
                    "difference": measured - same if not pd.isna(measured) else math.nan,
                    "paper_elsewhere": ", ".join(elsewhere),
                    "status": row.get("status", "ok"),
                    "source": source,
                }
            )
    return pd.DataFrame(rows)


def write_paper_comparison(
    tables: Mapping[str, str | os.PathLike[str]], out_html: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write the measured-vs-published view of every task table.

    Parameters
    ----------
    tables
        Task name -> its table CSV (``results/tables/<task>.csv``).
    out_html
        The page to write.

    Returns
    -------
    All comparison rows, with a ``task`` column.
    """
    from benchmark.tasks import get_task

    body = [
        "<p class='note'>Each measured value (mean ± SE over seeds) beside the paper's value "
        "for the same method and dataset, when the paper reports that dataset (Δ = measured - "
        f"paper: green |Δ| ≤ {CLOSE}, yellow ≤ {FAR}, red above). The demo's datasets are not "
        "the paper's, so the last column gives the paper's values for the same method on the "
        "paper's own datasets, for scale only. Sources are named under each table.</p>"
    ]
    frames = []
    for task, csv in tables.items():
        spec = get_task(task)
        table = pd.read_csv(csv)
        paper = paper_values(spec.paper_table) if spec.paper_table else None
        rows = comparison_rows(table, spec.metrics, paper)
        rows.insert(0, "task", task)
        frames.append(rows)
        body.append(f"<h2>{html.escape(task)}</h2>")
        if paper is None:
            body.append(
                "<p class='note'>The paper publishes no table for this task (its values, where "
                "any, are quoted in the text: see benchmark/paper/other_results.md).</p>"
            )
        body.append(_comparison_table(rows))
        sources = sorted({s for s in rows.get("source", []) if isinstance(s, str) and s})
        if sources:
            body.append(
                "<p class='note'>Paper values: "
                + "; ".join(html.escape(s) for s in sources)
                + f" (benchmark/paper/{html.escape(str(spec.paper_table))}).</p>"
            )
    write_text(_page("scgpt-bench: measured vs the paper", body), out_html)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _comparison_table(rows: pd.DataFrame) -> str:
    head = (
        "<tr><th>dataset</th><th>method</th><th>metric</th><th>measured</th>"
        "<th>paper (same dataset)</th><th>Δ</th><th>paper, its datasets</th></tr>"
    )
    lines = ["<table>", head]
    for _, row in rows.iterrows():
        diff = row["difference"]
        same = row["paper_same_dataset"]
        cls = _difference_class(diff) if not (pd.isna(diff) or pd.isna(same)) else ""
        measured = _number(row["measured"], row["se"])
        if row["status"] != "ok":
            measured += f" <span class='failed'>({html.escape(str(row['status']))})</span>"
        lines.append(
            "<tr>"
            f"<td>{html.escape(str(row['dataset']))}</td>"
            f"<td>{html.escape(str(row['method']))}</td>"
            f"<td>{html.escape(str(row['metric']))}</td>"
            f"<td class='num'>{measured}</td>"
            f"<td class='num'>{_number(same)}</td>"
            f"<td class='num {cls}'>{_number(diff) if cls else '—'}</td>"
            f"<td>{html.escape(str(row['paper_elsewhere']) or '—')}</td>"
            "</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def write_provenance(
    run_files: Iterable[str | os.PathLike[str]], out_html: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write what produced the results: versions, seeds, devices, failures and warnings.

    Returns
    -------
    One row per run (:func:`benchmark.tables.collect_runs` plus device and versions).
    """
    paths = [Path(p) for p in run_files]
    runs = collect_runs(paths)
    records = [read_json(p) for p in paths]
    runs["device"] = [r.get("device", "") for r in records]
    versions: dict[str, set[str]] = {}
    for record in records:
        for package, version in (record.get("versions") or {}).items():
            versions.setdefault(package, set()).add(str(version))
    body = [
        f"<p>{len(runs)} runs; seeds {sorted(runs['seed'].unique().tolist())}; devices: "
        + html.escape(", ".join(sorted(set(runs["device"])))),
        f"; {int((runs['status'] != 'ok').sum())} failed.</p>",
        "<h2>Package versions</h2><table><tr><th>package</th><th>version</th></tr>",
        *(
            f"<tr><td>{html.escape(p)}</td><td>{html.escape(', '.join(sorted(v)))}"
            + (" <b>(differs between runs)</b>" if len(v) > 1 else "")
            + "</td></tr>"
            for p, v in sorted(versions.items())
        ),
        "</table>",
        "<h2>Failed runs</h2>",
    ]
    failed = runs[runs["status"] != "ok"]
    if failed.empty:
        body.append("<p>None.</p>")
    else:
        body.append(
            "<table><tr><th>task</th><th>dataset</th><th>method</th><th>seed</th>"
            "<th>reason</th></tr>"
        )
        for _, row in failed.iterrows():
            body.append(
                f"<tr class='failed'><td>{html.escape(row['task'])}</td>"
                f"<td>{html.escape(row['dataset'])}</td><td>{html.escape(row['method'])}</td>"
                f"<td>{row['seed']}</td><td>{html.escape(str(row['error']))}</td></tr>"
            )
        body.append("</table>")
    warned = runs[runs["warning"].notna()] if "warning" in runs else runs.iloc[0:0]
    body.append("<h2>Runs with warnings</h2>")
    if warned.empty:
        body.append("<p>None.</p>")
    else:
        body.append("<table><tr><th>run</th><th>first warning</th></tr>")
        for _, row in warned.iterrows():
            name = f"{row['task']}/{row['dataset']}/{row['method']}/seed{row['seed']}"
            body.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(row['warning']))}</td></tr>"
            )
        body.append("</table>")
    body.append("<h2>Every run</h2>")
    body.append(
        "<table><tr><th>task</th><th>dataset</th><th>method</th><th>seed</th><th>status</th>"
        "<th>wall (s)</th><th>peak memory (MiB)</th><th>device</th></tr>"
    )
    for _, row in runs.sort_values(["task", "dataset", "method", "seed"]).iterrows():
        body.append(
            f"<tr><td>{html.escape(row['task'])}</td><td>{html.escape(row['dataset'])}</td>"
            f"<td>{html.escape(row['method'])}</td><td>{row['seed']}</td>"
            f"<td>{html.escape(row['status'])}</td>"
            f"<td class='num'>{_number(row['wall_seconds'], digits=1)}</td>"
            f"<td class='num'>{_number(row['peak_memory_mb'], digits=0)}</td>"
            f"<td>{html.escape(str(row['device']))}</td></tr>"
        )
    body.append("</table>")
    write_text(_page("scgpt-bench: run provenance", body), out_html)
    return runs
