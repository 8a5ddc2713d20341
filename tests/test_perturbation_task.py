"""The perturbation task and the simple baselines on small seeded simulated screens."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from baselines.perturbation_simple import additive, linear, no_change, train_mean
from benchmark.runner import run_method
from benchmark.simulate import simulate_perturbation
from benchmark.tasks import get_task
from benchmark.tasks.perturbation import TASK, PerturbationTask
from contract.conditions import parse_condition


@pytest.fixture(scope="module")
def tiny() -> ad.AnnData:
    return simulate_perturbation(
        n_ctrl_cells=200, n_cells_per_condition=20, n_single=12, n_double=8, seed=0
    )


@pytest.fixture(scope="module")
def tiny_inputs(tiny: ad.AnnData) -> dict[str, Any]:
    return TASK.prepare(tiny, seed=0)


def test_task_is_registered() -> None:
    task = get_task("perturbation")
    assert isinstance(task, PerturbationTask)
    assert task.paper_table is None
    assert task.metrics[:2] == ("pearson_delta", "pearson_delta_de")


def test_prepare_splits_and_hides_truth(tiny: ad.AnnData, tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    split_of = tiny.obs.groupby("condition", observed=True)["split"].first().astype(str)
    assert conditions == sorted(split_of.index[split_of == "test"])
    assert set(train.obs["condition"]) == set(split_of.index[split_of != "test"])
    assert set(train.obs["split"]) == {"train", "val"}
    # counts were normalised and log-transformed; the method sees no true effects
    assert tiny_inputs["normalisation"].startswith("counts")
    assert train.uns["normalisation"] == tiny_inputs["normalisation"]
    assert set(train.uns["simulation"]) <= {
        "generator",
        "world_seed",
        "programs",
        "grn",
        "propagation_steps",
    }
    assert "true_delta" in tiny.uns["simulation"]  # the input itself is untouched
    np.testing.assert_allclose(np.expm1(train.X[:5].toarray()).sum(axis=1), 1e4, rtol=1e-4)
    # truth: means per test condition and 20 DE genes each, from the dataset's subgroups
    assert tiny_inputs["truth_mean"].shape == (len(conditions), tiny.n_vars)
    assert all(len(set(idx)) == 20 and idx.min() >= 0 for idx in tiny_inputs["de_idx"].values())
    assert set(tiny_inputs["subgroup"].values()) <= {
        "single_unseen",
        "combo_seen0",
        "combo_seen1",
        "combo_seen2",
    }
    # a knockdown's own gene is among its top DE genes
    single = next(c for c in conditions if c.endswith("+ctrl"))
    gene = parse_condition(single)[0]
    assert list(tiny.var_names).index(gene) in tiny_inputs["de_idx"][single]


def test_prepare_accepts_log_normalised_data(tiny: ad.AnnData, tiny_inputs: dict[str, Any]) -> None:
    """GEARS' processed sets come log-normalised and without a subgroup column."""
    lognorm = tiny.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    del lognorm.obs["subgroup"]
    inputs = TASK.prepare(lognorm, seed=0)
    assert inputs["normalisation"] == "log-normalised as given"
    assert inputs["conditions"] == tiny_inputs["conditions"]
    np.testing.assert_allclose(inputs["truth_mean"], tiny_inputs["truth_mean"], atol=1e-5)
    assert inputs["subgroup"] == tiny_inputs["subgroup"]  # recomputed from seen genes


def test_prepare_needs_a_split(tiny: ad.AnnData) -> None:
    no_split = tiny.copy()
    del no_split.obs["split"]
    with pytest.raises(KeyError, match="'split'"):
        TASK.prepare(no_split, seed=0)


def test_no_change_has_undefined_pearson_and_finite_mse(tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    out = no_change(train, conditions, seed=0)
    assert list(out.obs_names) == conditions and list(out.var_names) == list(train.var_names)
    scores = TASK.score(out, tiny_inputs, seed=0)
    assert math.isnan(scores["pearson_delta"]) and math.isnan(scores["pearson_delta_de"])
    assert scores["pearson_undefined"] is True
    assert scores["n_pearson_undefined"] == len(conditions)
    assert np.isfinite(scores["mse"]) and np.isfinite(scores["mse_de"])
    assert scores["direction_acc_de"] == 0.0


def test_scores_have_subsets(tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    scores = TASK.score(train_mean(train, conditions, seed=0), tiny_inputs, seed=0)
    for metric in TASK.metrics:
        for suffix in ("", "_single", "_double", "_single_unseen", "_combo_seen2"):
            assert f"{metric}{suffix}" in scores
    assert scores["n_conditions_single"] + scores["n_conditions_double"] == len(conditions)
    assert scores["pearson_undefined"] is False
    assert -1 <= scores["pearson_delta"] <= 1


def test_additive_beats_no_change_on_seen_doubles(tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    add = TASK.score(additive(train, conditions, seed=0), tiny_inputs, seed=0)
    base = TASK.score(no_change(train, conditions, seed=0), tiny_inputs, seed=0)
    assert add["n_conditions_combo_seen2"] >= 1
    assert add["mse_de_combo_seen2"] < base["mse_de_combo_seen2"]
    assert add["pearson_delta_combo_seen2"] > 0.3
    # unseen singles are predicted as control: undefined there, hence undefined overall
    assert math.isnan(add["pearson_delta_single_unseen"]) and math.isnan(add["pearson_delta"])
    assert add["pearson_undefined"] is True


def test_additive_sums_single_effects(tiny_inputs: dict[str, Any]) -> None:
    train, _ = tiny_inputs["args"]
    singles = sorted({c for c in train.obs["condition"] if c.endswith("+ctrl")})[:2]
    a, b = (parse_condition(c)[0] for c in singles)
    out = additive(train, [f"{b}+{a}", singles[0], "NOTAGENE+ctrl"], seed=0)
    X = train.X.toarray()
    labels = train.obs["condition"].to_numpy()
    ctrl = X[labels == "ctrl"].mean(axis=0)
    eff = [X[labels == s].mean(axis=0) - ctrl for s in singles]
    np.testing.assert_allclose(out.X[0], ctrl + eff[0] + eff[1], atol=1e-5)
    np.testing.assert_allclose(out.X[1], ctrl + eff[0], atol=1e-5)
    np.testing.assert_allclose(out.X[2], ctrl, atol=1e-5)  # an unseen gene adds nothing


def test_linear_runs_and_correlates(tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    out = linear(train, conditions, seed=0, n_components=5)
    scores = TASK.score(out, tiny_inputs, seed=0)
    assert scores["pearson_undefined"] is False
    assert scores["pearson_delta_de"] > 0.2


def test_output_contract_is_checked(tiny_inputs: dict[str, Any]) -> None:
    train, conditions = tiny_inputs["args"]
    out = train_mean(train, conditions, seed=0)
    # rows in another order and doubles spelled the other way round are accepted
    renamed = out[::-1].copy()
    renamed.obs_names = ["+".join(reversed(c.split("+"))) for c in renamed.obs_names]
    np.testing.assert_allclose(TASK.align(renamed, tiny_inputs), TASK.align(out, tiny_inputs))
    with pytest.raises(ValueError, match="lacks 1 requested condition"):
        TASK.align(out[1:].copy(), tiny_inputs)
    with pytest.raises(ValueError, match="gene"):
        TASK.align(out[:, 1:].copy(), tiny_inputs)
    with pytest.raises(TypeError, match="AnnData"):
        TASK.align(out.X, tiny_inputs)


def test_runner_end_to_end_and_figures(tiny: ad.AnnData, tmp_path: Path) -> None:
    path = tmp_path / "sim_perturb.h5ad"
    tiny.write_h5ad(path)
    run_dirs = []
    for method in ("additive", "no_change"):
        outdir = tmp_path / "results" / method / "seed0"
        record = run_method("perturbation", method, "sim_perturb", path, outdir, seed=0)
        assert record["status"] == "ok", record.get("traceback")
        run = json.loads((outdir / "run.json").read_text())
        assert run["status"] == "ok"
        scores = json.loads((outdir / "scores.json").read_text())
        assert scores["status"] == "ok" and "pearson_delta" in scores and "mse" in scores
        pred = ad.read_h5ad(outdir / "predictions.h5ad")
        assert pred.n_vars == tiny.n_vars and "subgroup" in pred.obs
        assert (outdir / "per_condition.csv").exists()
        run_dirs.append(outdir)
    assert json.loads((run_dirs[1] / "scores.json").read_text())["pearson_delta"] is None
    files = TASK.figures(run_dirs, path, tmp_path / "figures")
    names = {f.name for f in files}
    assert {"pearson_delta.png", "pearson_delta_de.png"} <= names
    assert any(n.startswith("de_changes_") for n in names)
    assert all(f.stat().st_size > 1000 for f in files)


@pytest.mark.parametrize("policy", ["zero", None])
def test_config_nan_policy_reaches_the_scores(tiny: ad.AnnData, tmp_path: Path, policy) -> None:
    """config ``tasks.perturbation.metrics.nan_policy`` -> plan -> runner -> task scoring.

    "no change" predicts control for every condition: every Pearson is undefined, so the
    policy alone decides whether the mean is 0 (``zero``, GEARS' rule) or NaN (the default).
    """
    from benchmark.workflow import WorkflowPlan, validate_config

    root = Path(__file__).resolve().parents[1]
    section: dict[str, Any] = {"datasets": ["sim_perturb"], "methods": {"no_change": {}}}
    if policy is not None:
        section["metrics"] = {"nan_policy": policy}
    config = {
        "seeds": [0],
        "registry": str(root / "config" / "datasets.yaml"),
        "model": {"source": "checkpoint", "checkpoint": "sim_atlas"},
        "tasks": {"perturbation": section},
    }
    validate_config(config, root / "config" / "schema.yaml")
    plan = WorkflowPlan.from_config(config)
    options = plan.metric_options("perturbation")
    assert options == {"nan_policy": policy or "nan"}  # the schema's default when absent
    path = tmp_path / "sim_perturb.h5ad"
    tiny.write_h5ad(path)
    (job,) = plan.jobs
    record = run_method(
        job.task, job.method, job.dataset, path, tmp_path / "run", seed=job.seed,
        metric_options=options,
    )  # fmt: skip
    assert record["status"] == "ok", record.get("traceback")
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["n_pearson_undefined"] > 0
    if policy == "zero":
        assert scores["nan_policy"] == "zero"
        assert scores["pearson_delta"] == 0.0 and scores["pearson_delta_de"] == 0.0
    else:
        assert scores["nan_policy"] == "nan"
        assert scores["pearson_delta"] is None  # NaN in JSON
    assert np.isfinite(scores["mse"])
