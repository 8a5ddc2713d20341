"""Integration scores: the paper's aggregation and agreement with direct scib-metrics calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_resolution_grid_is_scibs():
    assert im.RESOLUTIONS == tuple(round(0.1 * i, 1) for i in range(1, 21))
    assert im.RESOLUTIONS[0] == 0.1 and im.RESOLUTIONS[-1] == 2.0


def test_scores_equal_direct_library_calls(fixed_embedding):
    """integration_scores == the paper's formulas applied to scib-metrics' own functions."""
    import scib_metrics
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    x, cell_type, batch = fixed_embedding
    ours = im.integration_scores(x, cell_type, batch, seed=0, n_neighbors=15)

    dist, idx = NearestNeighbors(n_neighbors=90, algorithm="brute").fit(x).kneighbors(x)
    nn90 = NeighborsResults(indices=idx, distances=dist.astype(np.float32))
    nn15 = nn90.subset_neighbors(15)
    per_res = [
        scib_metrics.nmi_ari_cluster_labels_leiden(
            nn15, cell_type, optimize_resolution=False, resolution=r, seed=0
        )
        for r in [0.1 * i for i in range(1, 21)]
    ]
    best = int(np.argmax([r["nmi"] for r in per_res]))
    nmi, ari = per_res[best]["nmi"], per_res[best]["ari"]
    asw_cell = scib_metrics.silhouette_label(x, cell_type, rescale=True)
    asw_batch = scib_metrics.silhouette_batch(x, cell_type, batch, rescale=True)
    graph_conn = scib_metrics.graph_connectivity(nn15, cell_type)

    assert ours["nmi"] == pytest.approx(nmi, abs=1e-9)
    assert ours["ari"] == pytest.approx(ari, abs=1e-9)
    assert ours["asw_cell"] == pytest.approx(asw_cell, abs=1e-6)
    assert ours["asw_batch"] == pytest.approx(asw_batch, abs=1e-6)
    assert ours["graph_conn"] == pytest.approx(graph_conn, abs=1e-9)
    assert ours["avg_bio"] == pytest.approx((nmi + ari + asw_cell) / 3, abs=1e-6)
    assert ours["avg_batch"] == pytest.approx((asw_batch + graph_conn) / 2, abs=1e-6)
    assert ours["overall"] == pytest.approx(
        0.6 * (nmi + ari + asw_cell) / 3 + 0.4 * (asw_batch + graph_conn) / 2, abs=1e-6
    )
    assert ours["ilisi"] == pytest.approx(scib_metrics.ilisi_knn(nn90, batch), abs=1e-6)
    assert ours["clisi"] == pytest.approx(scib_metrics.clisi_knn(nn90, cell_type), abs=1e-6)
    # ASW_cell is (ASW + 1) / 2 exactly once: the library rescales, we do not again.
    assert ours["asw_cell"] == pytest.approx((silhouette_score(x, cell_type) + 1) / 2, abs=1e-5)
    assert list(ours)[: len(im.HEADLINE_METRICS)] == list(im.HEADLINE_METRICS)
    assert math.isnan(ours["kbet"]) and math.isnan(ours["pcr_comparison"])

    # The finer grid never does worse than the library's own 0.2-step search.
    lib = scib_metrics.nmi_ari_cluster_labels_leiden(
        nn15, cell_type, optimize_resolution=True, seed=0
    )
    assert ours["nmi"] >= lib["nmi"] - 1e-12


def test_scores_are_deterministic(fixed_embedding):
    x, cell_type, batch = fixed_embedding
    a = im.integration_scores(x, cell_type, batch, seed=3, extra=False)
    b = im.integration_scores(x, cell_type, batch, seed=3, extra=False)
    assert a == b
    assert set(a) == {*im.HEADLINE_METRICS, "leiden_resolution"}


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
