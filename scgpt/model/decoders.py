"""Output heads: expression decoder, MVC decoder, classifier and adversarial discriminator."""

from __future__ import annotations

import torch
from torch import nn


def _mlp3(d_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_model),
        nn.LeakyReLU(),
        nn.Linear(d_model, d_model),
        nn.LeakyReLU(),
        nn.Linear(d_model, 1),
    )


class ExprDecoder(nn.Module):
    """Per-token expression decoder (``decoder.fc.{0,2,4}``), 3 layers with LeakyReLU.

    Parameters
    ----------
    d_model
        Model width.
    explicit_zero_prob
        Add ``zero_logit`` (same shape) giving P(value > 0) per token.
    use_batch_labels
        Input is the token state concatenated with the batch embedding (2 d; also with the
        batch + modality embedding of the multi-omic model).
    """

    def __init__(
        self, d_model: int, explicit_zero_prob: bool = False, use_batch_labels: bool = False
    ) -> None:
        super().__init__()
        d_in = d_model * 2 if use_batch_labels else d_model
        self.fc = _mlp3(d_in, d_model)
        self.explicit_zero_prob = explicit_zero_prob
        if explicit_zero_prob:
            self.zero_logit = _mlp3(d_in, d_model)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pred`` (B x L) and, with explicit zero probabilities, ``zero_probs`` (P(non-zero))."""
        out = {"pred": self.fc(x).squeeze(-1)}
        if self.explicit_zero_prob:
            out["zero_probs"] = torch.sigmoid(self.zero_logit(x).squeeze(-1))
        return out


class AffineExprDecoder(nn.Module):
    """Affine expression decoder of the perturbation model: ``pred = A(h) * x + b(h)``.

    ``A`` and ``b`` are per-token :class:`ExprDecoder` heads (``decoder.coeff_decoder.fc.*``
    and ``decoder.bias_decoder.fc.*``, the official names) on the hidden state ``h``; ``x`` is
    the token's input value (the control cell's expression). Predicting a gain and an offset
    of the input, rather than the expression itself, lets the model start from "perturbed
    cell = control cell" and learn the change (the official perturbation model's decoder).

    Parameters
    ----------
    d_model
        Model width.
    explicit_zero_prob
        Add ``zero_probs`` (P(value > 0)), taken from the coefficient head as officially.
    use_batch_labels
        Input is the token state concatenated with the batch embedding (2 d).
    """

    def __init__(
        self, d_model: int, explicit_zero_prob: bool = False, use_batch_labels: bool = False
    ) -> None:
        super().__init__()
        self.coeff_decoder = ExprDecoder(d_model, explicit_zero_prob, use_batch_labels)
        self.bias_decoder = ExprDecoder(d_model, False, use_batch_labels)
        self.explicit_zero_prob = explicit_zero_prob

    def forward(self, x: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pred`` (B x L) from hidden states ``x`` (B x L x d_in) and input ``values`` (B x L)."""
        coeff = self.coeff_decoder(x)
        bias = self.bias_decoder(x)["pred"]
        out = {"pred": coeff["pred"] * values.to(bias.dtype) + bias}
        if self.explicit_zero_prob:
            out["zero_probs"] = coeff["zero_probs"]
        return out


class MVCDecoder(nn.Module):
    """Masked value prediction from the cell embedding (``mvc_decoder.gene2query``, ``mvc_decoder.W``).

    ``query = sigmoid(gene2query(gene_emb))`` and ``pred = <W(query), cell_emb>``, i.e.
    ``query^T W^T cell_emb`` (``W`` maps d -> d_in, ``d_in = 2 d`` with batch labels). This is
    the released models' layout; for the square case it equals ``<query, W^T(cell_emb)>``.

    Parameters
    ----------
    d_model
        Model width.
    detach_genes
        Detach the gene embeddings (``"inner product, detach"`` style).
    explicit_zero_prob
        Add ``W_zero_logit`` for P(non-zero).
    use_batch_labels
        The cell embedding is concatenated with the batch embedding.
    use_mod
        Multi-omic model (the official ``MultiOmicTransformerModel``'s MVC decoder): the gene
        embeddings are concatenated with their batch + modality embedding too, so the query
        side is 2 d wide (``gene2query`` 2 d -> 2 d, ``W`` 2 d -> 2 d).
    """

    def __init__(
        self,
        d_model: int,
        *,
        detach_genes: bool = False,
        explicit_zero_prob: bool = False,
        use_batch_labels: bool = False,
        use_mod: bool = False,
    ) -> None:
        super().__init__()
        d_in = d_model * 2 if use_batch_labels or use_mod else d_model
        d_query = d_model * 2 if use_mod else d_model
        self.gene2query = nn.Linear(d_query, d_query)
        self.query_activation = nn.Sigmoid()
        self.W = nn.Linear(d_query, d_in, bias=False)
        self.explicit_zero_prob = explicit_zero_prob
        if explicit_zero_prob:
            self.W_zero_logit = nn.Linear(d_query, d_in)
        self.detach_genes = detach_genes

    def forward(self, cell_emb: torch.Tensor, gene_embs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict B x L values from ``cell_emb`` (B x d_in) and ``gene_embs`` (B x L x d_query)."""
        if self.detach_genes:
            gene_embs = gene_embs.detach()
        query = self.query_activation(self.gene2query(gene_embs))
        c = cell_emb.unsqueeze(2)
        out = {"pred": torch.bmm(self.W(query), c.to(query.dtype)).squeeze(2)}
        if self.explicit_zero_prob:
            out["zero_probs"] = torch.sigmoid(
                torch.bmm(self.W_zero_logit(query), c.to(query.dtype)).squeeze(2)
            )
        return out


class ClsDecoder(nn.Module):
    """Classification head on the cell embedding (``cls_decoder._decoder``, ``cls_decoder.out_layer``).

    ``nlayers - 1`` blocks of Linear -> activation -> LayerNorm, then a linear output layer.
    """

    def __init__(
        self, d_model: int, n_cls: int, nlayers: int = 3, activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self._decoder = nn.ModuleList()
        for _ in range(nlayers - 1):
            self._decoder.extend([nn.Linear(d_model, d_model), activation(), nn.LayerNorm(d_model)])
        self.out_layer = nn.Linear(d_model, n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits B x n_cls from cell embeddings B x d."""
        for layer in self._decoder:
            x = layer(x)
        return self.out_layer(x)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``-lambd`` backward (domain-adversarial training)."""
    return _GradReverse.apply(x, lambd)


class AdversarialDiscriminator(nn.Module):
    """Batch discriminator behind a gradient-reversal layer (``grad_reverse_discriminator``).

    Three layers (two Linear -> LeakyReLU -> LayerNorm blocks and an output layer), as in
    the released code.
    """

    def __init__(
        self,
        d_model: int,
        n_cls: int,
        nlayers: int = 3,
        activation: type[nn.Module] = nn.LeakyReLU,
        reverse_grad: bool = True,
    ) -> None:
        super().__init__()
        self._decoder = nn.ModuleList()
        for _ in range(nlayers - 1):
            self._decoder.extend([nn.Linear(d_model, d_model), activation(), nn.LayerNorm(d_model)])
        self.out_layer = nn.Linear(d_model, n_cls)
        self.reverse_grad = reverse_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch logits B x n_batches from cell embeddings B x d."""
        if self.reverse_grad:
            x = grad_reverse(x, 1.0)
        for layer in self._decoder:
            x = layer(x)
        return self.out_layer(x)
