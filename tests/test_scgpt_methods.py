"""scGPT registered as a method of every task, run through the harness on a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from benchmark.runner import run_method
from benchmark.simulate import make_world, simulate_celltypes, simulate_perturbation
from contract.registry import get_method, list_methods
from tests._models import random_checkpoint

torch.set_num_threads(1)

# Tiny settings: the point is the contract and that fine-tuning learns, not the paper's numbers.
# The perturbation max_len is below the 400 genes on purpose: training then uses a random gene
# subset per batch (the library's path for long inputs) and is quick.
ANNOTATION = {"epochs": 8, "lr": 3e-3, "batch_size": 16, "max_len": 128, "device": "cpu"}
INTEGRATION = {"epochs": 1, "lr": 1e-3, "batch_size": 32, "max_len": 64, "device": "cpu"}
PERTURBATION = {"epochs": 1, "lr": 1e-3, "batch_size": 32, "max_len": 64, "n_control_cells": 10}

# Fewer genes than max_len in training is the library's documented gene-subset path.
SUBSET_WARNINGS = pytest.mark.filterwarnings(
    "ignore:the data has:UserWarning", "ignore:predicting with all:UserWarning"
)

EXPECTED = {
    ("annotation", "scgpt"): "scGPT",
    ("annotation", "scgpt_scratch"): "scGPT (from scratch)",
    ("reference_mapping", "scgpt_zeroshot"): "scGPT (zero-shot)",
    ("reference_mapping", "scgpt_finetuned"): "scGPT (fine-tuned)",
    ("integration", "scgpt"): "scGPT",
    ("integration", "scgpt_scratch"): "scGPT (from scratch)",
    ("integration", "scgpt_zeroshot"): "scGPT (zero-shot)",
    ("multiomics", "scgpt"): "scGPT",
    ("multiomics", "scgpt_scratch"): "scGPT (from scratch)",
    ("perturbation", "scgpt"): "scGPT",
    ("perturbation", "scgpt_scratch"): "scGPT (from scratch)",
    ("perturbation_expansion", "scgpt"): "scGPT",
    ("perturbation_expansion", "scgpt_scratch"): "scGPT (from scratch)",
    ("reverse_perturbation", "scgpt"): "scGPT",
    ("reverse_perturbation", "scgpt_scratch"): "scGPT (from scratch)",
    ("grn", "scgpt"): "scGPT (pre-trained)",
    ("grn", "scgpt_finetuned"): "scGPT (fine-tuned)",
}


def _checkpoint(folder, genes):
    # A seed other than the methods' seed 0, so "pre-trained" and "from scratch" differ.
    return random_checkpoint(folder, genes, seed=123, max_seq_len=128)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scgpt_methods")
    celltypes = simulate_celltypes(n_cells=300, n_batches=2, seed=1)
    perturb = simulate_perturbation(
        n_ctrl_cells=60, n_cells_per_condition=6, n_single=6, n_double=3, seed=0
    )
    paths = {"celltypes": root / "celltypes.h5ad", "perturb": root / "perturb.h5ad"}
    celltypes.write_h5ad(paths["celltypes"])
    perturb.write_h5ad(paths["perturb"])
    paths["checkpoint"] = _checkpoint(root / "ckpt", list(make_world().genes))
    paths["foreign"] = _checkpoint(root / "foreign", [f"OTHER{i}" for i in range(20)])
    return paths


def _run(task, method, files, dataset, params, outdir, checkpoint=None):
    record = run_method(
        task,
        method,
        dataset,
        files[dataset],
        outdir,
        seed=0,
        params=params,
        checkpoint=checkpoint or files["checkpoint"],
    )
    scores = json.loads((outdir / "scores.json").read_text())
    return record, scores


def test_registered_with_the_paper_labels():
    from benchmark.tables import paper_values

    found = {(s.task, s.name): s for s in list_methods() if s.name.startswith("scgpt")}
    assert {key: spec.label for key, spec in found.items()} == EXPECTED
    assert all(spec.needs_checkpoint for spec in found.values())
    for table in ("annotation.csv", "integration.csv"):
        labels = set(paper_values(table)["method"])
        assert {"scGPT", "scGPT (from scratch)"} <= labels
    # Defaults are the tutorials' settings.
    ann = get_method("annotation", "scgpt").parameters()
    assert (ann["lr"], ann["batch_size"], ann["epochs"], ann["max_len"]) == (1e-4, 32, 10, 3001)
    assert ann["val_fraction"] == 0.1
    pert = get_method("perturbation", "scgpt").parameters()
    assert (pert["lr"], pert["batch_size"], pert["epochs"]) == (1e-4, 64, 15)
    assert (pert["dropout"], pert["expr_decoder"], pert["input_batchnorm"]) == (
        0.0,
        "affine",
        False,
    )
    assert pert["load_all_weights"] is False
    integ = get_method("integration", "scgpt").parameters()
    assert (integ["ecs_threshold"], integ["ecs_weight"], integ["dsbn"]) == (0.8, 10.0, True)
    assert (integ["include_zero_genes"], integ["use_batch_labels"], integ["val_fraction"]) == (
        True,
        True,
        0.1,
    )
    for spec in found.values():
        assert spec.parameters()["device"] == "auto"


TWIN_TASKS = (
    "annotation",
    "integration",
    "multiomics",
    "perturbation",
    "perturbation_expansion",
    "reverse_perturbation",
)


@pytest.mark.parametrize("task", TWIN_TASKS)
def test_pretrained_and_scratch_are_one_function(task):
    """``scgpt`` and ``scgpt_scratch`` run one function, ``pretrained`` bound by registration."""
    pre, scratch = get_method(task, "scgpt"), get_method(task, "scgpt_scratch")
    assert pre.function is scratch.function
    assert (dict(pre.bound), dict(scratch.bound)) == ({"pretrained": True}, {"pretrained": False})
    assert pre.parameters() == scratch.parameters()
    assert "pretrained" not in pre.parameters()
    with pytest.raises(TypeError, match=r"'scgpt_scratch' .* fixes pretrained .*=False"):
        scratch.check_params({"pretrained": True})


class _Loaded(Exception):
    """Raised by the stand-in of ``load_model``: the adapter got this far with ``pretrained``."""


@pytest.mark.parametrize("task", TWIN_TASKS)
def test_the_harness_call_passes_the_bound_pretrained(task, monkeypatch):
    import pandas as pd

    def load_model(checkpoint, *, pretrained, seed):
        raise _Loaded(pretrained)

    for module in ("annotation", "integration", "multiomics", "perturbation"):
        monkeypatch.setattr(f"baselines.scgpt_{module}.load_model", load_model)
    obs = pd.DataFrame(
        {"cell_type": ["a", "b"], "batch": ["x", "y"], "condition": ["ctrl", "A+ctrl"]},
        index=["c0", "c1"],
    )
    cells = ad.AnnData(np.ones((2, 2), dtype=np.float32), obs=obs)
    args = {
        "annotation": (cells, cells),
        "integration": (cells,),
        "multiomics": (cells,),
        "perturbation": (cells, ["A+ctrl"]),
        "perturbation_expansion": (cells, ["A+ctrl"]),
        "reverse_perturbation": (cells, ["A+ctrl"], cells),
    }[task]
    for method, pretrained in (("scgpt", True), ("scgpt_scratch", False)):
        with pytest.raises(_Loaded) as loaded:
            get_method(task, method).func(*args, seed=0, checkpoint="unused")
        assert loaded.value.args == (pretrained,)


def test_plan_refuses_pretrained_for_the_scgpt_twins():
    import copy

    import yaml

    from benchmark.workflow import ConfigError, WorkflowPlan

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    for method in ("scgpt", "scgpt_scratch"):
        bad = copy.deepcopy(config)
        bad["tasks"]["annotation"]["methods"][method] = {"pretrained": method == "scgpt"}
        with pytest.raises(
            ConfigError, match=rf"tasks\.annotation\.methods\.{method}: .* fixes pretrained"
        ):
            WorkflowPlan.from_config(bad)


def test_tables_mark_the_suites_additions():
    """Rows the paper's table does not have are marked; a from-scratch scBERT is one of them."""
    import pandas as pd

    from benchmark import tables

    scbert = get_method("annotation", "scbert").label
    assert scbert == "scBERT (from scratch)"  # the paper's scBERT is pre-trained
    table = pd.DataFrame(
        {
            "dataset": ["ms", "ms", "ms"],
            "label": ["scGPT", scbert, "Logistic regression"],
            "n_seeds": [5, 5, 5],
            "accuracy": [0.8, 0.7, 0.6],
            "accuracy_se": [0.01, 0.01, 0.01],
            "wall_seconds": [1.0, 1.0, 1.0],
            "status": ["ok", "ok", "ok"],
        }
    )
    merged = tables.add_paper_columns(table, tables.paper_values("annotation.csv"), ["accuracy"])
    assert merged["in_paper"].tolist() == [True, False, False]
    text = tables.to_markdown(merged, ["accuracy"], "annotation")
    assert "| ms | scGPT | 5 |" in text
    assert f"| ms | {scbert} (addition) |" in text
    assert "| ms | Logistic regression (addition) |" in text
    # On a dataset the paper does not have (the demo's), the method decides.
    demo = table.assign(dataset="sim_celltypes")
    merged = tables.add_paper_columns(demo, tables.paper_values("annotation.csv"), ["accuracy"])
    assert merged["in_paper"].tolist() == [True, False, False]
    # Without a paper table nothing is called an addition.
    plain = tables.to_markdown(
        tables.add_paper_columns(table, None, ["accuracy"]), ["accuracy"], "annotation"
    )
    assert "(addition) |" not in plain


def test_annotation_learns_and_writes_the_embedding(files, tmp_path):
    from benchmark.tasks.annotation import TASK

    inputs = TASK.prepare(ad.read_h5ad(files["celltypes"]), seed=0)
    labels, counts = np.unique(inputs["args"][0].obs["cell_type"].astype(str), return_counts=True)
    majority = float(np.mean(inputs["truth"] == labels[counts.argmax()]))
    accuracy = {}
    for method in ("scgpt", "scgpt_scratch"):
        out = tmp_path / method
        record, scores = _run("annotation", method, files, "celltypes", ANNOTATION, out)
        assert record["status"] == "ok", record["error"]
        assert record["label"] == EXPECTED[("annotation", method)]
        embedding = np.load(out / "embedding.npy")
        assert embedding.shape == (inputs["truth"].size, 32) and np.isfinite(embedding).all()
        accuracy[method] = scores["accuracy"]
    assert accuracy["scgpt"] > majority + 0.2, (accuracy, majority)
    assert accuracy["scgpt_scratch"] != accuracy["scgpt"]  # different initial weights


def test_zero_shot_reference_mapping(files, tmp_path):
    record, scores = _run(
        "reference_mapping", "scgpt_zeroshot", files, "celltypes", {"max_len": 128}, tmp_path
    )
    assert record["status"] == "ok", record["error"]
    assert 0.0 <= scores["accuracy"] <= 1.0 and "macro_f1" in scores
    assert np.load(tmp_path / "embedding.npy").shape[1] == 32


@pytest.mark.parametrize("method", ["scgpt", "scgpt_zeroshot", "scgpt_scratch"])
def test_integration_embeddings(files, tmp_path, method):
    params = {"max_len": 64} if method == "scgpt_zeroshot" else INTEGRATION
    record, scores = _run("integration", method, files, "celltypes", params, tmp_path)
    assert record["status"] == "ok", record["error"]
    embedding = np.load(tmp_path / "embedding.npy")
    assert embedding.shape == (300, 32) and np.isfinite(embedding).all()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-4)
    assert {"avg_bio", "avg_batch"} <= set(scores)


@SUBSET_WARNINGS
@pytest.mark.parametrize("method", ["scgpt", "scgpt_scratch"])
def test_perturbation_contract(files, tmp_path, method):
    record, scores = _run("perturbation", method, files, "perturb", PERTURBATION, tmp_path)
    assert record["status"] == "ok", record["error"]
    pred = ad.read_h5ad(tmp_path / "predictions.h5ad")
    train_genes = ad.read_h5ad(files["perturb"]).var_names
    assert list(pred.var_names) == list(train_genes) and pred.n_obs >= 1
    assert np.isfinite(pred.X).all()
    assert {"pearson_delta", "mse"} <= set(scores)


@SUBSET_WARNINGS
def test_direct_call_respects_the_seed(files):
    from benchmark.tasks.perturbation import TASK

    train, conditions = TASK.prepare(ad.read_h5ad(files["perturb"]), seed=0)["args"]
    func = get_method("perturbation", "scgpt").func
    params = {**PERTURBATION, "checkpoint": files["checkpoint"], "device": "cpu"}
    first = func(train, conditions, seed=0, **params)
    again = func(train, conditions, seed=0, **params)
    other = func(train, conditions, seed=1, **params)
    assert list(first.obs_names) == conditions
    np.testing.assert_allclose(first.X, again.X, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.X, other.X)
    # log-normalised scale: the model learns the training values' range, not bins or counts
    assert float(np.abs(first.X).max()) < 20


@pytest.mark.parametrize(
    ("task", "method", "dataset"),
    [
        ("annotation", "scgpt", "celltypes"),
        ("reference_mapping", "scgpt_zeroshot", "celltypes"),
        ("integration", "scgpt_zeroshot", "celltypes"),
        ("perturbation", "scgpt", "perturb"),
    ],
)
def test_no_gene_in_the_vocabulary_is_a_clear_failed_row(files, tmp_path, task, method, dataset):
    params = {"epochs": 1} if method == "scgpt" else {}
    record, scores = _run(task, method, files, dataset, params, tmp_path, files["foreign"])
    assert record["status"] == "failed" and scores["status"] == "failed"
    assert "none of the" in record["error"] and "vocabulary" in record["error"]
    assert files["foreign"] in record["error"]


def test_finetuned_reference_mapping(files, tmp_path):
    import pandas as pd

    from benchmark.tasks.reference_mapping import TASK

    inputs = TASK.prepare(ad.read_h5ad(files["celltypes"]), seed=0)
    labels, counts = np.unique(inputs["args"][0].obs["cell_type"].astype(str), return_counts=True)
    majority = float(np.mean(inputs["truth"] == labels[counts.argmax()]))
    params = {**ANNOTATION, "k": 10}
    record, scores = _run(
        "reference_mapping", "scgpt_finetuned", files, "celltypes", params, tmp_path
    )
    assert record["status"] == "ok", record["error"]
    assert record["label"] == "scGPT (fine-tuned)"
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions["true"].astype(str)) == list(inputs["truth"])
    assert set(predictions["predicted"].astype(str)) <= set(labels)
    embedding = np.load(tmp_path / "embedding.npy")
    assert embedding.shape == (inputs["truth"].size, 32) and np.isfinite(embedding).all()
    assert scores["accuracy"] > majority + 0.2, (scores["accuracy"], majority)
    spec = get_method("reference_mapping", "scgpt_finetuned")
    assert spec.parameters() == {
        **get_method("annotation", "scgpt").parameters(),
        "k": 10,
    }
