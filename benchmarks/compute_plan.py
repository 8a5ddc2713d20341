"""The paper configuration's cost before a user starts it: CPU node-hours and H100-hours.

Usage::

    .venv/bin/python benchmarks/compute_plan.py [--scaling benchmarks/results/scaling.json]
        [--out benchmarks/results/compute_plan.md]

(``benchmarks/scaling.py`` writes it too, after measuring.) Inputs: ``config/paper.yaml``
(tasks, datasets, methods, seeds, per-job threads), the dataset sizes below (with where each
comes from), the stage measurements of ``scaling.json`` (seconds and peak memory per stage
at 1k-100k cells, interpolated or extended to each dataset's size) for the CPU job classes,
and for the scGPT rows the FLOP formula of ``model_throughput.py`` at the paper's model,
token counts and epochs, with an assumed H100 utilisation. Every assumption is written into
the plan.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_throughput import GPU_PEAK_BF16_TFLOPS, ModelSize, flops_per_cell  # noqa: E402
from scaling import extend  # noqa: E402

#: Cells of the paper's datasets: (total, reference, query, source). ``registry``: the
#: description in config/datasets.yaml; ``shared``: ../shared/reference or ../shared/data (the
#: ASAP count is the rows of its four metadata files); ``assumed``: the commonly cited size of
#: the public file, not read from the file here (no download on this machine).
PAPER_CELLS: dict[str, tuple[int, int | None, int | None, str]] = {
    "hpancreas": (14_818, 10_600, 4_218, "assumed (TOSICA split: 10,600 + 4,218)"),
    "ms": (21_312, 7_844, 13_468, "registry"),
    "myeloid": (13_178, 9_748, 3_430, "registry"),
    "covid19": (20_000, None, None, "registry"),
    "pbmc10k": (11_990, None, None, "registry"),
    "perirhinal": (17_535, None, None, "assumed"),
    "pbmc_multiome": (9_631, None, None, "assumed (GLUE's preprocessed 10x Multiome)"),
    "bmmc": (90_261, None, None, "shared (~90k; the registry keeps every cell)"),
    "asap_pbmc": (17_055, None, None, "shared (rows of meta_c1..4.csv)"),
    "adamson": (68_603, None, None, "assumed"),
    "norman": (91_205, None, None, "assumed"),
    "replogle_k562": (162_751, None, None, "assumed (GEARS' filtered K562 essential)"),
    "immune_human": (33_506, None, None, "registry / shared grn.md"),
}

#: Genes of the GEARS files (every gene is a token at prediction) and their conditions.
PERTURB_GENES = {"adamson": 5_060, "norman": 5_045, "replogle_k562": 5_000}
PERTURB_CONDITIONS = {"adamson": 87, "norman": 236, "replogle_k562": 1_087}

H100_PEAK_TFLOPS = GPU_PEAK_BF16_TFLOPS["H100 SXM"]  # dense bf16
MFU = 0.35
MFU_RANGE = (0.30, 0.40)
NODE_CORES = 16
JOB_THREADS = 4  # config/paper.yaml resources.default.threads
EMBEDDING_DIMS = {"scgpt": 512, "other": 50}
#: Metric stages whose cost grows with the embedding's width (distances): scaled by 512/50
#: for the scGPT embeddings.
WIDTH_STAGES = ("neighbors", "asw_cell", "asw_batch")
SCORING_STAGES = (
    "pca",  # x_pre: IntegrationTask.score computes the PCA of log1p for every scored run
    "neighbors",
    "nmi_ari",
    "asw_cell",
    "asw_batch",
    "graph_conn",
    "lisi",
    "isolated_labels",
    "pcr_comparison",
)


def _loglog(points: list[tuple[float, float]], n: float) -> float:
    """Value at ``n``: log-log interpolation, or the nearest end's two-point slope beyond."""
    pts = sorted((x, max(y, 1e-6)) for x, y in points)
    xs, ys = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    x = math.log(n)
    if len(pts) == 1:
        return math.exp(ys[0] + (x - xs[0]))
    if x <= xs[0]:
        s = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return math.exp(ys[0] + s * (x - xs[0]))
    if x >= xs[-1]:
        s = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return math.exp(ys[-1] + s * (x - xs[-1]))
    return math.exp(float(np.interp(x, xs, ys)))


def estimate(stage: dict[str, Any], n: float) -> tuple[float, float, str]:
    """(seconds, peak MiB, how) of ``stage`` at ``n`` cells from its measured points.

    Time: log-log interpolation between measured sizes; below them the two smallest points'
    slope; above them ``scaling.extend`` (fixed cost + a n^p with the stage's algorithmic
    exponent, as scaling.py extrapolates). Memory: the RSS before the stage (libraries and
    inputs) plus the stage's own allocation, each estimated the same way.
    """
    measured = [p for p in stage["points"] if p["status"] == "measured"]
    if not measured:
        return math.nan, math.nan, "not measured"
    t_points = [(p["n_cells"], p["seconds"]) for p in measured]
    if n > max(x for x, _ in t_points) and len(t_points) >= 2:
        seconds = extend(t_points, n, stage.get("exponent_model", 1.0))
    else:
        seconds = _loglog(t_points, n)
    sizes = [p["n_cells"] for p in measured]
    if min(sizes) <= n <= max(sizes):
        peak = _loglog([(p["n_cells"], p["peak_mib"]) for p in measured], n)
        how = "interpolated"
    else:
        before = _loglog([(p["n_cells"], p["rss_before_mib"]) for p in measured], n)
        delta = _loglog([(p["n_cells"], max(p["delta_mib"], 1.0)) for p in measured], n)
        peak, how = before + delta, "extrapolated"
    return seconds, peak, how


def _job_seconds(stage: dict[str, Any], n: float, measured_threads: int, width: float = 1.0):
    seconds, peak, how = estimate(stage, n)
    if stage["parallel"]:
        seconds *= measured_threads / JOB_THREADS
    return seconds * width, peak, how


def _paper_jobs(config: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(task, method) -> datasets, from config/paper.yaml (method_datasets respected)."""
    jobs: dict[tuple[str, str], list[str]] = {}
    for task, spec in config["tasks"].items():
        only = spec.get("method_datasets", {})
        for method in spec["methods"]:
            jobs[(task, method)] = list(only.get(method, spec["datasets"]))
    return jobs


def _scgpt_flops(
    layers: int,
    L_train: int,
    epochs: int,
    train_cells: float,
    val_cells: float,
    L_val: int,
    inference: list[tuple[float, int]],
    d: int = 512,
) -> float:
    """FLOPs of one scGPT job: training epochs, per-epoch validation forwards, inference."""
    size = ModelSize("paper", d, layers, 8, 512)
    total = epochs * train_cells * flops_per_cell(size, L_train, "train")
    total += epochs * val_cells * flops_per_cell(size, L_val, "inference")
    total += sum(n * flops_per_cell(size, L, "inference") for n, L in inference)
    return total


def scgpt_rows(jobs: dict[tuple[str, str], list[str]], n_seeds: int) -> list[dict[str, Any]]:
    """One row per scGPT (task, method, dataset) of the paper configuration, with its FLOPs."""
    rows = []

    def add(task, method, dataset, flops, tokens, epochs, what, n_jobs=n_seeds):
        seconds = flops / (H100_PEAK_TFLOPS * 1e12 * MFU)
        rows.append(
            {
                "task": task,
                "method": method,
                "dataset": dataset,
                "jobs": n_jobs,
                "tokens": tokens,
                "epochs": epochs,
                "what": what,
                "pflop_per_job": flops / 1e15,
                "h100_hours_per_job": seconds / 3600,
                "h100_hours": n_jobs * seconds / 3600,
            }
        )

    for (task, method), datasets in jobs.items():
        if not method.startswith("scgpt"):
            continue
        for ds in datasets:
            n, ref, query = PAPER_CELLS[ds][:3]
            if task in ("annotation", "reference_mapping") and method != "scgpt_zeroshot":
                f = _scgpt_flops(12, 3001, 10, 0.9 * ref, 0.1 * ref, 3001, [(2 * query, 3001)])
                if task == "reference_mapping":
                    f += _scgpt_flops(12, 3001, 0, 0, 0, 3001, [(ref, 3001)])
                add(task, method, ds, f, 3001, 10, "fine-tune (CLS) on 90% of the reference")
            elif task == "reference_mapping":
                f = _scgpt_flops(12, 1200, 0, 0, 0, 1200, [(ref + query, 1200)])
                add(task, method, ds, f, 1200, 0, "embed reference + query")
            elif task == "integration" and method == "scgpt_zeroshot":
                f = _scgpt_flops(12, 1201, 0, 0, 0, 1201, [(n, 1201)])
                add(task, method, ds, f, 1201, 0, "embed every cell")
            elif task == "integration":
                f = _scgpt_flops(12, 1201, 15, 0.9 * n, 0.1 * n, 1201, [(n, 1201)])
                add(task, method, ds, f, 1201, 15, "GEP+GEPC+ECS+DAB, 90% of cells")
            elif task == "multiomics":
                L = {"pbmc_multiome": 5201, "bmmc": 1335, "asap_pbmc": 4217}[ds]
                f = _scgpt_flops(4, L, 25, 0.9 * n, 0.1 * n, L, [(n, L)])
                add(task, method, ds, f, L, 25, "4-layer model, every feature a token")
            elif task in ("perturbation", "perturbation_expansion", "reverse_perturbation"):
                genes = PERTURB_GENES[ds]
                conds = PERTURB_CONDITIONS[ds]
                val_cells = round(0.1 * conds) * 300
                if task == "reverse_perturbation":
                    # 5 splits per seed; ~30k training cells per split (subset of 20 genes);
                    # 210 candidates x 300 control cells predicted per split.
                    f = 5 * _scgpt_flops(12, 1536, 15, 30_000, 4 * 300, genes, [(210 * 300, genes)])
                    what = "5 splits x (train on the 20-gene subset, predict 210 candidates)"
                else:
                    predicted = (
                        5_565 * 100
                        if task == "perturbation_expansion"
                        else round(0.25 * conds) * 300
                    )
                    f = _scgpt_flops(12, 1536, 15, 0.7 * n, val_cells, genes, [(predicted, genes)])
                    what = (
                        "train; predict 5,565 combinations x 100 control cells"
                        if task == "perturbation_expansion"
                        else "train on ~70% of cells; predict test conditions x 300 controls"
                    )
                add(task, method, ds, f, 1536, 15, what)
            elif task == "grn":
                if ds == "immune_human":
                    if method == "scgpt":
                        continue  # gene embeddings only: no forward pass over cells
                    f = _scgpt_flops(12, 1201, 15, 0.9 * n, 0.1 * n, 1201, [])
                    add(task, method, ds, f, 1201, 15, "integration fine-tuning (programs)")
                else:
                    genes = PERTURB_GENES[ds]
                    ctrl = 0.25 * n  # assumed share of control cells
                    attn = [(ctrl + 2 * 800, genes)]  # control + two knock-downs' cells
                    f = _scgpt_flops(
                        12, 1536, 15 if method != "scgpt" else 0, ctrl + 1600, 0, 0, attn
                    )
                    add(task, method, ds, f, genes, 15 if method != "scgpt" else 0, "attention")
    return rows


def cpu_rows(
    report: dict[str, Any], jobs: dict[tuple[str, str], list[str]], n_seeds: int
) -> list[dict[str, Any]]:
    """CPU job classes whose stages ``report`` measured, costed at the paper's dataset sizes.

    Each class is a list of jobs ``(name, cells on the stage's size axis, embedding-width
    factor, count)`` and the stages every job runs; a class with a stage missing from the
    report is listed as not measured and left out of the totals.
    """
    by = {s["name"]: s for s in report["stages"]}
    threads = report["settings"]["threads"]
    scgpt_width = EMBEDDING_DIMS["scgpt"] / EMBEDDING_DIMS["other"]
    classes: list[tuple[str, tuple[str, ...], list[tuple[str, float, float, int]], str]] = []

    datasets = sorted({d for ds in jobs.values() for d in ds})
    classes.append(
        (
            "standardise_dataset (h5ad read, harmonise, validate, write)",
            ("standardise",),
            [(d, PAPER_CELLS[d][0], 1.0, 1) for d in datasets],
            "one job per dataset",
        )
    )
    scoring = [
        (
            f"{task}/{d}/{method}",
            PAPER_CELLS[d][0],
            scgpt_width if "scgpt" in method else 1.0,
            n_seeds,
        )
        for (task, method), ds_list in jobs.items()
        if task in ("integration", "multiomics")
        for d in ds_list
    ]
    classes.append(
        (
            "scIB scoring inside every integration and multi-omic run_method job",
            SCORING_STAGES,
            scoring,
            "x_pre PCA + every metric family (kBET off); scGPT embeddings 512-d: distance "
            f"stages x{scgpt_width:.2f}",
        )
    )
    for task, stage, tasks in (
        ("integration", "integration_prepare", ("integration",)),
        ("annotation", "annotation_prepare", ("annotation", "reference_mapping")),
    ):
        classes.append(
            (
                f"{task} task preparation (inside every {'/'.join(tasks)} job)",
                (stage,),
                [
                    (f"{t}/{d}", PAPER_CELLS[d][0], 1.0, n_seeds)
                    for (t, _m), ds_list in jobs.items()
                    if t in tasks
                    for d in ds_list
                ],
                "",
            )
        )
    for task, method, stage in (
        ("integration", "pca", "pca"),
        ("integration", "harmony", "harmony"),
        ("multiomics", "pca_rna", "pca"),
        ("multiomics", "pca_shared", "pca"),
        ("annotation", "logreg", "logreg"),
        ("reference_mapping", "pca_knn", "pca_knn"),
    ):
        if (task, method) not in jobs:
            continue
        # The annotation baselines' size axis is all cells with a 75% reference.
        on_reference = task in ("annotation", "reference_mapping")
        members = [
            (d, PAPER_CELLS[d][1] / 0.75 if on_reference else PAPER_CELLS[d][0], 1.0, n_seeds)
            for d in jobs[(task, method)]
        ]
        classes.append(
            (
                f"{task}/{method}",
                (stage,),
                members,
                "one core (saga)" if stage == "logreg" else "",
            )
        )
    # The annotation metrics' size axis is all cells with a 25% query: 4 x the query.
    annotation = [
        (f"{t}/{d}", 4 * PAPER_CELLS[d][2], 1.0, n_seeds)
        for (t, _m), ds_list in jobs.items()
        if t in ("annotation", "reference_mapping")
        for d in ds_list
    ]
    classes.append(("annotation scoring", ("annotation_metrics",), annotation, "query cells"))
    # The table builder's axis is 105 runs per 1,000: the largest table has ~420 runs.
    classes.append(("task_table", ("tables",), [("8 tables", 4000, 1.0, 8)], "~420 runs each"))

    rows = []
    for label, stages, members, note in classes:
        missing = [name for name in stages if name not in by]
        if missing or not members:
            rows.append({"class": label, "jobs": 0, "missing": missing})
            continue
        total, held, peak, largest, how = 0.0, 0.0, 0.0, (0.0, ""), set()
        for name, n, width, count in members:
            job_s = 0.0
            for stage in stages:
                sec, mib, kind = _job_seconds(
                    by[stage], n, threads, width if stage in WIDTH_STAGES else 1.0
                )
                job_s += sec
                peak = max(peak, mib)
                how.add(kind)
            total += count * job_s
            held += count * job_s if "scgpt" in name else 0.0
            largest = max(largest, (job_s, name))
        rows.append(
            {
                "class": label,
                "jobs": sum(m[3] for m in members),
                "seconds_total": total,
                "seconds_in_scgpt_jobs": held,
                "largest_job_s": largest[0],
                "largest_job": largest[1],
                "peak_mib": peak,
                "basis": ", ".join(stages)
                + f" ({'/'.join(sorted(how))})"
                + (f"; {note}" if note else ""),
            }
        )
    return rows


def compute_plan(report: dict[str, Any]) -> str:
    """The paper configuration's cost (compute_plan.md) from the measurements and FLOPs."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_seeds = len(config["seeds"])
    jobs = _paper_jobs(config)
    n_run = sum(len(d) for d in jobs.values()) * n_seeds
    gpu = scgpt_rows(jobs, n_seeds)
    cpu = cpu_rows(report, jobs, n_seeds)
    threads = report["settings"]["threads"]
    gpu_total = sum(r["h100_hours"] for r in gpu)
    measured_cpu = [r for r in cpu if "missing" not in r]
    cpu_node_h = sum(r["seconds_total"] for r in measured_cpu) / 3600 / (NODE_CORES // JOB_THREADS)
    largest_cpu = max(
        ((r["largest_job_s"], r["largest_job"]) for r in measured_cpu), default=(0, "")
    )
    peak_cpu = max(((r["peak_mib"], r["class"]) for r in measured_cpu), default=(0, ""))
    held_h = sum(r["seconds_in_scgpt_jobs"] for r in measured_cpu) / 3600
    unmeasured = sorted(
        {
            f"{t}/{m}"
            for (t, m) in jobs
            if not m.startswith("scgpt")
            and (t, m)
            not in {
                ("integration", "pca"),
                ("integration", "harmony"),
                ("multiomics", "pca_rna"),
                ("multiomics", "pca_shared"),
                ("annotation", "logreg"),
                ("reference_mapping", "pca_knn"),
            }
        }
    )
    by_task: dict[str, float] = {}
    for r in gpu:
        by_task[r["task"]] = by_task.get(r["task"], 0.0) + r["h100_hours"]
    lo, hi = (gpu_total * MFU / m for m in (MFU_RANGE[1], MFU_RANGE[0]))
    L = [
        "# Compute plan of the paper configuration (`config/paper.yaml`)",
        "",
        "Written by `benchmarks/compute_plan.py` (run by `benchmarks/scaling.py`) from the "
        "stage measurements (`scaling.json`, "
        f"{threads} threads, {report['environment']['cpu_count']} CPUs) and the FLOP formula of "
        "`benchmarks/model_throughput.py`. Estimates, not measurements of the paper run: every "
        "assumption is listed, and a measured stage extrapolated past its largest measured size "
        "says so.",
        "",
        "## Headline",
        "",
        f"- {n_run} `run_method` jobs ({n_seeds} seeds) + "
        f"{len({d for ds in jobs.values() for d in ds})} standardisations + 8 tables "
        "(`make paper-plan`, i.e. `snakemake -n`, counted the same 530 / 13 / 8 on this "
        "tree).",
        f"- scGPT rows on GPU: **≈{gpu_total:,.0f} H100-hours** at {MFU:.0%} MFU "
        f"({lo:,.0f}-{hi:,.0f} h at {MFU_RANGE[1]:.0%}-{MFU_RANGE[0]:.0%}); by task: "
        + ", ".join(f"{t} {h:,.0f} h" for t, h in sorted(by_task.items(), key=lambda kv: -kv[1]))
        + ".",
        f"- CPU stages measured here: **≈{cpu_node_h:,.1f} node-hours** on one 16-core node "
        f"({JOB_THREADS}-thread jobs, {NODE_CORES // JOB_THREADS} at a time); the longest "
        f"job {largest_cpu[0] / 60:,.0f} min ({largest_cpu[1]}), the largest peak "
        f"{peak_cpu[0] / 1024:,.1f} GiB ({peak_cpu[1]}; the configuration gives 31 GiB a job).",
        f"- The scIB scoring of the scGPT integration and multi-omic runs runs on the CPU inside "
        f"their GPU jobs: ≈{held_h:,.1f} hours of held, idle GPU (4-thread scoring), "
        f"{held_h / max(gpu_total, 1e-9):.1f}x the GPU hours of all scGPT rows.",
        f"- Not costed (not measured by this script): {', '.join(unmeasured)}.",
        "",
        "## Assumptions",
        "",
        "1. Job counts: `config/paper.yaml` tasks x datasets (its `method_datasets`) x "
        f"{n_seeds} seeds; reverse perturbation runs 5 splits inside each job.",
        "2. Dataset sizes (cells): "
        + "; ".join(f"{d} {v[0]:,} ({v[3]})" for d, v in PAPER_CELLS.items())
        + ". The simulated cells here have ~700 non-zero genes of 3,000; real 10x files have "
        "1,000-3,000 of 20,000-36,000, so I/O-bound stages (standardise) can cost up to ~4x "
        "more per cell.",
        f"3. CPU: measured with {threads} threads; stages marked parallel (BLAS, XLA, faiss, "
        f"torch) are assumed to scale linearly to a job's {JOB_THREADS} threads "
        f"(`resources.default.threads`), the others (Louvain, saga, h5py I/O, Python loops) "
        f"not at all; a 16-core node runs {NODE_CORES // JOB_THREADS} such jobs at a time, so "
        f"node-hours = sum of job hours / {NODE_CORES // JOB_THREADS}. Memory: each job's "
        "peak is the stage's measured (or extrapolated) peak RSS; the configuration gives "
        "32,000 MB per job.",
        "4. A stage's time at a dataset's size: log-log interpolation between measured sizes; "
        "above the largest, a fixed cost plus a n^p through the two largest measured points "
        "(p = 2 for the silhouettes, 1 otherwise; their log-log slope where that does not "
        "fit), as `scaling.py` extrapolates; the basis column says `extrapolated` then. "
        "Annotation baselines are read at reference / 0.75 cells (the measured axis has a 75% "
        "reference), annotation metrics at 4x the query.",
        "5. Integration metrics are measured on a 50-d PCA embedding; the distance-based "
        "stages (exact kNN search, both ASWs) are scaled by 512/50 for the "
        "scGPT embeddings (d_model 512). kBET is off, as in `IntegrationTask`.",
        "6. GPU: FLOPs = `model_throughput.flops_per_cell` (matrix products only; training = "
        "3x forward) for the released architecture (12 layers, d 512, 8 heads, d_hid 512; the "
        "multi-omic model 4 layers) at the paper's max_len, i.e. every cell at its maximum "
        "token count: an upper bound where only expressed genes are tokens (annotation 3,001, "
        "reference mapping 1,200, multi-omics: 1,200 HVGs + proteins + 4,000 peaks). "
        f"H100 SXM dense bf16 peak {H100_PEAK_TFLOPS:.0f} TFLOP/s at an assumed MFU of "
        f"{MFU:.0%} (no GPU was available to measure it; `model_throughput.py` measures it "
        "on one). Data loading, tokenisation and the CPU scoring inside GPU jobs are not in "
        "the GPU hours, which are therefore a floor: Python-side batching keeps a model "
        "this small (51M parameters) below 35% MFU unless the loader keeps up; measure one "
        "epoch with `model_throughput.py` on the booked GPU before trusting the total.",
        "7. Epochs and splits: the paper's defaults (annotation 10, integration 15, "
        "multi-omics 25, perturbation 15 with early stopping never triggering); 10% of the "
        "cells held out and run forward once per epoch; perturbation trains on ~70% of the "
        "cells (GEARS simulation split), validates on 10% and tests on 25% of the conditions "
        "with 300 control cells each, every gene a token at prediction (GEARS files: "
        + ", ".join(f"{d} {g:,} genes" for d, g in PERTURB_GENES.items())
        + "); the GRN attention pass averages the control cells (assumed 25%) and ~800 cells "
        "of each knock-down.",
        "",
        "## CPU job classes (measured stages)",
        "",
        "| class | jobs | hours on a 16-core node | largest job (4 threads) | peak MiB | basis |",
        "|---|---|---|---|---|---|",
    ]
    for r in cpu:
        if "missing" in r:
            L.append(
                f"| {r['class']} | — | — | — | — | not in this scaling.json: "
                f"{', '.join(r['missing']) or 'no job'} |"
            )
            continue
        L.append(
            f"| {r['class']} | {r['jobs']} | "
            f"{r['seconds_total'] / 3600 / (NODE_CORES // JOB_THREADS):.3g} | "
            f"{r['largest_job_s'] / 60:.1f} min ({r['largest_job']}) | {r['peak_mib']:,.0f} | "
            f"{r['basis']} |"
        )
    L += [
        "",
        "## GPU job classes: scGPT rows (FLOPs)",
        "",
        "| task | method | dataset | jobs | tokens/cell | epochs | PFLOP/job | H100 h/job | "
        "H100 h total | what |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(gpu, key=lambda r: -r["h100_hours"]):
        L.append(
            f"| {r['task']} | {r['method']} | {r['dataset']} | {r['jobs']} | {r['tokens']:,} | "
            f"{r['epochs']} | {r['pflop_per_job']:,.1f} | {r['h100_hours_per_job']:.2f} | "
            f"{r['h100_hours']:.1f} | {r['what']} |"
        )
    L += [
        "",
        "## Not costed here",
        "",
        "- Methods this script does not run (CPU/GPU baselines other than PCA, Harmony, "
        "logistic regression and PCA + kNN): " + ", ".join(unmeasured) + ". `config/paper.yaml` "
        "gives GENIE3 ~15 core-minutes per dataset.",
        "- Downloads (33 files) and the checkpoint fetch; pre-training (`model.source: "
        "checkpoint`) and the transfer series (`transfer` target, not in the default target).",
        "- Figures (19 `task_figures` jobs: UMAPs of each embedding, minutes each).",
    ]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scaling", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.json"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "compute_plan.md"
    )
    args = parser.parse_args(argv)
    from benchmark.io import write_text

    write_text(compute_plan(json.loads(args.scaling.read_text())), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
