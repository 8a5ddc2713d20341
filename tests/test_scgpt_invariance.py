"""A cell's scGPT embedding and bins depend on the cell alone; gene embeddings on the weights.

Users of the official package report cell embeddings that change with the chunk size or the
order of the data: its random draws (binning ties, down-sampling of long cells) follow the
cell's position. Here every draw of :func:`scgpt.embed_cells` and :func:`scgpt.bin_matrix` is
keyed by the seed and the cell's own genes and values, so a cell's embedding must not change
with the batch size, the order of the cells, the order of the columns or the chunking of the
AnnData, and its bins must not change with the other cells. The data have small counts, so
tied values (where the random tie-break matters) are common; ``max_length`` is tested both
below a cell's gene count (sampling) and above it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgpt import bin_matrix, embed_cells, gene_embeddings, load_pretrained, preprocess_adata
from scgpt.synthetic import synthetic_counts
from tests._models import random_checkpoint

torch.set_num_threads(1)

ATOL = 1e-5
N_CELLS, N_GENES = 40, 45  # GENE40..44 are not in the vocabulary


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    genes = [f"GENE{i}" for i in range(40)]
    folder = tmp_path_factory.mktemp("ckpt")
    return Path(random_checkpoint(folder, genes, seed=0, nlayers=2, max_seq_len=1200))


@pytest.fixture(scope="module")
def adata():
    # ~8 counts per gene and cell: many tied values, so random tie-breaks are frequent
    return synthetic_counts(N_CELLS, N_GENES, n_cell_types=2, mean_library=400.0, seed=4)


def _embed(data, checkpoint, **kw) -> np.ndarray:
    kw = {"batch_size": 16, "max_length": 20, "device": "cpu", "progress": False, **kw}
    return embed_cells(data, checkpoint, obsm_key=None, **kw)


def test_data_has_ties_and_long_cells(adata) -> None:
    """The premise: bins depend on the tie-break draw, and cells are longer than 20 tokens."""
    X = adata.X
    assert (np.diff(X.indptr) + 1 > 20).all()
    assert (bin_matrix(X, 11, seed=0) != bin_matrix(X, 11, seed=1)).nnz > 0


@pytest.mark.parametrize("max_length", [20, 64], ids=["sampled", "all_genes"])
def test_embedding_does_not_depend_on_batch_size_order_or_chunking(
    checkpoint, adata, max_length: int
) -> None:
    ref = _embed(adata.copy(), checkpoint, max_length=max_length)
    for batch_size in (1, 7, 64):
        got = _embed(adata.copy(), checkpoint, max_length=max_length, batch_size=batch_size)
        np.testing.assert_allclose(got, ref, atol=ATOL, err_msg=f"batch_size {batch_size}")
    perm = np.random.default_rng(0).permutation(N_CELLS)
    got = _embed(adata[perm].copy(), checkpoint, max_length=max_length)
    np.testing.assert_allclose(got, ref[perm], atol=ATOL, err_msg="cell order")
    chunks = [
        _embed(adata[s : s + 9].copy(), checkpoint, max_length=max_length)
        for s in range(0, N_CELLS, 9)
    ]
    np.testing.assert_allclose(np.vstack(chunks), ref, atol=ATOL, err_msg="chunks of 9 cells")
    alone = _embed(adata[[13]].copy(), checkpoint, max_length=max_length)
    np.testing.assert_allclose(alone[0], ref[13], atol=ATOL, err_msg="one cell alone")


@pytest.mark.parametrize("max_length", [20, 64], ids=["sampled", "all_genes"])
def test_embedding_does_not_depend_on_gene_order(checkpoint, adata, max_length: int) -> None:
    ref = _embed(adata.copy(), checkpoint, max_length=max_length)
    cols = np.random.default_rng(1).permutation(N_GENES)
    shuffled = adata[:, cols].copy()
    shuffled.X = sp.csr_matrix(shuffled.X.toarray())  # sorted indices: the new column order
    np.testing.assert_allclose(
        _embed(shuffled, checkpoint, max_length=max_length), ref, atol=ATOL, err_msg="CSR"
    )
    shuffled.X = shuffled.X.toarray()
    np.testing.assert_allclose(
        _embed(shuffled, checkpoint, max_length=max_length), ref, atol=ATOL, err_msg="dense"
    )


def test_embedding_with_zero_genes_does_not_depend_on_order(checkpoint, adata) -> None:
    kw = {"include_zero_genes": True, "max_length": 30}
    ref = _embed(adata.copy(), checkpoint, **kw)
    perm = np.random.default_rng(2).permutation(N_CELLS)
    cols = np.random.default_rng(3).permutation(N_GENES)
    got = _embed(adata[perm][:, cols].copy(), checkpoint, **kw)
    np.testing.assert_allclose(got, ref[perm], atol=ATOL)


def test_max_length_matters_only_when_it_cuts_the_cell(checkpoint, adata) -> None:
    """Above a cell's gene count the padding differs but the tokens do not; below, genes are
    a seeded sample (same seed, same sample; another seed, another sample)."""
    full = _embed(adata.copy(), checkpoint, max_length=41)  # <cls> + at most 40 genes
    np.testing.assert_allclose(_embed(adata.copy(), checkpoint, max_length=1200), full, atol=ATOL)
    sampled = _embed(adata.copy(), checkpoint, max_length=20, seed=5)
    np.testing.assert_allclose(
        _embed(adata.copy(), checkpoint, max_length=20, seed=5), sampled, atol=0
    )
    assert np.abs(sampled - full).max() > 1e-3
    assert np.abs(_embed(adata.copy(), checkpoint, max_length=20, seed=6) - sampled).max() > 1e-3


# ----------------------------------------------------------------------------- binning
@pytest.mark.parametrize("dense", [False, True])
def test_bins_of_a_cell_do_not_depend_on_the_other_cells(adata, dense: bool) -> None:
    X = adata.X.toarray() if dense else adata.X

    def binned(M):
        out = bin_matrix(M, 11, seed=0)
        return out.toarray() if sp.issparse(out) else out

    ref = binned(X)
    for i in (0, 17, N_CELLS - 1):
        np.testing.assert_array_equal(binned(X[i : i + 1]), ref[i : i + 1], err_msg=f"cell {i}")
    perm = np.random.default_rng(0).permutation(N_CELLS)
    np.testing.assert_array_equal(binned(X[perm]), ref[perm])
    np.testing.assert_array_equal(binned(X[::-1][:10]), ref[::-1][:10])


def test_preprocess_bins_of_a_subset_are_the_subset_of_the_bins(adata) -> None:
    full = preprocess_adata(adata, n_bins=11, seed=3).layers["X_binned"].toarray()
    rows = [31, 2, 19]
    part = preprocess_adata(adata[rows].copy(), n_bins=11, seed=3).layers["X_binned"].toarray()
    np.testing.assert_array_equal(part, full[rows])


# ----------------------------------------------------------------------------- gene embeddings
def test_gene_embeddings_are_read_from_the_weights(checkpoint) -> None:
    """No seed enters: the rows are LayerNorm(embedding weights) of the saved checkpoint."""
    genes = ["GENE7", "GENE0", "GENE33"]
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002 (the legacy global generator, as a user's script sets it)
    first = gene_embeddings(checkpoint, genes)
    torch.manual_seed(2)
    np.random.seed(2)  # noqa: NPY002
    again = gene_embeddings(checkpoint, list(reversed(genes)))
    np.testing.assert_array_equal(again.loc[genes].to_numpy(), first.to_numpy())

    state = torch.load(checkpoint / "best_model.pt", weights_only=True)
    model, vocab, _ = load_pretrained(checkpoint)
    rows = state["encoder.embedding.weight"][vocab.indices(genes)].double()
    expected = torch.nn.functional.layer_norm(
        rows,
        (rows.shape[1],),
        state["encoder.enc_norm.weight"].double(),
        state["encoder.enc_norm.bias"].double(),
    )
    np.testing.assert_allclose(first.to_numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    model.train()  # a model left in training mode gives the same rows (nothing stochastic)
    np.testing.assert_allclose(
        gene_embeddings(model, genes).to_numpy(), first.to_numpy(), rtol=1e-6, atol=1e-7
    )


def test_classifier_prediction_does_not_depend_on_order_or_chunking(checkpoint, adata) -> None:
    """The same keyed draws in prediction: a cell's label probabilities follow the cell."""
    from scgpt.finetune.classifier import predict_classifier
    from scgpt.model import TransformerModel

    model, vocab, config = load_pretrained(checkpoint)
    torch.manual_seed(0)
    head = TransformerModel(config.replace(n_cls=3))
    head.load_state_dict(model.state_dict(), strict=False)
    kw = {"classes": ["a", "b", "c"], "vocab": vocab, "max_len": 20, "return_proba": True}
    _, ref = predict_classifier(head, adata.copy(), batch_size=16, **kw)
    perm = np.random.default_rng(1).permutation(N_CELLS)
    _, shuffled = predict_classifier(head, adata[perm].copy(), batch_size=5, **kw)
    np.testing.assert_allclose(shuffled, ref[perm], atol=ATOL)
    _, alone = predict_classifier(head, adata[[7]].copy(), **kw)
    np.testing.assert_allclose(alone[0], ref[7], atol=ATOL)
