"""Masking for the two pre-training objectives.

* MLM-style masking (:func:`mask_values`): a fraction of the values is replaced by
  ``mask_value``; the ``<cls>`` position and padding are never masked.
* Generative split (:func:`split_for_generation`): the genes of a cell are split into
  "known" tokens (gene + value) and tokens "to generate" (gene + learned flag, no value), with
  the attention rule of :func:`generative_attention_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def mask_values(
    values: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    mask_ratio: float,
    mask_value: float,
    keep_first: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``int(n * mask_ratio)`` random values per cell by ``mask_value``.

    Parameters
    ----------
    values
        B x L values.
    padding_mask
        B x L, True at padding (never masked).
    mask_ratio
        Fraction of a cell's maskable tokens to mask.
    mask_value
        Value written at masked positions (-1 in the released models).
    keep_first
        Never mask position 0 (the ``<cls>`` token).
    generator
        Torch generator for reproducibility.

    Returns
    -------
    masked_values, mask
        The masked copy of ``values`` and the boolean B x L mask of masked positions.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    candidates = ~padding_mask.bool()
    if keep_first:
        candidates[:, 0] = False
    n_mask = (candidates.sum(1).float() * mask_ratio).long()  # int() like the official code
    scores = torch.rand(values.shape, generator=generator).to(values.device)
    scores = scores.masked_fill(~candidates, float("inf"))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    mask = (ranks < n_mask[:, None]) & candidates
    return values.masked_fill(mask, mask_value), mask


def generative_attention_mask(
    n_known: int, n_gen: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Attention rule of generative pre-training for a sequence ``[known..., generated...]``.

    Known tokens attend to all known tokens; each token to generate attends to all known
    tokens and to itself only (never to another generated token, and no known token sees a
    generated one).

    Parameters
    ----------
    n_known
        Number of known tokens (first positions).
    n_gen
        Number of tokens to generate (last positions).
    device
        Device of the result.

    Returns
    -------
    torch.Tensor
        Boolean ``(n_known + n_gen) x (n_known + n_gen)``, True where query row may attend
        to key column (the boolean convention of ``scaled_dot_product_attention``).
    """
    L = n_known + n_gen
    allowed = torch.zeros((L, L), dtype=torch.bool, device=device)
    allowed[:, :n_known] = True
    idx = torch.arange(n_known, L, device=device)
    allowed[idx, idx] = True
    return allowed


def build_generative_mask(
    known_padding_mask: torch.Tensor, gen_padding_mask: torch.Tensor
) -> torch.Tensor:
    """Combine :func:`generative_attention_mask` with key padding.

    Parameters
    ----------
    known_padding_mask
        B x Lk, True at padding among the known tokens.
    gen_padding_mask
        B x Lg, True at padding among the tokens to generate.

    Returns
    -------
    torch.Tensor
        Boolean B x 1 x L x L (L = Lk + Lg), True where attention is allowed.
    """
    n_known, n_gen = known_padding_mask.shape[1], gen_padding_mask.shape[1]
    base = generative_attention_mask(n_known, n_gen, device=known_padding_mask.device)
    key_ok = ~torch.cat([known_padding_mask, gen_padding_mask], dim=1).bool()
    return base[None, None] & key_ok[:, None, None, :]


@dataclass
class GenerativeBatch:
    """A batch split into known tokens and tokens to generate (all B x L tensors).

    Attributes
    ----------
    known_gene_ids, known_values, known_padding_mask
        Known part (``<cls>`` first), padded with the pad id / pad value.
    gen_gene_ids, gen_target, gen_padding_mask
        Part to generate: gene ids, the values to predict, and padding.
    """

    known_gene_ids: torch.Tensor
    known_values: torch.Tensor
    known_padding_mask: torch.Tensor
    gen_gene_ids: torch.Tensor
    gen_target: torch.Tensor
    gen_padding_mask: torch.Tensor

    def to(self, device: torch.device | str) -> GenerativeBatch:
        """Move every tensor to ``device``."""
        return GenerativeBatch(*(t.to(device) for t in self.__dict__.values()))


def sample_ratio(choices: Sequence[float], generator: torch.Generator | None = None) -> float:
    """Draw one ratio from ``choices`` (the paper draws from 0.25, 0.5, 0.75 per batch)."""
    if len(choices) == 0:
        raise ValueError("choices is empty")
    i = int(torch.randint(len(choices), (1,), generator=generator).item())
    return float(choices[i])


def split_for_generation(
    gene_ids: torch.Tensor,
    values: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    gen_ratio: float,
    pad_id: int,
    pad_value: float,
    keep_first: bool = True,
    generator: torch.Generator | None = None,
) -> GenerativeBatch:
    """Split each cell's tokens into known tokens and ``int(n * gen_ratio)`` tokens to generate.

    Parameters
    ----------
    gene_ids, values, padding_mask
        Padded B x L batch (``padding_mask`` True at padding).
    gen_ratio
        Fraction of a cell's genes (``<cls>`` excluded) to generate; at least one gene is
        generated and at least one stays known when the cell has two or more genes.
    pad_id, pad_value
        Padding of the two parts.
    keep_first
        Position 0 (``<cls>``) always stays known, first.
    generator
        Torch generator for reproducibility.

    Returns
    -------
    GenerativeBatch
    """
    if not 0.0 < gen_ratio < 1.0:
        raise ValueError(f"gen_ratio must be in (0, 1), got {gen_ratio}")
    B = gene_ids.shape[0]
    lengths = (~padding_mask.bool()).sum(1).tolist()
    known, gen = [], []
    for b in range(B):
        n = int(lengths[b])
        start = 1 if keep_first else 0
        m = n - start
        n_gen = int(m * gen_ratio)
        if m >= 2:
            n_gen = min(max(n_gen, 1), m - 1)
        else:
            n_gen = 0
        perm = torch.randperm(m, generator=generator) + start
        gen_pos = perm[:n_gen].sort().values
        known_pos = torch.cat([torch.arange(start), perm[n_gen:].sort().values])
        known.append((gene_ids[b, known_pos], values[b, known_pos]))
        gen.append((gene_ids[b, gen_pos], values[b, gen_pos]))

    def _pad(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        L = max(1, max(len(g) for g, _ in parts))
        g_out = torch.full((B, L), pad_id, dtype=gene_ids.dtype)
        v_out = torch.full((B, L), pad_value, dtype=values.dtype)
        m_out = torch.ones((B, L), dtype=torch.bool)
        for i, (g, v) in enumerate(parts):
            g_out[i, : len(g)] = g
            v_out[i, : len(v)] = v
            m_out[i, : len(g)] = False
        return g_out, v_out, m_out

    kg, kv, km = _pad(known)
    gg, gv, gm = _pad(gen)
    return GenerativeBatch(kg, kv, km, gg, gv, gm)
