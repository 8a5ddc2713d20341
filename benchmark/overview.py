"""The report's landing page and task pages, built from the task tables and the claim ledger.

- :func:`write_overview`: the claim ledger first (verdicts coloured), then per task one heat
  map (:func:`benchmark.plots.overview.task_heatmap`) and, where the paper reports the same
  dataset, a measured-vs-published scatter. Also a body-only fragment that the Snakemake
  report's landing page includes (``workflow/report/workflow.rst``).
- :func:`write_task_page`: one task's compact table (one row per dataset and method, metrics
  as columns, the paper's value and the difference under each measured value, coloured), its
  heat map and scatter.

Figures are embedded as PNG data (no side files), so each page stands alone and the report
holds one copy.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from benchmark.claims import VERDICTS, verdict_counts
from benchmark.io import write_text
from benchmark.plots.overview import heatmap_metrics, paper_scatter, task_heatmap
from benchmark.report import CLOSE, FAR, _difference_class, _number, _page
from benchmark.tables import BUDGET_MARK

VERDICT_CLASS = dict(zip(VERDICTS, ("v-rep", "v-dir", "v-not", "v-nc"), strict=True))

_STYLE = """
<style>
.v-rep { background: #1b7f3b; color: white; } .v-dir { background: #b7e1b7; }
.v-not { background: #f2b8b8; } .v-nc { background: #e6e6e6; color: #444; }
.verdict { padding: 0.1em 0.45em; border-radius: 0.3em; white-space: nowrap; font-weight: 600; }
td.why { font-size: 0.85em; color: #333; max-width: 26em; }
table { font-size: 0.88em; } table.glance td { vertical-align: top; }
td .paper { display: block; font-size: 0.8em; color: #333; }
img.fig { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
.prose.max-w-lg, .prose { max-width: none !important; }
/* Snakemake's report centres its page vertically: a page taller than the window would open
   in its middle with the top out of reach. Start it at the top. */
div.h-screen.items-center:has(#claim-ledger) { align-items: flex-start !important; }
</style>
"""


def _image(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img class='fig' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def ledger_html(ledger: pd.DataFrame) -> str:
    """The ledger as an HTML table: verdict first, coloured, with the reason and the numbers."""
    lines = [
        "<table><tr><th>verdict</th><th>claim</th><th>source</th><th>data</th>"
        "<th>measured</th><th>published</th><th>why</th></tr>",
    ]
    for _, row in ledger.iterrows():
        verdict = str(row["verdict"])
        data = _text(row["dataset"]) + (
            f" <i>({_text(row['data'])})</i>" if _text(row["data"]) else ""
        )
        measured = (
            f"{_text(row['metric'])}: {_text(row['measured'])}" if _text(row["measured"]) else "—"
        )
        lines.append(
            f"<tr><td><span class='verdict {VERDICT_CLASS.get(verdict, '')}'>{html.escape(verdict)}</span></td>"
            f"<td>{_text(row['claim'])}</td><td>{_text(row['source'])}</td><td>{data}</td>"
            f"<td>{measured}</td><td class='why'>{_text(row['published'])}</td>"
            f"<td class='why'>{_text(row['why'])}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def counts_html(ledger: pd.DataFrame) -> str:
    """The verdict counts as coloured badges."""
    counts = " · ".join(
        f"<span class='verdict {VERDICT_CLASS[v]}'>{v}</span> {n}"
        for v, n in verdict_counts(ledger).items()
    )
    return f"<p>{counts} <span class='note'>((claim, dataset) rows)</span></p>"


def glance_html(ledger: pd.DataFrame) -> str:
    """One line per claim: its source and its verdict on each dataset (the one-minute view)."""
    lines = [
        "<table class='glance'><tr><th>claim</th><th>source</th><th>verdict (dataset)</th></tr>"
    ]
    for _, rows in ledger.groupby("id", sort=False):
        first = rows.iloc[0]
        verdicts = " ".join(
            f"<span class='verdict {VERDICT_CLASS.get(str(r['verdict']), '')}'>{_text(r['verdict'])}</span>"
            + ("" if r["dataset"] == "—" else f" <small>{_text(r['dataset'])}</small>")
            for _, r in rows.iterrows()
        )
        lines.append(
            f"<tr><td>{_text(first['claim'])}</td><td>{_text(first['source'])}</td><td>{verdicts}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _text(value: object) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else html.escape(str(value))
    )


def compact_table_html(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """One row per (dataset, method); per metric the measured mean ± SE, the paper's value and Δ.

    Δ = measured - paper, coloured green within ``CLOSE``, yellow within ``FAR``, red beyond
    (:mod:`benchmark.report`'s thresholds). Failed and partial rows show their status and
    first error; budget-limited rows carry ``†`` and their reason.
    """
    columns = [m for m in metrics if m in table]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in columns)
    lines = [f"<table><tr><th>dataset</th><th>method</th><th>seeds</th>{head}<th>status</th></tr>"]
    for _, row in table.iterrows():
        cells = []
        for metric in columns:
            measured = _number(row[metric], row.get(f"{metric}_se", math.nan))
            paper = row.get(f"{metric}_paper", math.nan)
            if pd.isna(paper) or pd.isna(row[metric]):
                cells.append(f"<td class='num'>{measured}</td>")
                continue
            diff = float(row[metric]) - float(paper)
            cells.append(
                f"<td class='num {_difference_class(diff)}'>{measured}"
                f"<span class='paper'>paper {float(paper):.3f}, Δ {diff:+.3f}</span></td>"
            )
        status = _text(row.get("status", "ok"))
        if status != "ok" and _text(row.get("error")):
            status += (
                f": <span class='failed'>{_text(str(row['error']).splitlines()[0][:160])}</span>"
            )
        label = _text(row["label"])
        if isinstance(row.get("budget_limited"), str):
            label += f" {BUDGET_MARK}"
            status += (
                f"<br><span class='note'>budget-limited: {_text(row['budget_limited'])}</span>"
            )
        lines.append(
            f"<tr><td>{_text(row['dataset'])}</td><td>{label}</td><td class='num'>{row.get('n_seeds', '')}</td>"
            + "".join(cells)
            + f"<td>{status}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _figures(task: str, table: pd.DataFrame, metrics: Sequence[str], folder: Path) -> str:
    heat = task_heatmap(table, metrics, folder / f"{task}_heat.png", title=task)
    scatter = paper_scatter(
        table, metrics, folder / f"{task}_scatter.png", title=f"{task}: measured vs published"
    )
    parts = [_image(heat, f"{task} heat map"), _image(scatter, f"{task} measured vs published")]
    if heat is None:
        parts.append("<p class='note'>No metric of this task has a value in this run.</p>")
    return "\n".join(p for p in parts if p)


_HEAT_NOTE = (
    "<p class='note'>Heat maps: each metric coloured on its own scale within the dataset (darker "
    "= better; lower-is-better metrics flipped), the aggregate bar is the mean of those scaled "
    f"scores; hatched: failed (reason below the figure); {BUDGET_MARK}: budget-limited.</p>"
)


def write_task_page(
    task: str,
    table_csv: str | os.PathLike[str],
    metrics: Sequence[str],
    out_html: str | os.PathLike[str],
) -> None:
    """Write one task's page (module docstring)."""
    table = pd.read_csv(table_csv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = _figures(task, table, metrics, Path(tmp))
    body = [
        _STYLE,
        f"<p class='note'>Measured mean ± SE over seeds; under it the paper's value for the same "
        f"dataset and method and Δ = measured - paper (green |Δ| ≤ {CLOSE}, yellow ≤ {FAR}, red "
        "above). The Markdown table (results/tables) keeps plain values.</p>",
        compact_table_html(table, metrics),
        _HEAT_NOTE,
        figures,
    ]
    write_text(_page(f"scgpt-bench: {task}", body), out_html)


def write_overview(
    tables: Mapping[str, str | os.PathLike[str]],
    metrics: Mapping[str, Sequence[str]],
    ledger_csv: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    fragment_html: str | os.PathLike[str] | None = None,
) -> None:
    """Write the landing page: the ledger, then each task's heat map (and scatter).

    Parameters
    ----------
    tables
        Task -> its table CSV.
    metrics
        Task -> its headline metrics.
    ledger_csv
        The claim ledger (:func:`benchmark.claims.write_ledger`).
    out_html
        The standalone page.
    fragment_html
        The same content without ``<html>`` (for the Snakemake report's landing page).
    """
    ledger = pd.read_csv(ledger_csv)
    body = [
        _STYLE,
        "<h2 id='claim-ledger'>Claim ledger</h2>",
        "<p class='note'>Each claim of the paper (and its critics) that the suite tests, judged by "
        "the rule in benchmark/claims.py: reproduced (paper's data, numbers within tolerance), "
        "direction holds, not reproduced (tie or reversed), not comparable (why). Short-budget "
        "rows never carry a verdict.</p>",
        counts_html(ledger),
        glance_html(ledger),
        "<h3>Every claim and dataset, with the numbers and the reason</h3>",
        ledger_html(ledger),
        "<h2>Tasks</h2>",
        _HEAT_NOTE,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for task, csv in tables.items():
            table = pd.read_csv(csv)
            if not heatmap_metrics(table, metrics[task]):
                body.append(
                    f"<h3>{html.escape(task)}</h3><p class='note'>No values in this run.</p>"
                )
                continue
            body += [
                f"<h3>{html.escape(task)}</h3>",
                _figures(task, table, metrics[task], Path(tmp)),
            ]
    write_text(_page("scgpt-bench: does the paper reproduce?", body), out_html)
    if fragment_html is not None:
        write_text("\n".join(body) + "\n", fragment_html)
