"""The multi-omic task: simulated settings, the method input contract, scoring, config plans."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from benchmark.simulate import simulate_multiome, simulate_multiome_setting
from benchmark.tasks import get_task
from benchmark.tasks.multiomics import MultiomicsTask
from benchmark.workflow import ConfigError, WorkflowPlan

ROOT = Path(__file__).resolve().parents[1]


def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def mosaic():
    return simulate_multiome_setting(
        setting="mosaic", n_cells=400, n_batches=4, atac_subtypes=1, protein_subtypes=1
    )


# --- simulator ---------------------------------------------------------------------------------
def test_sim_multiome_is_unchanged():
    # sim_multiome is in the pre-training corpus: the refactor into shared protein / peak
    # helpers must keep its draws (hash of the counts before the refactor).
    x = simulate_multiome(n_cells=200).X.toarray()
    assert (
        hashlib.sha256(x.tobytes()).hexdigest()
        == "dcb4d3518fdec0b111b4bf901b74fa2cfbb06613ff30c56166b05dc60139f2a1"
    )


def test_mosaic_setting(mosaic):
    obs, var = mosaic.obs, mosaic.var
    assert set(var["modality"]) == {"rna", "protein", "atac"}
    first_half = obs["batch"].isin(["batch0", "batch1"]).to_numpy()
    np.testing.assert_array_equal(obs["has_rna"], first_half)
    np.testing.assert_array_equal(obs["has_atac"], ~first_half)
    assert obs["has_protein"].all()
    x = mosaic.X.tocsc()
    rna = (var["modality"] == "rna").to_numpy()
    atac = (var["modality"] == "atac").to_numpy()
    assert x[~first_half][:, rna].nnz == 0 and x[first_half][:, atac].nnz == 0
    subtypes = mosaic.uns["simulation"]["subtypes"]
    assert sorted(info["differs_in"] for info in subtypes.values()) == ["atac", "protein"]
    for base in subtypes:
        assert {f"{base}a", f"{base}b"} <= set(obs["cell_type"])
        assert set(obs.loc[obs["base_cell_type"] == base, "cell_type"]) == {f"{base}a", f"{base}b"}


def test_paired_settings_keep_their_modalities():
    atac = simulate_multiome_setting(
        setting="rna+atac", n_cells=100, atac_subtypes=1, protein_subtypes=0
    )
    assert set(atac.var["modality"]) == {"rna", "atac"}
    assert atac.obs["has_rna"].all() and atac.obs["has_atac"].all()
    with pytest.raises(ValueError, match="protein_subtypes=1 needs protein"):
        simulate_multiome_setting(setting="rna+atac", n_cells=100, protein_subtypes=1)
    with pytest.raises(ValueError, match="even n_batches"):
        simulate_multiome_setting(setting="mosaic", n_batches=3)
    with pytest.raises(ValueError, match="setting 'rna'"):
        simulate_multiome_setting(setting="rna")


# --- prepare: the method input contract -------------------------------------------------------
def test_prepare_contract(mosaic):
    task = MultiomicsTask(n_hvg=100, n_hvp=150)
    inputs = task.prepare(mosaic, seed=0)
    (x,) = inputs["args"]
    assert sp.isspmatrix_csr(x.X) and x.X.dtype == np.float32
    assert (x.X != x.layers["counts"]).nnz == 0
    counts = x.var["modality"].value_counts().to_dict()
    assert counts == {"rna": 100, "protein": 30, "atac": 150}
    assert list(x.var["modality"].cat.categories) == ["rna", "protein", "atac"]
    modality = x.var["modality"].astype(str).to_numpy()
    assert list(pd.unique(modality)) == ["rna", "protein", "atac"]  # feature order
    assert all(name.startswith("prot_") for name in x.var_names[modality == "protein"])
    assert x.var.loc[modality == "rna", "linked_gene"].isna().all()
    assert x.var.loc[modality != "rna", "linked_gene"].notna().all()
    assert "cell_type" not in x.obs and "base_cell_type" not in x.obs
    assert list(x.obs.columns) == ["batch", "has_rna", "has_protein", "has_atac"]
    np.testing.assert_array_equal(x.obs["has_rna"], mosaic.obs["has_rna"])
    info = x.uns["multiomics"]
    assert info["modalities"] == ["rna", "protein", "atac"] and info["mosaic"] is True
    assert info["batch_key"] == "batch"
    assert info["batch_modalities"]["batch0"] == ["rna", "protein"]
    assert info["batch_modalities"]["batch3"] == ["protein", "atac"]
    # normalised layer: zero where a modality is absent, CLR / TF-IDF / log1p elsewhere
    norm = x.layers["normalized"].tocsc()
    assert norm[~x.obs["has_rna"].to_numpy()][:, modality == "rna"].nnz == 0
    assert norm[x.obs["has_rna"].to_numpy()][:, modality == "rna"].nnz > 0
    assert np.isfinite(norm.data).all() and norm.data.min() >= 0
    # the most frequently open peaks were kept
    peaks = mosaic[:, (mosaic.var["modality"] == "atac").to_numpy()]
    n_open = pd.Series(np.asarray((peaks.X > 0).sum(axis=0)).ravel(), index=peaks.var_names)
    kept = set(x.var_names[modality == "atac"])
    assert n_open[list(kept)].min() >= n_open.drop(list(kept)).max()


def test_normalised_layer_matches_hand_computed_values():
    """RNA log1p(CP10k), protein CLR across each cell's proteins, ATAC TF-IDF with the IDF over
    the cells that measured ATAC (3 of 6 here): every value against a hand computation."""
    rna = np.array([[1, 2, 0, 5], [3, 0, 1, 1], [0, 4, 4, 2]] + [[0, 0, 0, 0]] * 3, float)
    protein = np.array([[10, 1, 0], [2, 2, 30], [0, 5, 7], [8, 0, 1], [1, 1, 1], [0, 9, 3]], float)
    atac = np.array([[0, 0, 0]] * 3 + [[1, 0, 2], [1, 1, 0], [0, 3, 1]], float)
    counts = np.hstack([rna, protein, atac])
    var = pd.DataFrame(
        {"modality": ["rna"] * 4 + ["protein"] * 3 + ["atac"] * 3},
        index=[f"G{i}" for i in range(4)] + ["prot_A", "prot_B", "prot_C"]
        + [f"chr1:{i}00-{i}50" for i in range(3)],
    )  # fmt: skip
    has_rna = np.array([True] * 3 + [False] * 3)
    obs = pd.DataFrame(
        {
            "cell_type": ["t0", "t1", "t0", "t1", "t0", "t1"],
            "batch": ["b0"] * 3 + ["b1"] * 3,
            "has_rna": has_rna,
            "has_protein": True,
            "has_atac": ~has_rna,
        },
        index=[f"c{i}" for i in range(6)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=obs, var=var)
    (x,) = MultiomicsTask(n_hvg=10, n_hvp=10).prepare(adata, seed=0)["args"]
    assert list(x.var_names) == list(var.index) and list(x.obs_names) == list(obs.index)
    norm = x.layers["normalized"].toarray().astype(np.float64)

    expected_rna = np.zeros_like(rna)
    for i in range(3):
        expected_rna[i] = np.log1p(rna[i] / rna[i].sum() * 1e4)
    expected_protein = np.zeros_like(protein)
    for i in range(6):  # per cell (Seurat margin 2): geometric mean of 1 + x over its proteins
        geo = math.exp(sum(math.log1p(v) for v in protein[i]) / 3)
        expected_protein[i] = [math.log1p(v / geo) for v in protein[i]]
    expected_atac = np.zeros_like(atac)
    peak_total = atac[3:].sum(axis=0)  # over the 3 ATAC cells: [2, 4, 3]
    for i in range(3, 6):
        expected_atac[i] = [
            math.log1p(atac[i, j] / atac[i].sum() * 3 / peak_total[j] * 1e4) for j in range(3)
        ]
    np.testing.assert_allclose(norm[:, :4], expected_rna, rtol=1e-6)
    np.testing.assert_allclose(norm[:, 4:7], expected_protein, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(norm[:, 7:], expected_atac, rtol=1e-6)
    # e.g. cell c3, peak 0: log1p(1 / 3 * 3 / 2 * 1e4) = log1p(5000)
    assert norm[3, 7] == pytest.approx(math.log1p(5000.0), rel=1e-6)


def test_genomic_coordinates_reach_the_methods(mosaic):
    located = mosaic.copy()
    located.var["chrom"] = "chr1"
    located.var["chromStart"] = np.arange(located.n_vars) * 1000
    located.var["chromEnd"] = located.var["chromStart"] + 500
    (x,) = MultiomicsTask(n_hvg=100, n_hvp=150).prepare(located, seed=0)["args"]
    expected = located.var.loc[x.var_names, "chromStart"].to_numpy()
    np.testing.assert_array_equal(x.var["chromStart"].to_numpy(), expected)
    assert (x.var["chrom"] == "chr1").all()
    (plain,) = MultiomicsTask(n_hvg=100, n_hvp=150).prepare(mosaic, seed=0)["args"]
    assert "chrom" not in plain.var


def test_prepare_errors(mosaic):
    task = MultiomicsTask(n_hvg=50, n_hvp=50)
    bad = mosaic.copy()
    bad.obs["has_rna"] = True
    bad.obs.loc[bad.obs_names[-1], "has_atac"] = False  # an ATAC cell marked as lacking ATAC
    with pytest.raises(ValueError, match=r"has_atac.*False but non-zero atac counts"):
        task.prepare(bad, seed=0)
    nomod = mosaic.copy()
    del nomod.var["modality"]
    with pytest.raises(KeyError, match="modality"):
        task.prepare(nomod, seed=0)
    noint = mosaic.copy()
    noint.X = noint.X * 0.5
    with pytest.raises(ValueError, match="raw counts"):
        task.prepare(noint, seed=0)


# --- save / score ------------------------------------------------------------------------------
def test_one_batch_scores_have_no_batch_metrics(tmp_path):
    adata = simulate_multiome_setting(
        setting="rna+atac", n_cells=300, atac_subtypes=1, protein_subtypes=0
    )
    task = get_task("multiomics")
    inputs = task.prepare(adata, seed=0)
    truth = pd.get_dummies(adata.obs["cell_type"]).to_numpy(dtype=np.float32)
    embedding = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    scores = task.score(embedding, inputs, seed=0)
    assert scores["avg_bio"] > 0.9
    for key in ("avg_batch", "asw_batch", "graph_conn", "overall"):
        assert math.isnan(scores[key])
    files = task.save(embedding, inputs, tmp_path)
    assert np.load(files[0]).shape == embedding.shape
    assert pd.read_csv(files[1])["cell"].tolist() == adata.obs_names.tolist()
    with pytest.raises(ValueError, match=r"shape \(300, d\)"):
        task.save(embedding[:10], inputs, tmp_path)


def test_run_method_end_to_end(tmp_path):
    from benchmark.runner import run_method

    adata = simulate_multiome_setting(
        setting="rna+protein", n_cells=300, n_batches=2, atac_subtypes=0
    )
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "run"
    record = run_method(
        "multiomics", "pca_concat", "sim", path, out, seed=0, params={"n_comps": 10}
    )
    assert record["status"] == "ok", record.get("error")
    scores = json.loads((out / "scores.json").read_text())
    assert 0 < scores["avg_bio"] <= 1 and 0 < scores["avg_batch"] <= 1
    failed = run_method("multiomics", "pca_shared", "sim", path, tmp_path / "f", seed=0,
                        params={"modality": "atac"})  # fmt: skip
    assert failed["status"] == "failed" and "atac" in failed["error"]


def test_paper_rows_match_the_table_labels():
    from benchmark.tables import add_paper_columns, paper_values

    table = pd.DataFrame(
        {
            "dataset": ["bmmc", "asap_pbmc", "sim_mosaic"],
            "label": ["Seurat v4", "scMoMat", "totalVI"],
        }
    )
    out = add_paper_columns(table, paper_values("multiomics.csv"), ["avg_bio", "avg_batch"])
    assert out["avg_bio_paper"].tolist()[:2] == [0.600, 0.546]
    assert out["in_paper"].tolist() == [True, True, False]


# --- config ------------------------------------------------------------------------------------
def _multiomics_jobs(config: dict) -> dict[str, list[str]]:
    plan = WorkflowPlan.from_config(config)
    jobs: dict[str, list[str]] = {}
    for job in plan.jobs:
        if job.task == "multiomics" and job.seed == plan.config["seeds"][0]:
            jobs.setdefault(job.dataset, []).append(job.method)
    return jobs


def test_demo_and_paper_plan_multiomics():
    demo = _multiomics_jobs(_yaml("config/config.yaml"))
    assert set(demo) == {
        "sim_multiome_atac", "sim_multiome_protein", "sim_mosaic",
        "bmmc_cite_real", "bmmc_multiome_real",
    }  # fmt: skip
    assert "totalvi" in demo["bmmc_cite_real"] and "multivi" in demo["bmmc_multiome_real"]
    assert "seurat_wnn" not in demo["sim_mosaic"] and "pca_rna" not in demo["sim_mosaic"]
    # totalVI / MultiVI: on the real sets only in the demo (its budget), everywhere in the paper's
    assert "totalvi" not in demo["sim_multiome_protein"] and "multivi" not in demo["sim_mosaic"]
    paper = _multiomics_jobs(_yaml("config/paper.yaml"))
    assert set(paper) == {"pbmc_multiome", "bmmc", "asap_pbmc"}
    assert {"scgpt", "scgpt_scratch", "seurat_wnn"} <= set(paper["bmmc"])
    assert {"scmomat", "scgpt"} <= set(paper["asap_pbmc"])
    assert "seurat_wnn" not in paper["asap_pbmc"]


def test_method_datasets_is_checked():
    config = _yaml("config/config.yaml")
    bad = copy.deepcopy(config)
    bad["tasks"]["multiomics"]["method_datasets"]["pca_rna"] = ["sim_celltypes"]
    with pytest.raises(ConfigError, match=r"method_datasets.pca_rna: \['sim_celltypes'\] not in"):
        WorkflowPlan.from_config(bad)
    bad = copy.deepcopy(config)
    bad["tasks"]["multiomics"]["method_datasets"]["nope"] = ["sim_mosaic"]
    with pytest.raises(ConfigError, match=r"method_datasets\.nope: not a method"):
        WorkflowPlan.from_config(bad)
