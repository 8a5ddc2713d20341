"""The integration task: method inputs, failure rows, outputs, figures and method quality."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark.metrics.integration import HEADLINE_METRICS, integration_scores
from benchmark.runner import run_method
from benchmark.tables import paper_values
from benchmark.tasks import get_task
from benchmark.tasks.integration import TASK, IntegrationTask
from contract import registry


def _simulated(n_cells: int = 450, seed: int = 0) -> ad.AnnData:
    """Three batches with a gene-wise batch effect, six known cell types."""
    from benchmark.simulate import simulate_celltypes

    return simulate_celltypes(n_cells=n_cells, n_batches=3, seed=seed)


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return _simulated()


@pytest.fixture(scope="module")
def sim_path(sim, tmp_path_factory):
    path = tmp_path_factory.mktemp("integration") / "sim.h5ad"
    sim.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def prepared(sim):
    return TASK.prepare(sim, seed=0)


def test_task_contract():
    task = get_task("integration")
    assert task is TASK
    assert task.metrics == HEADLINE_METRICS
    paper = paper_values(task.paper_table)
    assert set(task.metrics) <= set(paper.columns)
    assert task.required_obs == ("cell_type", "batch")
    assert task.n_hvg == 1200


def test_prepare_gives_every_method_the_same_documented_input(sim):
    task = IntegrationTask(n_hvg=100)
    inputs = task.prepare(sim, seed=0)
    (adata,) = inputs["args"]
    assert adata.n_obs == sim.n_obs and adata.n_vars == 100
    assert list(adata.obs.columns) == ["batch"]  # no cell types for the method
    assert sp.issparse(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), adata.layers["counts"].toarray())
    np.testing.assert_array_equal(adata.X.toarray(), sim[:, adata.var_names].X.toarray())
    # log1p is normalised on the library size of all genes, then subset.
    full = sim.X.toarray()
    expected = np.log1p(full / full.sum(axis=1, keepdims=True) * 1e4)
    idx = sim.var_names.get_indexer(adata.var_names)
    np.testing.assert_allclose(adata.layers["log1p"].toarray(), expected[:, idx], rtol=1e-5)
    assert list(adata.var_names) == [g for g in sim.var_names if g in set(adata.var_names)]
    assert adata.uns["integration"]["n_hvg"] == 100
    assert inputs["hvg"] == task.prepare(sim, seed=1)["hvg"]  # seed-independent
    np.testing.assert_array_equal(inputs["truth"]["cell_type"], sim.obs["cell_type"].astype(str))


def test_prepare_keeps_all_genes_when_fewer_than_n_hvg(prepared, sim):
    (adata,) = prepared["args"]
    assert sim.n_vars < 1200
    expressed = np.asarray((sim.X > 0).sum(axis=0)).ravel() > 0
    assert adata.n_vars == int(expressed.sum())


def test_prepare_rejects_non_count_data(sim):
    logged = sim.copy()
    logged.X = logged.X.multiply(0.5).tocsr()
    logged.X.data[0] = 0.25
    with pytest.raises(ValueError, match="raw counts"):
        TASK.prepare(logged, seed=0)


def test_missing_batch_column_is_a_clear_failed_row(tmp_path):
    adata = ad.AnnData(
        sp.csr_matrix(np.random.default_rng(0).poisson(1, (20, 8)).astype(np.float32)),
        obs=pd.DataFrame(
            {"cell_type": list("ab") * 10, "donor": ["d1"] * 20}, index=[f"c{i}" for i in range(20)]
        ),
    )
    path = tmp_path / "nobatch.h5ad"
    adata.write_h5ad(path)
    record = run_method("integration", "pca", "tiny_nobatch", path, tmp_path / "out", seed=0)
    assert record["status"] == "failed"
    for part in ("tiny_nobatch", "'batch'", "cell_type", "donor"):
        assert part in record["error"]


def test_run_method_writes_embedding_scores_and_figures(sim_path, tmp_path):
    runs = []
    for method in ("pca", "harmony"):
        out = tmp_path / method / "seed0"
        record = run_method("integration", method, "sim", sim_path, out, seed=0)
        assert record["status"] == "ok", record["error"]
        emb = np.load(out / "embedding.npy")
        cells = pd.read_csv(out / "cells.csv")["cell"]
        assert emb.shape == (len(cells), 50) and emb.dtype == np.float32
        scores = json.loads((out / "scores.json").read_text())
        assert set(HEADLINE_METRICS) <= set(scores)
        runs.append(out)
    # a failing method shows up in the figures' table, never breaks them
    bad = tmp_path / "broken" / "seed0"
    bad.mkdir(parents=True)
    (bad / "run.json").write_text(
        json.dumps({"method": "broken", "label": "Broken", "seed": 0, "status": "failed"})
    )
    files = TASK.figures([*runs, bad], sim_path, tmp_path / "figures")
    assert [f.name for f in files] == ["integration_umap.png", "integration_metrics.png"]
    assert all(f.stat().st_size > 10_000 for f in files)


def test_wrong_shaped_output_is_a_failed_row(monkeypatch, sim_path, tmp_path):
    registry.discover()

    @registry.register("integration", "one_row_short")
    def short(adata, *, seed):
        return np.zeros((adata.n_obs - 1, 2))

    try:
        record = run_method("integration", "one_row_short", "sim", sim_path, tmp_path, seed=0)
    finally:
        registry._REGISTRY.pop(("integration", "one_row_short"), None)
    assert record["status"] == "failed" and "must return an array of shape" in record["error"]


def _quality(embedding, prepared):
    truth = prepared["truth"]
    return integration_scores(embedding, truth["cell_type"], truth["batch"], seed=0)


@pytest.fixture(scope="module")
def unintegrated(prepared):
    from baselines.pca import pca_integration

    return _quality(pca_integration(prepared["args"][0], seed=0), prepared)


def test_harmony_mixes_batches_and_keeps_cell_types(prepared, unintegrated):
    from baselines.harmony import harmony_integration

    scores = _quality(harmony_integration(prepared["args"][0], seed=0), prepared)
    # unintegrated: iLISI ~0.34 (batches mostly in separate neighbourhoods); harmony ~0.8
    assert scores["ilisi"] > unintegrated["ilisi"] + 0.2
    assert scores["asw_batch"] > unintegrated["asw_batch"]
    assert scores["nmi"] > 0.9 and scores["asw_cell"] > 0.55


def test_scvi_mixes_batches_and_keeps_cell_types(prepared, unintegrated):
    from baselines.scvi import scvi_integration

    emb = scvi_integration(
        prepared["args"][0], seed=0, max_epochs=40, accelerator="cpu", n_latent=10
    )
    assert emb.shape == (prepared["args"][0].n_obs, 10)
    scores = _quality(emb, prepared)
    # unintegrated: iLISI ~0.34; scVI after 40 epochs ~0.7
    assert scores["ilisi"] > unintegrated["ilisi"] + 0.2
    assert scores["nmi"] > 0.9 and scores["asw_cell"] > 0.55
