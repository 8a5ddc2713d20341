"""The harness core: registry, runner provenance and failure isolation, tables, atomic io."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark import runner, tables
from benchmark.io import atomic_path, write_json
from benchmark.tasks.base import Task
from contract import registry


class _MeanTask(Task):
    """A toy task: the method returns one number per cell; score = mean absolute error."""

    name = "integration"
    metrics = ("mae",)
    required_obs = ("cell_type",)

    def prepare(self, adata, *, seed):
        return {"args": (adata,), "truth": np.asarray(adata.X.sum(axis=1)).ravel()}

    def save(self, output, inputs, outdir):
        path = Path(outdir) / "output.npy"
        np.save(path, output)
        return [path]

    def score(self, output, inputs, *, seed):
        return {"mae": float(np.abs(output - inputs["truth"]).mean())}


@pytest.fixture
def toy_dataset(tmp_path):
    adata = ad.AnnData(
        sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(4, 3)),
        obs=pd.DataFrame({"cell_type": list("aabb")}, index=[f"c{i}" for i in range(4)]),
    )
    path = tmp_path / "toy.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def toy_methods(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_DISCOVERED", True)
    monkeypatch.setattr(runner, "get_task", lambda name: _MeanTask())

    @registry.register("integration", "exact", label="Exact")
    def exact(adata, *, seed, scale=1.0):
        return np.asarray(adata.X.sum(axis=1)).ravel() * scale

    @registry.register("integration", "crashes")
    def crashes(adata, *, seed):
        raise RuntimeError("deliberate failure")


def test_register_rejects_unknown_task_and_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    with pytest.raises(ValueError, match="unknown task 'annotatoin'"):
        registry.register("annotatoin", "x")

    @registry.register("integration", "dup")
    def first(adata, *, seed):
        return None

    with pytest.raises(ValueError, match="registered twice"):

        @registry.register("integration", "dup")
        def second(adata, *, seed):
            return None


@pytest.fixture
def bound_twins(monkeypatch):
    """One function registered twice, ``plain`` and ``scaled``, each with its own bound value."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_DISCOVERED", True)
    calls = []

    @registry.register("integration", "plain", label="Plain", bind={"factor": 1.0})
    @registry.register("integration", "scaled", label="Scaled", bind={"factor": 3.0})
    def weighted(adata, *, seed: int, factor: float = 1.0, offset: float = 0.0):
        """Row sums times ``factor`` plus ``offset``."""
        calls.append({"seed": seed, "factor": factor, "offset": offset})
        return np.asarray(adata.X.sum(axis=1)).ravel() * factor + offset

    return weighted, calls


def test_bind_registers_one_function_under_two_names(bound_twins):
    weighted, calls = bound_twins
    plain = registry.get_method("integration", "plain")
    scaled = registry.get_method("integration", "scaled")
    assert plain.function is scaled.function is weighted  # the decorator returns it unchanged
    assert (dict(plain.bound), dict(scaled.bound)) == ({"factor": 1.0}, {"factor": 3.0})
    assert (plain.label, scaled.label) == ("Plain", "Scaled")
    assert plain.description == scaled.description == "Row sums times ``factor`` plus ``offset``."
    # What the config may set: the bound parameter is not listed, the others keep their defaults.
    assert plain.parameters() == scaled.parameters() == {"offset": 0.0}
    assert "factor" not in inspect.signature(scaled.func).parameters
    # The harness's call passes the bound value.
    adata = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_allclose(scaled.func(adata, seed=4, offset=1.0), [10.0, 10.0])
    assert calls == [{"seed": 4, "factor": 3.0, "offset": 1.0}]
    np.testing.assert_allclose(plain.func(adata, seed=0), [3.0, 3.0])
    assert calls[-1]["factor"] == 1.0


def test_bound_parameters_cannot_be_set(bound_twins):
    scaled = registry.get_method("integration", "scaled")
    scaled.check_params({"offset": 2.0})
    with pytest.raises(TypeError, match=r"'scaled' \(integration\) fixes factor .*factor=3\.0"):
        scaled.check_params({"factor": 2.0})
    with pytest.raises(registry.ParameterTypeError, match="offset"):
        scaled.check_params({"offset": "2"})  # the remaining parameters keep their type checks
    with pytest.raises(TypeError, match="bound by the registration"):
        scaled.func(ad.AnnData(np.ones((1, 1), dtype=np.float32)), seed=0, factor=2.0)


def test_bind_and_duplicate_checks(bound_twins):
    weighted, _ = bound_twins
    # The same registration again (a module imported twice) is accepted...
    registry.register("integration", "scaled", label="Scaled", bind={"factor": 3.0})(weighted)
    # ...with other bound values it is not, nor is another function under a taken name.
    with pytest.raises(ValueError, match=r"registered twice .* different bound values"):
        registry.register("integration", "scaled", bind={"factor": 2.0})(weighted)

    def other(adata, *, seed: int, factor: float = 1.0):
        return None

    with pytest.raises(ValueError, match="registered twice"):
        registry.register("integration", "plain", bind={"factor": 1.0})(other)
    # Only keyword-only parameters the harness does not pass can be bound, with a fitting value.
    with pytest.raises(TypeError, match="binds 'scale', which is not one of its keyword-only"):
        registry.register("integration", "bad1", bind={"scale": 1.0})(other)
    with pytest.raises(TypeError, match="binds 'seed', which the harness passes"):
        registry.register("integration", "bad2", bind={"seed": 1})(other)
    with pytest.raises(TypeError, match="binds 'factor' to 'x', expected float"):
        registry.register("integration", "bad3", bind={"factor": "x"})(other)
    # The task contract is still checked for a registration with bound values.
    with pytest.raises(TypeError, match="no keyword-only parameter 'seed'"):
        registry.register("integration", "bad4", bind={"factor": 1.0})(
            lambda adata, *, factor=1.0: None
        )


def test_run_method_calls_with_the_bound_value(bound_twins, toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "get_task", lambda name: _MeanTask())
    _, calls = bound_twins
    record = runner.run_method(
        "integration", "scaled", "toy", toy_dataset, tmp_path / "o", seed=1, params={"offset": 0.5}
    )
    assert record["status"] == "ok" and calls == [{"seed": 1, "factor": 3.0, "offset": 0.5}]
    record = runner.run_method(
        "integration", "scaled", "toy", toy_dataset, tmp_path / "p", seed=1, params={"factor": 1.0}
    )
    assert record["status"] == "failed" and "fixes factor" in record["error"]
    assert len(calls) == 1


def test_get_method_lists_available(toy_methods):
    with pytest.raises(KeyError, match=r"available: \['crashes', 'exact'\]"):
        registry.get_method("integration", "exakt")


def test_check_params_names_unknown_parameter(toy_methods):
    spec = registry.get_method("integration", "exact")
    spec.check_params({"scale": 2.0})
    with pytest.raises(TypeError, match=r"no parameter\(s\) \['sclae'\].*accepts \['scale'\]"):
        spec.check_params({"sclae": 2.0})


def test_run_writes_provenance(toy_methods, toy_dataset, tmp_path):
    out = tmp_path / "run"
    record = runner.run_method("integration", "exact", "toy", toy_dataset, out, seed=3)
    assert record["status"] == "ok"
    run = json.loads((out / "run.json").read_text())
    for key in ("status", "seed", "wall_seconds", "peak_memory_mb", "device", "versions"):
        assert key in run
    assert run["seed"] == 3 and run["label"] == "Exact"
    assert run["versions"]["numpy"] == np.__version__
    assert list(run["stage_seconds"]) == ["load", "prepare", "setup", "method", "save", "score"]
    assert all(seconds >= 0 for seconds in run["stage_seconds"].values())
    assert json.loads((out / "scores.json").read_text()) == {"status": "ok", "mae": 0.0}


def test_failing_method_becomes_failed_row(toy_methods, toy_dataset, tmp_path):
    runs = []
    for method in ("exact", "crashes"):
        out = tmp_path / method / "seed0"
        record = runner.run_method("integration", method, "toy", toy_dataset, out, seed=0)
        runs.append(out / "run.json")
    assert record["status"] == "failed"
    assert "RuntimeError: deliberate failure" in record["error"]
    table = tables.write_task_table(
        runs, ["mae"], tmp_path / "t.csv", tmp_path / "t.md", title="toy"
    )
    assert list(table["status"]) == ["failed", "ok"]
    md = (tmp_path / "t.md").read_text()
    assert "failed: RuntimeError: deliberate failure" in md


def test_missing_obs_column_is_named(toy_methods, tmp_path):
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32), obs=pd.DataFrame({"batch": list("abc")}))
    adata.obs_names = ["x", "y", "z"]
    path = tmp_path / "nolabels.h5ad"
    adata.write_h5ad(path)
    record = runner.run_method("integration", "exact", "nolabels", path, tmp_path / "o", seed=0)
    assert record["status"] == "failed"
    assert "lacks obs column(s) ['cell_type']" in record["error"]
    assert "it has ['batch']" in record["error"]


def test_unknown_parameter_fails_the_run_not_the_workflow(toy_methods, toy_dataset, tmp_path):
    record = runner.run_method(
        "integration", "exact", "toy", toy_dataset, tmp_path / "o", seed=0, params={"bad": 1}
    )
    assert record["status"] == "failed" and "no parameter(s) ['bad']" in record["error"]


def test_aggregate_mean_and_standard_error():
    runs = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "method": ["m"] * 3,
            "label": ["M"] * 3,
            "seed": [0, 1, 2],
            "status": ["ok"] * 3,
            "error": [None] * 3,
            "wall_seconds": [1.0, 2.0, 3.0],
            "peak_memory_mb": [10.0, 30.0, 20.0],
            "acc": [0.5, 0.7, 0.9],
        }
    )
    row = tables.aggregate(runs, ["acc"]).iloc[0]
    assert row["acc"] == pytest.approx(0.7)
    assert row["acc_se"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1) / math.sqrt(3))
    assert row["peak_memory_mb"] == 30.0 and row["n_seeds"] == 3
    assert math.isnan(tables.standard_error([0.4]))


def test_breakdown_metrics_get_their_own_table(tmp_path):
    runs = tmp_path / "m" / "seed0"
    runs.mkdir(parents=True)
    (runs / "run.json").write_text(
        '{"task": "t", "dataset": "d", "method": "m", "label": "M", "seed": 0, "status": "ok", '
        '"wall_seconds": 1.0, "peak_memory_mb": 5.0}'
    )
    (runs / "scores.json").write_text('{"acc": 0.5, "acc_single": 0.25}')
    table = tables.write_task_table(
        [runs / "run.json"],
        ["acc"],
        tmp_path / "t.csv",
        tmp_path / "t.md",
        title="toy",
        breakdown=["acc_single", "acc_double"],
    )
    assert table.loc[0, "acc_single"] == 0.25 and math.isnan(table.loc[0, "acc_double"])
    head, groups = (tmp_path / "t.md").read_text().split("## By group")
    assert "acc_single" not in head and "| 0.500 |" in head
    assert "| acc_single | acc_double |" in groups and "| 0.250 | — |" in groups


def test_paper_value_sits_beside_measured():
    table = pd.DataFrame(
        {
            "dataset": ["ms", "demo"],
            "label": ["scGPT", "scGPT"],
            "accuracy": [0.8, 0.9],
            "accuracy_se": [0.01, math.nan],
        }
    )
    merged = tables.add_paper_columns(table, tables.paper_values("annotation.csv"), ["accuracy"])
    assert merged["accuracy_paper"].iloc[0] == pytest.approx(0.856)
    assert math.isnan(merged["accuracy_paper"].iloc[1])
    assert tables._cell(0.8, 0.01, 0.856) == "0.800 ± 0.010 (0.856)"
    assert tables._cell(0.9, math.nan, math.nan) == "0.900"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_json({"x": float("nan")}, target)
    assert json.loads(target.read_text()) == {"x": None}


def test_seeding_defers_torch_until_its_first_import():
    """A job that never uses torch does not import it; one that does gets it seeded."""
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent(
        """
        import sys
        from benchmark.runner import seed_everything
        seed_everything(3)
        assert "torch" not in sys.modules, "seeding imported torch"
        import torch
        first = torch.rand(4)
        torch.manual_seed(3)
        assert torch.equal(first, torch.rand(4)), "torch was not seeded with the run's seed"
        seed_everything(5)  # torch imported now: seeded at once
        second = torch.rand(4)
        torch.manual_seed(5)
        assert torch.equal(second, torch.rand(4))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stderr[-2000:]
