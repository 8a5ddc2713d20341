"""Dropout for CPU training that draws its random bits 8x more cheaply, and attention with it.

On the CPU, ``torch.bernoulli_`` (behind ``nn.Dropout`` and SDPA's ``dropout_p``) costs one
Mersenne-Twister draw per element; in a training step of the 4 x 128 model at 512 tokens it
was 30% of the time, most of it on the B x H x L x L attention probabilities, which also force
SDPA onto its unfused "math" path. Here a mask is cut from 64-bit random words, four 16-bit
draws per word: an element is dropped when its draw is below ``round(p * 2**16)``, so the
dropout rate is ``p`` to within 2**-17 and kept values are scaled by the exact inverse of the
realised keep rate. The random stream is torch's default generator (``torch.manual_seed``
makes runs repeat), not the one ``nn.Dropout`` uses: same distribution, other draws.

:func:`attention_with_dropout` is scaled dot-product attention with dropout on the
probabilities as one autograd function: it keeps the probabilities and a one-byte mask for
the backward pass, instead of the math path's chain of masked, safe-softmax and dropout
tensors. GPU training keeps SDPA's fused kernels (:class:`~scgpt.model.transformer.SelfAttention`
only calls this on the CPU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["FastDropout", "attention_with_dropout", "dropout_mask", "fast_dropout"]

_LEVELS = 1 << 16


def _threshold(p: float) -> int:
    """Draws below this (in [0, 2**16)) are dropped."""
    return min(_LEVELS, max(0, round(p * _LEVELS)))


def keep_scale(p: float) -> float:
    """``1 / (1 - realised drop rate)``: keeps each element's expectation exact."""
    kept = _LEVELS - _threshold(p)
    return _LEVELS / kept if kept else 0.0


def dropout_mask(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A boolean tensor of ``shape``, True where an element is dropped (rate ``p``).

    Drawn from torch's default CPU generator, four 16-bit draws per 64-bit random word.
    """
    threshold = _threshold(p)
    if threshold == 0 or threshold == _LEVELS:
        return torch.full(tuple(shape), threshold == _LEVELS, dtype=torch.bool)
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    # The full signed range: every one of the 64 bits uniform (random_() alone leaves the top
    # bit 0).
    words.random_(-(2**63), 2**63 - 1)
    draws = words.view(torch.int16)[:n]
    # int16 draws lie in [-2**15, 2**15): shift the threshold instead of the draws.
    return (draws < threshold - (1 << 15)).view(shape)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with masks from :func:`dropout_mask` on the CPU."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    return _MaskedScale.apply(x, dropout_mask(x.shape, p), keep_scale(p))


class _MaskedScale(torch.autograd.Function):
    """``x * ~drop * scale``; the backward pass reuses the one-byte mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return torch.where(drop, 0.0, x).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return torch.where(drop, 0.0, grad).mul_(ctx.scale), None, None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same name, no parameters) whose CPU masks come from :func:`dropout_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention_with_dropout(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    p: float,
    *,
    block_elements: int = 1 << 18,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask)`` with dropout ``p``, times ``v`` (B x H x L x d).

    Equal to ``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p=p)`` in
    distribution (the same dropout mask gives the same output and gradients; a query that
    may attend to nothing gives zeros, as SDPA does).

    Computed per cell and block of query rows, all heads at once, so that each block's
    scores, probabilities and dropout draws stay in the CPU cache (about ``block_elements``
    floats): no L x L tensor is ever written to memory but the one-byte dropout mask. The
    backward pass recomputes each block's probabilities (a product and a softmax, cheaper than
    storing and re-reading them).

    Parameters
    ----------
    q, k, v
        B x H x L x d (k and v may have another length than q).
    attn_mask
        ``None``, boolean (True = may attend) or additive, broadcastable to B x H x Lq x Lk.
    p
        Dropout on the attention probabilities, in [0, 1).
    block_elements
        Scores per block (heads x query rows x keys).
    """
    B, H, Lq, _ = q.shape
    Lk = k.shape[-2]
    bias = empty_rows = None
    if attn_mask is not None:
        # One additive form (adding is vectorised; a boolean masked_fill is ~20x slower).
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype).masked_fill_(~attn_mask, -math.inf)
        else:
            bias = attn_mask.to(q.dtype)
        bias = bias.expand(B, H, Lq, Lk)
        allowed = torch.isfinite(bias).any(dim=-1, keepdim=True)
        if not bool(allowed.all()):
            empty_rows = ~allowed
    rows = max(1, min(Lq, block_elements // max(1, H * Lk)))
    return _BlockedAttention.apply(q, k, v, bias, empty_rows, p, rows)


def _block_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    bias: torch.Tensor | None,
    empty: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Attention probabilities of one block (heads x rows x keys)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
    if bias is not None:
        scores.add_(bias)
    probs = torch.softmax(scores, dim=-1)
    if empty is not None:
        probs.masked_fill_(empty, 0.0)  # softmax of a row of -inf is NaN; SDPA gives 0
    return probs


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        empty_rows: torch.Tensor | None,
        p: float,
        rows: int,
    ) -> torch.Tensor:
        B, _, Lq, _ = q.shape
        scale = 1.0 / math.sqrt(q.shape[-1])
        keep = keep_scale(p)
        out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
        v_kept = v * keep  # the keep-rate scale on v (L x d) rather than on the scores
        drops: list[torch.Tensor] = []
        for b in range(B):
            for start in range(0, Lq, rows):
                sl = slice(start, start + rows)
                probs = _block_probs(
                    q[b, :, sl],
                    k[b],
                    bias[b, :, sl] if bias is not None else None,
                    empty_rows[b, :, sl] if empty_rows is not None else None,
                    scale,
                )
                drop = dropout_mask(probs.shape, p)
                drops.append(drop)
                probs.mul_(~drop)
                torch.matmul(probs, v_kept[b], out=out[b, :, sl])
        ctx.save_for_backward(q, k, v, bias, empty_rows)
        ctx.drops, ctx.scale, ctx.keep, ctx.rows = drops, scale, keep, rows
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, bias, empty_rows = ctx.saved_tensors
        scale, rows, drops = ctx.scale, ctx.rows, iter(ctx.drops)
        B, _, Lq, _ = q.shape
        grad_kept = grad_out * ctx.keep
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros_like(k)
        grad_v = torch.zeros_like(v)
        for b in range(B):
            for start in range(0, Lq, rows):
                sl = slice(start, start + rows)
                probs = _block_probs(
                    q[b, :, sl],
                    k[b],
                    bias[b, :, sl] if bias is not None else None,
                    empty_rows[b, :, sl] if empty_rows is not None else None,
                    scale,
                )
                kept = probs * ~next(drops)
                g = grad_kept[b, :, sl]
                grad_v[b] += torch.matmul(kept.transpose(-1, -2), g)
                # d softmax: dS = P o dP - P * rowsum(P o dP), P o dP = kept o (keep dO v^T).
                grad_scores = torch.matmul(g, v[b].transpose(-1, -2)).mul_(kept)
                row = grad_scores.sum(dim=-1, keepdim=True)
                grad_scores.addcmul_(probs, row, value=-1.0).mul_(scale)
                torch.matmul(grad_scores, k[b], out=grad_q[b, :, sl])
                grad_k[b] += torch.matmul(grad_scores.transpose(-1, -2), q[b, :, sl])
        ctx.drops = []
        return grad_q, grad_k, grad_v, None, None, None, None
