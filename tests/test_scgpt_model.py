"""scgpt model: attention rule of generative training, layers, heads and losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scgpt.losses import ecs_loss
from scgpt.masking import build_generative_mask, generative_attention_mask
from scgpt.model import ModelConfig, TransformerModel
from scgpt.model.decoders import grad_reverse
from scgpt.model.transformer import TransformerEncoderLayer

torch.set_num_threads(1)


def tiny(**kw) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        ntoken=40, pad_token_id=0, d_model=32, nhead=4, d_hid=48, nlayers=2, dropout=0.0, **kw
    )
    return TransformerModel(cfg).eval()


def test_generative_mask_rule():
    allowed = generative_attention_mask(3, 4)
    known, gen = slice(0, 3), slice(3, 7)
    assert allowed[known, known].all()
    assert not allowed[known, gen].any()  # known tokens never see generated ones
    assert allowed[gen, known].all()
    assert torch.equal(allowed[gen, gen], torch.eye(4, dtype=torch.bool))  # only itself
    pad_known = torch.tensor([[False, False, True]])
    pad_gen = torch.tensor([[False, False, False, True]])
    full = build_generative_mask(pad_known, pad_gen)[0, 0]
    assert not full[:, 2].any() and not full[:, 6].any()
    assert torch.equal(full[3:, 3:], torch.diag(torch.tensor([True, True, True, False])))


def test_no_generated_token_sees_another_in_the_model():
    m = tiny()
    kg = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]])
    kv = torch.tensor([[-2.0, 3, 1, 2], [-2.0, 4, 2, -2]])
    kp = kg.eq(0)
    gg = torch.tensor([[10, 11, 12], [13, 14, 0]])
    gp = gg.eq(0)
    out = m.generative_forward(kg, kv, kp, gg, gp, MVC=True)
    gg2 = gg.clone()
    gg2[0, 1] = 20  # change one token to generate
    out2 = m.generative_forward(kg, kv, kp, gg2, gp, MVC=True)
    torch.testing.assert_close(out["gen_preds"][0, [0, 2]], out2["gen_preds"][0, [0, 2]])
    torch.testing.assert_close(out["pcpt_preds"], out2["pcpt_preds"])
    torch.testing.assert_close(out["cell_emb"], out2["cell_emb"])
    assert not torch.allclose(out["gen_preds"][0, 1], out2["gen_preds"][0, 1])
    kv2 = kv.clone()
    kv2[0, 2] = 7.0  # a known value reaches every generated token
    out3 = m.generative_forward(kg, kv2, kp, gg, gp)
    assert not torch.allclose(out["gen_preds"][0], out3["gen_preds"][0])
    # the legacy (official flash) variant obeys the same rule
    legacy = TransformerModel(m.config.replace(legacy_gen_attention=True)).eval()
    legacy.load_state_dict(m.state_dict())
    a = legacy.generative_forward(kg, kv, kp, gg, gp)["gen_preds"]
    b = legacy.generative_forward(kg, kv, kp, gg2, gp)["gen_preds"]
    assert not torch.allclose(a, out["gen_preds"])  # out_proj skipped for generated tokens
    torch.testing.assert_close(a[0, [0, 2]], b[0, [0, 2]])


def test_layer_matches_torch_transformer_layer():
    torch.manual_seed(1)
    ours = TransformerEncoderLayer(32, 4, 48, dropout=0.0).eval()
    ref = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, batch_first=True).eval()
    sd = {
        k.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight").replace(
            "self_attn.Wqkv.bias", "self_attn.in_proj_bias"
        ): v
        for k, v in ours.state_dict().items()
    }
    ref.load_state_dict(sd)
    x = torch.randn(2, 6, 32)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    from scgpt.model.transformer import merge_attention_masks

    got = ours(x, merge_attention_masks(pad, None))
    want = ref(x, src_key_padding_mask=pad)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1, :4], want[1, :4], rtol=1e-5, atol=1e-5)


def test_forward_heads_and_shapes():
    m = tiny(
        n_cls=5,
        explicit_zero_prob=True,
        use_batch_labels=True,
        num_batch_labels=3,
        domain_spec_batchnorm="dsbn",
        do_dab=True,
    )
    g = torch.randint(1, 40, (4, 7))
    v = torch.rand(4, 7) * 5
    pad = torch.zeros(4, 7, dtype=torch.bool)
    pad[2, 5:] = True
    bl = torch.tensor([0, 1, 1, 2])
    out = m(g, v, pad, batch_labels=bl, CLS=True, MVC=True, ECS=True, DAB=True)
    assert out["cell_emb"].shape == (4, 32) and out["mlm_output"].shape == (4, 7)
    assert out["mlm_zero_probs"].shape == (4, 7) and out["cls_output"].shape == (4, 5)
    assert out["mvc_output"].shape == (4, 7) and out["dab_output"].shape == (4, 3)
    assert out["loss_ecs"].ndim == 0
    assert set(m.state_dict()) >= {
        "dsbn.bns.2.running_mean",
        "batch_encoder.embedding.weight",
        "grad_reverse_discriminator.out_layer.weight",
        "cls_decoder.out_layer.weight",
        "mvc_decoder.W_zero_logit.weight",
        "decoder.zero_logit.4.weight",
    }
    with pytest.raises(ValueError, match="batch_labels"):
        m(g, v, pad)
    emb = m.get_cell_embeddings(g, v, pad, batch_labels=bl, normalize=True)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    att = m.attention_scores(g, v, pad, batch_labels=bl)
    assert att.shape == (4, 4, 7, 7)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 4, 7))
    assert att[2, :, :, 5:].abs().max() == 0


def test_padding_does_not_change_outputs_and_pooling_styles():
    for style in ("cls", "avg-pool", "w-pool"):
        m = tiny(cell_emb_style=style)
        g = torch.tensor([[3, 4, 5]])
        v = torch.tensor([[1.0, 2.0, 3.0]])
        short = m(g, v, torch.zeros(1, 3, dtype=torch.bool))
        gp = torch.tensor([[3, 4, 5, 0, 0]])
        vp = torch.tensor([[1.0, 2.0, 3.0, -2.0, -2.0]])
        long = m(gp, vp, gp.eq(0))
        torch.testing.assert_close(short["cell_emb"], long["cell_emb"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            short["mlm_output"], long["mlm_output"][:, :3], rtol=1e-5, atol=1e-5
        )


def test_value_encoder_clamps_and_styles():
    m = tiny()
    a = m.value_encoder(torch.tensor([[512.0]]))
    b = m.value_encoder(torch.tensor([[10_000.0]]))
    torch.testing.assert_close(a, b)
    cat = tiny(input_emb_style="category", n_bins=5, pad_value=5, mask_value=6)
    out = cat(torch.tensor([[1, 2, 3]]), torch.tensor([[0.0, 4.0, 6.0]]))
    assert out["mlm_output"].shape == (1, 3)
    with pytest.raises(ValueError, match="outside"):
        cat(torch.tensor([[1, 2]]), torch.tensor([[0.0, 9.0]]))
    scale = tiny(input_emb_style="scaling")
    assert scale(torch.tensor([[1, 2]]), torch.tensor([[1.0, 2.0]]))["mlm_output"].shape == (1, 2)


def test_ecs_loss_and_grad_reverse():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # pairs: cos 1 (twice, both orders), 0 (four times); threshold 0.5
    want = (2 * (1 - 0.5**2) + 4 * (1 - 0.5**2)) / 6
    torch.testing.assert_close(ecs_loss(e, 0.5), torch.tensor(want))
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -2.0))


def test_bf16_autocast_runs_on_cpu():
    m = tiny()
    g = torch.randint(1, 40, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(g, torch.rand(2, 5), g.eq(0), MVC=True)
    assert torch.isfinite(out["mlm_output"].float()).all()


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(ntoken=10, d_model=30, nhead=4)
    with pytest.raises(ValueError, match="num_batch_labels"):
        ModelConfig(ntoken=10, d_model=32, nhead=4, do_dab=True)
    with pytest.raises(ValueError, match="input_emb_style"):
        ModelConfig(ntoken=10, d_model=32, nhead=4, input_emb_style="bogus")
