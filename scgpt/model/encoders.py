"""Input encoders: gene tokens, expression values, batch labels and domain-specific batch norm.

Module and parameter names follow the released checkpoints (``encoder.embedding``,
``encoder.enc_norm``, ``value_encoder.linear1`` ...) so that their state dicts load as is.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from scgpt.model.dropout import FastDropout


class GeneEncoder(nn.Module):
    """Gene token embedding followed by LayerNorm (``embedding``, ``enc_norm``).

    Parameters
    ----------
    num_embeddings
        Vocabulary size.
    embedding_dim
        Embedding size.
    padding_idx
        Index of ``<pad>`` (its row stays zero and receives no gradient).
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed token ids ``x`` (B x L) into B x L x d."""
        return self.enc_norm(self.embedding(x))


class ContinuousValueEncoder(nn.Module):
    """Value MLP: clamp at ``max_value`` -> Linear(1, d) -> ReLU -> Linear(d, d) -> LayerNorm -> Dropout.

    Parameters
    ----------
    d_model
        Output size.
    dropout
        Dropout after the norm.
    max_value
        Upper clamp of the input values (512 in the released models).
    init_value_range
        Values expected in training (the number of bins for binned input). ``linear1``'s
        bias is initialised so that each hidden unit's ReLU kink sits at a random point of
        ``[0, init_value_range]``. With PyTorch's default initialisation the kinks all sit
        near 0, the MLP is nearly linear in the value for values > 1, and the LayerNorm after
        it (scale invariant) maps values such as 5 and 40 to almost the same vector, which
        holds training from scratch on a "predict the gene mean" plateau for long. ``0``
        keeps PyTorch's initialisation. Only the initialisation changes; released weights
        load unchanged (same parameters, same shapes).
    special_values
        Input values with a meaning of their own (the mask value -1 and the pad / ``<cls>``
        value -2). Those below 0 get dedicated hidden units: a quarter of the units, split
        among the midpoints between consecutive special values and 0, each active only below
        its midpoint and with a weight large enough (a few times ``init_value_range``) that
        it dominates there. Otherwise -1 and -2 lie on the linear extension of the lowest
        bins and their encodings have cosine ~0.999 with bin 1, so a fresh model cannot tell
        "masked" from "expressed at a low level" (the official code has the same weakness).
        ``linear2``'s bias is then set so that the MLP's output is centred over the bins
        (0 .. ``init_value_range``): without it one shared offset dominates every encoding
        (bins 5 and 10 at cosine 0.99).
    """

    def __init__(
        self,
        d_model: int,
        dropout: float = 0.1,
        max_value: float = 512.0,
        init_value_range: float = 51.0,
        special_values: tuple[float, ...] = (),
    ) -> None:
        super().__init__()
        self.dropout = FastDropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value
        if init_value_range > 0:
            self._init_value_units(d_model, float(init_value_range), special_values)

    @torch.no_grad()
    def _init_value_units(
        self, d_model: int, value_range: float, specials: tuple[float, ...]
    ) -> None:
        weight = self.linear1.weight[:, 0].clone()
        kinks = torch.rand(d_model) * value_range
        below = sorted({float(v) for v in specials if v < 0})
        points = [*below, 0.0]
        mids = [(a + b) / 2 for a, b in itertools.pairwise(points)]
        n_special = max(len(mids), d_model // 4) if mids and d_model >= 2 * len(mids) else 0
        if n_special:
            # Unit i serves midpoint i mod n (the highest first). A unit at a lower midpoint
            # also fires for every value below it, so lower midpoints get larger weights
            # (x 1, 4, 7, ...): e.g. -1 and -2 then differ by more than a common scale.
            which = torch.arange(n_special) % len(mids)
            rank_from_top = len(mids) - 1 - which
            kinks[:n_special] = torch.tensor(mids)[which]
            scale = (2.0 + 2.0 * torch.rand(n_special)) * value_range * (1.0 + 3.0 * rank_from_top)
            weight[:n_special] = -scale  # negative slope: active only below the midpoint
        self.linear1.weight[:, 0] = weight
        self.linear1.bias.copy_(-weight * kinks)
        # Centre over the bins only: the special units' large activations at -1 / -2 would
        # otherwise dominate the mean, and subtracting it would push every bin onto one
        # direction (measured: from-scratch annotation accuracy 0.37 instead of 0.79).
        grid = torch.arange(int(value_range) + 1, dtype=weight.dtype)
        hidden = self.activation(self.linear1(grid[:, None]))
        self.linear2.bias.sub_(self.linear2(hidden).mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode values ``x`` (B x L) into B x L x d."""
        x = torch.clamp(x.unsqueeze(-1).to(self.linear1.weight.dtype), max=self.max_value)
        x = self.linear2(self.activation(self.linear1(x)))
        return self.dropout(self.norm(x))


class CategoryValueEncoder(nn.Module):
    """Embedding of the bin index (``input_emb_style="category"``) followed by LayerNorm.

    Values are cast to integers; the pad and mask values must lie in ``[0, num_embeddings)``
    (the official setting uses ``pad_value = n_bins`` and ``mask_value = n_bins + 1``).
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed bin indices ``x`` (B x L) into B x L x d."""
        idx = x.long()
        n = self.embedding.num_embeddings
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(
                f"category value encoder got values outside [0, {n}): min {int(idx.min())}, "
                f"max {int(idx.max())}; set pad_value/mask_value to n_bins/n_bins+1 for this style"
            )
        return self.enc_norm(self.embedding(idx))


class BatchLabelEncoder(nn.Module):
    """Label embedding followed by LayerNorm (``batch_encoder``; also ``mod_encoder``).

    Parameters
    ----------
    num_embeddings
        Number of labels.
    embedding_dim
        Embedding size.
    padding_idx
        Row that stays zero and receives no gradient (the modality of ``<pad>``).
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed labels ``x`` (B, or B x L per token) into B x d (B x L x d)."""
        return self.enc_norm(self.embedding(x))


class DomainSpecificBatchNorm1d(nn.Module):
    """One batch norm per batch ("domain"), eps 6.1e-5, affine-free by default (``dsbn.bns.{i}``).

    Cells of a mini-batch are normalised by the batch norm of their own domain. The official
    code uses the first cell's label for the whole mini-batch and draws single-domain
    mini-batches; for such batches both rules give the same result.

    Parameters
    ----------
    num_features
        Embedding size.
    num_domains
        Number of batches.
    eps, momentum, affine
        Batch-norm settings.
    """

    def __init__(
        self,
        num_features: int,
        num_domains: int,
        eps: float = 6.1e-5,
        momentum: float = 0.1,
        affine: bool = False,
    ) -> None:
        super().__init__()
        self.num_domains = num_domains
        self.bns = nn.ModuleList(
            [
                nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=affine)
                for _ in range(num_domains)
            ]
        )

    def forward(self, x: torch.Tensor, domain_labels: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B x L x d) per domain given ``domain_labels`` (B,)."""
        labels = domain_labels.long().view(-1)
        if labels.numel() != x.shape[0]:
            raise ValueError(f"got {labels.numel()} batch labels for {x.shape[0]} cells")
        out = torch.empty_like(x)
        for dom in labels.unique().tolist():
            if not 0 <= dom < self.num_domains:
                raise ValueError(f"batch label {dom} outside [0, {self.num_domains})")
            sel = labels == dom
            out[sel] = self.bns[dom](x[sel].transpose(1, 2)).transpose(1, 2)
        return out
