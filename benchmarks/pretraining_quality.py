"""Does the pre-trained scGPT learn what the simulator put in? Ground-truth learning report.

For a pre-training run folder (``output_dir`` of ``python -m scgpt.pretrain``, or a
released-layout checkpoint folder) this measures, with :mod:`benchmark.transfer.quality`:

- held-out masked-value loss (half of each cell's genes hidden) beside the per-gene-mean and
  cell-type-oracle references, for the final model and every saved ``step_*.pt`` checkpoint
  (the curve over training steps), and the fraction of the gene-mean -> oracle gap closed;
- zero-shot kNN cell-type accuracy of the ``<cls>`` embedding vs PCA + kNN;
- within- vs between-program cosine of the gene embeddings.

Held-out cells are new cells of the atlas (:func:`benchmark.simulate.simulate_atlas` with
another ``cell_seed``: the corpus' tissues, donors and batches): 4,000 give the reference
tables, 1,000 others are scored. The same loss on the demo world's
:func:`~benchmark.simulate.simulate_celltypes` cells (batches the atlas never had, references
from those cells) is reported beside it.

Targets (issue 13): ``gap_closed >= 0.5``, zero-shot kNN ``>= 0.9``, within - between
cosine ``>= 0.2``.

Run::

    .venv/bin/python benchmarks/pretraining_quality.py --run data/checkpoints/sim_atlas \\
        [--steps-from results/model/sim_atlas_work] [--out benchmarks/results/pretraining_quality.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.simulate import make_world, simulate_atlas, simulate_celltypes  # noqa: E402
from benchmark.transfer.quality import (  # noqa: E402
    gene_program_cosine,
    make_heldout,
    masked_value_losses,
    zero_shot_knn,
)
from scgpt.checkpoint import load_pretrained, load_weights  # noqa: E402
from scgpt.model import ModelConfig, TransformerModel  # noqa: E402
from scgpt.vocab import GeneVocab  # noqa: E402

HELDOUT_CELL_SEED = 1000
TARGETS = {"gap_closed": 0.5, "zero_shot_knn": 0.9, "program_cosine_difference": 0.2}


def _model_folder(run: Path) -> Path:
    """The released-layout folder of ``run`` (``run`` itself or ``run/model``)."""
    for folder in (run, run / "model"):
        if (folder / "best_model.pt").is_file():
            return folder
    raise FileNotFoundError(f"{run}: no best_model.pt in it or in {run / 'model'}")


def _from_step(path: Path) -> tuple[TransformerModel, GeneVocab, int]:
    """Model of a training checkpoint ``step_*.pt`` (model_config, vocab, model weights)."""
    state = load_weights(path)
    vocab = GeneVocab(state["vocab"])
    cfg = ModelConfig.from_args_json(
        state["model_config"], ntoken=vocab.num_embeddings, pad_token_id=vocab.pad_id
    )
    model = TransformerModel(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, vocab, int(state["step"])


def evaluate(
    run: Path, steps_from: Path | None = None, *, seed: int = 0, knn: bool = True
) -> dict[str, Any]:
    """All measurements for ``run`` (see the module docstring)."""
    torch.manual_seed(seed)
    folder = _model_folder(run)
    model, vocab, cfg = load_pretrained(folder)
    model.eval()
    args = json.loads((folder / "args.json").read_text())
    max_len = int(args.get("max_seq_len", 128))
    n_bins = int(args.get("n_bins", 51))

    world = make_world()
    # Held-out atlas cells: the corpus' tissues, donors and batches, new cells (cell_seed).
    # The references' tables come from 4,000 more such cells, i.e. the corpus distribution.
    cells = simulate_atlas(world, n_cells=5000, seed=0, cell_seed=HELDOUT_CELL_SEED)
    order = np.random.default_rng(seed).permutation(cells.n_obs)
    reference, heldout_cells = cells[order[:4000]].copy(), cells[order[4000:]].copy()
    heldout = make_heldout(
        heldout_cells, reference, vocab, max_len=max_len, n_bins=n_bins, pad_value=cfg.pad_value
    )
    final = masked_value_losses(model, heldout)
    curve = []
    if steps_from is not None:
        for path in sorted((steps_from / "checkpoints").glob("step_*.pt")):
            m, _, step = _from_step(path)
            curve.append({"step": step, **masked_value_losses(m, heldout)})
    # The demo's world in batches the atlas never had (references from those cells).
    demo_cells = simulate_celltypes(world, n_cells=5000, n_batches=3, seed=101)
    order = np.random.default_rng(seed).permutation(demo_cells.n_obs)
    demo_heldout = make_heldout(
        demo_cells[order[4000:]].copy(),
        demo_cells[order[:4000]].copy(),
        vocab,
        max_len=max_len,
        n_bins=n_bins,
        pad_value=cfg.pad_value,
    )
    result: dict[str, Any] = {
        "checkpoint": str(folder),
        "pretrain": args.get("pretrain", {}),
        "heldout": {
            "cells": int(heldout_cells.n_obs),
            "hidden_tokens": heldout.n_tokens,
            "generator": f"simulate_atlas(n_cells=5000, seed=0, cell_seed={HELDOUT_CELL_SEED})",
        },
        "masked_value_loss": final,
        "masked_value_loss_curve": curve,
        "masked_value_loss_new_batches": {
            "generator": "simulate_celltypes(n_cells=5000, n_batches=3, seed=101)",
            **masked_value_losses(model, demo_heldout),
        },
        "gene_program_cosine": gene_program_cosine(model, vocab, world.programs()),
    }
    if knn:
        demo = simulate_celltypes(world, n_cells=2000, n_batches=3, seed=0)
        result["zero_shot_knn"] = zero_shot_knn(model, vocab, demo, max_len=2 * max_len)
    got = {
        "gap_closed": final["gap_closed"],
        "zero_shot_knn": result.get("zero_shot_knn", {}).get("scgpt_cls_knn", float("nan")),
        "program_cosine_difference": result["gene_program_cosine"]["difference"],
    }
    result["targets"] = {
        k: {"target": TARGETS[k], "measured": v, "met": bool(v >= TARGETS[k])}
        for k, v in got.items()
    }
    return result


def _loss_csv(run: Path) -> list[dict[str, float]]:
    import csv

    for path in (run / "loss.csv", run.parent / "loss.csv"):
        if path.is_file():
            with path.open() as fh:
                return [
                    {k: float(v) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(fh)
                ]
    return []


def plot(result: dict[str, Any], train_log: list[dict[str, float]], path: Path) -> None:
    """Held-out loss over steps against the two references, and the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ref = result["masked_value_loss"]
    ax = axes[0]
    curve = result["masked_value_loss_curve"]
    if curve:
        ax.plot([c["step"] for c in curve], [c["model"] for c in curve], "o-", label="scGPT")
    steps = [c["step"] for c in curve] or [result["pretrain"].get("steps", 1)]
    if not curve:
        ax.plot(steps, [ref["model"]], "o", label="scGPT (final)")
    ax.axhline(ref["gene_mean"], color="grey", ls="--", label="per-gene mean")
    ax.axhline(ref["oracle"], color="green", ls="--", label="cell-type oracle")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out masked-value MSE (bins)")
    ax.set_title(f"gap closed {ref['gap_closed']:.2f}")
    ax.legend()
    ax = axes[1]
    if train_log:
        ax.plot([r["step"] for r in train_log], [r.get("loss_gen", np.nan) for r in train_log])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training generative MSE")
        ax.set_yscale("log")
    knn = result.get("zero_shot_knn", {})
    cos = result["gene_program_cosine"]
    ax.set_title(
        f"kNN <cls> {knn.get('scgpt_cls_knn', float('nan')):.2f} vs PCA "
        f"{knn.get('pca_knn', float('nan')):.2f}; program cos "
        f"{cos['within']:.2f} vs {cos['between']:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="checkpoint or run folder")
    parser.add_argument("--steps-from", type=Path, help="run folder whose step_*.pt to score")
    parser.add_argument("--out", type=Path, help="JSON output (and a .png beside it)")
    parser.add_argument("--no-knn", action="store_true", help="skip the zero-shot kNN")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = evaluate(args.run, args.steps_from, knn=not args.no_knn)
    result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = "benchmarks/pretraining_quality.py " + " ".join(argv or sys.argv[1:])
    summary = {k: round(v["measured"], 4) for k, v in result["targets"].items()}
    loss = result["masked_value_loss"]
    print(
        f"loss {loss['model']:.2f} (gene mean {loss['gene_mean']:.2f}, oracle "
        f"{loss['oracle']:.2f}); {summary}"
    )
    if args.out:
        from benchmark.io import write_json

        write_json(result, args.out)
        plot(result, _loss_csv(args.steps_from or args.run), args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
