"""scGPT multi-omic integration: tokens, modality embedding, objectives and the adapters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from benchmark.simulate import make_world, simulate_multiome
from scgpt import GeneVocab, embed_cells, load_pretrained, save_pretrained
from scgpt.data import CellDataset
from scgpt.finetune.multiomics import (
    MODALITY_TOKENS,
    TOKEN_COL,
    bin_by_modality,
    feature_modalities,
    feature_tokens,
    finetune_multiomics,
    multiomic_model,
)
from scgpt.model import ModelConfig, TransformerModel
from tests._models import random_checkpoint

N_BINS = 11  # the tiny test model's bins
MISSING_GENES = 5  # RNA genes the checkpoint's vocabulary lacks (they get new rows)


def multiomics_input(adata, modalities=("rna", "protein", "atac"), absent=None):
    """The task's method input from a simulated data set (``absent``: {batch: modalities})."""
    keep = adata.var["modality"].isin(modalities).to_numpy()
    adata = adata[:, keep].copy()
    X = adata.X.toarray()
    batch = adata.obs["batch"].astype(str).to_numpy()
    for m in ("rna", "protein", "atac"):
        has = np.ones(adata.n_obs, dtype=bool)
        for b, gone in (absent or {}).items():
            if m in gone:
                has &= batch != b
        adata.obs[f"has_{m}"] = has
        X[np.ix_(~has, (adata.var["modality"] == m).to_numpy())] = 0
    adata.X = sp.csr_matrix(X, dtype=np.float32)
    adata.layers["counts"] = adata.X.copy()
    adata.obs["batch"] = adata.obs["batch"].astype(str).astype("category")
    adata.uns["multiomics"] = {
        "modalities": list(modalities),
        "mosaic": bool(absent),
        "batch_key": "batch",
    }
    return adata


@pytest.fixture(scope="module")
def data():
    return multiomics_input(
        simulate_multiome(n_cells=120, n_batches=2, n_proteins=8, n_peaks=40, seed=3)
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    genes = list(make_world().genes)[MISSING_GENES:]
    folder = random_checkpoint(tmp_path_factory.mktemp("mo_ckpt"), genes, seed=7, max_seq_len=64)
    # A "pre-trained" embedding LayerNorm that differs from a fresh one.
    model, vocab, config = load_pretrained(folder)
    with torch.no_grad():
        model.encoder.enc_norm.weight.uniform_(0.5, 1.5)
        model.encoder.enc_norm.bias.uniform_(-0.5, 0.5)
    return str(save_pretrained(model, vocab, config, folder))


def _build(checkpoint, data, *, pretrained):
    base, vocab, _ = load_pretrained(checkpoint)
    mods = feature_modalities(data)
    tokens = feature_tokens(data.var_names, mods, vocab)
    model, ext, token_mod = multiomic_model(
        base,
        vocab,
        tokens,
        mods,
        num_batch_labels=2,
        dab=True,
        nlayers=1,
        dropout=0.0,
        pretrained=pretrained,
        seed=0,
    )
    return base, vocab, mods, tokens, model, ext, token_mod


def test_tokens_rows_and_modalities(checkpoint, data):
    base, vocab, mods, tokens, model, ext, token_mod = _build(checkpoint, data, pretrained=True)
    n_old = vocab.num_embeddings
    # The checkpoint's tokens keep their indices; the new features are appended.
    assert all(ext[t] == i for t, i in vocab.stoi.items())
    ids = np.array([ext[t] for t in tokens])
    in_vocab = np.array([t in vocab for t in tokens])
    assert (ids[~in_vocab] >= n_old).all() and ext.num_embeddings == n_old + (~in_vocab).sum()
    assert in_vocab[mods == "rna"].sum() == (mods == "rna").sum() - MISSING_GENES
    assert not in_vocab[mods != "rna"].any()  # proteins and peaks are new tokens
    # RNA genes of the vocabulary keep their pre-trained rows; the norm is the checkpoint's.
    old = base.encoder.embedding.weight.detach()
    new = model.encoder.embedding.weight.detach()
    rna_known = ids[(mods == "rna") & in_vocab]
    assert torch.equal(new[rna_known], old[rna_known])
    assert torch.equal(model.encoder.enc_norm.weight, base.encoder.enc_norm.weight)
    assert torch.equal(model.encoder.enc_norm.bias, base.encoder.enc_norm.bias)
    # ... and nothing else comes from the checkpoint (e.g. the value encoder is new).
    assert not torch.equal(model.value_encoder.linear1.weight, base.value_encoder.linear1.weight)
    # Modality of every token.
    names = np.array(MODALITY_TOKENS)
    expected = {"rna": "RNA", "protein": "Protein", "atac": "ATAC"}
    assert list(names[token_mod[ids]]) == [expected[m] for m in mods]
    assert names[token_mod[ext["<cls>"]]] == "<cls>" and names[token_mod[ext["<pad>"]]] == "<pad>"
    cfg = model.config
    assert cfg.use_mod and cfg.use_batch_labels and cfg.do_dab and cfg.do_mvc
    assert not (cfg.uses_dsbn or cfg.explicit_zero_prob or cfg.use_generative)
    assert cfg.ntokens_mod == len(MODALITY_TOKENS) and cfg.nlayers == 1


def test_scratch_loads_nothing(checkpoint, data):
    base, vocab, _, tokens, model, ext, _ = _build(checkpoint, data, pretrained=False)
    ids = np.array([ext[t] for t in tokens if t in vocab])
    old = base.encoder.embedding.weight.detach()[ids]
    assert not torch.isclose(model.encoder.embedding.weight.detach()[ids], old).any(dim=1).all()
    assert not torch.equal(model.encoder.enc_norm.bias, base.encoder.enc_norm.bias)


def test_protein_named_like_a_gene_gets_its_own_token():
    vocab = GeneVocab.from_genes(["CD4", "CD8A"])
    tokens = feature_tokens(["CD4", "CD4x", "CD8A"], ["rna", "protein", "protein"], vocab)
    assert tokens == ["CD4", "CD4x", "Protein:CD8A"]


def test_binning_per_modality():
    rng = np.random.default_rng(0)
    rna = rng.poisson(3.0, (20, 30)) * (rng.random((20, 30)) < 0.6)
    prot = rng.poisson(200.0, (20, 6)) + 1  # large counts: binned within proteins only
    atac = rng.integers(0, 3, (20, 25))
    X = sp.csr_matrix(np.hstack([rna, prot, atac]).astype(np.float32))
    mods = ["rna"] * 30 + ["protein"] * 6 + ["atac"] * 25
    B = bin_by_modality(X, mods, N_BINS, seed=0).toarray()
    assert ((B > 0) == (X.toarray() > 0)).all()  # zeros stay zeros (and are not tokens)
    r, p, a = B[:, :30], B[:, 30:36], B[:, 36:]
    assert r.max(axis=1).tolist() == [N_BINS - 1] * 20  # each modality's own top bin
    assert p.max(axis=1).tolist() == [N_BINS - 1] * 20 and p.min() >= 1
    assert set(np.unique(a)) <= {0.0, 1.0}  # peaks binarised
    binned = bin_by_modality(X, mods, N_BINS, atac_values="binned", seed=0).toarray()[:, 36:]
    assert binned.max() == N_BINS - 1
    with pytest.raises(ValueError, match="atac_values"):
        bin_by_modality(X, mods, N_BINS, atac_values="tfidf")


def test_absent_modalities_contribute_no_tokens(checkpoint):
    mosaic = multiomics_input(
        simulate_multiome(n_cells=60, n_batches=2, n_proteins=8, n_peaks=40, seed=4),
        absent={"batch0": ("protein",), "batch1": ("atac",)},
    )
    _, _, mods, tokens, _, ext, token_mod = _build(checkpoint, mosaic, pretrained=True)
    X = bin_by_modality(mosaic.X, mods, N_BINS)
    ds = CellDataset(X, ext.indices(tokens), max_len=None, cls_id=ext.cls_id, n_bins=None)
    names = np.array(MODALITY_TOKENS)
    batch = mosaic.obs["batch"].astype(str).to_numpy()
    for i in range(mosaic.n_obs):
        seen = set(names[token_mod[ds[i]["gene_ids"]]])
        gone = "Protein" if batch[i] == "batch0" else "ATAC"
        assert gone not in seen and "RNA" in seen and seen >= {"<cls>"}
        assert len(ds[i]["gene_ids"]) == 1 + int((mosaic.X[i] > 0).sum())


def test_modality_embedding_conditions_the_decoders_only():
    cfg = ModelConfig(
        ntoken=12,
        d_model=16,
        nhead=2,
        d_hid=16,
        nlayers=1,
        dropout=0.0,
        use_mod=True,
        ntokens_mod=len(MODALITY_TOKENS),
        mod_pad_id=3,
        use_batch_labels=True,
        num_batch_labels=2,
    )
    torch.manual_seed(0)
    model = TransformerModel(cfg).eval()
    genes = torch.tensor([[4, 5, 6, 7]])
    values = torch.tensor([[-2.0, 3.0, 1.0, 2.0]])
    labels = torch.tensor([1])
    with pytest.raises(ValueError, match="mod_types"):
        model(genes, values, batch_labels=labels)
    a = model(genes, values, batch_labels=labels, mod_types=torch.tensor([[4, 0, 0, 1]]), MVC=True)
    b = model(genes, values, batch_labels=labels, mod_types=torch.tensor([[4, 0, 1, 2]]), MVC=True)
    assert torch.equal(a["cell_emb"], b["cell_emb"])  # the encoder does not see modalities
    assert torch.equal(a["mlm_output"][0, :2], b["mlm_output"][0, :2])
    assert not torch.isclose(a["mlm_output"][0, 2:], b["mlm_output"][0, 2:]).any()
    assert not torch.isclose(a["mvc_output"][0, 2:], b["mvc_output"][0, 2:]).any()
    assert model.mvc_decoder.gene2query.in_features == 32  # gene side + batch/modality
    assert model.mod_encoder.embedding.weight[3].abs().sum() == 0  # <pad> modality row


def test_use_mod_model_round_trips(tmp_path):
    cfg = ModelConfig(
        ntoken=8,
        d_model=16,
        nhead=2,
        d_hid=16,
        nlayers=1,
        use_mod=True,
        ntokens_mod=6,
        mod_pad_id=3,
        use_batch_labels=True,
        num_batch_labels=3,
        do_dab=True,
    )
    vocab = GeneVocab.from_genes(["A", "B", "C", "D", "E"])
    save_pretrained(TransformerModel(cfg), vocab, cfg, tmp_path)
    model, _, loaded = load_pretrained(tmp_path)
    assert model.load_report.ok and loaded.use_mod and loaded.ntokens_mod == 6


def test_dar_reverses_the_gradient(checkpoint, data):
    *_, model, _, _ = _build(checkpoint, data, pretrained=True)
    model.train()
    genes = torch.tensor([[model.vocab.cls_id, 0, 1, 2], [model.vocab.cls_id, 3, 4, 5]])
    values = torch.tensor([[-2.0, 1.0, 5.0, 9.0], [-2.0, 2.0, 4.0, 10.0]])
    labels = torch.tensor([0, 1])

    def grads(reverse: bool):
        model.grad_reverse_discriminator.reverse_grad = reverse
        model.zero_grad()
        out = model(genes, values, batch_labels=labels, mod_types=torch.zeros_like(genes), DAB=True)
        torch.nn.functional.cross_entropy(out["dab_output"], labels).backward()
        enc = model.transformer_encoder.layers[0].linear1.weight.grad.clone()
        disc = model.grad_reverse_discriminator.out_layer.weight.grad.clone()
        return enc, disc

    enc_plain, disc_plain = grads(False)
    enc_rev, disc_rev = grads(True)
    model.grad_reverse_discriminator.reverse_grad = True
    assert enc_plain.abs().sum() > 0
    # The encoder is pushed to confuse the discriminator; the discriminator learns as usual.
    assert torch.allclose(enc_rev, -enc_plain, atol=1e-7)
    assert torch.allclose(disc_rev, disc_plain)


def test_training_lowers_the_masked_value_loss_and_embeds_every_cell(checkpoint, data):
    torch.set_num_threads(1)
    res = finetune_multiomics(
        checkpoint,
        data,
        epochs=4,
        batch_size=16,
        nlayers=1,
        dropout=0.0,
        val_fraction=0.2,
        device="cpu",
        seed=0,
        progress=False,
    )
    val = [row["val_mse"] for row in res.history]
    assert val[-1] < val[0]
    assert {"loss_gep", "loss_gepc", "loss_dab"} <= set(res.history[0])
    assert res.n_validation == 24 and res.best_epoch is not None
    emb = res.embedding
    assert emb.shape == (data.n_obs, 32) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # Row order: embedding the same (binned) cells in reverse order gives the reversed rows.
    binned = bin_by_modality(data.layers["counts"], feature_modalities(data), N_BINS, seed=0)
    rev = data[::-1].copy()
    rev.X = binned[::-1]
    rev.var[TOKEN_COL] = res.tokens
    again = embed_cells(
        rev,
        res.model,
        vocab=res.vocab,
        gene_col=TOKEN_COL,
        binning=False,
        batch_key="batch",
        max_length=data.n_vars + 1,
        obsm_key=None,
        device="cpu",
        progress=False,
    )
    np.testing.assert_allclose(again[::-1], emb, atol=1e-5)


def test_adapters_pretrained_and_scratch(checkpoint, data):
    from contract.registry import get_method

    torch.set_num_threads(1)
    kw = dict(seed=0, checkpoint=checkpoint, epochs=1, nlayers=1, dropout=0.0, max_len=32)
    pre = get_method("multiomics", "scgpt")
    scratch = get_method("multiomics", "scgpt_scratch")
    assert (pre.label, scratch.label) == ("scGPT", "scGPT (from scratch)")
    assert pre.needs_checkpoint and scratch.needs_checkpoint
    params = pre.parameters()
    assert (params["lr"], params["batch_size"], params["epochs"], params["dropout"]) == (
        1e-3,
        16,
        25,
        0.2,
    )
    assert (params["mask_ratio"], params["dab_weight"], params["nlayers"]) == (0.4, 1.0, 4)
    assert scratch.parameters() == params and "pretrained" not in params
    assert pre.function is scratch.function and dict(scratch.bound) == {"pretrained": False}
    a = pre.func(data, **kw)
    b = scratch.func(data, **kw)
    assert a.shape == b.shape == (data.n_obs, 32)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert not np.allclose(a, b)
    np.testing.assert_allclose(pre.func(data, **kw), a, atol=1e-5)  # seeded
