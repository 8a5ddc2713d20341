"""Run one method on one dataset for one seed, with provenance and failure isolation."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from baselines.registry import get_method
from benchmark.io import write_json
from benchmark.tasks import get_task

log = logging.getLogger(__name__)

# Integration scoring (scib-metrics) compiles the same JAX functions in every job; a
# persistent cache shares the compiled code between jobs and runs.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.expanduser("~"), ".cache", "scgpt-bench", "jax"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

TRACKED_PACKAGES = (
    "scgpt-bench",
    "torch",
    "numpy",
    "scipy",
    "anndata",
    "scanpy",
    "scikit-learn",
    "scib-metrics",
    "scvi-tools",
    "harmonypy",
    "cell-gears",
    "scglue",
    "rpy2",
    "snakemake",
)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (if imported) for a deterministic run."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- libraries still draw from the legacy global RNG
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def describe_device() -> str:
    """``"cuda:<gpu name>"`` when torch sees a GPU, else ``"cpu (<n> threads)"``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads() if torch is not None else os.cpu_count()
    return f"cpu ({threads} threads)"


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(
    task: str,
    method: str,
    dataset: str,
    dataset_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    seed: int,
    params: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run ``method`` on ``dataset`` for ``task`` and write output, ``run.json`` and ``scores.json``.

    ``threads`` caps torch's intra-op threads (the job's share of the machine).

    Any exception from the method, its output or its scoring is caught and recorded as
    ``status: failed`` with the error, so that one failing method never stops the others.

    Returns
    -------
    The run record written to ``run.json``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    record: dict[str, Any] = {
        "task": task,
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "params": params,
        "status": "failed",
        "error": None,
    }
    scores: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        spec = get_method(task, method)
        record["label"] = spec.label
        spec.check_params(params)
        task_obj = get_task(task)
        adata = ad.read_h5ad(dataset_path)
        missing = [k for k in task_obj.required_obs if k not in adata.obs]
        if missing:
            raise KeyError(
                f"dataset {dataset!r} ({dataset_path}) lacks obs column(s) {missing} needed by "
                f"task {task!r}; it has {list(adata.obs.columns)}"
            )
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        seed_everything(seed)
        inputs = task_obj.prepare(adata, seed=seed)
        call_params = dict(params)
        if spec.needs_checkpoint:
            if checkpoint is None:
                raise ValueError(f"method {method!r} needs a scGPT checkpoint; none was given")
            call_params["checkpoint"] = str(checkpoint)
        seed_everything(seed)
        method_start = time.perf_counter()
        output = task_obj.call(spec.func, inputs, seed=seed, params=call_params)
        record["method_seconds"] = round(time.perf_counter() - method_start, 3)
        record["outputs"] = [str(p) for p in task_obj.save(output, inputs, outdir)]
        scores = task_obj.score(output, inputs, seed=seed)
        record["status"] = "ok"
    except Exception as err:
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc(limit=-8)
        log.error("%s/%s/%s seed %d failed: %s", task, dataset, method, seed, record["error"])
    record["wall_seconds"] = round(time.perf_counter() - start, 3)
    record["peak_memory_mb"] = round(peak_memory_mb(), 1)
    record["device"] = describe_device()
    record["versions"] = package_versions()
    write_json({"status": record["status"], **scores}, outdir / "scores.json")
    write_json(record, outdir / "run.json")
    return record
