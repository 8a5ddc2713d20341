"""Perturbation-space expansion: dominant genes, program labels, clustering and a full run."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from baselines.registry import get_method
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
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, clusters) > 0.95


def test_methods_are_the_perturbation_functions() -> None:
    for name in ("scgpt", "gears", "additive", "linear"):
        assert (
            get_method("perturbation_expansion", name).func is get_method("perturbation", name).func
        )
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
    # the figures of the run: the cluster map and two genes over it
    task = get_task("perturbation_expansion")
    files = task.figures([out], path, tmp_path / "figures")
    assert len(files) == 2 and all(f.exists() for f in files)
