"""Annotation methods that live outside baselines/, for tests of failure handling.

They reach the process a job runs its method in through ``$SCGPT_BENCH_METHOD_MODULES``
(``tests._plugin_methods``), as a user's own method module would. :func:`broken_dataset` is a
builtin-dataset builder for a test registry (``builder: tests._plugin_methods:broken_dataset``).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import numpy as np

from contract.registry import register


@register("annotation", "majority_label", label="Majority label")
def majority_label(reference, query, *, seed):
    """Predict the reference's most frequent label for every query cell."""
    labels = reference.obs["cell_type"].astype(str)
    return np.full(query.n_obs, labels.value_counts().index[0], dtype=object)


@register("annotation", "killed", label="Killed")
def killed(reference, query, *, seed):
    """Die the way the out-of-memory killer ends a process."""
    os.kill(os.getpid(), signal.SIGKILL)


@register("annotation", "sleeper", label="Sleeper")
def sleeper(reference, query, *, seed):
    """Say it started (``$SLEEPER_STARTED``), then outlive any test's patience."""
    Path(os.environ["SLEEPER_STARTED"]).touch()
    time.sleep(60)


@register("annotation", "thread_probe", label="Thread probe")
def thread_probe(reference, query, *, seed):
    """Fail unless every thread pool was sized to the job: env, numba and torch agree."""
    import numba
    import torch

    seen = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    seen["numba"] = str(numba.get_num_threads())
    seen["torch"] = str(torch.get_num_threads())
    if set(seen.values()) != {"1"}:
        raise RuntimeError(f"thread pools not sized to the job's 1 thread: {seen}")
    return majority_label(reference, query, seed=seed)


@register("annotation", "disk_full", label="Disk full")
def disk_full(reference, query, *, seed):
    """Fail the way a write to a full disk does when the writer is not benchmark.io's."""
    raise OSError(errno.ENOSPC, "No space left on device", "scratch/model.ckpt")


def broken_dataset(**params):
    """A builtin dataset builder that fails, as a corrupt or misdescribed source does."""
    raise ValueError("column 'celltype' not found in obs (simulated broken source)")
