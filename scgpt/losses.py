"""Losses of scGPT's objectives (masked regression, Bernoulli zero head, ECS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over positions where ``mask`` is True (0 when nothing is masked)."""
    m = mask.to(pred.dtype)
    return ((pred.float() - target.float()) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def masked_bernoulli_nll(
    prob_nonzero: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of "value > 0" under ``prob_nonzero``, averaged over ``mask``."""
    p = prob_nonzero.float().clamp(1e-6, 1 - 1e-6)
    y = (target > 0).float()
    ll = y * torch.log(p) + (1 - y) * torch.log1p(-p)
    m = mask.float()
    return -(ll * m).sum() / m.sum().clamp(min=1.0)


def masked_relative_error(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean ``|pred - target| / (target + 1e-6)`` over ``mask``."""
    m = mask.bool()
    return ((pred[m] - target[m]).abs() / (target[m].abs() + 1e-6)).mean()


def ecs_loss(cell_emb: torch.Tensor, threshold: float) -> torch.Tensor:
    """Elastic cell similarity: mean over pairs i != j of ``1 - (relu(cos_ij) - threshold)^2``.

    Minimising it pushes pairs whose cosine similarity is above ``threshold`` closer and
    those below further apart. The official code averages over the full B x B matrix with the
    diagonal zeroed, which adds a constant and rescales the gradient by ``(B - 1) / B``;
    averaging over the off-diagonal pairs is the quantity the paper describes.

    Parameters
    ----------
    cell_emb
        B x d cell embeddings.
    threshold
        Similarity threshold (0.8 in the integration tutorial).
    """
    B = cell_emb.shape[0]
    if B < 2:
        return cell_emb.sum() * 0.0
    z = F.normalize(cell_emb.float(), p=2, dim=1)
    cos = F.relu(z @ z.t())
    off = ~torch.eye(B, dtype=torch.bool, device=z.device)
    return (1 - (cos[off] - threshold) ** 2).mean()
