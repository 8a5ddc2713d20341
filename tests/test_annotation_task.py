"""Annotation task contract, metrics, label-set mismatch and the runner end to end."""

from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from benchmark.metrics.annotation import annotation_scores, row_normalised_confusion
from benchmark.tasks import get_task
from benchmark.tasks.annotation import TASK, predictions_array, train_val_partition

torch.set_num_threads(1)


def tiny_dataset(seed: int = 0, n_per_type: int = 30, n_genes: int = 40) -> ad.AnnData:
    """Three well-separated types; type C only in the query, type D only in the reference."""
    rng = np.random.default_rng(seed)
    types = ["A", "B", "C", "D"]
    blocks, labels, split = [], [], []
    for t_i, t in enumerate(types):
        rate = np.full(n_genes, 1.0)
        rate[t_i * 10 : (t_i + 1) * 10] = 12.0
        blocks.append(rng.poisson(rate, size=(n_per_type, n_genes)))
        labels += [t] * n_per_type
        if t == "C":
            split += ["query"] * n_per_type
        elif t == "D":
            split += ["reference"] * n_per_type
        else:
            split += ["reference"] * (2 * n_per_type // 3) + ["query"] * (
                n_per_type - 2 * n_per_type // 3
            )
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels), "split": split, "batch": "b0"},
        index=[f"cell{i}" for i in range(len(labels))],
    )
    obs["label_copy"] = obs["cell_type"].astype(str).str.lower()
    return ad.AnnData(
        X=sp.csr_matrix(np.vstack(blocks).astype(np.float32)),
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]),
    )


def test_metrics_match_sklearn_on_fixed_inputs():
    truth = np.array(["a", "a", "b", "b", "c", "c", "c"])
    pred = np.array(["a", "b", "b", "b", "c", "a", "d"])
    scores = annotation_scores(truth, pred)
    assert scores["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    # The paper's definition: scikit-learn macro averages over its default label set.
    assert scores["precision"] == pytest.approx(
        precision_score(truth, pred, average="macro", zero_division=0)
    )
    assert scores["recall"] == pytest.approx(
        recall_score(truth, pred, average="macro", zero_division=0)
    )
    assert scores["macro_f1"] == pytest.approx(
        f1_score(truth, pred, average="macro", zero_division=0)
    )
    assert scores["accuracy"] == pytest.approx(4 / 7)
    # Hand values: per-class F1 a=0.5, b=0.8, c=0.5, d=0 (predicted only).
    assert scores["f1_a"] == pytest.approx(0.5)
    assert scores["f1_b"] == pytest.approx(0.8)
    assert scores["f1_c"] == pytest.approx(0.5)
    assert scores["f1_d"] == 0.0
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.5 + 0.0) / 4)
    truth_only = annotation_scores(truth, pred, labels="truth")
    assert truth_only["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.5) / 3)
    assert "f1_d" not in truth_only


def test_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="must match"):
        annotation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        annotation_scores([], [])


def test_confusion_rows_sum_to_one():
    m = row_normalised_confusion(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert list(m.index) == ["a", "b"] and list(m.columns) == ["a", "b"]
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    assert m.loc["a", "b"] == 0.5


def test_train_val_partition_is_stratified_and_seeded():
    labels = np.array(["x"] * 50 + ["y"] * 20 + ["z"])
    a = train_val_partition(labels, seed=1)
    b = train_val_partition(labels, seed=1)
    c = train_val_partition(labels, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert ((labels == "x") & (a == "val")).sum() == 5
    assert ((labels == "y") & (a == "val")).sum() == 2
    assert a[labels == "z"][0] == "train"  # a single-cell type stays in training


def test_prepare_hides_truth_and_reports_unseen_labels(caplog):
    adata = tiny_dataset()
    with caplog.at_level(logging.WARNING):
        inputs = TASK.prepare(adata, seed=0)
    reference, query = inputs["args"]
    assert "cell_type" not in query.obs
    assert "label_copy" not in query.obs  # a one-to-one relabelling of cell_type is hidden too
    assert "batch" in query.obs
    assert set(reference.obs["train_val"]) == {"train", "val"}
    assert inputs["unseen_query_labels"] == ["C"]
    assert inputs["reference_labels"] == ["A", "B", "D"]
    assert "absent from the reference" in caplog.text
    assert len(inputs["truth"]) == query.n_obs


def test_unseen_labels_count_as_errors():
    inputs = TASK.prepare(tiny_dataset(), seed=0)
    truth = inputs["truth"]
    # A perfect predictor on every label the reference has; C cannot be predicted.
    predicted = np.where(truth == "C", "A", truth)
    scores = TASK.score(predicted, inputs, seed=0)
    unseen_frac = float(np.mean(truth == "C"))
    assert scores["accuracy"] == pytest.approx(1 - unseen_frac)
    assert scores["accuracy_seen_labels"] == 1.0
    assert scores["n_unseen_query_labels"] == 1.0
    assert scores["frac_query_cells_unseen"] == pytest.approx(unseen_frac)
    assert scores["f1_C"] == 0.0
    assert scores["recall"] == pytest.approx(
        recall_score(truth, predicted, average="macro", zero_division=0)
    )


def test_prepare_rejects_missing_split_values():
    adata = tiny_dataset()
    adata.obs["split"] = "reference"
    with pytest.raises(ValueError, match="'query'"):
        TASK.prepare(adata, seed=0)


def test_predictions_are_validated():
    with pytest.raises(ValueError, match="one label per"):
        predictions_array(np.array(["a", "b"]), 3)
    with pytest.raises(ValueError, match="missing"):
        predictions_array(np.array(["a", None, "b"], dtype=object), 3)
    assert predictions_array(np.array([[1], [2]]), 2).tolist() == ["1", "2"]


def test_save_writes_predictions_embedding_and_named_obsm(tmp_path):
    adata = tiny_dataset()
    adata.obsm["X_preexisting"] = np.zeros((adata.n_obs, 2))
    inputs = TASK.prepare(adata, seed=0)
    _, query = inputs["args"]
    query.obsm["X_method"] = np.ones((query.n_obs, 3), dtype=np.float32)
    query.obsm["scores_by_set"] = np.full((query.n_obs, 2), 0.5)
    query.uns["scores_by_set_columns"] = ["set1", "set2"]
    files = TASK.save(np.array(["A"] * query.n_obs), inputs, tmp_path)
    names = {p.name for p in files}
    assert names == {"predictions.csv", "embedding.npy", "scores_by_set.csv", "annotation.json"}
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert list(preds.columns) == ["cell", "predicted", "true"]
    assert preds["cell"].tolist() == query.obs_names.tolist()
    assert np.load(tmp_path / "embedding.npy").shape == (query.n_obs, 3)
    table = pd.read_csv(tmp_path / "scores_by_set.csv", index_col=0)
    assert list(table.columns) == ["set1", "set2"]
    meta = json.loads((tmp_path / "annotation.json").read_text())
    assert meta["unseen_query_labels"] == ["C"]


def test_task_registry_and_reference_mapping_share_the_contract():
    annotation = get_task("annotation")
    mapping = get_task("reference_mapping")
    assert annotation.metrics == ("accuracy", "precision", "recall", "macro_f1")
    assert annotation.paper_table == "annotation.csv"
    assert annotation.required_obs == ("cell_type", "split")
    assert mapping.name == "reference_mapping" and mapping.paper_table is None
    assert mapping.metrics == annotation.metrics
    assert isinstance(mapping, type(annotation))


def test_runner_end_to_end_with_figures(tmp_path):
    from benchmark.runner import run_method

    path = tmp_path / "tiny.h5ad"
    tiny_dataset().write_h5ad(path)
    run_dirs = []
    for method, params in [("logreg", {"n_top_genes": None}), ("pca_knn", {"n_comps": 5})]:
        outdir = tmp_path / "annotation" / "tiny" / method / "seed0"
        record = run_method("annotation", method, "tiny", path, outdir, seed=0, params=params)
        assert record["status"] == "ok", record.get("traceback")
        assert (outdir / "predictions.csv").exists()
        scores = json.loads((outdir / "scores.json").read_text())
        assert scores["status"] == "ok"
        # Reference types A, B, D are easy; only the unseen type C is wrong.
        assert scores["accuracy_seen_labels"] > 0.9
        run_dirs.append(outdir)
    failed = tmp_path / "annotation" / "tiny" / "broken" / "seed0"
    record = run_method("annotation", "logreg", "tiny", path, failed, seed=0, params={"nope": 1})
    assert record["status"] == "failed" and "nope" in record["error"]
    run_dirs.append(failed)

    figures = TASK.figures(run_dirs, path, tmp_path / "figures")
    names = {p.name for p in figures}
    assert {
        "confusion_logreg.png",
        "confusion_pca_knn.png",
        "umap_pca_knn.png",
        "metrics.png",
    } <= names
    assert all(p.stat().st_size > 0 for p in figures)
