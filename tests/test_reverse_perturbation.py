"""Reverse perturbation: candidates, ranking, top-k scores, baselines and a run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from baselines.perturbation_simple import single_effects
from baselines.perturbation_space import (
    control_mean,
    de_genes,
    random_ranking,
    response_similarity,
    reverse_from,
)
from benchmark.runner import run_method
from benchmark.simulate import simulate_perturbation
from benchmark.tasks import get_task
from benchmark.tasks.reverse_perturbation import (
    ReversePerturbationTask,
    candidate_conditions,
    draw_split,
    n_relevant,
    query_hits,
    random_expectation,
    rank_of_truth,
    select_gene_subset,
)
from contract.conditions import normalise_condition, parse_condition
from contract.registry import get_method


def test_candidates_are_all_singles_and_pairs() -> None:
    genes = [f"G{i:02d}" for i in range(20)]
    candidates = candidate_conditions(genes)
    assert len(candidates) == 210 == len(set(candidates))
    assert candidates[0] == "G00+ctrl" and "G03+G17" in candidates
    assert len(candidate_conditions([f"G{i}" for i in range(105)])) == 5565
    # a pair shares a gene with 2 singles and 2 * 18 + 1 pairs (itself included)
    assert n_relevant("G03+G17", candidates) == 2 + 37


def test_ranking_on_a_hand_made_case() -> None:
    """Three genes with known response patterns: the query is B+C, so B+C must rank first."""
    ctrl = np.zeros(6)
    pattern = {"A": [1, 0, 0, 0, 0, 1.0], "B": [0, 1, 0, 0, 1, 0.0], "C": [0, 0, 1, -1, 0, 0.0]}
    candidates = candidate_conditions(["A", "B", "C"])  # A, B, C, A+B, A+C, B+C
    predicted = np.array(
        [
            np.sum([pattern[g] for g in c.replace("+ctrl", "").split("+")], axis=0)
            for c in candidates
        ]
    )
    query = predicted[candidates.index("B+C")] * 0.4 + 0.01 * np.arange(6)  # shrunk and noisy
    scores = response_similarity(predicted, query[None, :], ctrl)[0]
    assert candidates[int(np.argmax(scores))] == "B+C"
    hits = query_hits(scores, candidates, "B+C", ks=(1, 2))
    assert hits == {
        "rank": 1.0,
        "top1_correct": 1.0,
        "top1_relevant": 1.0,
        "top2_correct": 1.0,
        "top2_relevant": 1.0,
    }
    # Euclidean distance is fooled by the shrunk effect: the query sits nearer a single.
    euclid = response_similarity(predicted, query[None, :], ctrl, "euclidean")[0]
    assert candidates[int(np.argmax(euclid))] != "B+C"
    # a candidate predicted as control has no defined correlation and ranks last
    predicted[candidates.index("A+ctrl")] = ctrl
    scores = response_similarity(predicted, query[None, :], ctrl)[0]
    assert np.isnan(scores[candidates.index("A+ctrl")])
    assert rank_of_truth(scores, candidates.index("A+ctrl")) == len(candidates)


def test_no_change_candidate_ranks_last_over_a_nonzero_control() -> None:
    """Candidates are scored on their change over control, not on the whole profile.

    Over a control far from zero every whole profile looks like the query (the control
    dominates), so a candidate predicted as control would rank near the top (2nd of 36 here);
    on changes it has no defined correlation and ranks last.
    """
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(8)]
    candidates = candidate_conditions(genes)  # 8 + 28 = 36
    n_genes = 60
    ctrl = rng.uniform(0.5, 4.0, n_genes)
    effect = {g: rng.normal(0, 0.5, n_genes) * (rng.random(n_genes) < 0.3) for g in genes}
    predicted = np.array(
        [ctrl + np.sum([effect[g] for g in c.replace("+ctrl", "").split("+")], axis=0)
         for c in candidates]
    )  # fmt: skip
    silent = candidates.index("G7+ctrl")
    predicted[silent] = ctrl  # e.g. a gene the model never saw perturbed
    truth = candidates.index("G2+G5")
    query = ctrl + 0.5 * (predicted[truth] - ctrl) + rng.normal(0, 0.05, n_genes)
    train = ad.AnnData(
        X=np.tile(ctrl, (4, 1)).astype(np.float32),
        obs=pd.DataFrame({"condition": ["ctrl"] * 4}, index=[f"c{i}" for i in range(4)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    queries = ad.AnnData(X=query[None, :].astype(np.float32), var=train.var.copy())
    queries.obs_names = ["q0"]

    def predict(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
        out = ad.AnnData(X=predicted.astype(np.float32), var=train.var.copy())
        out.obs_names = list(conditions)
        return out

    scores = reverse_from(predict)(train, candidates, queries, seed=0).loc["q0"].to_numpy()
    assert rank_of_truth(scores, truth) == 1
    assert np.isnan(scores[silent]) and rank_of_truth(scores, silent) == len(candidates)
    # the same scores straight from response_similarity, with the control mean of train
    direct = response_similarity(predicted, query[None, :], ctrl)[0]
    np.testing.assert_allclose(scores, direct, atol=1e-6)


def test_top_k_scoring() -> None:
    candidates = ["A+ctrl", "B+ctrl", "C+ctrl", "A+B", "A+C", "B+C"]
    # order: C+ctrl (0.9) > A+C (0.8) > B+C (0.7) > A+B (0.6) > B+ctrl (0.5) > A+ctrl (0.1)
    scores = np.array([0.1, 0.5, 0.9, 0.6, 0.8, 0.7])
    hits = query_hits(scores, candidates, "A+B", ks=(1, 2, 3, 4))
    assert hits["rank"] == 4.0
    assert [hits[f"top{k}_correct"] for k in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 1.0]
    # C+ctrl shares nothing with A+B; A+C (rank 2) shares A
    assert [hits[f"top{k}_relevant"] for k in (1, 2, 3, 4)] == [0.0, 1.0, 1.0, 1.0]
    # ties count against the truth; NaN ranks last
    assert rank_of_truth(np.array([0.5, 0.5, 0.2]), 0) == 2
    assert rank_of_truth(np.array([np.nan, 0.5, 0.2]), 0) == 3
    with pytest.raises(ValueError, match="not among"):
        query_hits(scores, candidates, "A+D")


def test_random_baseline_expected_rank() -> None:
    candidates = candidate_conditions([f"G{i:02d}" for i in range(20)])
    expect = random_expectation(len(candidates), n_relevant("G01+G02", candidates), 1)
    assert expect["rank"] == 105.5
    assert expect["correct"] == pytest.approx(1 / 210)
    assert expect["relevant"] == pytest.approx(39 / 210)
    assert random_expectation(210, 1, 8)["correct"] == pytest.approx(8 / 210)
    queries = ad.AnnData(
        X=np.zeros((2000, 3), np.float32),
        obs=pd.DataFrame(index=[f"q{i}" for i in range(2000)]),
    )
    scores = random_ranking(ad.AnnData(np.zeros((1, 3))), candidates, queries, seed=0)
    ranks = [rank_of_truth(scores.loc[q].to_numpy(), 17) for q in scores.index]
    # SE of the mean of 2000 uniform ranks on 1..210: 60.6 / sqrt(2000) = 1.36
    assert abs(np.mean(ranks) - 105.5) < 5
    top1 = np.mean(
        [
            query_hits(scores.loc[q].to_numpy(), candidates, "G01+G02", ks=(1,))["top1_relevant"]
            for q in scores.index[:500]
        ]
    )
    assert abs(top1 - 39 / 210) < 0.06


def test_de_genes_guesses_the_two_most_changed_targets() -> None:
    rng = np.random.default_rng(0)
    genes = ["A", "B", "C", "D", "X"]
    ctrl_cells = rng.normal(2.0, 0.2, size=(50, 5))
    train = ad.AnnData(
        X=ctrl_cells.astype(np.float32),
        obs=pd.DataFrame({"condition": ["ctrl"] * 50}, index=[f"c{i}" for i in range(50)]),
        var=pd.DataFrame(index=genes),
    )
    query = ctrl_cells.mean(axis=0)
    query[[1, 3]] -= [1.0, 0.6]  # B and D knocked down
    query[4] += 3.0  # X changes most but is not a target gene
    queries = ad.AnnData(X=query[None, :].astype(np.float32), var=pd.DataFrame(index=genes))
    queries.obs_names = ["q0"]
    candidates = candidate_conditions(["A", "B", "C", "D"])
    scores = de_genes(train, candidates, queries, seed=0)
    assert scores.columns[int(np.argmax(scores.loc["q0"]))] == "B+D"


def test_subset_and_split() -> None:
    observed = ["A+ctrl", "B+ctrl", "A+B", "A+C", "B+C", "C+D", "E+ctrl", "E+F"]
    assert select_gene_subset(observed, 3) == ["A", "B", "C"]
    split = draw_split(observed, n_train=3, n_val=1, n_test=2, rng=np.random.default_rng(0))
    assert len(split["test"]) == 2 and all("ctrl" not in c for c in split["test"])
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    assert not set(split["test"]) & set(split["train"] + split["val"])
    with pytest.raises(ValueError, match="n_test=9"):
        draw_split(observed, n_train=3, n_val=1, n_test=9, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_genes=9"):
        select_gene_subset(observed, 9)


def test_metric_options_are_checked() -> None:
    task = get_task("reverse_perturbation")
    assert isinstance(task, ReversePerturbationTask)
    small = task.with_metric_options({"n_genes": 6, "n_splits": 2})
    assert (small.n_genes, small.n_splits, small.n_train) == (6, 2, 39)
    with pytest.raises(ValueError, match="unknown metrics option"):
        task.with_metric_options({"n_split": 2})
    with pytest.raises(ValueError, match="n_test"):
        task.with_metric_options({"n_test": 0})


def test_wrapped_methods_expose_the_perturbation_parameters() -> None:
    spec = get_method("reverse_perturbation", "scgpt")
    params = spec.parameters()
    assert params["epochs"] == 15 and params["similarity"] == "pearson_delta"
    with pytest.raises(TypeError, match="epoch"):
        spec.check_params({"epoch": 3})
    assert get_method("reverse_perturbation", "gears").env == "gears"


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    adata = simulate_perturbation(
        n_ctrl_cells=120, n_cells_per_condition=8, n_single=8, n_double=12, seed=1
    )
    path = tmp_path_factory.mktemp("screen") / "screen.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("method", ["additive", "de_genes", "random"])
def test_run_end_to_end(screen: Path, tmp_path: Path, method: str) -> None:
    options = {"n_genes": 8, "n_train": 8, "n_val": 2, "n_test": 3, "n_splits": 3}
    record = run_method(
        "reverse_perturbation",
        method,
        "screen",
        screen,
        tmp_path,
        seed=0,
        metric_options=options,
    )
    assert record["status"] == "ok", record.get("traceback")
    scores = json.loads((tmp_path / "scores.json").read_text())
    per_query = pd.read_csv(tmp_path / "per_query.csv")
    assert len(per_query) == 9 and set(per_query["split"]) == {0, 1, 2}
    assert scores["n_candidates"] == 8 + 28 and scores["n_queries"] == 9
    assert scores["top1_correct"] == pytest.approx(
        per_query.groupby("split")["top1_correct"].mean().mean()
    )
    for k in range(1, 9):
        assert scores[f"top{k}_correct"] <= scores[f"top{k}_relevant"]
    assert not math.isnan(scores["top1_relevant_split_se"])
    if method == "de_genes":  # a knockdown lowers its target: easy to read off
        assert scores["mean_rank"] < (36 + 1) / 2
    candidates = pd.read_csv(tmp_path / "candidate_scores.csv", index_col=0)
    assert candidates.shape == (9, 36)
    if method == "additive":
        # A candidate none of whose genes has a training single is predicted as control: no
        # change, no defined correlation with the query's change, ranked last (NaN). Every
        # other candidate gets a score.
        task = get_task("reverse_perturbation").with_metric_options(options)
        inputs = task.prepare(ad.read_h5ad(screen), seed=0)
        for split in inputs["splits"]:
            seen = set(single_effects(split["args"][0])[0])
            silent = [c for c in inputs["candidates"] if not seen & set(parse_condition(c))]
            assert 0 < len(silent) < 36
            rows = candidates.loc[list(split["truth"])]
            assert rows[silent].isna().all().all()
            assert rows.drop(columns=silent).notna().all().all()


def _oracle(adata: ad.AnnData, shift: int = 0):
    """A perturbation "model" that knows the simulated noise-free change of every screened
    condition (``shift`` hands each profile to another condition); others: control."""
    sim = adata.uns["simulation"]
    names = [normalise_condition(str(c)) for c in sim["conditions"]]
    deltas = np.roll(np.asarray(sim["true_delta"], dtype=float), shift, axis=0)
    known = dict(zip(names, deltas))

    def predict(train: ad.AnnData, conditions: list[str], *, seed: int) -> ad.AnnData:
        ctrl = control_mean(train)
        X = np.array([ctrl + known.get(c, 0.0) for c in conditions], dtype=np.float32)
        out = ad.AnnData(X=X, var=pd.DataFrame(index=train.var_names.copy()))
        out.obs_names = list(conditions)
        return out

    return predict, known


def test_oracle_ranks_every_truth_first_end_to_end(screen: Path, tmp_path: Path) -> None:
    """Planted structure: with the true changes the task must put every truth first."""
    adata = ad.read_h5ad(screen)
    task = get_task("reverse_perturbation").with_metric_options(
        {"n_genes": 8, "n_train": 8, "n_val": 2, "n_test": 3, "n_splits": 3}
    )
    inputs = task.prepare(adata, seed=0)
    predict, known = _oracle(adata)
    output = task.call(reverse_from(predict), inputs, seed=0, params={})
    task.save(output, inputs, tmp_path)
    scores = task.score(output, inputs, seed=0)
    assert scores["top1_correct"] == 1.0 and scores["mean_rank"] == 1.0
    assert scores["top1_relevant"] == 1.0 and scores["n_queries"] == 9
    per_query = pd.read_csv(tmp_path / "per_query.csv")
    assert (per_query["rank"] == 1).all()
    assert (per_query["top3"].str.split(";").str[0] == per_query["truth"]).all()
    # candidates the screen never made are predicted as control: NaN, ranked last
    saved = pd.read_csv(tmp_path / "candidate_scores.csv", index_col=0)
    unscreened = [c for c in inputs["candidates"] if c not in known]
    assert unscreened and saved[unscreened].isna().all().all()
    # the same profiles handed to the wrong conditions: the truths no longer come first
    wrong, _ = _oracle(adata, shift=1)
    bad = task.score(task.call(reverse_from(wrong), inputs, seed=0, params={}), inputs, seed=0)
    assert bad["top1_correct"] < 0.5 and bad["mean_rank"] > 3


def test_figure_of_runs(screen: Path, tmp_path: Path) -> None:
    options = {"n_genes": 8, "n_train": 8, "n_val": 2, "n_test": 3, "n_splits": 2}
    dirs = []
    for method in ("de_genes", "random"):
        dirs.append(tmp_path / method)
        record = run_method(
            "reverse_perturbation",
            method,
            "screen",
            screen,
            dirs[-1],
            seed=0,
            metric_options=options,
        )
        assert record["status"] == "ok", record.get("traceback")
    files = get_task("reverse_perturbation").figures(dirs, screen, tmp_path / "figures")
    assert [f.name for f in files] == ["topk_rates.png"] and files[0].exists()
