"""Transfer series: nested, deterministic corpora; the plan; the table builder on fake scores;
`snakemake -n transfer` plans with the demo and paper configurations."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from benchmark.io import write_json
from benchmark.transfer.report import plot_transfer, to_markdown, transfer_table
from benchmark.transfer.series import (
    REFERENCE,
    TransferPlan,
    nested_subsets,
    pretraining_pool,
    series_corpus,
)
from tests._snakemake import run_in_repo
from tests.test_workflow import SNAKEMAKE

ROOT = Path(__file__).resolve().parents[1]


def _demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_nested_subsets_are_nested_and_deterministic():
    sizes = [10, 30, 100, 250]
    subsets = nested_subsets(250, sizes, seed=0)
    assert [s.size for s in subsets] == sizes
    for small, large in itertools.pairwise(subsets):
        assert set(small) <= set(large)
    again = nested_subsets(250, sizes[::-1], seed=0)[::-1]
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again, strict=True))
    other = nested_subsets(250, [30], seed=1)[0]
    assert not np.array_equal(other, subsets[1])
    with pytest.raises(ValueError, match=r"sizes must be in \[0, 250\]"):
        nested_subsets(250, [251], seed=0)


def _write_dataset(path: Path, n: int, tissues: list[str] | None, donors: list[str] | None):
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    if tissues is not None:
        obs["tissue"] = tissues
        obs["donor"] = donors
    obs["split"] = ["train"] * (n - 2) + ["query"] * 2
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(1.0, (n, 5)).astype(np.float32)), obs=obs)
    adata.var_names = [f"g{j}" for j in range(5)]
    adata.write_h5ad(path)
    return path


def test_pool_and_series_corpora(tmp_path):
    n = 60
    tissues = ["t0"] * 20 + ["t1"] * 20 + ["t2"] * 20
    donors = [f"d{i // 10}" for i in range(n)]  # two donors per tissue
    atlas = _write_dataset(tmp_path / "atlas.h5ad", n, tissues, donors)
    extra = _write_dataset(tmp_path / "extra.h5ad", 10, None, None)
    pool = pretraining_pool([atlas, extra], held_out={"donor": ["d1"]})
    # query cells and the held-out donor's 10 cells never enter; extra keeps 8 cells
    assert pool.n_obs == (n - 2 - 10) + 8
    assert not pool.obs_names.str.contains("atlas:c1[0-9]$").any()
    assert (pool.obs["tissue"] == "none").sum() == 8
    corpora = [series_corpus(pool, cells=k, seed=0) for k in (5, 15, 40)]
    names = [set(c.obs_names) for c in corpora]
    assert names[0] <= names[1] <= names[2]
    assert set(series_corpus(pool, cells=15, seed=0).obs_names) == names[1]
    t1 = series_corpus(pool, cells=12, tissues=["t1"], seed=0)
    assert set(t1.obs["tissue"]) == {"t1"} and t1.n_obs == 12
    # a tissue corpus follows the same order: the first 12 t1 cells of the pool's order
    assert set(series_corpus(pool, cells=5, tissues=["t1"], seed=0).obs_names) <= set(t1.obs_names)
    with pytest.raises(ValueError, match=r"tissues \['t9'\] are not in the pool"):
        series_corpus(pool, tissues=["t9"])
    with pytest.raises(ValueError, match="21 cells requested, 20 eligible"):
        series_corpus(pool, cells=21, tissues=["t1"])


def test_plan_lists_series_and_reference_runs():
    plan = TransferPlan.from_config(_demo_config())
    section = plan.section
    seeds = len(section["seeds"])
    expected = 0
    pairs = set()
    for spec in section["series"].values():
        for task, datasets in spec["tasks"].items():
            expected += len(spec["models"]) * len(datasets) * seeds
            pairs |= {(task, d) for d in datasets}
    expected += sum(len(section["references"].get(t, [])) * seeds for t, _ in pairs)
    assert len(plan.runs) == expected
    assert {r.model for r in plan.runs} == {REFERENCE, *section["models"]}
    assert plan.checkpoint_dir(REFERENCE) == plan.checkpoint_dir(section["reference_model"])
    bad = _demo_config()
    bad["transfer"]["series"]["scaling"]["models"].append("sim_scale_typo")
    with pytest.raises(ValueError, match=r"series\.scaling\.models: 'sim_scale_typo'"):
        TransferPlan.from_config(bad)


SECTION = {
    "seeds": [0, 1],
    "models": {
        "small": {"checkpoint": "small", "cells": 100, "label": "100 cells"},
        "large": {"checkpoint": "large", "cells": 1000, "label": "1,000 cells"},
    },
    "reference_model": "large",
    "methods": {"annotation": "scgpt", "integration": "scgpt"},
    "references": {"integration": ["scgpt_scratch", "pca"]},
    "series": {
        "scaling": {"models": ["small", "large"], "tasks": {"annotation": ["d1"]}},
        "context": {"models": ["small", "large"], "tasks": {"integration": ["d2"]}},
    },
}


def _fake_run(root: Path, model: str, task: str, dataset: str, method: str, seed: int, **scores):
    folder = root / "transfer" / model / task / dataset / method / f"seed{seed}"
    write_json(
        {"task": task, "dataset": dataset, "method": method, "seed": seed, "status": "ok",
         "wall_seconds": 1.0, "peak_memory_mb": 10.0},
        folder / "run.json",
    )  # fmt: skip
    write_json({"status": "ok", **scores}, folder / "scores.json")
    return folder / "run.json"


def test_transfer_table_on_fake_scores(tmp_path):
    files = []
    for seed, (acc_small, acc_large) in enumerate([(0.5, 0.8), (0.7, 0.9)]):
        files.append(_fake_run(tmp_path, "small", "annotation", "d1", "scgpt", seed,
                               accuracy=acc_small, macro_f1=0.1))  # fmt: skip
        files.append(_fake_run(tmp_path, "large", "annotation", "d1", "scgpt", seed,
                               accuracy=acc_large, macro_f1=0.2))  # fmt: skip
        for model, method, bio in [("small", "scgpt", 0.4), ("large", "scgpt", 0.6),
                                   (REFERENCE, "scgpt_scratch", 0.3), (REFERENCE, "pca", 0.5)]:  # fmt: skip
            files.append(_fake_run(tmp_path, model, "integration", "d2", method, seed,
                                   avg_bio=bio, avg_batch=0.9))  # fmt: skip
    paper = pd.DataFrame(
        [{"series": "context", "model": "large", "task": "integration", "dataset": "d2",
          "method": "scgpt", "metric": "avg_bio", "value": 0.55, "source": "paper table X"}]
    )  # fmt: skip
    table = transfer_table(files, SECTION, paper)
    row = table[(table["model"] == "small") & (table["metric"] == "accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(0.6)
    assert row["se"] == pytest.approx(0.1)
    assert row["n_seeds"] == 2 and row["cells"] == 100
    refs = table[table["model"] == REFERENCE]
    assert set(refs["label"]) == {"from scratch", "PCA"}
    assert set(refs["series"]) == {"context"}  # no scaling reference for annotation configured
    large_bio = table[(table["model"] == "large") & (table["metric"] == "avg_bio")].iloc[0]
    assert large_bio["paper"] == pytest.approx(0.55)
    assert math.isnan(row["paper"])
    md = to_markdown(table, SECTION)
    assert "## scaling" in md and "## context" in md
    assert "| 1,000 cells (`large`) | 1,000 | 0.600 ± 0.000 (0.550) | 0.900 ± 0.000 |" in md
    assert "paper table X" in md
    written = plot_transfer(table, tmp_path / "figures")
    assert sorted(p.name for p in written) == ["context.png", "scaling.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_transfer_rows_keep_datasets_apart_and_count_only_successful_seeds(tmp_path):
    """Two datasets of one task never share a row; a failed seed (even one whose folder holds
    an old ``scores.json``) is neither averaged nor counted, and marks the row ``partial``."""
    section = copy.deepcopy(SECTION)
    section["series"] = {"scaling": {"models": ["small", "large"],
                                     "tasks": {"annotation": ["d1", "d3"]}}}  # fmt: skip
    files = [
        _fake_run(tmp_path, "small", "annotation", "d1", "scgpt", 0, accuracy=0.5, macro_f1=0.1),
        _fake_run(tmp_path, "small", "annotation", "d1", "scgpt", 1, accuracy=0.7, macro_f1=0.3),
        _fake_run(tmp_path, "small", "annotation", "d3", "scgpt", 0, accuracy=0.9, macro_f1=0.8),
        _fake_run(tmp_path, "small", "annotation", "d3", "scgpt", 1, accuracy=0.95, macro_f1=0.9),
    ]
    for model, seed, stale in (("small", 2, {"accuracy": 0.0, "macro_f1": 0.0}),
                               ("small", 3, {}), ("large", 0, {"accuracy": 0.0})):  # fmt: skip
        run = _fake_run(tmp_path, model, "annotation", "d1", "scgpt", seed, **stale)
        record = json.loads(run.read_text())
        write_json({**record, "status": "failed", "error": "RuntimeError: boom"}, run)
        files.append(run)
    table = transfer_table(files, section).set_index(["model", "dataset", "metric"])
    d1 = table.loc[("small", "d1", "accuracy")]
    assert d1["mean"] == pytest.approx(0.6) and d1["se"] == pytest.approx(0.1)
    assert d1["n_seeds"] == 2 and d1["status"] == "partial"
    assert table.loc[("small", "d1", "macro_f1"), "mean"] == pytest.approx(0.2)
    d3 = table.loc[("small", "d3", "accuracy")]
    assert d3["mean"] == pytest.approx(0.925) and d3["se"] == pytest.approx(0.025)
    assert d3["n_seeds"] == 2 and d3["status"] == "ok"
    large = table.loc[("large", "d1", "accuracy")]
    assert large["status"] == "failed" and large["n_seeds"] == 0 and math.isnan(large["mean"])
    assert table.loc[("large", "d3", "accuracy"), "status"] == "missing"
    assert len(table) == 2 * 2 * 2  # models x datasets x headline metrics


def test_missing_runs_are_shown_as_missing(tmp_path):
    section = copy.deepcopy(SECTION)
    files = [_fake_run(tmp_path, "small", "annotation", "d1", "scgpt", 0, accuracy=0.5)]
    table = transfer_table(files, section)
    large = table[(table["model"] == "large") & (table["series"] == "scaling")]
    assert set(large["status"]) == {"missing"} and large["mean"].isna().all()


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml"])
def test_transfer_target_plans(configfile):
    cmd = [*SNAKEMAKE, "--cores", "1", "transfer"]  # the target before --configfile's list
    if configfile:
        cmd += ["--configfile", configfile]
    result = run_in_repo(cmd, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "run_transfer" in output and "transfer_table" in output
    assert "pretrain_series_model" not in output  # the demo uses the committed models
    if configfile:
        assert "pretrain_census_model" in output and "export_census_subset" in output


def test_committed_series_models_match_registry_and_settings():
    """Each committed series model: registry digests, the settings file's steps and corpus,
    one vocabulary for all (equal size)."""
    from benchmark.datasets import load_registry
    from benchmark.sources.download import sha256sum

    registry = load_registry(ROOT / "config" / "datasets.yaml")
    series = yaml.safe_load((ROOT / "config" / "pretrain_transfer.yaml").read_text())
    vocabularies = set()
    for name, spec in series["models"].items():
        source = registry.checkpoint_source(name)
        folder = Path(source["path"])
        for file in source["files"]:
            assert sha256sum(folder / file) == source["sha256"][file], (name, file)
        args = json.loads((folder / "args.json").read_text())["pretrain"]
        assert args["max_steps"] == series["settings"]["max_steps"]
        assert args["data"].endswith(f"corpus/series/{name}.h5ad")
        if spec.get("cells"):
            assert args["n_cells"] == spec["cells"]
        vocabularies.add(sha256sum(folder / "vocab.json"))
    assert len(vocabularies) == 1
