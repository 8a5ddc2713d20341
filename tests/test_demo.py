"""Tests of the real PBMC demo set (benchmark.sources.demo.pbmc_demo)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from benchmark.sources.demo import pbmc_demo


@pytest.fixture(scope="module")
def source():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="module")
def demo():
    return pbmc_demo(n_batches=2, seed=0)


def test_layout(demo, source):
    assert demo.shape == (700, 765)
    assert isinstance(demo.X, sp.csr_matrix) and demo.X.dtype == np.float32
    assert np.array_equal(demo.X.data, np.rint(demo.X.data)) and (demo.X.data > 0).all()
    assert list(demo.var_names) == list(source.raw.var_names)
    assert list(demo.obs_names) == list(source.obs_names)
    for key in ("cell_type", "batch", "split"):
        assert isinstance(demo.obs[key].dtype, pd.CategoricalDtype), key
    assert (demo.obs["cell_type"].astype(str) == source.obs["bulk_labels"].astype(str)).all()
    assert set(demo.obs["batch"]) == {"batch0", "batch1"}
    assert np.allclose(demo.obs["n_counts"], np.asarray(demo.X.sum(axis=1)).ravel())
    uns = demo.uns["demo"]
    assert {"source", "counts", "batches", "split", "seed", "batch_effects"} <= set(uns)
    assert uns["max_rounding_error"] < 0.25


def test_counts_reproduce_source_without_batches(source):
    plain = pbmc_demo(n_batches=1, seed=0)
    logn = np.log1p(plain.X.toarray() / plain.obs["n_counts_original"].to_numpy()[:, None] * 1e4)
    assert np.abs(logn - source.raw.X.toarray()).max() < 2e-3
    assert set(plain.obs["batch"]) == {"batch0"}


def test_stratified_split_and_batches(demo):
    obs = demo.obs
    fraction = (obs["split"] == "query").groupby(obs["cell_type"], observed=True).mean()
    assert ((fraction > 0.15) & (fraction < 0.45)).all()
    assert abs((obs["split"] == "query").mean() - 0.3) < 0.03
    per_batch = pd.crosstab(obs["cell_type"], obs["batch"])
    assert (per_batch > 0).all().all()
    assert (per_batch.max(axis=1) - per_batch.min(axis=1) <= 1).all()


def test_batch_effect_applied(demo):
    dense = demo.X.toarray()
    logn = np.log1p(1e4 * dense / dense.sum(1, keepdims=True))
    batch = demo.obs["batch"].to_numpy()
    gap = np.abs(logn[batch == "batch0"].mean(0) - logn[batch == "batch1"].mean(0))
    expressed = dense.mean(0) > 0.5
    scale = np.asarray(demo.uns["demo"]["batch_effects"]["gene_scale"])
    log_ratio = np.abs(np.log(scale[0] / scale[1]))
    # Genes scaled most differently between the batches show the largest batch gap.
    assert np.corrcoef(gap[expressed], log_ratio[expressed])[0, 1] > 0.3


def test_deterministic(demo):
    again = pbmc_demo(n_batches=2, seed=0)
    assert (again.X != demo.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, demo.obs)
    other = pbmc_demo(n_batches=2, seed=1)
    assert (other.X != demo.X).nnz > 0
    assert not other.obs["split"].equals(demo.obs["split"])
