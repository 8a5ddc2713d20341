"""Transfer on the demo tasks: scGPT fine-tuned from a checkpoint vs from scratch vs PCA.

Runs the demo configuration's scGPT methods (and the PCA-based references) on the demo
datasets through :func:`benchmark.runner.run_method`, one thread each, with the given
checkpoint, and writes every run's scores to one JSON file (and a Markdown table to stdout).
Method parameters are the demo's (``config/config.yaml``); the standard datasets must exist
(``snakemake --cores 1 data/standard/{pbmc_demo,sim_celltypes,sim_perturb}.h5ad``).

Run::

    .venv/bin/python benchmarks/transfer_demo.py --checkpoint results/model/sim_atlas \\
        --seeds 0 --out benchmarks/results/transfer_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.io import write_json  # noqa: E402
from benchmark.runner import run_method  # noqa: E402

# (task, dataset, method); the scGPT rows use the checkpoint, the others are references.
RUNS = [
    ("annotation", "pbmc_demo", "scgpt"),
    ("annotation", "pbmc_demo", "scgpt_scratch"),
    ("annotation", "sim_celltypes", "scgpt"),
    ("annotation", "sim_celltypes", "scgpt_scratch"),
    ("reference_mapping", "pbmc_demo", "scgpt_zeroshot"),
    ("reference_mapping", "pbmc_demo", "pca_knn"),
    ("reference_mapping", "sim_celltypes", "scgpt_zeroshot"),
    ("reference_mapping", "sim_celltypes", "pca_knn"),
    ("integration", "pbmc_demo", "scgpt"),
    ("integration", "pbmc_demo", "scgpt_scratch"),
    ("integration", "pbmc_demo", "pca"),
    ("integration", "sim_celltypes", "scgpt"),
    ("integration", "sim_celltypes", "scgpt_scratch"),
    ("integration", "sim_celltypes", "pca"),
    ("perturbation", "sim_perturb", "scgpt"),
    ("perturbation", "sim_perturb", "scgpt_scratch"),
    ("perturbation", "sim_perturb", "train_mean"),
]
# The headline metric of each task, for the table.
HEADLINE = {
    "annotation": ("accuracy", "macro_f1"),
    "reference_mapping": ("accuracy", "macro_f1"),
    "integration": ("avg_bio", "avg_batch"),
    "perturbation": ("pearson_delta", "pearson_delta_de"),
}


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/transfer_demo"))
    parser.add_argument("--only", nargs="*", help="tasks to run (default: all)")
    parser.add_argument("--methods", nargs="*", help="methods to run (default: all)")
    args = parser.parse_args(argv)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    # Runs already in --out are kept unless run again (e.g. scratch rows, which use only the
    # checkpoint's architecture and vocabulary, measured separately from fine-tuned ones).
    rows: list[dict[str, Any]] = []
    if args.out.is_file():
        rows = json.loads(args.out.read_text()).get("runs", [])
    for seed in args.seeds:
        for task, dataset, method in RUNS:
            if (args.only and task not in args.only) or (
                args.methods and method not in args.methods
            ):
                continue
            params = config["tasks"][task]["methods"].get(method) or {}
            t0 = time.perf_counter()
            record = run_method(
                task,
                method,
                dataset,
                ROOT / "data" / "standard" / f"{dataset}.h5ad",
                args.work / task / dataset / method / f"seed{seed}",
                seed=seed,
                params=params,
                checkpoint=args.checkpoint,
                threads=1,
                metric_options=config["tasks"][task].get("metrics"),
            )
            path = args.work / task / dataset / method / f"seed{seed}" / "scores.json"
            scores = json.loads(path.read_text()) if path.is_file() else {}
            row = {
                "task": task,
                "dataset": dataset,
                "method": method,
                "seed": seed,
                "checkpoint": str(args.checkpoint),
                "status": record["status"],
                "error": record.get("error"),
                "seconds": round(time.perf_counter() - t0, 1),
                "scores": scores,
            }
            key = (task, dataset, method, seed)
            rows = [r for r in rows if (r["task"], r["dataset"], r["method"], r["seed"]) != key]
            rows.append(row)
            a, b = HEADLINE[task]
            print(
                f"| {task} | {dataset} | {method} | {seed} | {scores.get(a, float('nan')):.3f} | "
                f"{scores.get(b, float('nan')):.3f} | {row['seconds']} | {row['status']} |",
                flush=True,
            )
            write_json({"headline": HEADLINE, "runs": rows}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
