"""The claim ledger's verdict rules on hand-made numbers, the claims file and the README block."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.claims import (
    VERDICTS,
    Claim,
    Settings,
    build_ledger,
    judge_beats,
    judge_increases,
    load_claims,
    verdict_counts,
)
from benchmark.claims_text import ledger_markdown, readme_block, replace_readme_block
from benchmark.tables import paper_values
from benchmark.workflow import ConfigError, WorkflowPlan

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(tolerance=0.02, single_seed_margin=0.07, agree=0.05)
CLAIM = Claim(
    id="c",
    claim="scGPT beats TOSICA and scBERT",
    source="Fig. 2",
    by="paper",
    published="MS 0.703 / 0.578 / 0.599",
    rule="beats",
    task="annotation",
    metric="macro_f1",
    better="scgpt",
    than=("tosica", "scbert"),
)
LABELS = {"scgpt": "scGPT", "tosica": "TOSICA", "scbert": "scBERT", "logreg": "Logistic regression"}


def _table(dataset: str, values: dict[str, tuple], **extra: dict) -> pd.DataFrame:
    """Rows of ``method: (mean, se, n_seeds[, status])``; ``extra``: column -> {method: v}."""
    rows = []
    for method, spec in values.items():
        mean, se, n = spec[:3]
        row = {
            "dataset": dataset,
            "method": method,
            "label": LABELS.get(method, method),
            "n_seeds": n,
            "status": spec[3] if len(spec) > 3 else "ok",
            "error": "CUDA out of memory" if len(spec) > 3 and spec[3] == "failed" else None,
            "macro_f1": mean,
            "macro_f1_se": se,
        }
        for column, by_method in extra.items():
            row[column] = by_method.get(method)
        rows.append(row)
    return pd.DataFrame(rows)


def _one(rows: list[dict]) -> dict:
    assert len(rows) == 1, rows
    return rows[0]


PAPER = paper_values("annotation.csv")


def test_reproduced_on_the_paper_dataset_with_published_numbers():
    # MS: published scGPT 0.703, TOSICA 0.578, scBERT 0.599; 3 seeds, small SEs.
    table = _table(
        "ms", {"scgpt": (0.71, 0.005, 3), "tosica": (0.57, 0.01, 3), "scbert": (0.61, 0.01, 3)}
    )
    row = _one(judge_beats(CLAIM, table, SETTINGS, paper=PAPER, data_kinds={"ms": "paper data"}))
    assert row["verdict"] == "reproduced"
    assert row["data"] == "paper data"
    assert "scGPT 0.710 ± 0.005 (3 seeds)" in row["measured"]


def test_direction_holds_when_numbers_differ_from_the_paper():
    table = _table(
        "ms", {"scgpt": (0.90, 0.005, 3), "tosica": (0.57, 0.01, 3), "scbert": (0.61, 0.01, 3)}
    )
    row = _one(judge_beats(CLAIM, table, SETTINGS, paper=PAPER))
    assert row["verdict"] == "direction holds"
    assert "scGPT 0.900 vs 0.703" in row["why"]


def test_direction_holds_on_other_data_never_reproduced():
    table = _table(
        "sim", {"scgpt": (0.703, 0.005, 3), "tosica": (0.578, 0.01, 3), "scbert": (0.599, 0.01, 3)}
    )
    assert _one(judge_beats(CLAIM, table, SETTINGS, paper=PAPER))["verdict"] == "direction holds"


def test_not_reproduced_when_reversed_or_tied():
    reversed_ = _table(
        "sim", {"scgpt": (0.5, 0.01, 3), "tosica": (0.7, 0.01, 3), "scbert": (0.4, 0.01, 3)}
    )
    row = _one(judge_beats(CLAIM, reversed_, SETTINGS))
    assert row["verdict"] == "not reproduced" and "reversed: scGPT - TOSICA" in row["why"]
    tied = _table(
        "sim", {"scgpt": (0.60, 0.01, 3), "tosica": (0.59, 0.01, 3), "scbert": (0.4, 0.01, 3)}
    )
    row = _one(judge_beats(CLAIM, tied, SETTINGS))
    assert row["verdict"] == "not reproduced" and "tie: scGPT - TOSICA = +0.010" in row["why"]


def test_one_seed_needs_the_single_seed_margin_several_seeds_their_se():
    one = _table(
        "sim",
        {"scgpt": (0.65, math.nan, 1), "tosica": (0.60, math.nan, 1), "scbert": (0.5, math.nan, 1)},
    )
    row = _one(judge_beats(CLAIM, one, SETTINGS))
    assert row["verdict"] == "not reproduced" and "margin 0.070" in row["why"]
    three = _table(
        "sim", {"scgpt": (0.65, 0.005, 3), "tosica": (0.60, 0.005, 3), "scbert": (0.5, 0.005, 3)}
    )
    assert _one(judge_beats(CLAIM, three, SETTINGS))["verdict"] == "direction holds"
    # Wide SEs widen the margin: 2 x hypot(0.03, 0.03) = 0.085 > 0.05.
    wide = _table(
        "sim", {"scgpt": (0.65, 0.03, 3), "tosica": (0.60, 0.03, 3), "scbert": (0.5, 0.03, 3)}
    )
    assert _one(judge_beats(CLAIM, wide, SETTINGS))["verdict"] == "not reproduced"


def test_missing_values_are_not_comparable():
    undefined = _table(
        "sim",
        {
            "scgpt": (math.nan, math.nan, 1),
            "tosica": (0.6, math.nan, 1),
            "scbert": (0.5, math.nan, 1),
        },
        undefined={"scgpt": "macro_f1: one cell type"},
    )
    row = _one(judge_beats(CLAIM, undefined, SETTINGS))
    assert (
        row["verdict"] == "not comparable"
        and "macro_f1 undefined (macro_f1: one cell type)" in row["why"]
    )
    absent = _table("sim", {"tosica": (0.6, math.nan, 1)})
    row = _one(judge_beats(CLAIM, absent, SETTINGS))
    assert row["verdict"] == "not comparable" and "scgpt not run" in row["why"]
    alone = _table("sim", {"scgpt": (0.7, math.nan, 1)})
    row = _one(judge_beats(CLAIM, alone, SETTINGS))
    assert row["verdict"] == "not comparable" and "none of tosica, scbert run on sim" in row["why"]
    row = _one(judge_beats(CLAIM, None, SETTINGS))
    assert row["verdict"] == "not comparable" and "no annotation table" in row["why"]


def test_failed_runs_are_not_comparable_but_a_clear_loss_elsewhere_still_counts():
    failed = _table(
        "sim",
        {
            "scgpt": (math.nan, math.nan, 0, "failed"),
            "tosica": (0.6, math.nan, 1),
            "scbert": (0.5, math.nan, 1),
        },
    )
    row = _one(judge_beats(CLAIM, failed, SETTINGS))
    assert row["verdict"] == "not comparable" and "scGPT failed (CUDA out of memory)" in row["why"]
    # One baseline failed, the other clearly beats scGPT: evidence against the claim stands.
    mixed = _table(
        "sim",
        {
            "scgpt": (0.4, math.nan, 1),
            "tosica": (0.6, math.nan, 1),
            "scbert": (math.nan, math.nan, 0, "failed"),
        },
    )
    row = _one(judge_beats(CLAIM, mixed, SETTINGS))
    assert row["verdict"] == "not reproduced" and "not comparable: scBERT failed" in row["why"]


def test_partial_runs_are_used_and_flagged():
    partial = _table(
        "sim",
        {
            "scgpt": (0.8, math.nan, 1, "partial"),
            "tosica": (0.6, math.nan, 1),
            "scbert": (0.5, math.nan, 1),
        },
    )
    row = _one(judge_beats(CLAIM, partial, SETTINGS))
    assert (
        row["verdict"] == "direction holds"
        and "partial" in row["why"]
        and "partial" in row["measured"]
    )


def test_budget_limited_rows_never_carry_a_verdict():
    table = _table(
        "sim", {"scgpt": (0.9, 0.001, 3), "tosica": (0.3, 0.001, 3), "scbert": (0.2, 0.001, 3)}
    )
    row = _one(judge_beats(CLAIM, table, SETTINGS, budget_limited={"scgpt": "2 epochs"}))
    assert row["verdict"] == "not comparable" and "budget-limited: scGPT (2 epochs)" in row["why"]
    # The table's own column (written by write_task_table) counts as well.
    marked = _table(
        "sim",
        {"scgpt": (0.9, 0.001, 3), "tosica": (0.3, 0.001, 3), "scbert": (0.2, 0.001, 3)},
        budget_limited={"tosica": "6 epochs"},
    )
    row = _one(judge_beats(CLAIM, marked, SETTINGS))
    assert row["verdict"] == "not comparable" and "budget-limited: TOSICA (6 epochs)" in row["why"]


def test_or_ties_lower_is_better_and_claim_numbers():
    claim = Claim(
        **{
            **CLAIM.__dict__,
            "better": "logreg",
            "than": ("scgpt",),
            "or_ties": True,
            "paper_numbers": {"ms": {"logreg": 0.642, "scgpt": 0.720}},
        }
    )
    tie = _table("ms", {"logreg": (0.65, 0.01, 3), "scgpt": (0.66, 0.01, 3)})
    row = _one(judge_beats(claim, tie, SETTINGS))
    assert row["verdict"] == "direction holds" and "0.660 vs 0.720" in row["why"]
    rank = Claim(
        **{**CLAIM.__dict__, "metric": "macro_f1", "than": ("tosica",), "higher_is_better": False}
    )
    table = _table("sim", {"scgpt": (3.0, math.nan, 1), "tosica": (100.0, math.nan, 1)})
    assert _one(judge_beats(rank, table, SETTINGS))["verdict"] == "direction holds"


def test_increases_over_corpus_sizes():
    claim = Claim(
        id="s",
        claim="more cells",
        source="S13",
        by="paper",
        published="-",
        rule="increases",
        task="transfer",
        metric="macro_f1",
        series="scaling",
        transfer_task="annotation",
    )

    def frame(means: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "series": "scaling", "model": [f"m{i}" for i in range(len(means))],
                "cells": [1000, 2500, 25000][: len(means)], "task": "annotation",
                "dataset": "sim", "metric": "macro_f1", "mean": means, "se": 0.005,
                "n_seeds": 3, "status": "ok",
            }
        )  # fmt: skip

    assert (
        _one(judge_increases(claim, frame([0.6, 0.7, 0.8]), SETTINGS))["verdict"]
        == "direction holds"
    )
    row = _one(judge_increases(claim, frame([0.8, 0.7, 0.82]), SETTINGS))
    assert row["verdict"] == "not reproduced" and "falls" in row["why"]
    assert _one(judge_increases(claim, None, SETTINGS))["verdict"] == "not comparable"


def test_claims_file_loads_and_names_known_tasks():
    from benchmark.tasks import available_tasks

    settings, claims = load_claims()
    assert settings.single_seed_margin == pytest.approx(0.07)
    assert len({c.id for c in claims}) == len(claims) >= 10
    assert {c.task for c in claims if c.rule == "beats"} <= set(available_tasks())
    assert any(c.by == "critic" for c in claims)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"rule": "wins"}, r"rule 'wins'; expected one of"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"than": []}, r"rule beats needs 'better' and a non-empty 'than'"),
    ],
)
def test_claims_file_errors_name_the_claim_and_key(tmp_path, edit, message):
    entry = {
        k: v
        for k, v in CLAIM.__dict__.items()
        if k in ("id", "claim", "source", "by", "published", "rule", "task", "metric", "better")
    }
    entry["than"] = ["tosica"]
    entry.update(edit)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [entry]}))
    with pytest.raises(ValueError, match=r"claims\[0\] \(c\): " + message):
        load_claims(path)
    path.write_text(yaml.safe_dump({"claims": [{**entry, **{"rule": "beats", "than": ["x"]}}] * 2}))
    if "colour" not in edit:
        with pytest.raises(ValueError, match=r"id 'c' given twice"):
            load_claims(path)


def test_ledger_from_tables_counts_and_markdown(tmp_path):
    csv = tmp_path / "annotation.csv"
    _table(
        "sim", {"scgpt": (0.9, 0.005, 3), "tosica": (0.5, 0.005, 3), "scbert": (0.5, 0.005, 3)}
    ).to_csv(csv, index=False)
    ledger = build_ledger({"annotation": csv}, claims=[CLAIM], settings=SETTINGS)
    counts = verdict_counts(ledger)
    assert list(counts) == list(VERDICTS) and counts["direction holds"] == 1
    text = ledger_markdown(ledger)
    assert "**direction holds**" in text and "Verdicts: reproduced: 0, direction holds: 1" in text


def test_budget_limited_config_names_methods_of_the_task():
    config = copy.deepcopy(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    config["tasks"]["annotation"]["budget_limited"] = {"scgtp": "typo"}
    with pytest.raises(
        ConfigError, match=r"tasks\.annotation\.budget_limited\.scgtp: not a method"
    ):
        WorkflowPlan.from_config(config)


def test_readme_block_is_the_committed_ledgers():
    """README.md's results table is generated from results/claims.csv (`python -m benchmark.claims_cli --readme`)."""
    ledger = pd.read_csv(ROOT / "results" / "claims.csv")
    readme = (ROOT / "README.md").read_text()
    block = readme_block(ledger)
    assert replace_readme_block(readme, block) == readme, (
        "README.md's claims block differs from results/claims.csv: run "
        "`.venv/bin/python -m benchmark.claims_cli --readme README.md`"
    )


def test_replace_readme_block_needs_the_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_readme_block("no markers here", "x")


def test_full_budget_rows_replace_the_short_budget_ones(tmp_path):
    short = _table(
        "sim", {"scgpt": (0.3, math.nan, 1), "tosica": (0.6, 0.01, 3), "scbert": (0.5, 0.01, 3)}
    )
    full = _table("sim", {"scgpt": (0.9, 0.005, 3)})
    short.to_csv(tmp_path / "annotation.csv", index=False)
    full.to_csv(tmp_path / "full.csv", index=False)
    limited = {"annotation": {"scgpt": "2 epochs"}}
    without = build_ledger({"annotation": tmp_path / "annotation.csv"}, claims=[CLAIM],
                           settings=SETTINGS, budget_limited=limited)  # fmt: skip
    assert without["verdict"].tolist() == ["not comparable"]
    ledger = build_ledger({"annotation": tmp_path / "annotation.csv"}, claims=[CLAIM], settings=SETTINGS,
                          budget_limited=limited, full_budget={"annotation": tmp_path / "full.csv"})  # fmt: skip
    assert ledger["verdict"].tolist() == ["direction holds"]
    assert "scGPT [full budget] 0.900 ± 0.005 (3 seeds)" in ledger["measured"].iloc[0]


def test_a_critics_numbers_come_from_the_literature_table():
    # Boiarsky et al. on MS (benchmark/paper/literature.csv): LR macro F1 0.642, scGPT 0.720.
    claim = Claim(**{**CLAIM.__dict__, "better": "logreg", "than": ("scgpt",), "or_ties": True,
                     "literature": "Boiarsky"})  # fmt: skip
    clear_loss = _table("ms", {"logreg": (0.65, 0.01, 3), "scgpt": (0.72, 0.01, 3)})
    row = _one(judge_beats(claim, clear_loss, SETTINGS, paper=PAPER))
    assert row["verdict"] == "not reproduced"  # -0.07 beyond the margin 2 x hypot(0.01, 0.01)
    tie = _table("ms", {"logreg": (0.65, 0.02, 3), "scgpt": (0.69, 0.02, 3)})
    row = _one(judge_beats(claim, tie, SETTINGS, paper=PAPER))
    assert row["verdict"] == "reproduced" and "within 0.05 of the published values" in row["why"]


def test_data_kind_names_paper_simulated_and_real_subsets():
    from types import SimpleNamespace as Entry

    from benchmark.claims import data_kind, paper_datasets

    published = paper_datasets()
    assert {"ms", "norman", "adamson", "covid19"} <= published
    local = Entry(path="../benchmark/data/real/x.h5ad", url=None)
    remote = Entry(path=None, url="https://example.org/x.h5ad")
    cases = [
        (Entry(name="ms", kind="dataset", files=(remote,)), "paper data"),
        (Entry(name="sim_x", kind="builtin", builder="benchmark.simulate:simulate_celltypes"), "simulated demo, ground truth known"),
        (Entry(name="pbmc_demo", kind="builtin", builder="benchmark.sources.demo:pbmc_demo"), "real data, demo subset"),
        (Entry(name="norman_real", kind="dataset", files=(local,)), "real data, demo subset"),
        (Entry(name="mine", kind="dataset", files=(remote,)), "real data (not the paper's)"),
    ]  # fmt: skip
    for entry, kind in cases:
        assert data_kind(entry, published) == kind, entry.name
