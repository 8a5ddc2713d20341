"""Held-out loss and steps of every transfer-series model (issue 27, point 4).

The transfer table (``results/tables/transfer.md``) compares models pre-trained on corpora of
1,000 to 25,498 cells, all stopped at 800 steps. Whether that table can show a data effect
depends on how far each model got: this script puts beside every model its optimizer steps,
passes over its corpus, final training loss and the held-out masked-value loss of
:mod:`benchmarks.pretraining_quality` (half of each held-out cell's genes hidden; per-gene
mean and cell-type oracle as the two references; ``gap_closed`` = the fraction of the
mean -> oracle gap the model closes), with the demo's ``sim_atlas`` model (the same
architecture, 5,000 steps on 30,491 cells; its stored curve in
``benchmarks/results/pretraining_quality.json``) as the reference of a model trained to its
plateau.

Run (results in ``benchmarks/results/series_quality.{md,json}``)::

    .venv/bin/python benchmarks/series_quality.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_curves import plateau  # noqa: E402
from pretraining_quality import _loss_csv, evaluate  # noqa: E402

from benchmark.io import read_json, write_json, write_text  # noqa: E402
from benchmark.yamlfile import load_yaml  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results"
SERIES_DIR = ROOT / "results" / "model" / "transfer"


def model_row(name: str) -> dict[str, Any]:
    """Steps, passes and losses of one committed series model."""
    folder = SERIES_DIR / name
    log = _loss_csv(folder)
    if not log:
        raise FileNotFoundError(f"{folder / 'loss.csv'}: no training log")
    last = log[-1]
    result = evaluate(folder, knn=False)
    return {
        "model": name,
        "corpus_cells": result["pretrain"].get("n_cells"),
        "steps": int(last["step"]),
        "passes": int(last["epoch"]),
        "train_loss_gen": last.get("loss_gen"),
        "heldout": result["masked_value_loss"],
        "heldout_new_batches": result["masked_value_loss_new_batches"],
        "program_cosine_difference": result["gene_program_cosine"]["difference"],
    }


PLATEAU_TOL = 0.02
"""A longer run's plateau: the first saved step that no later one beats by more than this
gap-closed fraction per doubling of steps (:func:`learning_curves.plateau`)."""


def plateau_row(run: Path) -> dict[str, Any]:
    """Held-out curve of a longer pre-training run over its saved ``step_*.pt`` checkpoints."""
    result = evaluate(run, steps_from=run, knn=False)
    curve = [
        {"step": c["step"], "model": c["model"], "gap_closed": c["gap_closed"]}
        for c in result["masked_value_loss_curve"]
    ]
    at = plateau(
        [(c["step"], c["gap_closed"]) for c in curve], higher_is_better=True, tol=PLATEAU_TOL
    )
    log = _loss_csv(run)
    return {
        "model": run.name,
        "corpus_cells": result["pretrain"].get("n_cells"),
        "steps": int(log[-1]["step"]) if log else None,
        "passes": int(log[-1]["epoch"]) if log else None,
        "curve": curve,
        "plateau_step": at,
        "heldout": result["masked_value_loss"],
        "heldout_new_batches": result["masked_value_loss_new_batches"],
        "program_cosine_difference": result["gene_program_cosine"]["difference"],
    }


def reference_row(path: Path) -> dict[str, Any]:
    """The sim_atlas model's stored measurement, with its held-out curve."""
    stored = read_json(path)
    return {
        "model": "sim_atlas (reference)",
        "corpus_cells": stored["pretrain"].get("n_cells"),
        "steps": stored["pretrain"].get("steps"),
        "heldout": stored["masked_value_loss"],
        "heldout_new_batches": stored["masked_value_loss_new_batches"],
        "program_cosine_difference": stored["gene_program_cosine"]["difference"],
        "curve": [
            {"step": c["step"], "gap_closed": c["gap_closed"]}
            for c in stored["masked_value_loss_curve"]
        ],
    }


def _num(value: Any, fmt: str = ".3f") -> str:
    return "—" if value is None else format(value, fmt)


def plateau_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The longer runs' held-out curves (gap closed by step) and plateau steps."""
    steps = sorted({c["step"] for row in rows for c in row["curve"]})
    lines = [
        "",
        "## The scaling models trained longer (held-out curve)",
        "",
        f"Gap closed on the held-out cells at each saved step; plateau: the first step that "
        f"no later one beats by more than {PLATEAU_TOL} per doubling of steps.",
        "",
        "| model | corpus cells | passes | "
        + " | ".join(f"{s:,}" for s in steps)
        + " | plateau step | gap closed, new batches | program cosine within - between |",
        "|---|---|---|" + "---|" * len(steps) + "---|---|---|",
    ]
    for row in rows:
        by_step = {c["step"]: c["gap_closed"] for c in row["curve"]}
        cells = [_num(by_step.get(s), ".2f") for s in steps]
        lines.append(
            f"| {row['model']} | {_num(row['corpus_cells'], ',')} | {_num(row['passes'], ',')} | "
            + " | ".join(cells)
            + f" | {_num(row['plateau_step'], ',')} "
            f"| {row['heldout_new_batches']['gap_closed']:.2f} "
            f"| {row['program_cosine_difference']:.2f} |"
        )
    return lines


def markdown(rows: list[dict[str, Any]], reference: dict[str, Any], command: str) -> str:
    """The table of the series models and the reference's curve."""
    lines = [
        "# Transfer-series models: steps and held-out loss (issue 27, point 4)",
        "",
        f"Written by `{command}`. Held-out masked-value MSE (binned values) on 1,000 new "
        "atlas cells, half of each cell's genes hidden; `gap closed` = (per-gene mean - "
        "model) / (per-gene mean - cell-type oracle): 0 = no better than each gene's mean, "
        "1 = as good as knowing the cell type. `new batches`: the same on the demo world's "
        "`sim_celltypes` cells.",
        "",
        "| model | corpus cells | steps | passes | train gen. MSE | held-out MSE | gene mean "
        "| oracle | gap closed | gap closed, new batches | program cosine within - between |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [*rows, reference]:
        held = row["heldout"]
        lines.append(
            f"| {row['model']} | {_num(row['corpus_cells'], ',')} | {_num(row['steps'], ',')} "
            f"| {_num(row.get('passes'), ',')} | {_num(row.get('train_loss_gen'), '.1f')} "
            f"| {held['model']:.1f} | {held['gene_mean']:.1f} | {held['oracle']:.1f} "
            f"| {held['gap_closed']:.2f} | {row['heldout_new_batches']['gap_closed']:.2f} "
            f"| {row['program_cosine_difference']:.2f} |"
        )
    curve = ", ".join(f"{c['gap_closed']:.2f} at {c['step']:,}" for c in reference["curve"])
    lines += [
        "",
        f"Reference curve (sim_atlas, gap closed by step): {curve}.",
    ]
    return "\n".join(lines) + "\n"


def full_markdown(
    rows: list[dict[str, Any]],
    reference: dict[str, Any],
    longer: list[dict[str, Any]],
    command: str,
) -> str:
    """:func:`markdown`, then the longer runs' table when there are any."""
    text = markdown(rows, reference, command)
    return text + ("\n".join(plateau_markdown(longer)) + "\n" if longer else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, default=ROOT / "config" / "pretrain_transfer.yaml")
    parser.add_argument("--reference", type=Path, default=OUT_DIR / "pretraining_quality.json")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--longer",
        type=Path,
        nargs="*",
        default=[],
        help="output folders of longer pre-training runs with step_*.pt checkpoints",
    )
    args = parser.parse_args(argv)

    rows = []
    for name in load_yaml(args.series)["models"]:
        print(f"evaluating {name}", flush=True)
        rows.append(model_row(name))
    longer = []
    for run in args.longer:
        print(f"evaluating the longer run {run}", flush=True)
        longer.append(plateau_row(run))
    reference = reference_row(args.reference)
    command = " ".join(
        [".venv/bin/python benchmarks/series_quality.py"] + (sys.argv[1:] if argv is None else argv)
    )
    write_json(
        {"command": command, "models": rows, "reference": reference, "longer": longer},
        args.out_dir / "series_quality.json",
    )
    write_text(full_markdown(rows, reference, longer, command), args.out_dir / "series_quality.md")


if __name__ == "__main__":
    main()
