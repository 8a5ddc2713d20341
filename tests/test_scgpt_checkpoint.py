"""scgpt checkpoints: released layout, name mapping, clear errors on mismatches."""

from __future__ import annotations

import json

import pytest
import torch

from scgpt.checkpoint import CheckpointMismatchError, load_pretrained, save_pretrained
from scgpt.model import ModelConfig, TransformerModel
from scgpt.vocab import GeneVocab

torch.set_num_threads(1)

OFFICIAL_ARGS = {  # the keys of a released args.json (whole-human), scaled down
    "embsize": 32,
    "nheads": 4,
    "d_hid": 48,
    "nlayers": 2,
    "n_layers_cls": 3,
    "dropout": 0.2,
    "n_bins": 51,
    "max_seq_len": 1200,
    "input_emb_style": "continuous",
    "input_style": "binned",
    "mask_value": -1,
    "pad_value": -2,
    "pad_token": "<pad>",
    "MVC": True,
    "lr": 0.0001,
    "batch_size": 32,
    "fp16": True,
    "warmup_ratio_or_step": 10000.0,
}


def _official_folder(tmp_path, *, in_proj: bool = False, n_genes: int = 20):
    vocab = GeneVocab.from_genes([f"G{i}" for i in range(n_genes)])
    cfg = ModelConfig.from_args_json(
        OFFICIAL_ARGS, ntoken=len(vocab), pad_token_id=vocab.pad_id, use_generative=True
    )
    torch.manual_seed(0)
    model = TransformerModel(cfg)
    sd = model.state_dict()
    if in_proj:  # the older nn.TransformerEncoderLayer naming
        sd = {
            k.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight").replace(
                "self_attn.Wqkv.bias", "self_attn.in_proj_bias"
            ): v
            for k, v in sd.items()
        }
    folder = tmp_path / ("inproj" if in_proj else "released")
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps(OFFICIAL_ARGS))
    (folder / "vocab.json").write_text(json.dumps(vocab.stoi))
    torch.save(sd, folder / "best_model.pt")
    return folder, model.eval(), vocab


def _inputs(vocab: GeneVocab):
    g = torch.tensor([[vocab.cls_id, 1, 2, 3, 4], [vocab.cls_id, 5, 6, vocab.pad_id, vocab.pad_id]])
    v = torch.tensor([[-2.0, 1, 5, 9, 50], [-2.0, 3, 2, -2, -2]])
    return g, v, g.eq(vocab.pad_id)


@pytest.mark.parametrize("in_proj", [False, True])
def test_released_layout_loads_with_identical_outputs(tmp_path, in_proj):
    folder, ref, vocab = _official_folder(tmp_path, in_proj=in_proj)
    sd = torch.load(folder / "best_model.pt")
    key = "transformer_encoder.layers.1.self_attn." + (
        "in_proj_weight" if in_proj else "Wqkv.weight"
    )
    assert tuple(sd[key].shape) == (96, 32)
    model, vocab2, cfg = load_pretrained(folder)
    assert (
        vocab2 == vocab
        and cfg.d_model == 32
        and cfg.nlayers == 2
        and cfg.use_generative
        and cfg.do_mvc
    )
    assert cfg.pad_value == -2.0 and cfg.extra["lr"] == 0.0001
    assert model.load_report.ok  # type: ignore[attr-defined]
    if in_proj:
        assert model.load_report.renamed  # type: ignore[attr-defined]
    g, v, pad = _inputs(vocab)
    with torch.no_grad():
        a, b = ref(g, v, pad, MVC=True), model(g, v, pad, MVC=True)
    for k in ("cell_emb", "mlm_output", "mvc_output"):
        torch.testing.assert_close(a[k], b[k])


def test_save_pretrained_roundtrip(tmp_path):
    folder, _, vocab = _official_folder(tmp_path)
    model, vocab, cfg = load_pretrained(folder, n_cls=3)  # new classifier head: reported missing
    assert any(k.startswith("cls_decoder.") for k in model.load_report.missing)  # type: ignore[attr-defined]
    out = save_pretrained(model, vocab, cfg, tmp_path / "ours")
    assert sorted(p.name for p in out.iterdir()) == ["args.json", "best_model.pt", "vocab.json"]
    args = json.loads((out / "args.json").read_text())
    assert (
        args["embsize"] == 32 and args["nheads"] == 4 and args["n_cls"] == 3 and args["MVC"] is True
    )
    assert "transformer_encoder.layers.0.self_attn.Wqkv.weight" in torch.load(out / "best_model.pt")
    again, _, cfg2 = load_pretrained(out)
    assert cfg2 == cfg and again.load_report.ok  # type: ignore[attr-defined]
    g, v, pad = _inputs(vocab)
    with torch.no_grad():
        torch.testing.assert_close(
            model(g, v, pad, CLS=True)["cls_output"], again(g, v, pad, CLS=True)["cls_output"]
        )


def test_wrong_vocabulary_names_key_and_shapes(tmp_path):
    folder, _, _ = _official_folder(tmp_path)
    bigger = GeneVocab.from_genes([f"G{i}" for i in range(25)])
    (folder / "vocab.json").write_text(json.dumps(bigger.stoi))
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained(folder)
    msg = str(err.value)
    assert "encoder.embedding.weight" in msg and "(23, 32)" in msg and "(28, 32)" in msg
    assert "vocabulary size mismatch" in msg


def test_shape_mismatch_refused_unless_skipped(tmp_path):
    folder, _, _ = _official_folder(tmp_path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"linear1.weight: checkpoint shape \(48, 32\), model shape \(64, 32\)",
    ):
        load_pretrained(folder, d_hid=64)
    model, _, _ = load_pretrained(folder, d_hid=64, skip_mismatched=True)
    rep = model.load_report  # type: ignore[attr-defined]
    assert ("transformer_encoder.layers.0.linear1.weight", (48, 32), (64, 32)) in rep.mismatched
    assert "shape mismatch" in str(rep)


def test_unexpected_and_missing_keys_are_reported(tmp_path):
    folder, _, _ = _official_folder(tmp_path)
    sd = torch.load(folder / "best_model.pt")
    sd["module.extra_head.weight"] = torch.zeros(2)
    del sd["mvc_decoder.W.weight"]
    torch.save(sd, folder / "best_model.pt")
    model, _, _ = load_pretrained(folder)
    rep = model.load_report  # type: ignore[attr-defined]
    assert rep.unexpected == ["extra_head.weight"] and rep.missing == ["mvc_decoder.W.weight"]
    with pytest.raises(FileNotFoundError, match=r"vocab\.json"):
        (folder / "vocab.json").unlink()
        load_pretrained(folder)


def test_compiled_and_wrapped_state_dicts_load(tmp_path):
    """A state dict saved from a ``torch.compile``'d model (``_orig_mod.`` keys), also under
    DDP (``module._orig_mod.``), loads into every tensor with identical outputs."""
    folder, ref, vocab = _official_folder(tmp_path)
    plain = torch.load(folder / "best_model.pt")
    compiled = torch.compile(ref)  # wrapping only: nothing is compiled before a forward pass
    sd = compiled.state_dict()
    assert sd and all(k.startswith("_orig_mod.") for k in sd)
    g, v, pad = _inputs(vocab)
    with torch.no_grad():
        expected = ref(g, v, pad, MVC=True)
    for prefix, state in (
        ("compiled", sd),
        ("ddp", {f"module.{k}": t for k, t in sd.items()}),
    ):
        torch.save(state, folder / "best_model.pt")
        model, _, _ = load_pretrained(folder)
        report = model.load_report  # type: ignore[attr-defined]
        assert report.ok, (prefix, str(report))
        assert sorted(report.loaded) == sorted(plain)
        assert len(report.renamed) == len(plain)
        with torch.no_grad():
            got = model(g, v, pad, MVC=True)
        for k in ("cell_emb", "mlm_output", "mvc_output"):
            torch.testing.assert_close(got[k], expected[k], msg=f"{prefix}: {k}")
    # save_pretrained of the compiled model itself round-trips too
    out = save_pretrained(compiled, vocab, ref.config, tmp_path / "from_compiled")
    again, _, _ = load_pretrained(out)
    assert again.load_report.ok  # type: ignore[attr-defined]
    with torch.no_grad():
        torch.testing.assert_close(again(g, v, pad, MVC=True)["cell_emb"], expected["cell_emb"])
