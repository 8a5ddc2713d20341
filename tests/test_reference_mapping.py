"""Reference mapping: kNN label transfer, the PCA + kNN control and scANVI surgery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.knn_transfer import knn_search, knn_transfer, pca_knn, vote
from benchmark.simulate import simulate_celltypes
from benchmark.tasks import get_task
from contract.registry import get_method

torch.set_num_threads(1)
TASK = get_task("reference_mapping")


def test_knn_transfer_on_hand_points():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0]])
    labels = np.array(["x", "x", "y", "y", "y"])
    query = np.array([[1.0, 0.05], [0.05, 1.0]])
    for metric in ("cosine", "euclidean"):
        out = knn_transfer(ref, labels, query, k=2, metric=metric, backend="faiss")
        assert out.tolist() == ["x", "y"]
    idx, dist = knn_search(ref, query[:1], k=2, metric="euclidean", backend="faiss")
    assert set(idx[0]) == {0, 1}
    np.testing.assert_allclose(dist[0, 0], 0.05, atol=1e-6)
    # k larger than the reference is capped rather than failing.
    assert knn_transfer(ref, labels, query, k=50).shape == (2,)


@pytest.mark.slow  # pynndescent's numba functions compile on first use (~40 s on 2 cores)
def test_pynndescent_backend_agrees_with_faiss():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 8)).astype(np.float32)
    labels = np.where(ref[:, 0] > 0, "pos", "neg")
    query = rng.normal(size=(50, 8)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        a = knn_transfer(ref, labels, query, k=5, metric=metric, backend="faiss")
        b = knn_transfer(ref, labels, query, k=5, metric=metric, backend="pynndescent")
        assert (a == b).mean() > 0.9


def test_vote_breaks_ties_by_distance_then_name():
    labels = np.array([["a", "b", "b", "a"], ["b", "a", "c", "d"]])
    dist = np.array([[0.1, 0.2, 0.3, 0.1], [0.5, 0.5, 0.1, 0.9]])
    assert vote(labels, dist).tolist() == ["a", "c"]


def test_knn_transfer_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same number of columns"):
        knn_transfer(np.zeros((3, 2)), np.array(["a"] * 3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3 reference cells"):
        knn_transfer(np.zeros((3, 2)), np.array(["a"] * 2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        knn_transfer(np.full((3, 2), np.nan), np.array(["a"] * 3), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="metric"):
        knn_search(np.zeros((3, 2)), np.zeros((2, 2)), metric="manhattan")


@pytest.fixture(scope="module")
def simulated():
    return simulate_celltypes(n_cells=500, n_batches=2, seed=3)


def _majority(inputs) -> float:
    reference, _ = inputs["args"]
    labels, counts = np.unique(reference.obs["cell_type"].astype(str), return_counts=True)
    return float(np.mean(inputs["truth"] == labels[counts.argmax()]))


def test_pca_knn_maps_the_simulated_query(simulated):
    inputs = TASK.prepare(simulated, seed=0)
    reference, query = inputs["args"]
    predicted = pca_knn(reference, query, seed=0, n_comps=20)
    scores = TASK.score(predicted, inputs, seed=0)
    assert scores["accuracy"] > _majority(inputs) + 0.2
    assert query.obsm["X_pca_knn"].shape == (query.n_obs, 20)


def test_scanvi_query_surgery_beats_majority(simulated):
    spec = get_method("reference_mapping", "scanvi")
    assert spec.label == "scANVI (scArches)"
    params = {"scvi_epochs": 15, "scanvi_epochs": 3, "query_epochs": 5, "n_top_genes": 200}
    inputs = TASK.prepare(simulated, seed=0)
    predicted = TASK.call(spec.func, inputs, seed=0, params=params)
    scores = TASK.score(predicted, inputs, seed=0)
    assert scores["accuracy"] > _majority(inputs) + 0.2
    _, query = inputs["args"]
    assert query.obsm["X_scanvi"].shape == (query.n_obs, 10)


def test_reference_mapping_methods_are_registered():
    assert get_method("reference_mapping", "pca_knn").label == "PCA + kNN"
    assert get_method("reference_mapping", "logreg").label == "Logistic regression"
