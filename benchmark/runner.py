"""Run one method on one dataset for one seed, with provenance and failure isolation."""

from __future__ import annotations

import argparse
import errno
import importlib.abc
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmark.failed_datasets import FailedDatasetError, check_standard_file
from benchmark.io import DiskFullError, disk_full_error, free_space, is_disk_full, write_json
from benchmark.tasks import get_task
from contract.registry import get_method

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
    "scmomat",
    "rpy2",
    "snakemake",
)


# Thread pools a method's libraries size from the environment at import: set to the job's
# threads in the child, so that no library (numba in scanpy, OpenMP in torch) grows past the
# job's share or resets another's pool (numba's parallel functions reset the OpenMP threads
# torch uses).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)

# Loggers whose warnings a result's reader must see (e.g. low vocabulary coverage):
# copied into run.json and flagged in the tables.
WARNING_LOGGERS = ("scgpt", "baselines", "benchmark")
MAX_WARNINGS = 20


class _WarningCollector(logging.Handler):
    """Keeps the distinct WARNING-or-worse messages logged while a method runs."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and record.name == __name__:
            return  # the runner's own failure line repeats run.json's error
        message = f"{record.name}: {record.getMessage()}"
        if message not in self.messages and len(self.messages) < MAX_WARNINGS:
            self.messages.append(message)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch for a deterministic run.

    torch is seeded now if imported, else the moment it is first imported
    (:class:`_SeedTorchOnImport`): importing it here would cost every job that never uses it
    ~2 s (the scoring-only baselines, most of the demo's jobs).
    """
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)  # noqa: NPY002 -- libraries still draw from the legacy global RNG
    os.environ["PYTHONHASHSEED"] = str(seed)
    for finder in [f for f in sys.meta_path if isinstance(f, _SeedTorchOnImport)]:
        sys.meta_path.remove(finder)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    else:
        sys.meta_path.insert(0, _SeedTorchOnImport(seed))


class _SeedTorchOnImport(importlib.abc.MetaPathFinder):
    """Seeds torch right after its first import, then leaves ``sys.meta_path``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module
        seed = self.seed

        def exec_then_seed(module: Any) -> None:
            execute(module)
            module.manual_seed(seed)

        spec.loader.exec_module = exec_then_seed  # type: ignore[method-assign]
        return spec


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
    if torch is not None:
        threads = torch.get_num_threads()
    else:  # a method without torch: the pool size the job set (run_method), else the machine's
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
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
    metric_options: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``method`` on ``dataset`` for ``task`` and write output, ``run.json`` and ``scores.json``.

    ``threads`` caps torch's intra-op threads (the job's share of the machine);
    ``metric_options`` are the config's ``tasks.<task>.metrics`` (scoring choices);
    ``resources`` (the job's ``mem_mb``, ``runtime``, ...) are recorded in ``run.json``: the
    workflow redoes a failed run when they change.

    Any exception from the method, its output or its scoring is caught and recorded as
    ``status: failed`` with the error, so that one failing method never stops the others.
    A dataset whose standardisation failed is such an error. A full disk is not: it is raised
    as :class:`~benchmark.io.DiskFullError` naming the file, nothing is recorded, and the
    next run redoes the job.

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
        "metric_options": dict(metric_options or {}),
        "status": "failed",
        "error": None,
    }
    if resources is not None:
        record["resources"] = dict(resources)
    scores: dict[str, Any] = {}
    start = time.perf_counter()
    # Where a run's time goes besides the method (reading, task preparation, scoring):
    # benchmarks/demo_time.py sums these over a demo run.
    stages: dict[str, float] = {}
    lap = _Lap(stages)
    warnings_seen = _WarningCollector()
    for name in WARNING_LOGGERS:
        logging.getLogger(name).addHandler(warnings_seen)
    try:
        spec = get_method(task, method)
        record["label"] = spec.label
        spec.check_params(params)
        task_obj = get_task(task).with_metric_options(metric_options)
        import anndata as ad

        check_standard_file(dataset_path, dataset)  # a recorded standardisation failure
        adata = ad.read_h5ad(dataset_path)
        lap("load")
        missing = [k for k in task_obj.required_obs if k not in adata.obs]
        if missing:
            raise KeyError(
                f"dataset {dataset!r} ({dataset_path}) lacks obs column(s) {missing} needed by "
                f"task {task!r}; it has {list(adata.obs.columns)}"
            )
        if threads is not None and (
            "torch" in sys.modules or os.environ.get("OMP_NUM_THREADS") != str(threads)
        ):
            # The isolated child's environment already sizes every pool (torch included, when
            # a method imports it: ~1.7 s a job saved); in this process it may not. The
            # environment is never changed here: numba refuses a NUMBA_NUM_THREADS that
            # changes after its threads started.
            import torch

            torch.set_num_threads(threads)
        seed_everything(seed)
        inputs = task_obj.prepare(adata, seed=seed)
        lap("prepare")
        call_params = dict(params)
        if spec.needs_checkpoint:
            if checkpoint is None:
                raise ValueError(f"method {method!r} needs a scGPT checkpoint; none was given")
            call_params["checkpoint"] = str(checkpoint)
            # What the model could read of these genes: its own vocabulary and the released
            # models' (a demo checkpoint pre-trained on simulated genes knows few real ones).
            from benchmark.coverage import vocabulary_coverage

            record["vocabulary"] = vocabulary_coverage(adata, checkpoint)
        seed_everything(seed)
        lap("setup")
        method_start = time.perf_counter()
        output = task_obj.call(spec.func, inputs, seed=seed, params=call_params)
        record["method_seconds"] = round(time.perf_counter() - method_start, 3)
        lap("method")
        record["outputs"] = [str(p) for p in task_obj.save(output, inputs, outdir)]
        lap("save")
        scores = task_obj.score(output, inputs, seed=seed)
        lap("score")
        if scores.get("undefined"):
            # Scores the data leave undefined (NaN, e.g. bio-conservation of one cell type),
            # each with its reason: the table shows them beside the row's status.
            record["undefined"] = scores["undefined"]
            log.info("scores undefined for these data (NaN): %s", scores["undefined"])
        record["status"] = "ok"
    except Exception as err:
        if isinstance(err, DiskFullError):
            raise
        # A method's own write (not through benchmark.io); a recorded standardisation
        # failure only quotes its error.
        if is_disk_full(err) and not isinstance(err, FailedDatasetError):
            raise disk_full_error(getattr(err, "filename", None) or outdir, err) from err
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc(limit=-8)
        log.error("%s/%s/%s seed %d failed: %s", task, dataset, method, seed, record["error"])
    finally:
        for name in WARNING_LOGGERS:
            logging.getLogger(name).removeHandler(warnings_seen)
    record["warnings"] = warnings_seen.messages
    record["wall_seconds"] = round(time.perf_counter() - start, 3)
    record["stage_seconds"] = stages
    record["peak_memory_mb"] = round(peak_memory_mb(), 1)
    record["device"] = describe_device()
    record["versions"] = package_versions()
    write_json({"status": record["status"], **scores}, outdir / "scores.json")
    write_json(record, outdir / "run.json")
    return record


class _Lap:
    """Records the seconds since the previous lap under a stage name (rounded to ms)."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages = stages
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self.last, 3)
        self.last = now


RUN_FILES = ("run.json", "scores.json")

# The child's exit status when it could not write its results for lack of disk space.
EXIT_DISK_FULL = errno.ENOSPC


def run_method_isolated(
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
    metric_options: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """:func:`run_method` in a child process, so that even a killed method becomes a failed row.

    A method that is killed from outside (the kernel's out-of-memory killer, ``SIGKILL``, a
    scheduler's time limit) cannot record its own failure. The child runs the method; this
    parent, which holds no data, waits for it and writes ``run.json`` / ``scores.json`` with
    ``status: failed``, the signal and the child's peak memory when the child died without
    writing them. ``SIGTERM`` sent to the parent (SLURM at its time limit, ``scancel``) is
    passed on to the child and recorded the same way. ``SIGINT`` (Ctrl-C) is an interruption,
    not a result: the child is stopped, nothing is written and the job fails, so the next
    run redoes it. So is a full disk: :class:`~benchmark.io.DiskFullError` is raised, naming
    the run's folder and its free space (the child's log names the file).

    Parameters
    ----------
    log_path
        File that receives the child's output (appended); ``None``: this process's streams.

    Returns
    -------
    The run record in ``run.json``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:  # a stale record must never stand in for this run's
        (outdir / name).unlink(missing_ok=True)
    spec = {
        "task": task,
        "method": method,
        "dataset": dataset,
        "dataset_path": str(dataset_path),
        "outdir": str(outdir),
        "seed": seed,
        "params": params or {},
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "threads": threads,
        "metric_options": metric_options or {},
        "resources": resources,
    }
    command = [sys.executable, "-m", "benchmark.runner", json.dumps(spec)]
    log_file = open(log_path, "a", buffering=1) if log_path is not None else None
    received: list[int] = []
    start = time.perf_counter()
    try:
        env = dict(os.environ)
        if threads is not None:
            env.update({name: str(threads) for name in THREAD_ENV_VARS})
        child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)

        def forward(signum: int, _frame: Any) -> None:
            received.append(signum)
            child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            returncode = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        if log_file is not None:
            log_file.close()
    if signal.SIGINT in received:
        raise KeyboardInterrupt(f"{task}/{dataset}/{method} seed {seed} interrupted")
    if returncode == EXIT_DISK_FULL:
        for name in RUN_FILES:  # whatever the child managed to write is no result
            (outdir / name).unlink(missing_ok=True)
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device: {task}/{dataset}/{method} seed {seed} could not write "
            f"its results in {outdir} ({free_space(outdir)} free now; "
            f"{'the file is named in ' + str(log_path) if log_path else 'see the error above'})"
            "; nothing was recorded: free space, then run again",
        )
    if returncode == 0 and (outdir / "run.json").is_file():
        record = json.loads((outdir / "run.json").read_text())
        # The child's whole life, its imports (numpy, anndata, scanpy, JAX: seconds a job)
        # included, which its own wall_seconds cannot see.
        record["process_seconds"] = round(time.perf_counter() - start, 3)
        write_json(record, outdir / "run.json")
        return record
    reason = describe_exit(returncode, received)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record: dict[str, Any] = {
        "task": task,
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "params": params or {},
        **({"resources": dict(resources)} if resources is not None else {}),
        "status": "failed",
        "error": f"{reason} (peak memory {peak:.0f} MiB)",
        "exit": {"returncode": returncode, "signals_received": received},
        "wall_seconds": round(time.perf_counter() - start, 3),
        "peak_memory_mb": round(peak, 1),
        "device": describe_device(),
        "versions": package_versions(),
    }
    log.error("%s/%s/%s seed %d failed: %s", task, dataset, method, seed, record["error"])
    for name in RUN_FILES:  # the child may have written one before it died
        (outdir / name).unlink(missing_ok=True)
    write_json({"status": "failed"}, outdir / "scores.json")
    write_json(record, outdir / "run.json")
    return record


def describe_exit(returncode: int, received: list[int]) -> str:
    """Why a method's process ended without a result, in words a user can act on.

    The advice to raise a resource holds because the workflow redoes a failed run when its
    method's ``mem_mb``, ``runtime`` or ``gpu`` change
    (:meth:`benchmark.workflow.WorkflowPlan.retry_resources`).
    """
    if signal.SIGTERM in received:
        return (
            "terminated by SIGTERM sent to the job (a scheduler's time limit or a cancel); "
            "raise the method's `runtime` under resources: in the config (the next run "
            "redoes this run)"
        )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if -returncode == signal.SIGKILL:
            return (
                f"killed by {name} (signal {-returncode}): most often the out-of-memory killer "
                "or a scheduler's memory limit; raise the method's `mem_mb` under resources: "
                "in the config (the next run redoes this run)"
            )
        return f"killed by {name} (signal {-returncode})"
    return f"the method's process exited with code {returncode} without writing run.json"


def _main(argv: list[str] | None = None) -> None:
    """Child side of :func:`run_method_isolated`: one JSON argument with the job."""
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job", help="JSON object with run_method's arguments")
    job = json.loads(parser.parse_args(argv).job)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    positional = [job.pop(k) for k in ("task", "method", "dataset", "dataset_path", "outdir")]
    try:
        with threadpool_limits(job["threads"]):
            run_method(*positional, **job)
    except DiskFullError as err:
        # The parent cannot write a failure record on a full disk either, and should not: a
        # full disk is no result. Its own exit status tells it what happened.
        log.error("%s", err)
        sys.exit(EXIT_DISK_FULL)


if __name__ == "__main__":
    _main()
