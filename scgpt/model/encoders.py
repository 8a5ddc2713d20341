"""Input encoders: gene tokens, expression values, batch labels and domain-specific batch norm.

Module and parameter names follow the released checkpoints (``encoder.embedding``,
``encoder.enc_norm``, ``value_encoder.linear1`` ...) so that their state dicts load as is.
"""

from __future__ import annotations

import torch
from torch import nn


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
        holds training from scratch on a "predict the gene mean" plateau for long. Only the
        initialisation changes; released weights load unchanged.
    """

    def __init__(
        self,
        d_model: int,
        dropout: float = 0.1,
        max_value: float = 512.0,
        init_value_range: float = 51.0,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value
        if init_value_range > 0:
            with torch.no_grad():
                kinks = torch.rand(d_model) * init_value_range
                self.linear1.bias.copy_(-self.linear1.weight[:, 0] * kinks)

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
    """Batch-label embedding followed by LayerNorm (``batch_encoder``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed batch labels ``x`` (B,) into B x d."""
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
