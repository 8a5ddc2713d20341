"""scgpt embedding API and fine-tuning library on a tiny random checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from contract.conditions import parse_condition
from scgpt import (
    embed_cells,
    finetune_classifier,
    finetune_integration,
    gene_embeddings,
    load_pretrained,
    predict_classifier,
    predict_perturbation,
    train_perturbation_model,
)
from scgpt.synthetic import synthetic_counts
from tests._models import random_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    genes = [f"GENE{i}" for i in range(40)] + ["EXTRA"]
    folder = tmp_path_factory.mktemp("ckpt")
    return Path(random_checkpoint(folder, genes, seed=0, nlayers=2, max_seq_len=1200))


@pytest.fixture(scope="module")
def adata():
    a = synthetic_counts(
        48, 45, n_cell_types=2, n_batches=2, seed=4
    )  # GENE40..44 are not in the vocabulary
    return a


def test_embed_cells_writes_normalised_obsm(checkpoint, adata):
    a = adata.copy()
    emb = embed_cells(a, checkpoint, batch_size=16, max_length=20, device="cpu", progress=False)
    assert a.obsm["X_scGPT"].shape == (48, 32) and emb is a.obsm["X_scGPT"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    again = embed_cells(
        a, checkpoint, batch_size=7, max_length=20, device="cpu", progress=False, obsm_key=None
    )
    np.testing.assert_allclose(again, emb, rtol=1e-4, atol=1e-5)  # batching does not change results
    dense = a.copy()
    dense.X = dense.X.toarray()
    np.testing.assert_allclose(
        embed_cells(dense, checkpoint, max_length=20, progress=False, obsm_key=None),
        emb,
        rtol=1e-4,
        atol=1e-5,
    )


def test_gene_embeddings(checkpoint):
    df = gene_embeddings(checkpoint, ["GENE1", "GENE3", "NOT_A_GENE"])
    assert list(df.index) == ["GENE1", "GENE3"] and df.shape == (2, 32)
    full = gene_embeddings(checkpoint, as_dataframe=False)
    assert len(full) == 41 and full["GENE3"].shape == (32,)
    np.testing.assert_allclose(full["GENE3"], df.loc["GENE3"].to_numpy(), rtol=1e-6)


def test_finetune_and_predict_classifier(checkpoint, adata):
    a = adata.copy()
    X = a.X.toarray()
    t1 = (a.obs["cell_type"] == "type_1").to_numpy()
    X[np.ix_(t1, np.arange(0, 15))] = (
        0  # each type expresses its own genes: learnable in a few steps
    )
    X[np.ix_(~t1, np.arange(15, 30))] = 0
    a.X = sp.csr_matrix(X)
    res = finetune_classifier(
        checkpoint,
        a,
        "cell_type",
        epochs=3,
        lr=3e-3,
        batch_size=16,
        max_len=24,
        device="cpu",
        progress=False,
    )
    assert res.classes == ["type_0", "type_1"] and len(res.history) == 3
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    pred, proba = predict_classifier(res, a, max_len=24, return_proba=True)
    assert pred.shape == (48,) and set(pred) <= set(res.classes) and proba.shape == (48, 2)
    assert (pred == a.obs["cell_type"].astype(str).to_numpy()).mean() > 0.9


def test_finetune_integration_objectives(checkpoint, adata):
    a = adata.copy()
    res = finetune_integration(
        checkpoint, a, "batch", epochs=1, batch_size=16, max_len=24, device="cpu", progress=False
    )
    m = res.model
    assert (
        hasattr(m, "dsbn")
        and hasattr(m, "grad_reverse_discriminator")
        and m.config.explicit_zero_prob
    )
    assert res.embedding.shape == (48, 32) and a.obsm["X_scGPT"].shape == (48, 32)
    assert res.batch_categories == ["batch_0", "batch_1"]
    keys = set(res.history[0])
    assert {"loss_gep", "loss_gepc", "loss_ecs", "loss_dab", "loss_gep_zero"} <= keys


def test_perturbation_train_predict_warns_instead_of_truncating(checkpoint):
    a = synthetic_counts(60, 45, seed=5)
    rng = np.random.default_rng(0)
    a.obs["condition"] = rng.choice(["ctrl", "GENE1+ctrl", "GENE2+GENE3"], size=60)
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    with pytest.warns(UserWarning, match="more than max_len=30"):
        res = train_perturbation_model(
            checkpoint, a, epochs=1, batch_size=16, max_len=30, device="cpu", progress=False
        )
    assert hasattr(res.model, "pert_encoder") and res.model.config.pad_value == 0.0
    with pytest.warns(UserWarning, match="longer than the training max_len"):
        pred = predict_perturbation(
            res, a, ["GENE1+ctrl", "GENE2+GENE3"], n_control_cells=8, progress=False
        )
    assert list(pred.obs_names) == ["GENE1+ctrl", "GENE2+GENE3"] and list(pred.var_names) == list(
        a.var_names
    )
    assert pred.X.shape == (2, 45) and np.isfinite(pred.X).all()
    with pytest.warns(UserWarning) as record:
        predict_perturbation(res, a, ["UNKNOWN+ctrl"], n_control_cells=4, progress=False)
    assert any("'UNKNOWN'" in str(w.message) and "not among" in str(w.message) for w in record)
    assert parse_condition("A+ctrl") == ("A",) and parse_condition("B+A") == ("A", "B")
    assert parse_condition("control+A", control="control") == ("A",)


def test_bare_model_needs_vocab(checkpoint, adata):
    model, vocab, _ = load_pretrained(checkpoint)
    model.vocab = None
    with pytest.raises(ValueError, match="vocab"):
        embed_cells(adata.copy(), model, progress=False)
    emb = embed_cells(adata.copy(), model, vocab=vocab, max_length=20, progress=False)
    assert emb.shape == (48, 32)
