"""What a finished run produced, in a few lines: printed when the workflow ends (Snakefile).

Snakemake's own last line ("116 of 116 steps (100%) done") says nothing about the results;
this says where the tables, the ledger and the report are, which rows failed or are partial
and why, which are budget-limited, and the ledger's verdict counts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from benchmark.claims import verdict_counts

#: Failed or partial rows listed one by one up to this many (then a count).
MAX_LISTED = 12


def run_summary(
    results_dir: str | os.PathLike[str], tasks: Sequence[str], *, ok: bool = True
) -> str:
    """The end-of-run summary of the tables and ledger under ``results_dir``.

    Parameters
    ----------
    results_dir
        The run's ``results_dir``.
    tasks
        The planned tasks (their tables are ``<results_dir>/tables/<task>.{md,csv}``).
    ok
        Whether the workflow finished without an error (the headline says which).
    """
    results = Path(results_dir)
    lines = [
        "",
        "=" * 72,
        "scgpt-bench: " + ("run finished" if ok else "run stopped with an error"),
    ]
    written = [t for t in tasks if (results / "tables" / f"{t}.csv").exists()]
    missing = [t for t in tasks if t not in written]
    if written:
        lines.append(
            f"Tables ({len(written)}): {results}/tables/<task>.md for " + ", ".join(written)
        )
    if missing:
        lines.append(f"Tables not written: {', '.join(missing)}")
    problems, budget = [], []
    for task in written:
        table = pd.read_csv(results / "tables" / f"{task}.csv")
        for _, row in table.iterrows():
            name = f"{task}/{row['dataset']}/{row['method']}"
            if row.get("status", "ok") != "ok":
                error = row.get("error")
                reason = (
                    str(error).splitlines()[0][:120]
                    if isinstance(error, str)
                    else "no error recorded"
                )
                problems.append(f"  {name}: {row['status']}: {reason}")
            if isinstance(row.get("budget_limited"), str):
                budget.append(name)
    if problems:
        lines.append(f"Failed or partial rows ({len(problems)}):")
        lines += problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            lines.append(
                f"  ... and {len(problems) - MAX_LISTED} more (see the tables' status column)"
            )
    elif written:
        lines.append("Failed or partial rows: none")
    if budget:
        lines.append(f"Budget-limited rows (no claim verdict drawn from them): {len(budget)}")
    ledger = results / "claims.csv"
    if ledger.exists():
        counts = verdict_counts(pd.read_csv(ledger))
        text = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no claims"
        lines.append(f"Claim ledger: {results}/claims.md ({text})")
    else:
        lines.append("Claim ledger: not written")
    report = results / "report" / "report.html"
    if report.exists():
        lines.append(f"Report: {report}")
    else:
        lines.append("Report: `make report` (or bash scripts/report.sh) writes " + str(report))
    lines.append("=" * 72)
    return "\n".join(lines)


def print_summary(
    results_dir: str | os.PathLike[str],
    tasks: Sequence[str],
    *,
    ok: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Print :func:`run_summary`; never raises (a summary must not hide the run's own error)."""
    try:
        text = run_summary(results_dir, tasks, ok=ok)
    # Any error: the run's own outcome matters more than its summary.
    except Exception as err:
        text = f"scgpt-bench: no summary ({type(err).__name__}: {err})"
    print(text, file=stream or sys.stderr)
