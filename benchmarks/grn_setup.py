"""The GRN tutorials' setup against the demo's (issue 27: point 5 and the attention puzzle).

Gene programs (paper Fig. 5). The GRN tutorial clusters genes on scanpy's neighbour graph
of the gene embeddings (``sc.pp.neighbors``, UMAP connectivities) and tests Reactome with
Enrichr, whose background is its whole library; the demo clusters a similarity kNN graph
and tests against the clustered genes. Each method's gene-gene similarity is computed once
(the suite's runner, full-budget settings, seed 0) and scored under the four combinations of
``tasks.grn.metrics.graph`` x ``enrichment_background``: planted-program ARI on
``sim_celltypes``, Reactome pathways enriched in some program on ``pbmc_demo``.

Attention targets (paper Fig. 6) on ``sim_perturb``'s knocked-down regulators: the
pre-trained model, the perturbation-fine-tuned model (the demo's, the paper's text) and the
attention tutorial's integration fine-tuning on every gene with control vs perturbed as the
batch (``targets_finetuning``), each at the full-budget settings (5 epochs), seed 0.

Run (results in ``benchmarks/results/grn_setup.{md,json}``)::

    .venv/bin/python benchmarks/grn_setup.py
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning_curves import ensure_dataset, load_config, run_isolated, run_variant  # noqa: E402

from benchmark.io import write_json, write_text  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results"
PROGRAM_RUNS = (
    ("sim_celltypes", "scgpt"),
    ("sim_celltypes", "coexpression"),
    ("pbmc_demo", "scgpt"),
    ("pbmc_demo", "coexpression"),
)
VARIANTS: dict[str, dict[str, str]] = {
    "demo": {"graph": "knn", "enrichment_background": "analysed"},
    "scanpy graph": {"graph": "scanpy", "enrichment_background": "analysed"},
    "library background": {"graph": "knn", "enrichment_background": "gene_sets"},
    "tutorial (both)": {"graph": "scanpy", "enrichment_background": "gene_sets"},
}
PROGRAM_METRICS = ("ari", "pair_auroc", "n_enriched_pathways", "resolution_enriched", "n_programs")
TARGET_POINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "pre-trained": ("scgpt", {}),
    "perturbation fine-tuning": ("scgpt_finetuned", {"targets_finetuning": "perturbation"}),
    "integration fine-tuning (tutorial)": (
        "scgpt_finetuned",
        {"targets_finetuning": "integration"},
    ),
}
TARGET_METRICS = (
    "precision_at_20",
    "precision_at_20_perturbed",
    "precision_at_20_control",
    "auprc",
    "precision_at_20_expected",
)


def program_scores(plan: Any, dataset: str, method: str, *, args: argparse.Namespace) -> dict:
    """One similarity through the runner, then the task's scores under every variant."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from benchmark.tasks import get_task

    outdir = args.work_dir / f"{dataset}_{method}"
    start = time.perf_counter()
    record, _ = run_isolated(
        plan,
        "grn",
        method,
        dataset,
        copy.deepcopy(plan.method_params("grn", method, dataset)),
        outdir,
        seed=0,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        log_path=args.work_dir / f"{dataset}_{method}.log",
    )
    result: dict[str, Any] = {"dataset": dataset, "method": method, "status": record["status"]}
    if record["status"] != "ok":
        result["error"] = record.get("error")
        return result
    genes = pd.read_csv(outdir / "genes.csv")["gene"].astype(str).tolist()
    similarity = pd.DataFrame(np.load(outdir / "similarity.npy"), index=genes, columns=genes)
    data = ad.read_h5ad(ensure_dataset(plan, dataset, args.data_dir))
    result["variants"] = {}
    for name, options in VARIANTS.items():
        task = get_task("grn").with_metric_options({**plan.metric_options("grn"), **options})
        scores = task.score(similarity, task.prepare(data, seed=0), seed=0)
        result["variants"][name] = {m: scores.get(m) for m in PROGRAM_METRICS}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def target_scores(plan: Any, name: str, *, args: argparse.Namespace) -> dict:
    """One attention setup through the runner on sim_perturb."""
    method, changes = TARGET_POINTS[name]
    return run_variant(
        plan,
        "grn",
        method,
        "sim_perturb",
        changes,
        args.work_dir / f"targets_{method}_{changes.get('targets_finetuning', 'none')}",
        name=name,
        metrics=TARGET_METRICS,
        data_dir=args.data_dir,
        checkpoint=args.checkpoint,
        log_path=args.work_dir / f"targets_{name.split()[0]}.log",
    )


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) and value % 1 else f"{value:g}"


def markdown(result: dict[str, Any]) -> str:
    """Both tables of the run."""
    lines = [
        "# GRN: the tutorials' setup vs the demo's (seed 0, full-budget settings)",
        "",
        f"Written by `{result['command']}` (config `{result['config']}`, checkpoint "
        f"`{result['checkpoint']}`): the suite's runner and GRN task, one thread.",
        "",
        "## Gene programs: graph and enrichment background",
        "",
        "`ari`: planted programs (`sim_celltypes`, best over the Leiden sweep); "
        "`n_enriched_pathways`: Reactome pathways enriched in some program (`pbmc_demo`, "
        "Bonferroni over the GMT's sets). Variants: `graph` knn (demo) or scanpy (tutorial); "
        "`enrichment_background` the clustered genes (demo) or the GMT's genes (Enrichr's "
        "library, the tutorial's). `n_programs`: programs of >= 5 genes at "
        "`resolution_enriched` (the sweep's resolution with the most enriched pathways) on "
        "real genes, at the last resolution (40) on simulated ones.",
        "",
        "| dataset | method | variant | " + " | ".join(PROGRAM_METRICS) + " |",
        "|---|---|---|" + "---|" * len(PROGRAM_METRICS),
    ]
    for run in result["programs"]:
        if run["status"] != "ok":
            lines.append(f"| {run['dataset']} | {run['method']} | failed: {run['error']} |")
            continue
        for variant, scores in run["variants"].items():
            cells = [_cell(scores.get(m)) for m in PROGRAM_METRICS]
            lines.append(
                f"| {run['dataset']} | {run['method']} | {variant} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "## Attention targets on `sim_perturb`: which model's attention",
        "",
        "Precision at 20 of each regulator's true targets (headline: the difference setting), "
        "its perturbed and control settings, average precision, and the chance level.",
        "",
        "| model | " + " | ".join(TARGET_METRICS) + " | wall s |",
        "|---|" + "---|" * (len(TARGET_METRICS) + 1),
    ]
    for point in result["targets"]:
        if point["status"] != "ok":
            lines.append(f"| {point['name']} | failed: {point['error']} |")
            continue
        cells = [_cell(point["scores"].get(m)) for m in TARGET_METRICS]
        lines.append(f"| {point['name']} | " + " | ".join(cells) + f" | {point['wall_seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "full.yaml")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "results" / "model" / "sim_atlas")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "results" / "grn_setup" / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "results" / "grn_setup")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    from benchmark.workflow import WorkflowPlan

    os.chdir(ROOT)
    plan = WorkflowPlan.from_config(load_config(args.config))
    result: dict[str, Any] = {
        "command": " ".join(
            [".venv/bin/python benchmarks/grn_setup.py"] + (sys.argv[1:] if argv is None else argv)
        ),
        "config": str(args.config.relative_to(ROOT) if args.config.is_absolute() else args.config),
        "checkpoint": str(
            args.checkpoint.relative_to(ROOT) if args.checkpoint.is_absolute() else args.checkpoint
        ),
        "programs": [],
        "targets": [],
    }
    for dataset, method in PROGRAM_RUNS:
        print(f"programs: {dataset} {method}", flush=True)
        result["programs"].append(program_scores(plan, dataset, method, args=args))
    for name in TARGET_POINTS:
        print(f"targets: {name}", flush=True)
        result["targets"].append(target_scores(plan, name, args=args))
        print(f"  {result['targets'][-1]['status']} {result['targets'][-1]['scores']}", flush=True)
    write_json(result, args.out_dir / "grn_setup.json")
    write_text(markdown(result), args.out_dir / "grn_setup.md")


if __name__ == "__main__":
    main()
