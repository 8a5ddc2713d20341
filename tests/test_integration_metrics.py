"""Integration scores: the paper's aggregation, scib's graph and agreement with library calls.

Agreement with scib itself (stored reference numbers) is in ``test_metrics_scib_reference.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from benchmark.metrics import integration as im


@pytest.fixture(scope="module")
def fixed_embedding():
    """300 cells, 4 cell types (clusters) x 3 batches (shifts), fixed seed."""
    rng = np.random.default_rng(7)
    n = 300
    cell_type = np.array([f"t{i}" for i in rng.integers(0, 4, n)])
    batch = np.array([f"b{i}" for i in rng.integers(0, 3, n)])
    centers = rng.normal(0, 3, (4, 8))
    shifts = rng.normal(0, 1.5, (3, 8))
    codes_t = np.searchsorted(np.unique(cell_type), cell_type)
    codes_b = np.searchsorted(np.unique(batch), batch)
    x = centers[codes_t] + shifts[codes_b] + rng.normal(0, 1, (n, 8))
    return x.astype(np.float32), cell_type, batch


def test_aggregate_scores_on_hand_numbers():
    out = im.aggregate_scores(nmi=0.8, ari=0.6, asw_cell=0.7, asw_batch=0.9, graph_conn=0.8)
    assert out["avg_bio"] == pytest.approx(0.7)
    assert out["avg_batch"] == pytest.approx(0.85)
    assert out["overall"] == pytest.approx(0.6 * 0.7 + 0.4 * 0.85)  # 0.76


def test_aggregate_scores_propagates_nan():
    out = im.aggregate_scores(nmi=0.8, ari=0.6, asw_cell=0.7, asw_batch=math.nan, graph_conn=0.8)
    assert out["avg_bio"] == pytest.approx(0.7)
    assert math.isnan(out["avg_batch"]) and math.isnan(out["overall"])


def test_resolution_grids_are_scibs():
    # scib 1.0.3 opt_louvain: [2 * x / 20 for x in 1..20]; scib 1.1.7 get_resolutions(n=10).
    assert len(im.LOUVAIN_RESOLUTIONS) == 20
    assert im.LOUVAIN_RESOLUTIONS[0] == 0.1 and im.LOUVAIN_RESOLUTIONS[-1] == 2.0
    assert np.allclose(np.diff(im.LOUVAIN_RESOLUTIONS), 0.1)
    assert im.LEIDEN_RESOLUTIONS == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


def test_graph_connectivity_by_hand():
    # Cells 0-2 are type a, 3-5 type b. Edges (symmetric): 0-1, 1-2 (a: one component of 3),
    # 3-4 and 5-0 (b: components {3, 4} and {5}: the edge 5-0 leaves the type).
    edges = [(0, 1), (1, 2), (3, 4), (5, 0)]
    rows, cols = zip(*edges)
    graph = sp.coo_matrix((np.ones(4), (rows, cols)), shape=(6, 6)).tocsr()
    graph = graph + graph.T
    labels = np.array(list("aaabbb"))
    assert im.graph_connectivity(graph, labels) == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="graph has 6 cells but labels has 5"):
        im.graph_connectivity(graph, labels[:5])


def test_connectivities_are_a_symmetric_fuzzy_union(fixed_embedding):
    x, _, _ = fixed_embedding
    nn = im.compute_neighbors(x, 15, method="exact")
    graph = im.knn_connectivities(nn)
    assert abs(graph - graph.T).max() < 1e-7
    assert graph.diagonal().max() == 0.0
    assert graph.data.max() <= 1.0 and graph.data.min() > 0.0
    # every cell keeps an edge of weight 1 to its nearest other cell
    rows = np.arange(x.shape[0])
    assert np.allclose(np.asarray(graph[rows, nn.indices[:, 1]]).ravel(), 1.0)


def test_scores_equal_direct_library_calls(fixed_embedding):
    """integration_scores == the paper's formulas applied to the building blocks."""
    import scib_metrics
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    x, cell_type, batch = fixed_embedding
    ours = im.integration_scores(x, cell_type, batch, seed=0, n_neighbors=15)

    dist, idx = NearestNeighbors(n_neighbors=90, algorithm="brute").fit(x).kneighbors(x)
    dist[:, 0] = 0.0
    nn90 = NeighborsResults(indices=idx, distances=dist.astype(np.float32))
    nn15 = nn90.subset_neighbors(15)
    graph = im.knn_connectivities(nn15)
    clusters = im.cluster_nmi_ari(graph, cell_type, clustering="louvain")
    nmi, ari = clusters["nmi"], clusters["ari"]
    asw_cell = scib_metrics.silhouette_label(x, cell_type, rescale=True)
    asw_batch = scib_metrics.silhouette_batch(x, cell_type, batch, rescale=True)
    graph_conn = im.graph_connectivity(graph, cell_type)

    assert ours["nmi"] == pytest.approx(nmi, abs=1e-9)
    assert ours["ari"] == pytest.approx(ari, abs=1e-9)
    assert ours["cluster_resolution"] == clusters["cluster_resolution"]
    assert ours["asw_cell"] == pytest.approx(asw_cell, abs=1e-6)
    assert ours["asw_batch"] == pytest.approx(asw_batch, abs=1e-6)
    # asw_cell and isolated labels share one silhouette computation: still the library's values.
    assert ours["isolated_labels"] == pytest.approx(
        scib_metrics.isolated_labels(x, cell_type, batch), abs=1e-6
    )
    assert ours["graph_conn"] == pytest.approx(graph_conn, abs=1e-9)
    assert ours["avg_bio"] == pytest.approx((nmi + ari + asw_cell) / 3, abs=1e-6)
    assert ours["avg_batch"] == pytest.approx((asw_batch + graph_conn) / 2, abs=1e-6)
    assert ours["overall"] == pytest.approx(
        0.6 * (nmi + ari + asw_cell) / 3 + 0.4 * (asw_batch + graph_conn) / 2, abs=1e-6
    )
    assert ours["ilisi"] == pytest.approx(scib_metrics.ilisi_knn(nn90, batch), abs=1e-6)
    assert ours["clisi"] == pytest.approx(scib_metrics.clisi_knn(nn90, cell_type), abs=1e-6)
    # scib-metrics' graph connectivity (directed kNN graph) only under its own name; the
    # symmetric graph has every directed edge and more, so scib's value is never lower.
    lib_conn = scib_metrics.graph_connectivity(nn15, cell_type)
    assert ours["graph_conn_scib_metrics"] == pytest.approx(lib_conn, abs=1e-9)
    assert ours["graph_conn"] >= lib_conn - 1e-12
    # ASW_cell is (ASW + 1) / 2 exactly once: the library rescales, we do not again.
    assert ours["asw_cell"] == pytest.approx((silhouette_score(x, cell_type) + 1) / 2, abs=1e-5)
    assert list(ours)[: len(im.HEADLINE_METRICS)] == list(im.HEADLINE_METRICS)
    assert math.isnan(ours["kbet"]) and math.isnan(ours["pcr_comparison"])


def test_silhouettes_equal_on_both_sides_of_the_size_switch(fixed_embedding, monkeypatch):
    """scikit-learn (small data) and scib-metrics' JAX kernel (large data) give one score."""
    x, cell_type, batch = fixed_embedding
    small = im.integration_scores(x, cell_type, batch, extra=True)
    monkeypatch.setattr(im, "SKLEARN_SILHOUETTE_MAX_CELLS", 0)
    large = im.integration_scores(x, cell_type, batch, extra=True)
    for name in ("asw_cell", "asw_batch", "isolated_labels"):
        assert small[name] == pytest.approx(large[name], abs=1e-6), name


def test_leiden_option_searches_scib_117_grid(fixed_embedding):
    x, cell_type, batch = fixed_embedding
    out = im.integration_scores(x, cell_type, batch, clustering="leiden", extra=False)
    assert out["cluster_resolution"] in im.LEIDEN_RESOLUTIONS
    with pytest.raises(ValueError, match="clustering 'kmeans'"):
        im.integration_scores(x, cell_type, batch, clustering="kmeans", extra=False)


def test_scores_are_deterministic(fixed_embedding):
    x, cell_type, batch = fixed_embedding
    a = im.integration_scores(x, cell_type, batch, seed=3, extra=False)
    b = im.integration_scores(x, cell_type, batch, seed=3, extra=False)
    assert a == b
    assert set(a) == {*im.HEADLINE_METRICS, "cluster_resolution"}


def test_asw_batch_undefined_when_no_type_spans_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    cell_type = np.repeat(["a", "b", "c"], 20)
    batch = np.repeat(["b1", "b2", "b3"], 20)  # each type in one batch only
    with pytest.warns(UserWarning, match="asw_batch is undefined"):
        out = im.integration_scores(x, cell_type, batch, extra=False)
    assert math.isnan(out["asw_batch"]) and math.isnan(out["overall"])


def test_exact_neighbors_put_self_first_with_duplicates():
    x = np.zeros((6, 2), dtype=np.float32)  # all cells identical
    nn = im.compute_neighbors(x, 4, method="exact")
    assert (nn.indices[:, 0] == np.arange(6)).all()
    assert nn.indices.shape == (6, 4)
    assert all(len(set(row)) == 4 for row in nn.indices)


def test_invalid_inputs_name_the_problem():
    x = np.ones((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="5 rows but cell_type has 4"):
        im.integration_scores(x, list("aabb"), list("xxyyy"))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite values in 1 of 5"):
        im.integration_scores(x, list("aabbb"), list("xxyyy"))
    with pytest.raises(ValueError, match="neighbour method"):
        im.compute_neighbors(np.ones((5, 2)), 3, method="faiss")
