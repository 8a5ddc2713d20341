"""Why does scGPT's integration fine-tuning score below its own zero-shot embedding? (issue 27)

On ``sim_celltypes`` the demo's zero-shot embedding (``scgpt_zeroshot``, 256 tokens per cell)
scores AvgBIO ~0.96 and the fine-tuned one (``scgpt``, 2 epochs, 128 expressed genes per cell)
~0.78. The two rows differ in more than training: the fine-tuned model embeds each cell from
at most 127 of its expressed genes, the zero-shot one from up to 255. This script separates
the causes with the suite's own runner and metrics (one thread, one seed per point):

- ``zeroshot_L256`` / ``zeroshot_L128``: the pre-trained embedding at the two token budgets;
- ``finetune_0ep``: the fine-tuning pipeline with no step taken (its fresh DSBN layer is the
  identity in evaluation mode), i.e. the pre-trained model behind the fine-tuned row's
  tokenisation: it must equal ``zeroshot_L128`` unless the two paths embed differently;
- ``finetune_2ep`` (the demo row), ``finetune_2ep_L256`` (its token budget raised),
  ``finetune_2ep_lr1e-4`` (the tutorial's learning rate) and ``finetune_2ep_gep_only``
  (ECS, DAB and DSBN off: only the masked-expression objectives), ``finetune_2ep_shuffled``
  (the tutorials' uniform mini-batches instead of length buckets), ``finetune_2ep_ecs_off``
  and ``finetune_8ep``.

Run (results in ``benchmarks/results/integration_puzzle.{md,json}``)::

    .venv/bin/python benchmarks/integration_puzzle.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_curves import load_config, run_variant  # noqa: E402

from benchmark.io import read_json, write_json, write_text  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results"
DATASET = "sim_celltypes"
METRICS = ("avg_bio", "nmi", "ari", "asw_cell", "avg_batch")

# name -> (method, parameter changes to the demo config's)
POINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "zeroshot_L256": ("scgpt_zeroshot", {}),
    "zeroshot_L128": ("scgpt_zeroshot", {"max_len": 128}),
    "finetune_0ep": ("scgpt", {"epochs": 0}),
    "finetune_2ep": ("scgpt", {"epochs": 2}),
    "finetune_2ep_L256": ("scgpt", {"epochs": 2, "max_len": 256}),
    "finetune_2ep_lr1e-4": ("scgpt", {"epochs": 2, "lr": 1e-4}),
    "finetune_2ep_gep_only": (
        "scgpt",
        {"epochs": 2, "ecs_weight": 0.0, "dab_weight": 0.0, "dsbn": False},
    ),
    "finetune_2ep_shuffled": ("scgpt", {"epochs": 2, "length_buckets": False}),
    "finetune_2ep_ecs_off": ("scgpt", {"epochs": 2, "ecs_weight": 0.0}),
    "finetune_8ep": ("scgpt", {"epochs": 8}),
}


def run_point(plan: Any, name: str, *, data_dir: Path, work_dir: Path, checkpoint: Path) -> dict:
    """One point through the suite's runner; its scores and wall time."""
    method, changes = POINTS[name]
    return run_variant(
        plan,
        "integration",
        method,
        DATASET,
        changes,
        work_dir / name,
        name=name,
        metrics=METRICS,
        data_dir=data_dir,
        checkpoint=checkpoint,
        log_path=work_dir / f"{name}.log",
    )


def markdown(points: list[dict], command: str) -> str:
    """The table of the points, in :data:`POINTS` order."""
    lines = [
        "# Integration fine-tuning vs the zero-shot embedding (`sim_celltypes`, seed 0)",
        "",
        f"Written by `{command}`: the suite's runner and integration metrics, one thread; "
        "parameters are the demo config's with the changes shown.",
        "",
        "| point | method | changes | " + " | ".join(METRICS) + " | wall s |",
        "|---|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for p in points:
        changes = ", ".join(f"{k}={v}" for k, v in POINTS[p["name"]][1].items()) or "—"
        values = ["—" if p["scores"].get(m) is None else f"{p['scores'][m]:.3f}" for m in METRICS]
        if p["status"] != "ok":
            values = [f"failed: {p['error']}"] + [""] * (len(METRICS) - 1)
        lines.append(
            f"| {p['name']} | {p['method']} | {changes} | "
            + " | ".join(values)
            + f" | {p['wall_seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", nargs="+", choices=list(POINTS), default=list(POINTS))
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "results" / "model" / "sim_atlas")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "results" / "integration_puzzle")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    from benchmark.workflow import WorkflowPlan

    os.chdir(ROOT)
    plan = WorkflowPlan.from_config(load_config(args.config))
    json_path = args.out_dir / "integration_puzzle.json"
    stored = {p["name"]: p for p in (read_json(json_path)["points"] if json_path.is_file() else [])}
    command = " ".join(
        [".venv/bin/python benchmarks/integration_puzzle.py"]
        + (sys.argv[1:] if argv is None else argv)
    )
    for name in args.points:
        if stored.get(name, {}).get("status") == "ok":
            continue
        print(f"running {name}", flush=True)
        stored[name] = run_point(
            plan, name, data_dir=args.data_dir, work_dir=args.work_dir, checkpoint=args.checkpoint
        )
        print(f"  {stored[name]['status']} {stored[name]['scores']}", flush=True)
        ordered = [stored[n] for n in POINTS if n in stored]
        write_json({"command": command, "points": ordered}, json_path)
        write_text(markdown(ordered, command), args.out_dir / "integration_puzzle.md")


if __name__ == "__main__":
    main()
