"""The CPU training fast path: cheap dropout masks and blocked attention with dropout.

Checked against ``F.scaled_dot_product_attention`` (no dropout) and against the explicit
formula with the very dropout masks the blocked function drew (dropout).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scgpt.model.dropout import (
    FastDropout,
    attention_with_dropout,
    dropout_mask,
    fast_dropout,
    keep_scale,
)


def test_dropout_mask_rate_and_repeatability():
    torch.manual_seed(0)
    first = dropout_mask((1000, 1000), 0.2)
    assert first.dtype == torch.bool and first.shape == (1000, 1000)
    assert abs(first.float().mean().item() - 0.2) < 2e-3
    torch.manual_seed(0)
    assert torch.equal(dropout_mask((1000, 1000), 0.2), first)
    assert not torch.equal(dropout_mask((1000, 1000), 0.2), first)
    # Rows and columns are both uniform (no structure from cutting 64-bit words).
    assert first.float().mean(0).std().item() < 0.03 and first.float().mean(1).std().item() < 0.03
    assert dropout_mask((7, 3), 0.0).sum() == 0 and dropout_mask((7, 3), 1.0).all()


def test_fast_dropout_keeps_the_expectation_and_its_gradient_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.ones(200_000, requires_grad=True)
    y = fast_dropout(x, 0.3)
    assert abs(y.mean().item() - 1.0) < 5e-3
    torch.testing.assert_close(torch.unique(y.detach()), torch.tensor([0.0, keep_scale(0.3)]))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x is the same mask and scale
    assert fast_dropout(x, 0.3, training=False) is x


def test_fast_dropout_module_is_a_dropout_with_no_state():
    layer = FastDropout(0.2)
    assert isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {}
    layer.eval()
    x = torch.randn(4, 5)
    assert torch.equal(layer(x), x)


def _qkv(B=2, H=3, L=7, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, d, generator=g, requires_grad=True) for _ in range(3)]


def _grads(out, inputs, seed=5):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, g)


def _masks(B=2, L=7):
    keys = torch.ones(B, 1, 1, L, dtype=torch.bool)
    keys[1, ..., -3:] = False  # padding in the second cell
    causal = torch.ones(L, L, dtype=torch.bool).tril()[None, None]
    empty = causal.clone().expand(B, 1, L, L).clone()
    empty[0, 0, 2] = False  # a query that may attend to nothing
    additive = torch.randn(B, 1, L, L) * 0.5
    return {"none": None, "keys": keys, "causal": causal, "empty": empty, "additive": additive}


@pytest.mark.parametrize("mask_name", ["none", "keys", "causal", "empty", "additive"])
@pytest.mark.parametrize("block", [1 << 18, 9])
def test_without_dropout_equals_sdpa_with_gradients(mask_name, block):
    q, k, v = _qkv()
    mask = _masks()[mask_name]
    got = attention_with_dropout(q, k, v, mask, 0.0, block_elements=block)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask_name == "empty":
        want = torch.nan_to_num(want)  # older SDPA paths give NaN for an empty row; we give 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g_got, g_want in zip(_grads(got, (q, k, v)), _grads(want, (q, k, v))):
        torch.testing.assert_close(g_got, torch.nan_to_num(g_want), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_name", ["none", "keys", "empty"])
def test_with_dropout_equals_the_formula_with_the_same_masks(mask_name):
    B, H, L, d, p, block = 2, 3, 7, 4, 0.3, 3 * 2 * 7  # blocks of 2 query rows
    q, k, v = _qkv(B, H, L, d)
    mask = _masks(B, L)[mask_name]
    torch.manual_seed(11)
    got = attention_with_dropout(q, k, v, mask, p, block_elements=block)
    # The function draws one mask per cell and block of rows, in this order.
    torch.manual_seed(11)
    drop = torch.zeros(B, H, L, L, dtype=torch.bool)
    for b in range(B):
        for start in range(0, L, 2):
            rows = min(2, L - start)
            drop[b, :, start : start + rows] = dropout_mask((H, rows, L), p)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.nan_to_num(scores.softmax(-1))
    want = (probs * ~drop * keep_scale(p)) @ v
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g_got, g_want in zip(_grads(got, (q, k, v)), _grads(want, (q, k, v))):
        torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)
    assert drop.float().mean().item() > 0.1  # the test did drop something


def test_attention_dropout_rate_matches_sdpa_in_distribution():
    # Same inputs, many draws: the mean output of both equals the no-dropout output.
    q, k, v = (t.detach() for t in _qkv(1, 2, 16, 8))
    exact = F.scaled_dot_product_attention(q, k, v)
    torch.manual_seed(3)
    ours = torch.stack([attention_with_dropout(q, k, v, None, 0.2) for _ in range(400)]).mean(0)
    theirs = torch.stack(
        [F.scaled_dot_product_attention(q, k, v, dropout_p=0.2) for _ in range(400)]
    ).mean(0)
    err_ours = (ours - exact).abs().mean().item()
    err_theirs = (theirs - exact).abs().mean().item()
    assert err_ours < 0.05 and err_ours < 1.5 * err_theirs


def test_training_model_uses_the_blocked_path_and_eval_is_unchanged():
    from scgpt.model import ModelConfig, TransformerModel

    torch.manual_seed(0)
    model = TransformerModel(
        ModelConfig(ntoken=30, d_model=16, nhead=2, d_hid=16, nlayers=2, pad_token_id=0)
    )
    genes = torch.randint(1, 30, (3, 9))
    values = torch.rand(3, 9)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[2, -2:] = True
    model.eval()
    with torch.no_grad():
        a = model.encode(genes, values, pad)
        b = model.encode(genes, values, pad)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    first = model.encode(genes, values, pad)
    first.sum().backward()
    torch.manual_seed(1)
    again = model.encode(genes, values, pad)
    assert torch.equal(first, again)  # the seed fixes the dropout draws
    assert not torch.allclose(first, a)
    assert all(p.grad is not None for p in model.transformer_encoder.parameters())
