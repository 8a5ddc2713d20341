"""scBERT re-implementation: binning, masking, FAVOR+ attention, schedule, fitting."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from baselines.scbert import (
    _torch_modules,
    bin_expression,
    build_model,
    log2_normalise,
    mask_tokens,
    read_gene2vec,
    scbert,
    warmup_cosine_restarts,
)

torch.set_num_threads(1)

SMALL = dict(dim=16, depth=2, heads=2, dim_head=8, h_dim=16)


def test_binning_hand_example():
    values = np.array([[0.0, 0.4, 1.0, 2.7, 4.999, 5.0, 5.2, 9.3]])
    np.testing.assert_array_equal(bin_expression(values), [[0, 0, 1, 2, 4, 5, 5, 5]])
    np.testing.assert_array_equal(bin_expression(values, n_bins=3), [[0, 0, 1, 2, 3, 3, 3, 3]])
    with pytest.raises(ValueError, match="non-negative"):
        bin_expression(np.array([-1.0]))


def test_log2_normalisation_and_seven_tokens():
    adata = ad.AnnData(X=sp.csr_matrix(np.array([[1.0, 3.0, 0.0]], dtype=np.float32)))
    np.testing.assert_allclose(
        log2_normalise(adata), [[math.log2(2501), math.log2(7501), 0.0]], rtol=1e-6
    )
    # log2(2501) = 11.3 -> capped at bin 5; token 6 is the mask token: 7 tokens in all.
    model = build_model(3, 2, **SMALL)
    assert model.n_tokens == 7 and model.mask_token == 6 and model.seq_len == 4
    assert model.token_emb.num_embeddings == 7


def test_mask_tokens_only_touches_nonzero_bins():
    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[0, 1, 2, 0, 3, 4, 5, 1, 0, 2, 3, 1, 2, 0]] * 3)
    n_nonzero = int((tokens[0] != 0).sum())
    masked, labels = mask_tokens(
        tokens, mask_token=6, mask_prob=0.15, replace_prob=1.0, generator=g
    )
    chosen = labels != -100
    assert (chosen.sum(dim=1) == math.ceil(0.15 * n_nonzero)).all()
    assert (tokens[chosen] != 0).all()
    assert (masked[chosen] == 6).all() and (masked[~chosen] == tokens[~chosen]).all()
    assert (labels[chosen] == tokens[chosen]).all()


def test_favor_attention_approximates_softmax_attention():
    torch.manual_seed(0)
    _, favor_cls, softmax_kernel, linear_attention = _torch_modules()
    d = 8
    q, k, v = (
        torch.randn(1, 1, 32, d) * 0.5,
        torch.randn(1, 1, 32, d) * 0.5,
        torch.randn(1, 1, 32, d),
    )
    exact = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    attn = favor_cls(dim=d, heads=1, dim_head=d, nb_features=4096, dropout=0.0)
    proj = attn.projection
    approx = linear_attention(
        softmax_kernel(q, proj, is_query=True), softmax_kernel(k, proj, is_query=False), v
    )
    assert (approx - exact).abs().mean() / exact.abs().mean() < 0.1
    assert attn.nb_features == 4096
    assert favor_cls(
        dim=16, heads=2, dim_head=64, nb_features=None, dropout=0.0
    ).nb_features == int(64 * math.log(64))


def test_forward_shapes_and_feature_redraw():
    torch.manual_seed(0)
    model = build_model(10, 3, feature_redraw_interval=2, **SMALL)
    tokens = torch.randint(0, 6, (4, 11))
    logits, emb = model(tokens)
    assert logits.shape == (4, 3) and emb.shape == (4, 16)
    assert model.mlm_logits(tokens).shape == (4, 11, 7)
    before = model.layers[0].attn.projection.clone()
    model.train()
    for _ in range(3):
        model(tokens)
    assert not torch.equal(before, model.layers[0].attn.projection)
    with pytest.raises(ValueError, match="expected 11 tokens"):
        model(tokens[:, :5])


def test_warmup_cosine_restarts_schedule():
    lr = lambda s: warmup_cosine_restarts(s, max_lr=1e-4, min_lr=1e-6)  # noqa: E731
    assert lr(0) == pytest.approx(1e-6)
    assert lr(5) == pytest.approx(1e-4)  # end of warm-up: peak
    assert lr(10) < lr(5)
    assert lr(15) == pytest.approx(1e-6)  # second cycle (30 epochs) starts with warm-up
    assert lr(20) == pytest.approx(0.9e-4)  # its peak is gamma x the first
    assert lr(45) == pytest.approx(1e-6)


def test_read_gene2vec(tmp_path):
    path = tmp_path / "g2v.txt"
    path.write_text("2 3\ng1 1 2 3\ng9 4 5 6\n")
    vectors, found = read_gene2vec(path, ["g0", "g1"], 3)
    assert found == 1
    np.testing.assert_array_equal(vectors, [[0, 0, 0], [1, 2, 3]])
    with pytest.raises(ValueError, match="expected a gene and 4"):
        read_gene2vec(path, ["g1"], 4)


def _separable(seed: int = 0, n: int = 40, n_genes: int = 20):
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for t in range(2):
        rate = np.full(n_genes, 0.5)
        rate[t * 5 : t * 5 + 5] = 20.0
        blocks.append(rng.poisson(rate, size=(n, n_genes)))
        labels += [f"type{t}"] * n
    x = np.vstack(blocks).astype(np.float32)
    labels = np.array(labels)
    is_query = np.zeros(len(labels), bool)
    is_query[rng.choice(len(labels), size=len(labels) // 3, replace=False)] = True
    var = pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    ref = ad.AnnData(X=sp.csr_matrix(x[~is_query]), var=var)
    ref.obs["cell_type"] = labels[~is_query]
    ref.obs["train_val"] = np.where(np.arange(ref.n_obs) % 10 == 0, "val", "train")
    query = ad.AnnData(X=sp.csr_matrix(x[is_query]), var=var)
    return ref, query, labels[is_query]


def test_scbert_fits_tiny_data(tmp_path):
    ref, query, truth = _separable()
    g2v = tmp_path / "g2v.txt"
    g2v.write_text("".join(f"g{i} " + " ".join(["0.1"] * 16) + "\n" for i in range(5)))
    pred = scbert(
        ref, query, seed=0, epochs=6, batch_size=8, grad_acc=1, lr=1e-3, warmup_epochs=0,
        gene2vec=str(g2v), **SMALL,
    )  # fmt: skip
    assert pred.shape == (query.n_obs,)
    assert (pred == truth).mean() > 0.8
    assert query.obsm["X_scbert"].shape == (query.n_obs, 16)


def test_scbert_pretraining_then_partial_fine_tuning():
    ref, query, truth = _separable(seed=1)
    pred = scbert(
        ref, query, seed=1, epochs=6, batch_size=8, grad_acc=1, lr=1e-3, warmup_epochs=0,
        pretrain_epochs=2, pretrain_lr=1e-3, n_top_genes=15, **SMALL,
    )  # fmt: skip
    assert (pred == truth).mean() > 0.8
