"""Pre-training under ``torchrun --nproc_per_node 2`` (gloo, CPU): sharding, averaging, resume.

Every run goes through ``tests``' spy launcher (:data:`SPY`), which records, per rank, each
micro-batch the loss was computed on (a digest of its tokens and of its random generator's
state) and then runs ``python -m scgpt.pretrain``'s ``main``.

Reference: two ranks with ``batch_size`` B each against one process with ``batch_size`` B
and ``grad_accum_steps`` 2, i.e. the same 2B cells per optimizer step. With ``chunk_size`` = B
every chunk of the stream is one batch; rank r gets chunks r, r + 2, ... and the single
process reads them in order, so step s sees the same two batches in both runs (padding
included). A single batch of 2B cells would not be the same computation: the loss is a mean
over the generated tokens of its batch, and DDP averages the per-rank means, which differs
from the mean over the union whenever two batches hold different numbers of tokens.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from scgpt.checkpoint import load_weights
from scgpt.synthetic import synthetic_counts

ROOT = Path(__file__).resolve().parents[1]
BATCH = 4
STEPS = 4

# The launcher torchrun starts (and the single-process reference runs): record, then train.
SPY = """
import hashlib, json, os, sys

from scgpt.pretrain import objective
from scgpt.pretrain.run import main

record_to = sys.argv[1]
forward = objective.PretrainObjective.forward


def spy(self, batch, generator, prompt):
    data = hashlib.sha256()
    for key in ("gene_ids", "values", "padding_mask"):
        data.update(batch[key].numpy().tobytes())
    row = {
        "batch_index": int(batch["batch_index"]),
        "data": data.hexdigest(),
        "rng": hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest(),
    }
    with open(f"{record_to}.{os.environ.get('RANK', 'single')}", "a") as fh:
        fh.write(json.dumps(row) + "\\n")
    return forward(self, batch, generator, prompt)


objective.PretrainObjective.forward = spy
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """A 64-cell corpus, the run options and the spy launcher in one folder."""
    folder = tmp_path_factory.mktemp("ddp")
    synthetic_counts(64, 40, n_cell_types=3, seed=0).write_h5ad(folder / "corpus.h5ad")
    options = {
        "data": str(folder / "corpus.h5ad"),
        "output_dir": str(folder / "unused"),
        "d_model": 32,
        "nlayers": 1,
        "nhead": 2,
        "d_hid": 32,
        "dropout": 0.0,  # nothing random but the seeded generators of each micro-batch
        "max_seq_len": 24,
        "n_bins": 11,
        "batch_size": BATCH,
        "chunk_size": BATCH,  # one batch per chunk: see the module docstring
        "max_steps": STEPS,
        "lr": 0.01,  # large enough that the steps move the weights visibly
        "warmup_steps": 1,
        "cell_prompt_after": 2,  # the second (cell-prompt) pass runs in the last steps
        "save_every": 1000,
        "log_every": 1,
        "num_threads": 1,
        "progress": False,
        "tensorboard": False,
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(options))
    (folder / "spy.py").write_text(SPY)
    return folder


def _launch(setup: Path, name: str, *overrides: str, ranks: int) -> subprocess.CompletedProcess:
    """Run the spy launcher: with torchrun on ``ranks`` processes, or as one plain process."""
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nnodes", "1", "--nproc_per_node", str(ranks)]
    else:
        cmd = [sys.executable]
    cmd += [str(setup / "spy.py"), str(setup / f"{name}.batches")]
    cmd += ["--config", str(setup / "run.yaml"), "--set", f"output_dir={setup / name}"]
    for item in overrides:
        cmd += ["--set", item]
    # One thread per rank: two ranks on a 2-core machine, and no thread-count effects.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def _batches(setup: Path, name: str, rank: str) -> list[dict]:
    path = setup / f"{name}.batches.{rank}"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model" / "best_model.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ddp(setup: Path) -> Path:
    """Two ranks, ``STEPS`` optimizer steps."""
    _launch(setup, "ddp", ranks=2)
    return setup / "ddp"


def test_ranks_read_different_shards_and_match_one_process_on_the_global_batch(setup, ddp):
    _launch(setup, "single", "grad_accum_steps=2", ranks=1)
    rank0, rank1 = _batches(setup, "ddp", "0"), _batches(setup, "ddp", "1")
    single = _batches(setup, "single", "single")
    assert len(rank0) == len(rank1) == STEPS and len(single) == 2 * STEPS

    # Both ranks step through the same positions, on disjoint cells (different shards).
    assert [r["batch_index"] for r in rank0] == [r["batch_index"] for r in rank1]
    assert not {r["data"] for r in rank0} & {r["data"] for r in rank1}
    # Step s of the pair is step s of the single process: same cells, same random draws.
    for step in range(STEPS):
        for rank, rows in ((0, rank0), (1, rank1)):
            mine, ref = rows[step], single[2 * step + rank]
            assert (mine["data"], mine["rng"]) == (ref["data"], ref["rng"]), (step, rank)

    # Averaged gradients: the weights equal the single-process run's, up to float rounding
    # ((g0 + g1) / 2 against g0 / 2 + g1 / 2, then Adam).
    got, want = _weights(ddp), _weights(setup / "single")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)
    # So do the logged losses (rank 0 logs the mean over ranks), and they move with training.
    ddp_loss, single_loss = _losses(ddp), _losses(setup / "single")
    torch.testing.assert_close(ddp_loss, single_loss, rtol=1e-5, atol=1e-6)
    assert len(ddp_loss) == STEPS and abs(float(ddp_loss[-1] - ddp_loss[0])) > 1e-3


@pytest.mark.slow
def test_resume_under_torchrun_equals_the_uninterrupted_run(setup, ddp):
    _launch(setup, "resumed", "stop_after_steps=2", ranks=2)
    checkpoints = sorted((setup / "resumed" / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in checkpoints] == ["step_000000002.pt"]
    assert not (setup / "resumed" / "model").exists()  # stopped, not finished
    state = load_weights(checkpoints[0])
    assert (state["step"], state["batch_in_epoch"], len(state["rng"])) == (2, 2, 2)

    _launch(setup, "resumed", ranks=2)
    # The relaunch went on from batch 2 on both ranks, not from the start.
    for rank in ("0", "1"):
        seen = [r["batch_index"] for r in _batches(setup, "resumed", rank)]
        assert seen == [0, 1, 2, 3], (rank, seen)
    got, want = _weights(setup / "resumed"), _weights(ddp)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert torch.equal(_losses(setup / "resumed"), _losses(ddp))


def _losses(folder: Path) -> torch.Tensor:
    with (folder / "loss.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return torch.tensor([float(r["loss"]) for r in rows], dtype=torch.float64)


def test_workflow_pretraining_with_two_processes_exports_a_checkpoint(setup, tmp_path):
    """The pretrain rule's path for `gpu: N > 1`: torchrun from benchmark.transfer.pretraining."""
    from benchmark.transfer.pretraining import pretrain_checkpoint
    from scgpt import load_pretrained

    options = yaml.safe_load((setup / "run.yaml").read_text())
    settings = {k: v for k, v in options.items() if k not in ("data", "output_dir")}
    out = pretrain_checkpoint(
        options["data"], tmp_path / "out", tmp_path / "work", settings=settings, processes=2
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "args.json",
        "best_model.pt",
        "loss.csv",
        "vocab.json",
    ]
    model, vocab, _ = load_pretrained(out)
    assert len(vocab) > 40 and model.config.d_model == 32
    # It went through torchrun (its options file) and trained (the loss log has steps).
    assert (tmp_path / "work" / "torchrun_config.yaml").is_file()
    with (out / "loss.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) >= 1
