"""The suite's integration scores against numbers computed by scib itself.

``tests/data/make_scib_reference.py`` ran scib 1.0.3 (the version scGPT pins: Louvain) and
scib 1.1.7 (Leiden) on a fixed input (``scib_input.npz``: pbmc68k_reduced's PCs, three
embeddings) and stored their scores (``scib_<version>.json``) and scanpy's connectivity graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from benchmark.metrics import integration as im

DATA = Path(__file__).parent / "data"
EMBEDDINGS = ("pca", "batch_shifted", "partially_mixed")
VERSIONS = {"1.0.3": "louvain", "1.1.7": "leiden"}
"""scib version -> the suite's clustering option that reproduces its ``metrics()``."""
TOL = 1e-3


@pytest.fixture(scope="module")
def scib_input() -> dict[str, np.ndarray]:
    with np.load(DATA / "scib_input.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return {v: json.loads((DATA / f"scib_{v}.json").read_text()) for v in VERSIONS}


@pytest.fixture(scope="module")
def ours(scib_input) -> dict[tuple[str, str], dict[str, float]]:
    """The suite's scores of every stored embedding with each clustering option."""
    return {
        (clustering, name): im.integration_scores(
            scib_input[name],
            scib_input["cell_type"],
            scib_input["batch"],
            clustering=clustering,
            extra=False,
        )
        for clustering in VERSIONS.values()
        for name in EMBEDDINGS
    }


def test_reference_was_made_by_the_named_versions(reference):
    assert reference["1.0.3"]["versions"]["scib"] == "1.0.3"
    assert reference["1.1.7"]["versions"]["scib"] == "1.1.7"
    for ref in reference.values():
        assert ref["embeddings"]["pca"]["neighbors_params"]["n_neighbors"] == 15


def test_connectivities_equal_scanpys(scib_input):
    with np.load(DATA / "scib_1.1.7_pca_connectivities.npz") as stored:
        theirs = sp.csr_matrix(
            (stored["data"], stored["indices"], stored["indptr"]), shape=tuple(stored["shape"])
        )
    nn = im.compute_neighbors(scib_input["pca"], im.N_NEIGHBORS, method="exact")
    graph = im.knn_connectivities(nn)
    assert graph.shape == theirs.shape
    assert ((graph != 0) != (theirs != 0)).nnz == 0  # the same edges
    assert abs(graph - theirs).max() < 1e-5  # and the same weights (float32 bisection)


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("name", EMBEDDINGS)
def test_scores_equal_scib_metrics_function(version, name, reference, ours):
    """Our scores == ``scib.metrics.metrics`` (nmi, ari, ASW label/batch, graph conn.)."""
    theirs = reference[version]["embeddings"][name]["metrics"]
    mine = ours[(VERSIONS[version], name)]
    assert mine["nmi"] == pytest.approx(theirs["nmi"], abs=TOL)
    assert mine["ari"] == pytest.approx(theirs["ari"], abs=TOL)
    assert mine["asw_cell"] == pytest.approx(theirs["asw_label"], abs=TOL)
    assert mine["asw_batch"] == pytest.approx(theirs["asw_batch"], abs=TOL)
    assert mine["graph_conn"] == pytest.approx(theirs["graph_conn"], abs=TOL)
    avg_batch = (theirs["asw_batch"] + theirs["graph_conn"]) / 2
    assert mine["avg_batch"] == pytest.approx(avg_batch, abs=TOL)


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_chosen_resolution_equals_scibs(name, reference, ours):
    louvain = reference["1.0.3"]["embeddings"][name]["louvain"]
    leiden = reference["1.1.7"]["embeddings"][name]["leiden"]
    assert ours[("louvain", name)]["cluster_resolution"] == pytest.approx(louvain["resolution"])
    assert ours[("leiden", name)]["cluster_resolution"] == pytest.approx(leiden["resolution"])
    # scib 1.1.7 still ships 1.0.3's opt_louvain: both versions agree on the Louvain result.
    assert reference["1.1.7"]["embeddings"][name]["louvain"]["nmi"] == pytest.approx(
        louvain["nmi"], abs=1e-12
    )
    assert louvain["resolutions"] == pytest.approx(list(im.LOUVAIN_RESOLUTIONS))
    assert leiden["resolutions"] == pytest.approx(list(im.LEIDEN_RESOLUTIONS))
