"""scgpt pre-training: the loss falls, resume is exact, shards / fractions / CLI work."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from scgpt.checkpoint import load_pretrained
from scgpt.corpus import ShardedCorpus
from scgpt.pretrain import PretrainConfig, main, pretrain, warmup_cosine
from scgpt.synthetic import synthetic_counts
from scgpt.vocab import GeneVocab

torch.set_num_threads(1)

TINY = dict(
    d_model=32,
    nlayers=2,
    nhead=4,
    d_hid=32,
    max_seq_len=32,
    n_bins=11,
    batch_size=16,
    chunk_size=64,
    progress=False,
    tensorboard=False,
    prefetch=2,
    num_threads=1,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    synthetic_counts(192, 50, n_cell_types=3, seed=0).write_h5ad(folder / "corpus.h5ad")
    return folder / "corpus.h5ad"


def _rows(out_dir: Path) -> list[dict[str, str]]:
    with (out_dir / "loss.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_loss_falls_on_a_small_corpus(corpus, tmp_path):
    cfg = PretrainConfig(
        data=str(corpus),
        output_dir=str(tmp_path / "run"),
        lr=3e-3,
        warmup_steps=4,
        epochs=4,
        dropout=0.0,
        cell_prompt_after=24,
        log_every=1,
        save_every=1000,
        **TINY,
    )
    export = pretrain(cfg)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 48  # 4 epochs x 12 batches
    gen = np.array([float(r["loss_gen"]) for r in rows])
    assert gen[-6:].mean() < 0.6 * gen[:6].mean()
    assert rows[-1]["loss_prompt"] != "" and rows[0]["loss_prompt"] == ""
    model, vocab, config = load_pretrained(export)
    assert config.d_model == 32 and len(vocab) == 53 and model.load_report.ok


def test_resume_gives_the_same_next_losses(corpus, tmp_path):
    base = dict(
        data=str(corpus),
        lr=2e-3,
        warmup_steps=2,
        max_steps=6,
        save_every=3,
        log_every=1,
        cell_prompt_after=2,
        dropout=0.1,
        **TINY,
    )
    full = PretrainConfig(output_dir=str(tmp_path / "full"), **base)
    pretrain(full)
    part = PretrainConfig(output_dir=str(tmp_path / "part"), stop_after_steps=3, **base)
    ckpt = pretrain(part)
    assert ckpt.name == "step_000000003.pt" and len(_rows(tmp_path / "part")) == 3
    pretrain(part)  # resumes at step 3 and stops after 3 more (= max_steps)
    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "part")
    assert [r["step"] for r in b] == ["1", "2", "3", "4", "5", "6"]
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_gen", "loss_mvc", "loss_prompt", "lr", "tokens"):
            assert ra[key] == rb[key], (ra["step"], key)
    wa = torch.load(tmp_path / "full" / "model" / "best_model.pt")
    wb = torch.load(tmp_path / "part" / "model" / "best_model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_of_other_settings_are_not_resumed(corpus, tmp_path):
    from benchmark.transfer.pretraining import pretrain_checkpoint
    from scgpt.pretrain.run import IncompatibleRunError

    base = dict(data=str(corpus), warmup_steps=1, max_steps=4, save_every=2, log_every=1, **TINY)
    work = tmp_path / "work"
    pretrain(PretrainConfig(output_dir=str(work), stop_after_steps=2, **base))
    wider = {**base, "d_model": 48, "d_hid": 48}
    with pytest.raises(IncompatibleRunError, match=r"d_model: 32 -> 48.*d_hid|d_hid.*d_model"):
        pretrain(PretrainConfig(output_dir=str(work), **wider))
    # resume: false starts over (and deletes the old checkpoints, which could not be resumed).
    pretrain(PretrainConfig(output_dir=str(work), resume=False, **{**wider, "max_steps": 1}))
    assert [p.name for p in (work / "checkpoints").iterdir()] == ["step_000000001.pt"]

    # The workflow wrapper starts over by itself (the rule re-runs when its settings change).
    pretrain(PretrainConfig(output_dir=str(work), resume=False, stop_after_steps=2, **base))
    settings = {k: v for k, v in wider.items() if k != "data"}
    out = pretrain_checkpoint(corpus, tmp_path / "out", work, settings=settings)
    _, _, config = load_pretrained(out)
    assert config.d_model == 48
    assert [r["step"] for r in _rows(work)] == ["1", "2", "3", "4"]


def test_sharded_stream_fractions_and_ranks(corpus, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        synthetic_counts(80, 30, seed=10 + i).write_h5ad(shards / f"part{i}.h5ad")
    vocab = GeneVocab.from_genes([f"GENE{i}" for i in range(30)])
    stream = ShardedCorpus(shards, vocab, batch_size=16, max_len=20, chunk_size=32, seed=0)
    first = list(stream.iter_batches(0))
    assert stream.n_cells == 160 and len(first) == stream.steps_per_epoch(0) == 10
    assert sum(b["gene_ids"].shape[0] for b in first) == 160
    resumed = list(stream.iter_batches(0, start_batch=4))
    assert all(torch.equal(x["gene_ids"], y["gene_ids"]) for x, y in zip(first[4:], resumed))
    r0 = ShardedCorpus(
        shards, vocab, batch_size=16, max_len=20, chunk_size=32, world_size=2, rank=0
    )
    r1 = ShardedCorpus(
        shards, vocab, batch_size=16, max_len=20, chunk_size=32, world_size=2, rank=1
    )
    assert len(list(r0.iter_batches(0))) == len(list(r1.iter_batches(0))) == r0.steps_per_epoch(0)
    half = ShardedCorpus(shards, vocab, batch_size=16, max_len=20, fraction=0.5)
    assert half.n_cells == 80

    cfg = PretrainConfig(
        data=str(shards),
        output_dir=str(tmp_path / "series"),
        max_steps=2,
        warmup_steps=1,
        data_fractions=(0.5, 1.0),
        objective="mlm",
        **TINY,
    )
    out = pretrain(cfg)
    for f in ("0.5", "1"):
        assert (out / f"fraction_{f}" / "model" / "best_model.pt").is_file()
    assert "loss_mlm" in _rows(out / "fraction_0.5")[0]


def test_cli_and_config_errors(corpus, tmp_path):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(
        f"data: {corpus}\noutput_dir: {tmp_path / 'cli'}\nmax_steps: 1\nwarmup_steps: 1\n"
        + "".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in TINY.items())
    )
    assert main(["--config", str(yaml_path), "--set", "lr=0.001"]) == 0
    assert (tmp_path / "cli" / "model" / "args.json").is_file()
    with pytest.raises(KeyError, match="unknown pre-training option"):
        PretrainConfig.from_dict({"data": "x", "output_dir": "y", "n_layer": 3})
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)
