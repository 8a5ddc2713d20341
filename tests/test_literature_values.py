"""Other studies' published values (benchmark/paper/literature.csv) beside the suite's."""

from __future__ import annotations

import math

import pandas as pd

from benchmark.tables import literature_markdown, literature_values, paper_values
from benchmark.tasks import get_task


def test_every_value_has_a_source_and_a_known_column() -> None:
    table = paper_values("literature.csv")
    assert {"perturbation", "annotation"} <= set(table["task"])
    assert table["source"].notna().all() and table["setting"].notna().all()
    assert ((table["value"] >= 0) & (table["value"] <= 1)).all()
    for _, row in table.iterrows():
        if isinstance(row["ours"], str):
            task = get_task(row["task"])
            assert row["ours"] in (*task.metrics, *task.breakdown), row.to_dict()
    # the numbers, spot-checked
    csendes = table[(table["dataset"] == "norman") & (table["method"] == "scGPT")]
    assert 0.554 in csendes["value"].tolist() and 0.710 in csendes["value"].tolist()
    boiarsky = literature_values("annotation", ["ms"])
    assert sorted(boiarsky["value"]) == [0.642, 0.72, 0.812, 0.859]


def test_markdown_puts_ours_beside_the_published_value() -> None:
    lit = literature_values("perturbation", ["norman"])
    ours = pd.DataFrame(
        {"dataset": ["norman"], "label": ["scGPT"], "pearson_delta": [0.5], "rank_double": [0.1]}
    )
    lines = literature_markdown(lit, ours)
    row = next(line for line in lines if "| scGPT | pearson_delta | 0.554 |" in line)
    assert "| 0.500 |" in row
    forest = next(line for line in lines if "random forest" in line)
    assert "| — |" in forest  # a method the suite does not run
    assert literature_markdown(literature_values("perturbation", ["sim_perturb"]), ours) == []
    assert not math.isnan(lit["value"].sum())
