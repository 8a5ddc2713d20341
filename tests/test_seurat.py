"""Seurat through the rpy2 bridge: alignment by names, failures as failed rows, real R runs."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from baselines import _rbridge
from benchmark.runner import run_method

R_OK, R_REASON = _rbridge.r_available(("Seurat", "Matrix"))
needs_r = pytest.mark.skipif(not R_OK, reason=f"R/Seurat/rpy2 unavailable: {R_REASON}")


def _dataset(n_cells: int = 360, seed: int = 0) -> ad.AnnData:
    """A small 3-batch data set with known cell types (benchmark.simulate)."""
    from benchmark.simulate import simulate_celltypes

    return simulate_celltypes(n_cells=n_cells, n_batches=3, seed=seed)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("seurat") / "sim.h5ad"
    _dataset().write_h5ad(path)
    return path


def test_align_by_names_reorders_and_checks():
    values = np.arange(6).reshape(3, 2)
    out = _rbridge.align_by_names(values, ["c", "a", "b"], ["a", "b", "c"])
    np.testing.assert_array_equal(out, [[2, 3], [4, 5], [0, 1]])
    with pytest.raises(ValueError, match=r"1 missing \(e.g. \['d'\]\), 1 unexpected"):
        _rbridge.align_by_names(values, ["c", "a", "b"], ["a", "b", "d"])
    with pytest.raises(ValueError, match="duplicated"):
        _rbridge.align_by_names(values, ["a", "a", "b"], ["a", "b", "c"])


def test_sparse_parts_are_the_transposed_csc():
    dense = np.array([[0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 4, 5]], dtype=np.float32)
    parts = _rbridge.sparse_parts(sp.csr_matrix(dense))
    genes_by_cells = sp.csc_matrix((parts["x"], parts["i"], parts["p"]), shape=(4, 3))
    np.testing.assert_array_equal(genes_by_cells.toarray(), dense.T)


def test_missing_r_becomes_a_failed_row(monkeypatch, dataset_path, tmp_path):
    def no_rpy2():
        raise _rbridge.RUnavailableError("rpy2 is not installed (test)")

    monkeypatch.setattr(_rbridge, "_import_rpy2", no_rpy2)
    record = run_method(
        "integration",
        "seurat",
        "sim",
        dataset_path,
        tmp_path / "run",
        seed=0,
        params={"k_weight": 50},
    )
    assert record["status"] == "failed"
    assert "RUnavailableError" in record["error"] and "rpy2 is not installed" in record["error"]
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores == {"status": "failed"}


def test_too_small_batches_fail_with_a_clear_message(dataset_path, tmp_path):
    # batches of ~120 cells: Seurat's k.weight must be below the smallest batch size
    record = run_method(
        "integration", "seurat", "sim", dataset_path, tmp_path, seed=0, params={"k_weight": 150}
    )
    assert record["status"] == "failed"
    assert "k_weight (150)" in record["error"] and "smallest batch" in record["error"]


@pytest.mark.r
@needs_r
def test_r_error_becomes_a_failed_row_with_rs_message(dataset_path, tmp_path):
    # k.anchor = -1 passes the Python checks; Seurat/R rejects it.
    record = run_method(
        "integration",
        "seurat",
        "sim",
        dataset_path,
        tmp_path,
        seed=0,
        params={"k_weight": 50, "k_anchor": -1},
    )
    assert record["status"] == "failed"
    assert "RError" in record["error"] and "scgpt_bench_integrate() failed" in record["error"]
    assert "negative subscripts" in record["error"]  # R's own message


@pytest.mark.r
@needs_r
def test_call_r_surfaces_r_errors():
    _rbridge.source_r(_seurat_script())
    with pytest.raises(_rbridge.RError, match="boom") as info:
        _rbridge.call_r("stop", "boom")
    assert "boom" in info.value.r_message
    with pytest.raises(_rbridge.RError, match="no such R function"):
        _rbridge.call_r("scgpt_bench_no_such_function")
    out = _rbridge.call_r("list", a=np.arange(3.0), b=["x", "y"], n=2)
    np.testing.assert_array_equal(out["a"], [0.0, 1.0, 2.0])
    assert list(out["b"]) == ["x", "y"] and out["n"].tolist() == [2]


def _seurat_script():
    from baselines.seurat import R_SCRIPT

    return R_SCRIPT


@pytest.mark.r
@needs_r
def test_seurat_integration_runs_in_r_and_keeps_cell_order():
    from baselines.seurat import seurat_integration
    from benchmark.tasks.integration import TASK

    adata = _dataset()
    inputs = TASK.prepare(adata, seed=0)
    method_input = inputs["args"][0]
    # Shuffle the input order: the result must follow obs_names, whatever R does.
    order = np.random.default_rng(1).permutation(method_input.n_obs)
    shuffled = method_input[order].copy()
    emb = seurat_integration(shuffled, seed=0, k_weight=50, dims=20, n_pcs=20)
    assert emb.shape == (method_input.n_obs, 20)
    assert np.isfinite(emb).all()
    same_type, other_batch = _neighbour_fractions(
        emb, inputs["truth"]["cell_type"][order], inputs["truth"]["batch"][order]
    )
    # Misaligned rows would scramble cell types (~1/6 of neighbours of the same type).
    assert same_type > 0.9
    assert other_batch > 0.4  # 3 batches: 2/3 when perfectly mixed


def _neighbour_fractions(emb, cell_type, batch, k=10):
    """Mean fraction of each cell's k neighbours with its cell type / from another batch."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)[1][:, 1:]
    return (
        float((cell_type[idx] == cell_type[:, None]).mean()),
        float((batch[idx] != batch[:, None]).mean()),
    )


@pytest.mark.r
@needs_r
def test_seurat_label_transfer_predicts_query_labels():
    from baselines.seurat import seurat_label_transfer

    adata = _dataset()
    is_query = (adata.obs["split"] == "query").to_numpy()
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    query.obs = pd.DataFrame(index=query.obs_names)  # the method never sees query labels
    predicted = seurat_label_transfer(reference, query, seed=0, dims=20, k_weight=30)
    assert predicted.shape == (query.n_obs,)
    assert set(predicted) <= set(reference.obs["cell_type"].astype(str))
    assert (predicted == truth).mean() > 0.8
