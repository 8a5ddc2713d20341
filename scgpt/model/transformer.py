"""Post-norm transformer encoder on ``torch.nn.functional.scaled_dot_product_attention``.

SDPA picks a fused kernel on GPU (flash / memory-efficient), runs under bf16 autocast and has
a CPU path, so no flash-attn install is needed. Parameter names match the released
checkpoints: ``layers.{i}.self_attn.Wqkv`` (packed q, k, v; rows ``[q; k; v]`` with the heads
contiguous inside each, the layout of ``nn.MultiheadAttention.in_proj_weight``),
``self_attn.out_proj``, ``linear1``, ``linear2``, ``norm1``, ``norm2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scgpt.model.dropout import FastDropout, attention_with_dropout


def merge_attention_masks(
    key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Combine a key-padding mask and an attention mask into one SDPA mask.

    Parameters
    ----------
    key_padding_mask
        B x L, True at padding keys.
    attn_mask
        Boolean (True = may attend) or additive float mask of shape L x L, B x L x L or
        B x 1 x L x L (or B x H x L x L).

    Returns
    -------
    torch.Tensor or None
        A mask broadcastable to B x H x L x L in the same convention as ``attn_mask``
        (boolean when only padding is given), or ``None`` when nothing is masked.
    """
    keep = None
    if key_padding_mask is not None and bool(key_padding_mask.any()):
        keep = ~key_padding_mask.bool()[:, None, None, :]
    if attn_mask is None:
        return keep
    if attn_mask.dim() == 2:
        attn_mask = attn_mask[None, None]
    elif attn_mask.dim() == 3:
        attn_mask = attn_mask[:, None]
    if keep is None:
        return attn_mask
    if attn_mask.dtype == torch.bool:
        return attn_mask & keep
    return attn_mask.masked_fill(~keep, float("-inf"))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed ``Wqkv`` projection and ``out_proj``.

    Parameters
    ----------
    d_model
        Model width.
    nhead
        Number of heads.
    dropout
        Attention dropout (training only).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}")
        self.d_model = d_model
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.dropout = dropout
        self.Wqkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, _ = x.shape
        qkv = self.Wqkv(x).view(B, L, 3, self.nhead, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each B x H x L x hd

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *, raw_from: int | None = None
    ) -> torch.Tensor:
        """Attend over ``x`` (B x L x d).

        Parameters
        ----------
        x
            Input.
        attn_mask
            SDPA mask (see :func:`merge_attention_masks`).
        raw_from
            Positions from this index on skip ``out_proj`` (only for
            ``ModelConfig.legacy_gen_attention``).
        """
        B, L, _ = x.shape
        q, k, v = self._qkv(x)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        if self.training and self.dropout > 0.0 and q.device.type == "cpu":
            # SDPA's CPU kernels cannot drop out: its math path was 30-50% of a training step.
            ctx = attention_with_dropout(q, k, v, attn_mask, self.dropout)
        else:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
            )
        ctx = ctx.transpose(1, 2).reshape(B, L, self.d_model)
        if raw_from is None:
            return self.out_proj(ctx)
        return torch.cat([self.out_proj(ctx[:, :raw_from]), ctx[:, raw_from:]], dim=1)

    def attention_weights(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *, softmax: bool = True
    ) -> torch.Tensor:
        """Attention of ``x``, B x H x L x L (explicit, for analysis such as GRN).

        ``softmax=True``: probabilities. ``softmax=False``: the raw scores ``q k^T`` (no
        scaling, masked keys at ``-inf``), the input of the attention-GRN tutorial; ranks
        within a row equal the probabilities' except where softmax underflows to ties.
        """
        q, k, _ = self._qkv(x)
        if not softmax:
            scores = q @ k.transpose(-1, -2)
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:
                    scores = scores.masked_fill(~attn_mask, float("-inf"))
                else:
                    scores = scores + attn_mask.to(scores.dtype)
            return scores
        scores = (q @ k.transpose(-1, -2)) / self.head_dim**0.5
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask.to(scores.dtype)
        return scores.softmax(dim=-1)


class TransformerEncoderLayer(nn.Module):
    """Transformer layer: attention -> add & norm -> ReLU FFN -> add & norm (post-norm).

    Parameters
    ----------
    d_model, nhead, d_hid
        Width, heads and feed-forward width.
    dropout
        Dropout on attention, FFN and residual branches.
    norm_scheme
        ``"post"`` (released) or ``"pre"``.
    layer_norm_eps
        LayerNorm epsilon.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        d_hid: int,
        dropout: float = 0.1,
        norm_scheme: str = "post",
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, d_hid)
        self.dropout = FastDropout(dropout)
        self.linear2 = nn.Linear(d_hid, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = FastDropout(dropout)
        self.dropout2 = FastDropout(dropout)
        self.norm_scheme = norm_scheme

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *, raw_from: int | None = None
    ) -> torch.Tensor:
        """Apply the layer to ``x`` (B x L x d) with an SDPA mask."""
        if self.norm_scheme == "pre":
            x = self.norm1(x)
            x = x + self.dropout1(self.self_attn(x, attn_mask, raw_from=raw_from))
            x = self.norm2(x)
            return x + self._ff(x)
        x = self.norm1(x + self.dropout1(self.self_attn(x, attn_mask, raw_from=raw_from)))
        return self.norm2(x + self._ff(x))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` (``layers.{i}``).

    Parameters
    ----------
    nlayers
        Number of layers; the other arguments go to every layer.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        d_hid: int,
        nlayers: int,
        dropout: float = 0.1,
        norm_scheme: str = "post",
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                TransformerEncoderLayer(d_model, nhead, d_hid, dropout, norm_scheme, layer_norm_eps)
                for _ in range(nlayers)
            ]
        )

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        *,
        raw_from: int | None = None,
    ) -> torch.Tensor:
        """Encode ``x`` (B x L x d).

        Parameters
        ----------
        x
            Input embeddings.
        key_padding_mask
            B x L, True at padding.
        attn_mask
            Optional boolean (True = may attend) or additive mask, see
            :func:`merge_attention_masks`.
        raw_from
            See :meth:`SelfAttention.forward`.
        """
        mask = merge_attention_masks(key_padding_mask, attn_mask)
        for layer in self.layers:
            x = layer(x, mask, raw_from=raw_from)
        return x
