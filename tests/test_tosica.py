"""TOSICA re-implementation: gene-set mask, attention rollout, training on tiny data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from baselines.tosica import (
    DATA_DIR,
    build_mask,
    build_model,
    read_gmt,
    resolve_gene_sets,
    tosica,
)

torch.set_num_threads(1)

GENES = [f"g{i}" for i in range(30)]
SETS = {
    "setA": [f"g{i}" for i in range(0, 8)],
    "setB": [f"g{i}" for i in range(8, 16)] + ["not_in_data"],
    "tiny": ["g20", "g21"],  # fewer than 5 genes in the data: dropped
}


def test_read_gmt_and_size_filter(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("S1\tdesc\ta\tb\tc\nS2\tdesc\ta\tb\tc\td\te\tf\n")
    assert read_gmt(path) == {"S1": ["a", "b", "c"], "S2": list("abcdef")}
    assert list(read_gmt(path, max_size=3)) == ["S1"]
    bad = tmp_path / "bad.gmt"
    bad.write_text("only_a_name\n")
    with pytest.raises(ValueError, match=r"bad\.gmt:1"):
        read_gmt(bad)


def test_shipped_gmt_is_readable():
    sets = read_gmt(DATA_DIR / "immune_markers.gmt")
    assert len(sets) >= 20 and all(len(g) >= 5 for g in sets.values())


def test_build_mask_filters_and_adds_unannotated_node():
    mask, names = build_mask(GENES, SETS, n_unannotated=1)
    assert names == ["setA", "setB", "node 0"]
    assert mask.shape == (30, 3)
    assert mask[:, 0].sum() == 8 and mask[:8, 0].all()
    assert mask[:, 2].all()  # the unannotated token sees every gene
    _, names2 = build_mask(GENES, SETS, max_gs=1, n_unannotated=1)
    assert names2 == ["node 0"]  # the largest token is kept
    with pytest.raises(ValueError, match="no gene set"):
        build_mask(GENES, {"tiny": ["g1"]}, n_unannotated=0)


def test_mask_restricts_first_layer_weights_and_gradients():
    torch.manual_seed(0)
    mask, _ = build_mask(GENES, SETS, n_unannotated=1)
    model = build_model(mask, n_classes=3, embed_dim=8, depth=2, num_heads=2)
    embed = model.feature_embed
    outside = torch.as_tensor(mask.T == 0)[:, None, :].expand_as(embed.weight)
    assert (embed.weight[outside] == 0).all()
    x = torch.rand(5, 30)
    _, logits, _ = model(x)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert (embed.weight.grad[outside] == 0).all()
    assert embed.weight.grad[~outside].abs().sum() > 0
    # A gene outside set A cannot change token A's embedding.
    model.eval()
    x2 = x.clone()
    x2[:, 20] += 5.0  # g20 is only in the unannotated token
    with torch.no_grad():
        t1, t2 = embed(x), embed(x2)
    torch.testing.assert_close(t1[:, :2], t2[:, :2])
    assert not torch.allclose(t1[:, 2], t2[:, 2])


def test_training_keeps_masked_weights_at_zero_and_rollout_is_a_distribution():
    torch.manual_seed(0)
    mask, _ = build_mask(GENES, SETS, n_unannotated=1)
    model = build_model(mask, n_classes=2, embed_dim=8, depth=2, num_heads=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    for _ in range(5):
        _, logits, _ = model(torch.rand(4, 30))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    outside = torch.as_tensor(mask.T == 0)[:, None, :].expand_as(model.feature_embed.weight)
    assert (model.feature_embed.weight[outside] == 0).all()
    model.eval()
    with torch.no_grad():
        latent, logits, attention = model(torch.rand(6, 30))
    assert latent.shape == (6, 8) and logits.shape == (6, 2) and attention.shape == (6, 3)
    assert (attention > 0).all() and (attention.sum(dim=1) < 1.0 + 1e-6).all()


def _separable(seed: int = 0, n: int = 40) -> tuple[ad.AnnData, ad.AnnData, np.ndarray]:
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    # Each type is high on half of set A and half of set B: the types differ in the pattern
    # inside a gene set (LayerNorm in the blocks removes a token's overall scale).
    for t, genes in enumerate([[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]):
        rate = np.ones(30)
        rate[genes] = 15.0
        blocks.append(rng.poisson(rate, size=(n, 30)))
        labels += [f"type{t}"] * n
    x = np.vstack(blocks).astype(np.float32)
    labels = np.array(labels)
    is_query = np.zeros(len(labels), bool)
    is_query[rng.choice(len(labels), size=len(labels) // 3, replace=False)] = True
    var = pd.DataFrame(index=GENES)
    ref = ad.AnnData(X=sp.csr_matrix(x[~is_query]), var=var)
    ref.obs["cell_type"] = labels[~is_query]
    query = ad.AnnData(X=sp.csr_matrix(x[is_query]), var=var)
    return ref, query, labels[is_query]


def test_tosica_fits_tiny_data_and_writes_pathway_attention(tmp_path):
    ref, query, truth = _separable()
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{k}\tdesc\t" + "\t".join(v) + "\n" for k, v in SETS.items()))
    # Paper architecture (embed 48, 4 heads); lr raised because 53 cells give few SGD steps.
    pred = tosica(ref, query, seed=0, gmt=str(gmt), epochs=10, lr=0.05)
    assert pred.shape == (query.n_obs,)
    assert (pred == truth).mean() > 0.8
    assert query.obsm["X_tosica"].shape == (query.n_obs, 48)
    assert query.obsm["tosica_pathway_attention"].shape == (query.n_obs, 3)
    assert query.uns["tosica_pathway_attention_columns"] == ["setA", "setB", "node 0"]


def test_gene_set_sources(tmp_path):
    ref, _, _ = _separable()
    x = np.log1p(ref.X.toarray())
    sets, source = resolve_gene_sets("coexpression", ref, x, GENES)
    assert source == "co-expression modules"
    assert sorted(g for v in sets.values() for g in v) == sorted(GENES)
    ref.uns["simulation"] = {"programs": {"P1": GENES[:6]}}
    sets, source = resolve_gene_sets(None, ref, x, GENES)
    assert list(sets) == ["P1"] and "simulation" in source
    sets, source = resolve_gene_sets("immune_markers", ref, x, GENES)
    assert source.endswith("immune_markers.gmt")
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_gene_sets("nope", ref, x, GENES)


def test_official_token_layout_mixes_gene_sets():
    torch.manual_seed(0)
    mask, _ = build_mask(GENES, SETS, n_unannotated=1)
    pure = build_model(mask, n_classes=2, embed_dim=6, depth=1, num_heads=2).eval()
    official = build_model(
        mask, n_classes=2, embed_dim=6, depth=1, num_heads=2, official_layout=True
    ).eval()
    official.load_state_dict(pure.state_dict())
    x = torch.rand(3, 30)
    with torch.no_grad():
        a, b = pure.feature_embed(x), official.feature_embed(x)
    # Same numbers, different arrangement: official token c, feature w = flat output w * 3 + c.
    torch.testing.assert_close(b, a.reshape(3, 6, 3).transpose(1, 2))
    x2 = x.clone()
    x2[:, 20] += 5.0  # g20 is in the unannotated token only
    with torch.no_grad():
        changed = (official.feature_embed(x2) - b).abs().sum(dim=2) > 0
    assert changed[:, 0].all()  # official token 0 reads features of the unannotated token
