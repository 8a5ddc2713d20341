"""Perturbation-space expansion: dominant genes, program labels, clustering and a full run."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from benchmark.runner import run_method
from benchmark.simulate import simulate_perturbation
from benchmark.tasks import get_task
from benchmark.tasks.perturbation_expansion import (
    PerturbationExpansionTask,
    cluster_responses,
    dominant_gene,
    label_clusters,
    program_labels,
)
from contract.conditions import normalise_condition
from contract.registry import get_method


def test_dominant_gene_labelling() -> None:
    cluster = ["KLF1+ctrl", "KLF1+MAP2K6", "CEBPE+KLF1", "CEBPE+ctrl", "BAK1+KLF1"]
    assert dominant_gene(cluster) == ("KLF1", 4 / 5)
    # ties go to the alphabetically first gene
    assert dominant_gene(["A+B", "B+C", "A+ctrl"])[0] == "A"
    labels = label_clusters(
        ["A+B", "A+C", "A+ctrl", "D+E", "D+ctrl", "C+D"], ["0", "0", "0", "1", "1", "1"]
    )
    assert labels == {"0": "A", "1": "D"}
    with pytest.raises(ValueError, match="no perturbed gene"):
        dominant_gene(["ctrl"])


def test_program_labels() -> None:
    family = {"A": "P1", "B": "P1", "C": "P2"}
    assert program_labels(["A+ctrl", "A+B", "A+C", "C+ctrl"], family) == ["P1", "P1", "P1+P2", "P2"]
    with pytest.raises(KeyError, match="'D'"):
        program_labels(["A+D"], family)


def test_clusters_recover_separated_programs() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(3, 40))
    labels = np.repeat([0, 1, 2], 30)
    delta = centres[labels] + rng.normal(0, 0.3, size=(90, 40))
    clusters, umap = cluster_responses(delta, seed=0, resolution=0.3)
    assert umap.shape == (90, 2)
    assert adjusted_rand_score(labels, clusters) > 0.95


def test_methods_are_the_perturbation_functions() -> None:
    for name in ("scgpt", "scgpt_scratch", "gears", "additive", "linear"):
        expansion, perturbation = (
            get_method(t, name) for t in ("perturbation_expansion", "perturbation")
        )
        assert expansion.function is perturbation.function
        assert expansion.bound == perturbation.bound
    task = get_task("perturbation_expansion")
    assert isinstance(task, PerturbationExpansionTask)
    assert task.with_metric_options({"resolution": 0.5}).resolution == 0.5
    with pytest.raises(ValueError, match="unknown metrics option"):
        task.with_metric_options({"clustering": "louvain"})


def test_run_end_to_end(tmp_path: Path) -> None:
    adata = simulate_perturbation(
        n_ctrl_cells=120, n_cells_per_condition=8, n_single=8, n_double=12, seed=1
    )
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "run"
    record = run_method("perturbation_expansion", "linear", "screen", path, out, seed=0)
    assert record["status"] == "ok", record.get("traceback")
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_conditions"] == 8 + 28
    for key in ("ari_programs", "nmi_programs", "pearson_delta_truth", "pearson_delta"):
        assert -1.0 <= scores[key] <= 1.0
    assert 0.0 < scores["dominant_share"] <= 1.0
    pred = ad.read_h5ad(out / "predictions.h5ad")
    assert pred.n_obs == 36 and pred.obsm["X_umap"].shape == (36, 2)
    assert (
        pred.obs["heldout"].sum()
        == (adata.obs.drop_duplicates("condition")["split"] == "test").sum()
    )
    clusters = pd.read_csv(out / "clusters.csv")
    assert clusters["n_conditions"].sum() == 36
    # The scores follow from the saved map, recomputed here by hand: true programs in the
    # conditions' order, ARI / NMI against the saved clusters, dominant genes, accuracy of
    # the held-out predictions against the simulated noise-free change.
    family = dict(adata.uns["simulation"]["family"])
    programs = program_labels(list(pred.obs_names), family)
    assert pred.obs["program"].astype(str).tolist() == programs
    leiden = pred.obs["leiden"].astype(str).to_numpy()
    assert scores["ari_programs"] == pytest.approx(adjusted_rand_score(programs, leiden))
    assert scores["nmi_programs"] == pytest.approx(normalized_mutual_info_score(programs, leiden))
    assert scores["n_clusters"] == len(set(leiden)) == len(clusters)
    for cluster, gene in zip(clusters["cluster"].astype(str), clusters["dominant_gene"]):
        assert gene == dominant_gene(list(pred.obs_names[leiden == cluster]))[0]
    sim = adata.uns["simulation"]
    names = (normalise_condition(str(c)) for c in sim["conditions"])
    true_delta = dict(zip(names, np.asarray(sim["true_delta"])))
    held = pred[pred.obs["heldout"].to_numpy()]
    ctrl = np.asarray(pred.uns["ctrl_mean"], dtype=float)
    by_hand = [
        np.corrcoef(np.asarray(held.X[i], float) - ctrl, true_delta[name])[0, 1]
        for i, name in enumerate(held.obs_names)
    ]
    assert scores["pearson_delta_truth"] == pytest.approx(np.mean(by_hand), abs=1e-4)
    # and the linear model learns the screen's structure (a shuffled map scores ~0)
    assert scores["ari_programs"] > 0.3 and scores["pearson_delta_truth"] > 0.5
    # the figures of the run: the cluster map and two genes over it
    task = get_task("perturbation_expansion")
    files = task.figures([out], path, tmp_path / "figures")
    assert len(files) == 2 and all(f.exists() for f in files)


def _program_oracle(inputs: dict, seed: int = 0) -> ad.AnnData:
    """Predictions whose change over control is a function of the true program alone."""
    rng = np.random.default_rng(seed)
    n_genes = len(inputs["var_names"])
    signature = {p: rng.normal(0, 1, n_genes) for p in sorted(set(inputs["programs"]))}
    ctrl = inputs["heldout"]["ctrl_mean"]
    X = np.array([ctrl + signature[p] + rng.normal(0, 0.05, n_genes) for p in inputs["programs"]])
    return ad.AnnData(
        X=X.astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(inputs["conditions"])),
        var=pd.DataFrame(index=pd.Index(inputs["var_names"])),
    )


@pytest.fixture(scope="module")
def screen_inputs() -> tuple[ad.AnnData, dict]:
    adata = simulate_perturbation(
        n_ctrl_cells=120, n_cells_per_condition=8, n_single=8, n_double=12, seed=1
    )
    return adata, PerturbationExpansionTask().prepare(adata, seed=0)


def test_true_programs_follow_the_conditions(screen_inputs, tmp_path: Path) -> None:
    """Planted structure: responses set by the true program must be clustered as the programs
    (ARI 1), and the saved programs must sit on their own conditions."""
    adata, inputs = screen_inputs
    family = dict(adata.uns["simulation"]["family"])
    assert inputs["programs"] == program_labels(inputs["conditions"], family)
    assert len(set(inputs["programs"])) == 3  # P1, P6 and the cross-family pairs P1+P6
    task = PerturbationExpansionTask()
    output = _program_oracle(inputs)
    run = {k: v for k, v in inputs.items() if k != "_analysis"}
    scores = task.score(output, run, seed=0)
    assert scores["ari_programs"] == pytest.approx(1.0)
    assert scores["nmi_programs"] == pytest.approx(1.0)
    task.save(output, run, tmp_path)
    pred = ad.read_h5ad(tmp_path / "predictions.h5ad")
    for name, program in zip(pred.obs_names, pred.obs["program"].astype(str)):
        assert program == program_labels([name], family)[0]


def test_resolution_option_reaches_the_clustering(screen_inputs) -> None:
    """``metrics.resolution`` changes the map: more clusters at a higher resolution."""
    _, inputs = screen_inputs
    output = _program_oracle(inputs)
    base = get_task("perturbation_expansion")
    n_clusters = {}
    for resolution in (0.5, 5.0):
        task = base.with_metric_options({"resolution": resolution})
        run = {k: v for k, v in inputs.items() if k != "_analysis"}
        scores = task.score(output, run, seed=0)
        assert scores["resolution"] == resolution
        n_clusters[resolution] = scores["n_clusters"]
    assert n_clusters[0.5] == 3  # the three planted programs
    assert n_clusters[5.0] > 6
