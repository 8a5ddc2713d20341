"""scgpt data path: vocabulary, binning, tokenisation, masking, batching, pre-processing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgpt.data import CellDataset, Collator, LengthBucketSampler, length_sorted_batches
from scgpt.masking import mask_values, split_for_generation
from scgpt.preprocess import bin_matrix, bin_row, digitize_random_ties, preprocess_adata
from scgpt.synthetic import synthetic_counts
from scgpt.tokenize import pad_batch, tokenize_and_pad, tokenize_cell
from scgpt.vocab import GeneVocab, map_genes

torch.set_num_threads(1)


def test_vocab_roundtrip_and_specials(tmp_path):
    vocab = GeneVocab.from_genes(["A", "B", "A", "C"])
    assert vocab.genes == ["A", "B", "C"]
    assert [vocab["<pad>"], vocab["<cls>"], vocab["<eoc>"]] == [3, 4, 5]
    assert vocab.pad_id == 3 and vocab.cls_id == 4 and len(vocab) == vocab.num_embeddings == 6
    vocab.to_file(tmp_path / "vocab.json")
    again = GeneVocab.from_file(tmp_path / "vocab.json")
    assert again == vocab
    assert list(vocab.indices(["C", "missing"])) == [2, -1]
    with pytest.raises(KeyError, match="missing"):
        vocab["missing"]
    with pytest.raises(ValueError, match="used by several tokens"):
        GeneVocab({"a": 0, "b": 0})


def test_map_genes_reports_matches():
    vocab = GeneVocab.from_genes(["A", "B", "C"])
    idx, report = map_genes(["B", "X", "A", "Y"], vocab)
    assert list(idx) == [1, -1, 0, -1]
    assert (report.n_matched, report.n_total) == (2, 4)
    assert report.unmatched == ("X", "Y")
    assert "2/4 genes" in str(report)


def test_binning_hand_example():
    # non-zero values 1..5, n_bins = 5 -> 4 edges at the 0, 1/3, 2/3, 1 quantiles: 1, 2.33, 3.67, 5
    row = np.array([0, 1, 2, 3, 4, 0, 5], dtype=float)
    expected = [0, 1, 1, 2, 3, 0, 4]
    assert bin_row(row, 5, random_ties=False).tolist() == expected
    # no repeated edge -> the random tie-break changes nothing
    for seed in range(5):
        assert bin_row(row, 5, rng=np.random.default_rng(seed)).tolist() == expected


def test_binning_ties_follow_the_official_rule():
    # all equal non-zero values: every edge equals 3, left digitize = 4, right = 0
    x = np.full(2000, 3.0)
    edges = np.full(4, 3.0)
    rng = np.random.default_rng(0)
    got = digitize_random_ties(x, edges, rng)
    u = np.random.default_rng(0).random(len(x))
    assert np.array_equal(got, np.ceil(u * (0 - 4) + 4).astype(int))
    assert set(got.tolist()) == {1, 2, 3, 4}
    counts = np.bincount(got)[1:]
    assert counts.min() > 400  # roughly uniform over the tied bins
    binned = bin_row(np.array([0, 3, 3, 3, 3, 0.0]), 5, rng=np.random.default_rng(1))
    assert binned[0] == 0 and binned[-1] == 0 and set(binned[1:5]) <= {1, 2, 3, 4}


def test_bin_matrix_sparse_equals_dense():
    a = synthetic_counts(20, 30, seed=3)
    dense = bin_matrix(a.X.toarray(), 11, seed=0)
    sparse = bin_matrix(a.X, 11, seed=0)
    assert sp.issparse(sparse)
    np.testing.assert_array_equal(sparse.toarray(), dense)
    assert dense.max() == 10 and (dense[a.X.toarray() == 0] == 0).all()
    with pytest.raises(ValueError, match="non-negative"):
        bin_row(np.array([-1.0, 2.0]), 5)


def test_tokenize_cell_cls_zero_genes_and_sampling():
    values = np.array([0.0, 2.0, 0.0, 5.0, 1.0])
    gene_ids = np.array([10, 11, 12, 13, -1])  # last gene not in the vocabulary
    genes, vals = tokenize_cell(values, gene_ids, max_len=None, cls_id=99, cls_value=-2.0)
    assert genes.tolist() == [99, 11, 13] and vals.tolist() == [-2.0, 2.0, 5.0]
    genes, vals = tokenize_cell(
        values, gene_ids, max_len=None, cls_id=None, include_zero_genes=True
    )
    assert genes.tolist() == [10, 11, 12, 13] and vals.tolist() == [0.0, 2.0, 0.0, 5.0]
    big = np.arange(1, 101, dtype=float)
    genes, vals = tokenize_cell(
        big, np.arange(100), max_len=10, cls_id=500, rng=np.random.default_rng(0)
    )
    assert len(genes) == 10 and genes[0] == 500
    assert np.all(np.diff(genes[1:]) > 0)  # sampled genes keep input order
    np.testing.assert_array_equal(vals[1:], genes[1:] + 1)  # values stay with their genes


def test_pad_batch_and_tokenize_and_pad():
    batch = pad_batch(
        [(np.array([5, 1, 2]), np.array([0.0, 1.0, 2.0])), (np.array([5]), np.array([0.0]))],
        pad_id=0,
        pad_value=-2.0,
    )
    assert batch["gene_ids"].tolist() == [[5, 1, 2], [5, 0, 0]]
    assert batch["values"].tolist() == [[0.0, 1.0, 2.0], [0.0, -2.0, -2.0]]
    assert batch["padding_mask"].tolist() == [[False, False, False], [False, True, True]]
    X = sp.csr_matrix(np.array([[0, 1, 2, 0], [3, 0, 0, 0]], dtype=np.float32))
    out = tokenize_and_pad(
        X, np.array([1, 2, 3, 4]), max_len=6, pad_id=0, pad_value=-2, cls_id=9, pad_to_max_len=True
    )
    assert out["gene_ids"].shape == (2, 6)
    assert out["gene_ids"][0, :3].tolist() == [9, 2, 3] and out["gene_ids"][1, :2].tolist() == [
        9,
        1,
    ]
    assert out["padding_mask"].sum(1).tolist() == [3, 4]


def test_mask_values_never_masks_cls_or_padding():
    values = torch.arange(1, 21, dtype=torch.float32).repeat(3, 1)
    pad = torch.zeros(3, 20, dtype=torch.bool)
    pad[1, 15:] = True
    masked, mask = mask_values(
        values, pad, mask_ratio=0.5, mask_value=-1.0, generator=torch.Generator().manual_seed(0)
    )
    assert not mask[:, 0].any() and not (mask & pad).any()
    assert mask.sum(1).tolist() == [9, 7, 9]  # int(n_candidates * 0.5)
    assert (masked[mask] == -1).all() and torch.equal(masked[~mask], values[~mask])


def test_split_for_generation_partitions_the_genes():
    gene_ids = torch.tensor([[100, 1, 2, 3, 4, 5, 6, 7, 8], [100, 11, 12, 13, 0, 0, 0, 0, 0]])
    values = gene_ids.float() / 10
    pad = gene_ids.eq(0)
    gb = split_for_generation(
        gene_ids,
        values,
        pad,
        gen_ratio=0.5,
        pad_id=0,
        pad_value=-2.0,
        generator=torch.Generator().manual_seed(0),
    )
    for b in range(2):
        known = gb.known_gene_ids[b][~gb.known_padding_mask[b]].tolist()
        gen = gb.gen_gene_ids[b][~gb.gen_padding_mask[b]].tolist()
        assert known[0] == 100 and 100 not in gen
        assert sorted(known + gen) == sorted(gene_ids[b][~pad[b]].tolist())
        np.testing.assert_allclose(
            gb.gen_target[b][~gb.gen_padding_mask[b]].numpy(), np.array(gen) / 10, rtol=1e-6
        )
    assert (~gb.gen_padding_mask).sum(1).tolist() == [4, 1]


def test_dataset_collator_and_samplers_are_deterministic():
    a = synthetic_counts(40, 25, seed=1)
    ids = np.arange(25)
    ds = CellDataset(
        a.X,
        ids,
        max_len=8,
        cls_id=30,
        cls_value=-2.0,
        n_bins=5,
        obs={"label": np.arange(40)},
        seed=0,
    )
    first, again = ds[3], ds[3]
    np.testing.assert_array_equal(first["gene_ids"], again["gene_ids"])
    assert first["gene_ids"][0] == 30 and len(first["gene_ids"]) <= 8
    assert set(first["values"][1:].tolist()) <= set(range(1, 5))
    assert ds.lengths().tolist() == [len(ds[i]["gene_ids"]) for i in range(40)]
    batch = Collator(pad_id=31, pad_value=-2.0)([ds[i] for i in range(4)])
    assert batch["label"].tolist() == [0, 1, 2, 3] and batch["gene_ids"].shape[0] == 4

    lengths = np.arange(40) % 7
    sampler = LengthBucketSampler(lengths, 6, seed=0, bucket_factor=2)
    seen = sorted(i for b in sampler for i in b)
    assert seen == list(range(40))
    groups = np.array(["a", "b"] * 20)
    for b in LengthBucketSampler(lengths, 6, seed=0, groups=groups):
        assert len(set(groups[b])) == 1
    ranks = [
        list(LengthBucketSampler(lengths, 4, seed=0, num_replicas=2, rank=r)) for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1])
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    order = length_sorted_batches([3, 9, 1, 5], 2)
    assert [b.tolist() for b in order] == [[1, 3], [0, 2]]


def test_preprocess_adata_filters_normalises_and_bins():
    a = synthetic_counts(60, 40, seed=2)
    vocab = GeneVocab.from_genes([f"GENE{i}" for i in range(30)] + ["OTHER"])
    out = preprocess_adata(a, vocab, n_hvg=20, n_bins=11)
    assert out.n_vars == 20 and "counts" in out.layers and "X_binned" in out.layers
    assert (out.var["id_in_vocab"] >= 0).all()
    assert out.uns["scgpt_preprocess"]["n_genes_matched"] == 30
    logged = np.log1p(a.X[:, :30].toarray() / a.X[:, :30].toarray().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(
        out.X.toarray(), logged[:, [int(g[4:]) for g in out.var_names]], rtol=1e-4, atol=1e-5
    )
    assert out.layers["X_binned"].max() <= 10


def test_integration_batches_length_buckets_switch():
    """Bucketed mini-batches are narrower in length; ``length_buckets=False`` draws them
    uniformly (the tutorials' shuffle). Both cover every cell once per epoch."""
    from scgpt.finetune.integration import _epoch_batches

    rng = np.random.default_rng(0)
    n_cells, n_genes = 256, 60
    expressed = rng.integers(3, n_genes, size=n_cells)  # cells of very different lengths
    X = np.zeros((n_cells, n_genes), dtype=np.float32)
    for i, k in enumerate(expressed):
        X[i, rng.choice(n_genes, size=k, replace=False)] = rng.integers(1, 20, size=k)
    ds = CellDataset(
        X, np.arange(n_genes), max_len=None, cls_id=70, cls_value=-2.0, n_bins=5,
        obs={"label": np.arange(n_cells)}, seed=0,
    )  # fmt: skip
    collate = Collator(pad_id=71, pad_value=-2.0)

    def spreads(length_buckets: bool) -> tuple[list[int], float]:
        batches = _epoch_batches(
            ds, collate, None, batch_size=16, seed=0, length_buckets=length_buckets
        )(0)
        cells, spread = [], []
        for batch in batches:
            cells += batch["label"].tolist()
            lengths = (batch["gene_ids"] != 71).sum(1)
            spread.append(int(lengths.max() - lengths.min()))
        return sorted(cells), float(np.mean(spread))

    bucketed_cells, bucketed = spreads(True)
    uniform_cells, uniform = spreads(False)
    assert bucketed_cells == uniform_cells == list(range(n_cells))
    assert bucketed < 5 < 20 < uniform, (bucketed, uniform)  # lengths span 3..59 tokens
