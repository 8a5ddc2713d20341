"""Run ``snakemake`` with the repository as its working directory, one run at a time."""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".snakemake" / "tests.lock"  # .snakemake/ is git-ignored


def run_in_repo(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=ROOT, **kwargs)`` while holding a lock on the repository.

    Snakemake keeps its state in the working directory's ``.snakemake`` folder, which the
    first run creates (and an older layout migrates), even with ``--nolock -n``. The suite runs
    on several processes (pytest-xdist), and two test sessions may run at once: the lock lets
    one snakemake at a time use the repository's folder. Runs with their own ``--directory``
    need no lock.
    """
    LOCK.parent.mkdir(exist_ok=True)
    with LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        return subprocess.run(cmd, cwd=ROOT, **kwargs)
