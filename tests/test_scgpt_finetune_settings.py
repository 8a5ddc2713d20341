"""The official tutorials' fine-tuning settings: perturbation model, zero genes, epoch selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import scgpt.finetune.integration as integration_module
from scgpt import finetune_classifier, finetune_integration, load_pretrained, predict_classifier
from scgpt.finetune import perturbation_model
from scgpt.finetune._common import holdout_split
from scgpt.finetune.perturbation import OFFICIAL_LOAD_PREFIXES
from scgpt.model import AffineExprDecoder, ExprDecoder
from scgpt.synthetic import synthetic_counts
from tests._models import random_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    genes = [f"GENE{i}" for i in range(40)]
    folder = tmp_path_factory.mktemp("settings_ckpt")
    # dropout 0.2 like a released checkpoint, so that "dropout 0" is a change
    return Path(random_checkpoint(folder, genes, seed=0, nlayers=2, dropout=0.2))


@pytest.fixture(scope="module")
def separable():
    """Two cell types that express disjoint halves of the genes, two batches."""
    a = synthetic_counts(60, 40, n_cell_types=2, n_batches=2, seed=4)
    X = a.X.toarray()
    t1 = (a.obs["cell_type"] == "type_1").to_numpy()
    X[np.ix_(t1, np.arange(0, 15))] = 0
    X[np.ix_(~t1, np.arange(15, 30))] = 0
    a.X = sp.csr_matrix(X)
    return a


def test_perturbation_model_is_the_tutorials(checkpoint) -> None:
    base, _, _ = load_pretrained(checkpoint)
    torch.manual_seed(0)
    m = perturbation_model(base)
    cfg = m.config
    assert isinstance(m.decoder, AffineExprDecoder)
    assert not hasattr(m, "bn") and not hasattr(m, "dsbn")  # no input batch norm
    assert cfg.dropout == 0.0 and cfg.pad_value == 0.0 and hasattr(m, "pert_encoder")
    assert not cfg.do_mvc and not cfg.use_generative  # the tutorial's model has neither

    # Only the encoder parts come from the checkpoint; everything else starts new.
    old, new = base.state_dict(), m.state_dict()
    loaded = {k for k in new if k.split(".", 1)[0] in OFFICIAL_LOAD_PREFIXES}
    assert any(k.startswith("transformer_encoder.") for k in loaded)
    assert any(k.startswith("value_encoder.") for k in loaded)
    for key in loaded:
        torch.testing.assert_close(new[key], old[key])
    assert not any(k.startswith("decoder.fc.") for k in new)
    assert {"decoder.coeff_decoder.fc.0.weight", "decoder.bias_decoder.fc.0.weight"} <= set(new)
    assert set(new) - loaded == {k for k in new if k.startswith(("decoder.", "pert_encoder."))}, (
        "nothing but the decoder and the flag embedding is new"
    )

    # prediction = A(h) * x + b(h), the input value x being the control expression
    h = torch.randn(2, 5, cfg.d_model)
    x = torch.rand(2, 5)
    out = m.decoder(h, x)["pred"]
    a = m.decoder.coeff_decoder(h)["pred"]
    b = m.decoder.bias_decoder(h)["pred"]
    torch.testing.assert_close(out, a * x + b)
    with pytest.raises(ValueError, match="expr_decoder_style='mlp'"):
        ids = torch.zeros(1, 3, dtype=torch.long)
        m.generative_forward(
            ids, torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), ids, ids.bool()
        )

    # The suite's earlier variant stays available: pre-trained 3-layer decoder + input norm.
    legacy = perturbation_model(
        base, expr_decoder="mlp", input_batchnorm=True, load_prefixes=None, dropout=0.2
    )
    assert isinstance(legacy.decoder, ExprDecoder) and hasattr(legacy, "bn")
    torch.testing.assert_close(
        legacy.state_dict()["decoder.fc.0.weight"], old["decoder.fc.0.weight"]
    )
    with pytest.raises(ValueError, match="match no weight"):
        perturbation_model(base, load_prefixes=["not_a_module"])


def test_holdout_split_is_drawn_by_the_seed() -> None:
    train, val = holdout_split(95, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 85  # rounded up like sklearn's train_test_split
    assert not set(train) & set(val) and set(train) | set(val) == set(range(95))
    assert not np.array_equal(val, holdout_split(95, 0.1, seed=1)[1])
    np.testing.assert_array_equal(val, holdout_split(95, 0.1, seed=0)[1])
    assert holdout_split(95, 0.0, seed=0)[1].size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_split(10, 1.0, seed=0)


def test_annotation_keeps_the_best_validation_epoch(checkpoint, separable) -> None:
    res = finetune_classifier(
        checkpoint,
        separable,
        "cell_type",
        epochs=4,
        lr=1e-2,  # large enough for the validation loss to move (and not only down)
        batch_size=16,
        max_len=24,
        val_fraction=0.2,
        device="cpu",
        progress=False,
        seed=3,
    )
    losses = [row["val_loss"] for row in res.history]
    assert res.n_validation == 12 and len(losses) == 4
    assert res.best_epoch == int(np.argmin(losses)) + 1
    # The model holds that epoch's weights: its validation loss, recomputed, is the best one.
    _, val = holdout_split(separable.n_obs, 0.2, seed=3)
    held_out = separable[val].copy()
    _, proba = predict_classifier(res, held_out, max_len=24, return_proba=True, seed=3)
    y = np.searchsorted(res.classes, held_out.obs["cell_type"].astype(str).to_numpy())
    recomputed = float(F.nll_loss(torch.log(torch.from_numpy(proba)), torch.from_numpy(y)))
    assert recomputed == pytest.approx(min(losses), rel=1e-4)

    plain = finetune_classifier(
        checkpoint,
        separable,
        "cell_type",
        epochs=1,
        batch_size=16,
        max_len=24,
        val_fraction=0.0,
        device="cpu",
        progress=False,
    )
    assert plain.n_validation == 0 and plain.best_epoch is None


def test_integration_zero_genes_batch_labels_and_best_epoch(
    checkpoint, separable, monkeypatch
) -> None:
    seen: list[dict[str, torch.Tensor]] = []
    original = integration_module.run_epochs

    def spy(model, *, batches, **kw):
        seen.extend(batches(0))
        return original(model, batches=batches, **kw)

    monkeypatch.setattr(integration_module, "run_epochs", spy)
    a = separable.copy()
    res = finetune_integration(
        checkpoint,
        a,
        "batch",
        epochs=3,
        lr=1e-2,
        batch_size=16,
        max_len=64,
        device="cpu",
        progress=False,
    )
    # include_zero_genes (default, the tutorial's): every cell is <cls> + all 40 genes,
    # zeros included (bin 0), with no padding.
    assert all(b["gene_ids"].shape[1] == 41 for b in seen)
    assert all(not b["padding_mask"].any() for b in seen)
    assert any((b["values"][:, 1:] == 0).any() for b in seen)
    n_train = sum(len(b["gene_ids"]) for b in seen)
    assert res.n_validation == 6 and n_train == 54

    # use_batch_labels: the batch embedding is concatenated to the decoders' inputs.
    m = res.model
    assert m.config.use_batch_labels and hasattr(m, "batch_encoder")
    assert m.decoder.fc[0].in_features == 2 * m.config.d_model

    mse = [row["val_mse"] for row in res.history]
    assert res.best_epoch == int(np.argmin(mse)) + 1
    assert res.embedding.shape == (60, 32)  # every cell, validation cells included

    # The non-zero variant: sequences are <cls> + the expressed genes only.
    seen.clear()
    finetune_integration(
        checkpoint,
        separable.copy(),
        "batch",
        epochs=1,
        batch_size=16,
        max_len=64,
        include_zero_genes=False,
        val_fraction=0.0,
        device="cpu",
        progress=False,
    )
    nonzero = int(np.asarray((separable.X > 0).sum(axis=1)).max()) + 1
    assert max(b["gene_ids"].shape[1] for b in seen) == nonzero < 41
