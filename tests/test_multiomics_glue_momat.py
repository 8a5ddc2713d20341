"""scGLUE and scMoMaT baselines of the multiomics task on small simulated data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from benchmark.simulate import simulate_multiome
from contract.registry import get_method

torch.set_num_threads(1)

N_CELLS = 480
N_GENES = 200
# Few cells per batch: larger mini-batches and learning rate than scMoMaT's defaults.
SCMOMAT_FAST = {"T": 300, "K": 15, "interval": 100, "batch_size": 0.3, "lr": 3e-2}
SCMOMAT_FAST |= {"device": "cpu", "progress": False}


def _task_input(
    *,
    mosaic: bool,
    modalities: tuple[str, ...] = ("rna", "protein", "atac"),
    n_cells: int = N_CELLS,
) -> ad.AnnData:
    """The task's method input: 4 batches, cells shuffled (so a mis-ordered output shows)."""
    sim = simulate_multiome(n_cells=n_cells, n_batches=4, n_peaks=300, seed=3)
    modality = sim.var["modality"].astype(str).to_numpy()
    keep = [
        *np.flatnonzero(modality == "rna")[:N_GENES],
        *np.flatnonzero((modality != "rna") & np.isin(modality, modalities)),
    ]
    if "rna" not in modalities:
        keep = keep[N_GENES:]
    order = np.random.default_rng(0).permutation(sim.n_obs)
    adata = sim[order][:, keep].copy()
    del adata.uns["simulation"]
    adata.layers["counts"] = adata.X.copy()
    batch = adata.obs["batch"].cat.codes.to_numpy()
    for m in ("rna", "protein", "atac"):
        adata.obs[f"has_{m}"] = m in modalities
    if mosaic:  # ASAP PBMC: batches 1-2 CITE-seq (RNA + protein), 3-4 ASAP-seq (ATAC + protein)
        adata.obs["has_rna"] = batch < 2
        adata.obs["has_atac"] = batch >= 2
        X = adata.X.tolil()
        rna = (adata.var["modality"] == "rna").to_numpy()
        X[np.ix_(batch >= 2, rna)] = 0
        X[np.ix_(batch < 2, ~rna & (adata.var["modality"] == "atac").to_numpy())] = 0
        adata.X = X.tocsr()
        adata.layers["counts"] = adata.X.copy()
    adata.uns["multiomics"] = {
        "modalities": list(modalities),
        "mosaic": mosaic,
        "batch_key": "batch",
    }
    return adata


def _knn_accuracy(embedding: np.ndarray, labels) -> float:
    return float(cross_val_score(KNeighborsClassifier(15), embedding, labels, cv=4).mean())


def _check_embedding(embedding: np.ndarray, adata: ad.AnnData, min_accuracy: float) -> None:
    assert embedding.shape[0] == adata.n_obs and embedding.ndim == 2
    assert np.isfinite(embedding).all()
    chance = adata.obs["cell_type"].value_counts(normalize=True).max()
    accuracy = _knn_accuracy(embedding, adata.obs["cell_type"])
    assert accuracy > max(min_accuracy, chance + 0.3), (accuracy, chance)


@pytest.fixture(scope="module")
def paired() -> ad.AnnData:
    return _task_input(mosaic=False)


@pytest.fixture(scope="module")
def mosaic() -> ad.AnnData:
    return _task_input(mosaic=True)


def test_registered_with_the_paper_labels():
    assert get_method("multiomics", "scglue").label == "scGLUE"
    assert get_method("multiomics", "scglue").env == "glue"
    assert get_method("multiomics", "scmomat").label == "scMoMat"


# ------------------------------------------------------------------------------- scMoMaT


def test_scmomat_trains_and_separates_cell_types_on_paired_data(paired):
    from baselines.scmomat import fit_scmomat

    result = fit_scmomat(paired, seed=0, **SCMOMAT_FAST)
    assert len(result.losses) == 4 and result.losses[-1] < 0.9 * result.losses[0]
    assert result.embedding.shape == (paired.n_obs, 15)
    # One scMoMaT batch per obs batch, all with the three modalities.
    assert sorted(result.groups) == [f"batch{i}|rna+protein+atac" for i in range(4)]
    _check_embedding(result.embedding, paired, 0.7)


def test_scmomat_mosaic_uses_pseudo_rna_for_atac_batches(mosaic):
    from baselines.scmomat import fit_scmomat

    result = fit_scmomat(mosaic, seed=0, **SCMOMAT_FAST)
    assert result.losses[-1] < result.losses[0]
    assert sorted(result.groups) == [
        "batch0|rna+protein",
        "batch1|rna+protein",
        "batch2|protein+atac",
        "batch3|protein+atac",
    ]
    _check_embedding(result.embedding, mosaic, 0.6)


def test_scmomat_registered_function_is_seeded(mosaic):
    func = get_method("multiomics", "scmomat").func
    kwargs = {"T": 20, "K": 5, "interval": 10, "device": "cpu"}
    first = func(mosaic, seed=1, **kwargs)
    assert first.shape == (mosaic.n_obs, 5) and first.dtype == np.float32
    np.testing.assert_allclose(first, func(mosaic, seed=1, **kwargs), rtol=1e-5, atol=1e-6)


def test_gene_peak_matrix_sums_linked_peaks():
    from baselines.scmomat import gene_peak_matrix

    gxr = gene_peak_matrix(np.array(["B", "A", "", "B", "Z"], dtype=object), np.array(["A", "B"]))
    np.testing.assert_array_equal(gxr.toarray(), [[0, 1, 0, 0, 0], [1, 0, 0, 1, 0]])


def test_scmomat_needs_linked_gene_for_atac(mosaic):
    from baselines.scmomat import fit_scmomat

    data = mosaic.copy()
    del data.var["linked_gene"]
    with pytest.raises(KeyError, match=r"scmomat: var has no 'linked_gene' column"):
        fit_scmomat(data, seed=0, T=2, K=3, interval=1, progress=False)


# -------------------------------------------------------------------------------- scGLUE


def test_scglue_trains_and_separates_cell_types_on_paired_rna_atac():
    from baselines.scglue_multiomics import fit_glue

    adata = _task_input(mosaic=False, modalities=("rna", "atac"))
    result = fit_glue(adata, seed=0, max_epochs=4, skip_balance=True, device="cpu")
    assert result.guidance == "linked_gene" and result.n_edges > 0
    stages = [h["stage"] for h in result.history]
    assert stages == ["pretrain"] * 4 + ["finetune"] * 4
    assert result.history[-1]["vae_loss"] < result.history[0]["vae_loss"]
    assert result.embedding.shape == (adata.n_obs, 50)
    _check_embedding(result.embedding, adata, 0.8)


def test_scglue_mosaic_embeds_rna_cells_and_atac_cells():
    # GLUE needs more cells than scMoMaT to learn the ATAC side in a few epochs.
    mosaic = _task_input(mosaic=True, n_cells=960)
    func = get_method("multiomics", "scglue").func
    embedding = func(mosaic, seed=0, max_epochs=8, skip_balance=True, latent_dim=16, device="cpu")
    assert embedding.shape == (mosaic.n_obs, 16)
    _check_embedding(embedding, mosaic, 0.6)


def test_scglue_refuses_data_without_atac():
    func = get_method("multiomics", "scglue").func
    adata = _task_input(mosaic=False, modalities=("rna", "protein"))
    with pytest.raises(
        ValueError, match=r"scglue needs RNA and ATAC; this dataset has rna \+ protein"
    ):
        func(adata, seed=0)


def test_scglue_needs_linked_gene_without_coordinates(paired):
    from baselines.scglue_multiomics import fit_glue

    data = paired.copy()
    del data.var["linked_gene"]
    with pytest.raises(KeyError, match=r"scglue: var has no 'linked_gene' column"):
        fit_glue(data, seed=0, max_epochs=1)
    data.var["linked_gene"] = np.nan
    with pytest.raises(
        ValueError, match=r"none of the 300 atac features has a var\['linked_gene'\]"
    ):
        fit_glue(data, seed=0, max_epochs=1)


def test_linked_gene_graph_passes_glue_checks():
    import scglue

    from baselines.scglue_multiomics import _linked_gene_graph

    rna = ad.AnnData(np.ones((3, 2), np.float32))
    rna.var_names = ["A", "B"]
    rna.var["highly_variable"] = [True, False]
    atac = ad.AnnData(np.ones((3, 3), np.float32))
    atac.var_names = ["p1", "p2", "p3"]
    graph = _linked_gene_graph(rna, atac, np.array(["A", "B", ""], dtype=object))
    scglue.graph.check_graph(graph, [rna, atac])  # coverage, weight/sign, self-loops, symmetry
    assert graph.has_edge("A", "p1") and graph.has_edge("p1", "A") and graph.has_edge("p3", "p3")
    assert atac.var["highly_variable"].tolist() == [True, False, False]


def test_peak_coordinates_from_names():
    from baselines.scglue_multiomics import _peak_coordinates

    atac = ad.AnnData(np.zeros((1, 2), np.float32))
    atac.var_names = ["chr1:100-600", "chrX-5-50"]
    _peak_coordinates(atac)
    assert atac.var["chrom"].tolist() == ["chr1", "chrX"]
    assert atac.var["chromStart"].tolist() == [100, 5]
    assert atac.var["chromEnd"].tolist() == [600, 50]
    bad = ad.AnnData(np.zeros((1, 1), np.float32))
    bad.var_names = ["peak_0001"]
    with pytest.raises(ValueError, match="needs peak coordinates"):
        _peak_coordinates(bad)
