"""The report's landing page, task pages and their figures, on hand-made tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.overview import compact_table_html, write_overview, write_task_page
from benchmark.plots.overview import paper_scatter, scaled_scores, task_heatmap


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ["ms", "ms", "ms", "sim"],
            "method": ["scgpt", "tosica", "scbert", "scgpt"],
            "label": ["scGPT", "TOSICA", "scBERT", "scGPT"],
            "n_seeds": [3, 3, 0, 1],
            "status": ["ok", "partial", "failed", "ok"],
            "error": [None, "seed 2: NaN loss", "CUDA out of memory", None],
            "budget_limited": ["2 epochs", None, None, "2 epochs"],
            "accuracy": [0.80, 0.70, math.nan, 0.9],
            "accuracy_se": [0.01, 0.02, math.nan, math.nan],
            "accuracy_paper": [0.856, 0.758, 0.785, math.nan],
            "mse": [0.1, 0.3, math.nan, 0.2],
            "mse_se": [math.nan] * 4,
        }
    )


def test_scaled_scores_flip_lower_is_better_and_keep_missing():
    scores = scaled_scores(pd.DataFrame({"accuracy": [0.5, 1.0, math.nan], "mse": [0.1, 0.3, 0.2]}))
    assert scores["accuracy"].tolist()[:2] == [0.0, 1.0] and math.isnan(scores["accuracy"][2])
    assert scores["mse"].tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_heatmap_and_scatter_are_drawn_or_refused(tmp_path):
    table = _table()
    assert (
        task_heatmap(table, ["accuracy", "mse"], tmp_path / "h.png", title="t").stat().st_size
        > 1000
    )
    assert task_heatmap(table, ["n_programs", "absent"], tmp_path / "none.png", title="t") is None
    assert paper_scatter(table, ["accuracy"], tmp_path / "s.png", title="t").exists()
    no_paper = table.assign(accuracy_paper=math.nan)
    assert paper_scatter(no_paper, ["accuracy"], tmp_path / "s2.png", title="t") is None
    assert not (tmp_path / "s2.png").exists()


def test_compact_table_colours_the_difference_and_marks_rows():
    page = compact_table_html(_table(), ["accuracy", "mse"])
    assert "class='num far'>0.800 ± 0.010<span class='paper'>paper 0.856, Δ -0.056" in page
    assert "class='num mid'>0.700 ± 0.020<span class='paper'>paper 0.758, Δ -0.058" not in page
    assert "partial: <span class='failed'>seed 2: NaN loss" in page
    assert "failed: <span class='failed'>CUDA out of memory" in page
    assert "scGPT †" in page and "budget-limited: 2 epochs" in page
    assert page.count("<tr>") == 5  # header + one row per (dataset, method)


def test_overview_opens_on_the_ledger_and_embeds_the_figures(tmp_path):
    csv = tmp_path / "annotation.csv"
    _table().to_csv(csv, index=False)
    ledger = pd.DataFrame(
        {
            "id": ["a", "a"], "claim": ["scGPT beats TOSICA"] * 2, "source": ["Fig. 2"] * 2,
            "by": ["paper"] * 2, "published": ["0.703 vs 0.578"] * 2, "dataset": ["ms", "sim"],
            "data": ["paper data", "simulated"], "metric": ["accuracy"] * 2,
            "measured": ["scGPT 0.8", ""], "verdict": ["direction holds", "not comparable"],
            "why": ["+0.1", "budget-limited"], "rule": ["beats"] * 2,
        }
    )  # fmt: skip
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    write_overview({"annotation": csv}, {"annotation": ["accuracy"]}, tmp_path / "claims.csv",
                   tmp_path / "o.html", tmp_path / "f.html")  # fmt: skip
    page = (tmp_path / "o.html").read_text()
    assert page.index("Claim ledger") < page.index("<h3>annotation</h3>")
    assert "<span class='verdict v-dir'>direction holds</span>" in page
    assert page.count("data:image/png;base64,") == 2  # heat map and scatter
    fragment = (tmp_path / "f.html").read_text()
    assert "<html" not in fragment and "id='claim-ledger'" in fragment
    write_task_page("annotation", csv, ["accuracy"], tmp_path / "t.html")
    assert "paper 0.856" in (tmp_path / "t.html").read_text()
