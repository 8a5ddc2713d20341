"""The end-of-run summary, and the budget-limited marks of the task tables."""

from __future__ import annotations

import json

import pandas as pd

from benchmark.summary import MAX_LISTED, print_summary, run_summary
from benchmark.tables import write_task_table


def _write(results, task: str, rows: list[dict]) -> None:
    (results / "tables").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results / "tables" / f"{task}.csv", index=False)


def test_summary_names_tables_failures_budget_rows_and_verdicts(tmp_path):
    _write(
        tmp_path,
        "annotation",
        [
            {
                "dataset": "d",
                "method": "scgpt",
                "status": "failed",
                "error": "CUDA out of memory\ntrace",
            },
            {"dataset": "d", "method": "tosica", "status": "partial", "error": "seed 1: NaN loss"},
            {
                "dataset": "d",
                "method": "logreg",
                "status": "ok",
                "error": None,
                "budget_limited": "2 epochs",
            },
        ],
    )
    ledger = pd.DataFrame({"verdict": ["direction holds", "not comparable", "not comparable"]})
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    text = run_summary(tmp_path, ["annotation", "grn"], ok=False)
    assert "run stopped with an error" in text
    assert "for annotation" in text and "Tables not written: grn" in text
    assert "annotation/d/scgpt: failed: CUDA out of memory" in text and "trace" not in text
    assert "annotation/d/tosica: partial: seed 1: NaN loss" in text
    assert "Budget-limited rows (no claim verdict drawn from them): 1" in text
    assert "(1 direction holds, 2 not comparable)" in text
    assert "make report" in text


def test_summary_lists_a_bounded_number_of_failures(tmp_path):
    rows = [
        {"dataset": f"d{i}", "method": "m", "status": "failed", "error": "x"}
        for i in range(MAX_LISTED + 3)
    ]
    _write(tmp_path, "grn", rows)
    text = run_summary(tmp_path, ["grn"])
    assert f"Failed or partial rows ({MAX_LISTED + 3}):" in text and "... and 3 more" in text
    assert "Claim ledger: not written" in text


def test_print_summary_never_raises(tmp_path, capsys):
    (tmp_path / "claims.csv").write_text("not_verdict\n1\n")  # no verdict column: KeyError
    print_summary(tmp_path, ["grn"])
    assert "scgpt-bench: no summary (KeyError" in capsys.readouterr().err


def test_budget_limited_rows_are_marked_in_the_table(tmp_path):
    runs = []
    for method in ("scgpt", "logreg"):
        folder = tmp_path / method
        folder.mkdir()
        run = {
            "task": "annotation",
            "dataset": "d",
            "method": method,
            "label": method,
            "seed": 0,
            "status": "ok",
        }
        (folder / "run.json").write_text(
            json.dumps({**run, "wall_seconds": 1.0, "peak_memory_mb": 1.0})
        )
        (folder / "scores.json").write_text(json.dumps({"accuracy": 0.5}))
        runs.append(folder / "run.json")
    table = write_task_table(
        runs,
        ["accuracy"],
        tmp_path / "t.csv",
        tmp_path / "t.md",
        title="t",
        budget_limited={"scgpt": "2 epochs"},
    )
    assert table.set_index("method").loc["scgpt", "budget_limited"] == "2 epochs"
    assert pd.isna(table.set_index("method").loc["logreg", "budget_limited"])
    md = (tmp_path / "t.md").read_text()
    assert "| scgpt † |" in md and "| logreg |" in md
    assert "† scgpt: budget-limited (2 epochs); no claim verdict is drawn from these rows." in md
