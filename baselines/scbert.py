"""scBERT (Yang et al. 2022, Nat Mach Intell 4:852), re-implemented from the paper and its code.

Input: every gene of a cell in a fixed order, plus one trailing position (scBERT appends a
``0`` token). Expression is normalised to 10,000 counts per cell, ``log2(1 + x)``
transformed and binned: token = ``floor(min(value, n_bins))``, so with ``n_bins = 5`` the
expression tokens are 0..5 and token 6 is the mask token (7 tokens in all).

Model (paper defaults: ``dim`` 200, ``depth`` 6, ``heads`` 10, ``dim_head`` 64): token
embedding + gene embedding (gene2vec vectors, frozen, when ``gene2vec`` names a file; a
learned embedding otherwise), a Performer encoder (pre-LayerNorm blocks; FAVOR+ linear
attention with ``nb_features`` positive orthogonal random features, default
``int(dim_head * ln(dim_head))``, redrawn every ``feature_redraw_interval`` training calls;
GELU feed-forward x4), a final LayerNorm and

- a masked-expression head (``Linear(dim, 7)``) for the optional pre-training: 15% of each
  cell's non-zero tokens are chosen, 90% of those replaced by the mask token, and the
  original bins predicted (cross-entropy on the chosen positions);
- scBERT's fine-tuning head: a ``Conv2d(1, 1, (1, dim))`` that reduces each gene's vector to
  one value, ReLU, ``Linear(n_genes + 1, 512)``, ReLU, ``Linear(512, h_dim=128)``, ReLU,
  ``Linear(h_dim, n_classes)``. The 128-d activation is the cell embedding
  (``query.obsm["X_scbert"]``).

Fine-tuning (scBERT defaults): Adam (lr 1e-4), batch size 3 with 60 gradient-accumulation
steps, cosine-annealing warm restarts per epoch (first cycle 15 epochs, cycle x2, 5 warm-up
epochs from 1e-6, peak x0.9 per cycle), up to 100 epochs, early stopping after 10 epochs
without a better validation accuracy, best model kept (ties broken by the lower validation
loss). The validation cells are the
harness's ``reference.obs["train_val"] == "val"``. When the encoder was pre-trained and
``freeze_pretrained`` is true, only the final LayerNorm, the second-to-last Performer layer
and the head are trained, as in scBERT's ``finetune.py``.

Pre-training: scBERT was pre-trained on PanglaoDB (over a million cells); that corpus and
checkpoint are not available offline. ``pretrain_epochs > 0`` pre-trains on the reference
cells instead (the query is never used); the default, 0, fine-tunes a randomly initialised
encoder.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from contract.registry import register

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------------------


def log2_normalise(adata: Any, *, target_sum: float = 1e4) -> np.ndarray:
    """Dense float32 ``log2(1 + counts / total * target_sum)`` (scBERT's preprocessing)."""
    import scipy.sparse as sp

    x = adata.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    total = x.sum(axis=1, keepdims=True)
    return np.log2(1.0 + x / np.where(total > 0, total, 1.0) * target_sum).astype(np.float32)


def bin_expression(values: np.ndarray, *, n_bins: int = 5) -> np.ndarray:
    """scBERT expression tokens: ``floor(min(value, n_bins))`` as int64 (0..n_bins).

    ``values`` are log2-normalised expression (non-negative); the mask token is
    ``n_bins + 1``, so the vocabulary has ``n_bins + 2`` tokens.
    """
    values = np.asarray(values)
    if (values < 0).any():
        raise ValueError("scbert: expression values must be non-negative before binning")
    return np.floor(np.minimum(values, n_bins)).astype(np.int64)


def read_gene2vec(path: str | Path, genes: list[str], dim: int) -> tuple[np.ndarray, int]:
    """Gene vectors for ``genes`` from a word2vec-format text file (``gene v1 ... vd``).

    A first line of two integers (word2vec header) is skipped. Genes without a vector get
    zeros. Returns the ``(len(genes), dim)`` matrix and the number of genes found.
    """
    index = {g: i for i, g in enumerate(genes)}
    out = np.zeros((len(genes), dim), dtype=np.float32)
    found = 0
    with Path(path).open() as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields or (lineno == 1 and len(fields) == 2):
                continue
            if len(fields) != dim + 1:
                raise ValueError(
                    f"{path}:{lineno}: expected a gene and {dim} numbers (the model's dim), "
                    f"got {len(fields) - 1} numbers"
                )
            i = index.get(fields[0])
            if i is not None:
                out[i] = np.asarray(fields[1:], dtype=np.float32)
                found += 1
    return out, found


def mask_tokens(
    tokens, *, mask_token: int, mask_prob: float = 0.15, replace_prob: float = 0.9, generator=None
):
    """scBERT's masking: ``ceil(mask_prob * n)`` of each cell's ``n`` non-zero tokens chosen.

    A chosen token becomes ``mask_token`` with probability ``replace_prob`` (else it stays);
    labels hold the original token at chosen positions and -100 (ignored) elsewhere.
    """
    import torch

    eligible = (tokens != 0) & (tokens != mask_token)
    scores = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    scores = scores.masked_fill(~eligible, -1.0)
    n_chosen = torch.ceil(eligible.sum(dim=1, keepdim=True) * mask_prob).long()
    ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)
    chosen = (ranks < n_chosen) & eligible
    replace = torch.rand(tokens.shape, generator=generator, device=tokens.device) < replace_prob
    masked = tokens.masked_fill(chosen & replace, mask_token)
    labels = tokens.masked_fill(~chosen, -100)
    return masked, labels


def warmup_cosine_restarts(
    step: int,
    *,
    max_lr: float,
    min_lr: float = 1e-6,
    first_cycle_steps: int = 15,
    cycle_mult: float = 2.0,
    warmup_steps: int = 5,
    gamma: float = 0.9,
) -> float:
    """Learning rate of scBERT's ``CosineAnnealingWarmupRestarts`` at (epoch) ``step``."""
    cycle, length, t = 0, first_cycle_steps, step
    while t >= length:
        t -= length
        cycle += 1
        length = max(round(length * cycle_mult), 1)
    peak = max_lr * gamma**cycle
    warmup = min(warmup_steps, length - 1)
    if t < warmup:
        return min_lr + (peak - min_lr) * t / warmup
    progress = (t - warmup) / max(length - warmup, 1)
    return min_lr + (peak - min_lr) * (1 + math.cos(math.pi * progress)) / 2


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------


@functools.cache
def _torch_modules():
    """Define the torch modules once, on first use (torch is imported lazily)."""
    import torch
    from torch import nn

    def gaussian_orthogonal_random_matrix(n_rows: int, n_cols: int) -> torch.Tensor:
        """Orthogonal random features (blocks of QR factors), rows scaled by chi norms."""
        blocks = []
        for _ in range(math.ceil(n_rows / n_cols)):
            q, _ = torch.linalg.qr(torch.randn(n_cols, n_cols))
            blocks.append(q.T)
        matrix = torch.cat(blocks)[:n_rows]
        multiplier = torch.randn(n_rows, n_cols).norm(dim=1)
        return multiplier[:, None] * matrix

    def softmax_kernel(
        data: torch.Tensor, projection: torch.Tensor, *, is_query: bool, eps: float = 1e-4
    ):
        """FAVOR+ positive random features approximating the softmax kernel."""
        normaliser = data.shape[-1] ** -0.25
        ratio = projection.shape[0] ** -0.5
        data_dash = torch.einsum("...id,jd->...ij", normaliser * data, projection.type_as(data))
        diag = (data**2).sum(dim=-1, keepdim=True) / 2.0 * normaliser**2
        if is_query:
            stab = data_dash.amax(dim=-1, keepdim=True)
        else:
            stab = data_dash.amax(dim=(-1, -2), keepdim=True)
        # Subtracting a max keeps exp() finite; it cancels in the attention normalisation.
        return ratio * (torch.exp(data_dash - diag - stab.detach()) + eps)

    def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_sum = k.sum(dim=-2)
        d_inv = 1.0 / torch.einsum("...nd,...d->...n", q, k_sum)
        context = torch.einsum("...nd,...ne->...de", k, v)
        return torch.einsum("...de,...nd,...n->...ne", context, q, d_inv)

    class FavorAttention(nn.Module):
        def __init__(
            self, dim: int, heads: int, dim_head: int, nb_features: int | None, dropout: float
        ):
            super().__init__()
            inner = heads * dim_head
            self.heads = heads
            self.nb_features = nb_features or max(int(dim_head * math.log(dim_head)), 1)
            self.dim_head = dim_head
            self.to_q = nn.Linear(dim, inner, bias=False)
            self.to_k = nn.Linear(dim, inner, bias=False)
            self.to_v = nn.Linear(dim, inner, bias=False)
            self.to_out = nn.Linear(inner, dim)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer(
                "projection", gaussian_orthogonal_random_matrix(self.nb_features, dim_head)
            )

        @torch.no_grad()
        def redraw(self) -> None:
            self.projection.copy_(
                gaussian_orthogonal_random_matrix(self.nb_features, self.dim_head)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            q, k, v = (
                f(x).reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
                for f in (self.to_q, self.to_k, self.to_v)
            )
            q = softmax_kernel(q, self.projection, is_query=True)
            k = softmax_kernel(k, self.projection, is_query=False)
            out = linear_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
            return self.dropout(self.to_out(out))

    class PerformerLayer(nn.Module):
        def __init__(self, dim, heads, dim_head, nb_features, ff_mult=4, dropout=0.0):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = FavorAttention(dim, heads, dim_head, nb_features, dropout)
            self.norm2 = nn.LayerNorm(dim)
            self.ff = nn.Sequential(
                nn.Linear(dim, dim * ff_mult),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(dim * ff_mult, dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.ff(self.norm2(x))

    class ClassifierHead(nn.Module):
        """scBERT's fine-tuning head (conv over the embedding, then three dense layers)."""

        def __init__(
            self, seq_len: int, dim: int, n_classes: int, h_dim: int = 128, dropout: float = 0.0
        ):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 1, (1, dim))
            self.fc1 = nn.Linear(seq_len, 512)
            self.fc2 = nn.Linear(512, h_dim)
            self.fc3 = nn.Linear(h_dim, n_classes)
            self.act = nn.ReLU()
            self.dropout = nn.Dropout(dropout)

        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.act(self.conv1(h[:, None, :, :])).flatten(1)
            x = self.dropout(self.act(self.fc1(x)))
            emb = self.act(self.fc2(x))
            return self.fc3(self.dropout(emb)), emb

    class ScBert(nn.Module):
        """Token + gene embeddings, Performer encoder, MLM head and classifier head."""

        def __init__(
            self,
            n_genes: int,
            n_classes: int,
            *,
            n_bins: int = 5,
            dim: int = 200,
            depth: int = 6,
            heads: int = 10,
            dim_head: int = 64,
            nb_features: int | None = None,
            feature_redraw_interval: int | None = 1000,
            gene_vectors: np.ndarray | None = None,
            h_dim: int = 128,
            head_dropout: float = 0.0,
        ) -> None:
            super().__init__()
            self.seq_len = n_genes + 1
            self.n_tokens = n_bins + 2
            self.mask_token = n_bins + 1
            self.token_emb = nn.Embedding(self.n_tokens, dim)
            if gene_vectors is not None:
                weight = np.concatenate([gene_vectors, np.zeros((1, dim), np.float32)])
                self.gene_emb = nn.Embedding.from_pretrained(torch.as_tensor(weight), freeze=True)
            else:
                # nn.Embedding's N(0, 1) initialisation, the scale of the token embedding: genes
                # are distinguishable from the start, so the head's per-gene ReLU is not dead
                # for every gene at once (with tiny gene vectors it can be, and nothing trains).
                self.gene_emb = nn.Embedding(self.seq_len, dim)
            self.layers = nn.ModuleList(
                PerformerLayer(dim, heads, dim_head, nb_features) for _ in range(depth)
            )
            self.norm = nn.LayerNorm(dim)
            self.to_out = nn.Linear(dim, self.n_tokens)
            self.head = ClassifierHead(self.seq_len, dim, n_classes, h_dim, head_dropout)
            self.feature_redraw_interval = feature_redraw_interval
            self.register_buffer("calls_since_redraw", torch.tensor(0))

        def _maybe_redraw(self) -> None:
            if not self.training or self.feature_redraw_interval is None:
                return
            if int(self.calls_since_redraw) >= self.feature_redraw_interval:
                for module in self.modules():
                    if isinstance(module, FavorAttention):
                        module.redraw()
                self.calls_since_redraw.zero_()
            else:
                self.calls_since_redraw += 1

        def encode(self, tokens: torch.Tensor) -> torch.Tensor:
            """``(B, n_genes + 1)`` tokens -> ``(B, n_genes + 1, dim)`` encodings."""
            if tokens.shape[1] != self.seq_len:
                raise ValueError(
                    f"scbert: expected {self.seq_len} tokens per cell, got {tokens.shape[1]}"
                )
            self._maybe_redraw()
            positions = torch.arange(self.seq_len, device=tokens.device)
            h = self.token_emb(tokens) + self.gene_emb(positions)
            for layer in self.layers:
                h = layer(h)
            return self.norm(h)

        def mlm_logits(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.to_out(self.encode(tokens))

        def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Class logits and the 128-d cell embedding."""
            return self.head(self.encode(tokens))

    return ScBert, FavorAttention, softmax_kernel, linear_attention


def build_model(n_genes: int, n_classes: int, **kwargs: Any):
    """An :class:`ScBert` torch module for ``n_genes`` genes and ``n_classes`` classes."""
    model_cls, *_ = _torch_modules()
    return model_cls(n_genes, n_classes, **kwargs)


def _tokens(x: np.ndarray, n_bins: int) -> np.ndarray:
    tokens = bin_expression(x, n_bins=n_bins)
    # scBERT appends one 0 token to every cell (its sequence length is n_genes + 1).
    return np.concatenate([tokens, np.zeros((tokens.shape[0], 1), np.int64)], axis=1)


def _select_genes(reference, n_top_genes: int | None) -> np.ndarray:
    """Boolean gene mask: all genes, or the reference's top HVGs (seurat dispersion)."""
    if n_top_genes is None or n_top_genes >= reference.n_vars:
        return np.ones(reference.n_vars, dtype=bool)
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    tmp = ad.AnnData(X=sp.csr_matrix(reference.X, dtype=np.float32))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    hvg = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", inplace=False)
    return np.asarray(hvg["highly_variable"], dtype=bool)


# ------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------


# The paper's scBERT is pre-trained on PanglaoDB (with gene2vec embeddings); these weights are
# not fetched, so this one trains on the reference only: not the paper's scBERT row.
@register("annotation", "scbert", label="scBERT (from scratch)")
def scbert(
    reference,
    query,
    *,
    seed: int,
    dim: int = 200,
    depth: int = 6,
    heads: int = 10,
    dim_head: int = 64,
    nb_features: int | None = None,
    feature_redraw_interval: int | None = 1000,
    n_bins: int = 5,
    gene2vec: str | None = None,
    n_top_genes: int | None = None,
    pretrain_epochs: int = 0,
    pretrain_lr: float = 1e-4,
    mask_prob: float = 0.15,
    replace_prob: float = 0.9,
    freeze_pretrained: bool = True,
    epochs: int = 100,
    batch_size: int = 3,
    grad_acc: int = 60,
    lr: float = 1e-4,
    min_lr: float = 1e-6,
    warmup_epochs: int = 5,
    first_cycle_epochs: int = 15,
    patience: int = 10,
    h_dim: int = 128,
    head_dropout: float = 0.0,
    device: str | None = None,
) -> np.ndarray:
    """scBERT: binned expression tokens, Performer encoder, conv/dense classifier head."""
    import torch
    from tqdm.auto import tqdm

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("scbert: reference and query must have the same genes in the same order")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    keep = _select_genes(reference, n_top_genes)
    genes = [str(g) for g, k in zip(reference.var_names, keep, strict=True) if k]
    tok_ref = torch.as_tensor(_tokens(log2_normalise(reference)[:, keep], n_bins))
    tok_query = torch.as_tensor(_tokens(log2_normalise(query)[:, keep], n_bins))

    gene_vectors = None
    if gene2vec is not None:
        gene_vectors, found = read_gene2vec(gene2vec, genes, dim)
        log.info("scbert: gene2vec vectors for %d of %d genes (%s)", found, len(genes), gene2vec)
        if found == 0:
            raise ValueError(f"scbert: no gene of the data is in the gene2vec file {gene2vec}")

    classes, y = np.unique(reference.obs["cell_type"].astype(str).to_numpy(), return_inverse=True)
    y = torch.as_tensor(y)
    if "train_val" in reference.obs:
        is_val = reference.obs["train_val"].astype(str).to_numpy() == "val"
    else:
        is_val = np.random.default_rng(seed).random(reference.n_obs) < 0.2
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    model = build_model(
        len(genes),
        len(classes),
        n_bins=n_bins,
        dim=dim,
        depth=depth,
        heads=heads,
        dim_head=dim_head,
        nb_features=nb_features,
        feature_redraw_interval=feature_redraw_interval,
        gene_vectors=gene_vectors,
        h_dim=h_dim,
        head_dropout=head_dropout,
    ).to(dev)

    if pretrain_epochs > 0:
        _pretrain(
            model,
            tok_ref[train_idx],
            dev,
            epochs=pretrain_epochs,
            lr=pretrain_lr,
            batch_size=batch_size,
            grad_acc=grad_acc,
            mask_prob=mask_prob,
            replace_prob=replace_prob,
            generator=generator,
        )
        if freeze_pretrained:
            for p in model.parameters():
                p.requires_grad_(False)
            trainable = [
                model.norm,
                model.head,
                model.layers[-2] if depth >= 2 else model.layers[-1],
            ]
            for module in trainable:
                for p in module.parameters():
                    p.requires_grad_(True)
            if gene_vectors is not None:
                model.gene_emb.weight.requires_grad_(False)

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    best_acc, best_loss, best_state, since_best = -1.0, math.inf, None, 0
    for epoch in tqdm(range(epochs), desc="scbert fine-tune", disable=epochs < 2):
        for group in optimiser.param_groups:
            group["lr"] = warmup_cosine_restarts(
                epoch,
                max_lr=lr,
                min_lr=min_lr,
                first_cycle_steps=first_cycle_epochs,
                warmup_steps=warmup_epochs,
            )
        model.train()
        order = train_idx[torch.randperm(train_idx.size, generator=generator).numpy()]
        total, n_steps = 0.0, 0
        optimiser.zero_grad()
        for step, start in enumerate(range(0, order.size, batch_size), start=1):
            idx = order[start : start + batch_size]
            logits, _ = model(tok_ref[idx].to(dev))
            loss = loss_fn(logits, y[idx].to(dev))
            (loss / grad_acc).backward()
            total, n_steps = total + float(loss.detach()), n_steps + 1
            if step % grad_acc == 0 or start + batch_size >= order.size:
                torch.nn.utils.clip_grad_norm_(params, 1e6)
                optimiser.step()
                optimiser.zero_grad()
        if not val_idx.size:
            log.info("scbert epoch %d: train loss %.4f", epoch, total / max(n_steps, 1))
            continue
        pred, _, val_loss = _predict(model, tok_ref[val_idx], dev, labels=y[val_idx])
        val_acc = float((pred == y[val_idx].numpy()).mean())
        log.info(
            "scbert epoch %d: train loss %.4f, val loss %.4f, val accuracy %.3f",
            epoch, total / max(n_steps, 1), val_loss, val_acc,
        )  # fmt: skip
        # scBERT keeps the best validation accuracy; ties (common on small validation sets)
        # go to the lower validation loss.
        if (val_acc, -val_loss) > (best_acc, -best_loss):
            best_acc, best_loss = val_acc, val_loss
            best_state, since_best = copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best > patience:
                log.info("scbert: early stop at epoch %d (best val accuracy %.3f)", epoch, best_acc)
                break
    if best_state is not None:
        model.load_state_dict(best_state)

    pred, emb, _ = _predict(model, tok_query, dev)
    query.obsm["X_scbert"] = emb
    return classes[pred].astype(str)


def _pretrain(
    model, tokens, dev, *, epochs, lr, batch_size, grad_acc, mask_prob, replace_prob, generator
):
    """Masked-expression pre-training of the encoder on ``tokens`` (reference cells)."""
    import torch
    from tqdm.auto import tqdm

    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    for epoch in tqdm(range(epochs), desc="scbert pre-train", disable=epochs < 2):
        model.train()
        order = torch.randperm(tokens.shape[0], generator=generator)
        total, n_steps = 0.0, 0
        optimiser.zero_grad()
        for step, start in enumerate(range(0, tokens.shape[0], batch_size), start=1):
            batch = tokens[order[start : start + batch_size]]
            masked, labels = mask_tokens(
                batch,
                mask_token=model.mask_token,
                mask_prob=mask_prob,
                replace_prob=replace_prob,
                generator=generator,
            )
            if (labels != -100).sum() == 0:
                continue
            logits = model.mlm_logits(masked.to(dev))
            loss = loss_fn(logits.transpose(1, 2), labels.to(dev))
            (loss / grad_acc).backward()
            total, n_steps = total + float(loss.detach()), n_steps + 1
            if step % grad_acc == 0 or start + batch_size >= tokens.shape[0]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
                optimiser.step()
                optimiser.zero_grad()
        log.info(
            "scbert pre-train epoch %d: masked-token loss %.4f", epoch, total / max(n_steps, 1)
        )


def _predict(
    model, tokens, dev, batch_size: int = 64, labels=None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Class index and cell embedding for every cell, and the mean loss when ``labels`` given."""
    import torch

    model.eval()
    preds, embs, loss = [], [], 0.0
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            logits, emb = model(tokens[start : start + batch_size].to(dev))
            preds.append(logits.argmax(dim=-1).cpu().numpy())
            embs.append(emb.cpu().numpy())
            if labels is not None:
                target = labels[start : start + batch_size].to(dev)
                loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    mean_loss = loss / tokens.shape[0] if labels is not None else float("nan")
    return np.concatenate(preds), np.concatenate(embs).astype(np.float32), mean_loss
