"""Report pages: measured beside published values, and the provenance of every run."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from benchmark.report import comparison_rows, write_paper_comparison, write_provenance


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ["ms", "sim_celltypes"],
            "method": ["scgpt", "scgpt"],
            "label": ["scGPT", "scGPT"],
            "status": ["ok", "partial"],
            "accuracy": [0.80, 0.95],
            "accuracy_se": [0.01, math.nan],
        }
    )


def test_same_dataset_difference_and_paper_values_elsewhere():
    paper = pd.DataFrame(
        {
            "dataset": ["ms", "hpancreas"],
            "method": ["scGPT", "scGPT"],
            "accuracy": [0.856, 0.968],
            "source": ["Table S1", "Table S1"],
        }
    )
    rows = comparison_rows(_table(), ["accuracy"], paper).set_index("dataset")
    assert rows.loc["ms", "paper_same_dataset"] == pytest.approx(0.856)
    assert rows.loc["ms", "difference"] == pytest.approx(0.80 - 0.856)
    assert rows.loc["ms", "paper_elsewhere"] == "hpancreas 0.968"
    assert math.isnan(rows.loc["sim_celltypes", "paper_same_dataset"])
    assert rows.loc["sim_celltypes", "paper_elsewhere"] == "ms 0.856, hpancreas 0.968"
    assert rows.loc["ms", "source"] == "Table S1"


def test_comparison_page_names_source_and_colours_the_difference(tmp_path):
    csv = tmp_path / "annotation.csv"
    _table().to_csv(csv, index=False)
    rows = write_paper_comparison({"annotation": csv}, tmp_path / "c.html")
    page = (tmp_path / "c.html").read_text()
    # The paper's MS value (benchmark/paper/annotation.csv) and its source are on the page.
    ms = rows[(rows["dataset"] == "ms") & (rows["metric"] == "accuracy")].iloc[0]
    assert f"{ms['paper_same_dataset']:.3f}" in page
    assert "Table S1" in page and "benchmark/paper/annotation.csv" in page
    assert "class='num far'" in page  # 0.800 vs the paper's 0.856 differs by more than 0.05
    assert "(partial)" in page


def test_provenance_lists_failures_warnings_and_versions(tmp_path):
    runs = []
    for seed, status in enumerate(["ok", "failed"]):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        record = {
            "task": "annotation",
            "dataset": "d",
            "method": "m",
            "seed": seed,
            "status": status,
            "error": None if status == "ok" else "killed by SIGKILL (signal 9)",
            "warnings": ["scgpt: only 2% of genes in the vocabulary"] if status == "ok" else [],
            "wall_seconds": 1.5,
            "peak_memory_mb": 100.0,
            "device": "cpu (1 threads)",
            "versions": {"torch": "2.13.0", "numpy": "2.2.0" if seed else "2.1.0"},
        }
        (folder / "run.json").write_text(json.dumps(record))
        runs.append(folder / "run.json")
    write_provenance(runs, tmp_path / "p.html")
    page = (tmp_path / "p.html").read_text()
    assert "killed by SIGKILL" in page and "only 2% of genes" in page
    assert "2.1.0, 2.2.0 <b>(differs between runs)</b>" in page
    assert "seeds [0, 1]" in page and "1 failed" in page
