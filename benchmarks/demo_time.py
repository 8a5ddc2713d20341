"""Where a finished workflow run's time went, from its ``run.json`` records and Snakemake log.

Usage (after ``make demo`` in a clean clone, from its root)::

    .venv/bin/python benchmarks/demo_time.py --results results --log .snakemake/log/<run>.log \
        --out benchmarks/results/demo_time.md

Every ``run_method`` job writes ``run.json`` with ``process_seconds`` (the job's child process,
imports included), ``wall_seconds`` (from the method's start of work to its records), its
``stage_seconds`` (load, prepare, setup, method, save, score) and ``method_seconds``. This
script sums them per task and per method and lists the slowest runs, so that the demo's
budget is spent where it is seen to be spent. The run's wall time, when ``--log`` is given,
is the span between the Snakemake log's first and last timestamps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.io import write_text  # noqa: E402

STAGES = ("load", "prepare", "setup", "method", "save", "score")
_TIMESTAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]")


def read_runs(results: Path) -> list[dict[str, Any]]:
    """Every ``run.json`` under ``results`` (task/dataset/method/seed folders)."""
    runs = []
    for path in sorted(results.glob("*/*/*/seed*/run.json")):
        record = json.loads(path.read_text())
        record["_path"] = str(path.relative_to(results))
        runs.append(record)
    if not runs:
        raise FileNotFoundError(f"no run.json under {results}/<task>/<dataset>/<method>/seed*/")
    return runs


def log_span_seconds(log: Path) -> float:
    """Seconds between the first and last ``[Mon Dec  7 05:26:19 2026]`` stamps of a log."""
    stamps = [
        dt.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        for line in log.read_text().splitlines()
        if (m := _TIMESTAMP.match(line))
    ]
    if len(stamps) < 2:
        raise ValueError(f"{log}: fewer than two Snakemake timestamps ([Mon Dec  7 ...])")
    return (max(stamps) - min(stamps)).total_seconds()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per task (process, outside the process' run_method, each stage) and per method."""
    by_task: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for run in runs:
        row = by_task[run["task"]]
        row["runs"] += 1
        process = run.get("process_seconds", run.get("wall_seconds", 0.0))
        row["process"] += process
        row["start-up"] += max(process - run.get("wall_seconds", 0.0), 0.0)
        for stage in STAGES:
            row[stage] += run.get("stage_seconds", {}).get(stage, 0.0)
    slowest = sorted(
        runs, key=lambda r: r.get("process_seconds", r.get("wall_seconds", 0)), reverse=True
    )
    return {"by_task": by_task, "slowest": slowest[:15]}


def render(summary: dict[str, Any], span: float | None, command: str) -> str:
    columns = ("runs", "process", "start-up", *STAGES)
    total: dict[str, float] = defaultdict(float)
    lines = [
        "# Where the demo's time goes",
        "",
        f"Written by `{command}`. Seconds of one core unless a method uses two; summed over "
        "every `run_method` job (`process` = the job's child process from start to exit, "
        "`start-up` = its imports before `run_method`, the stages after it).",
        "",
    ]
    if span is not None:
        lines += [
            f"Workflow wall time (first to last Snakemake log stamp): **{span / 60:.1f} min**.",
            "",
        ]
    lines += ["| task | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for task, row in sorted(summary["by_task"].items(), key=lambda kv: -kv[1]["process"]):
        for c in columns:
            total[c] += row[c]
        lines.append(
            f"| {task} | "
            + " | ".join(f"{row[c]:.0f}" if c == "runs" else f"{row[c]:.1f}" for c in columns)
            + " |"
        )
    lines.append(
        "| **all** | "
        + " | ".join(f"{total[c]:.0f}" if c == "runs" else f"{total[c]:.1f}" for c in columns)
        + " |"
    )
    outside = total["process"] - total["method"]
    if total["process"]:
        lines += [
            "",
            f"Outside the methods: {outside:.0f} s of {total['process']:.0f} s "
            f"({100 * outside / total['process']:.0f}%).",
        ]
    lines += [
        "",
        "## Slowest runs",
        "",
        "| run | process s | method s | score s |",
        "|---|---|---|---|",
    ]
    for run in summary["slowest"]:
        stages = run.get("stage_seconds", {})
        lines.append(
            f"| {run['_path'].removesuffix('/run.json')} | "
            f"{run.get('process_seconds', float('nan')):.1f} | "
            f"{run.get('method_seconds', float('nan')):.1f} | {stages.get('score', float('nan')):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--log", type=Path, help="the run's .snakemake/log/*.snakemake.log")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_time.md")
    args = parser.parse_args(argv)
    summary = summarise(read_runs(args.results))
    span = log_span_seconds(args.log) if args.log else None
    command = "benchmarks/demo_time.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text(render(summary, span, command.strip()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
