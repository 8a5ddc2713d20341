"""Logging for workflow scripts: everything a job prints goes to its rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def job_logging(
    log_path: str | os.PathLike[str] | None, *, level: int = logging.INFO
) -> Iterator[None]:
    """Send ``logging``, ``stdout`` and ``stderr`` of this job to ``log_path``.

    Libraries such as GEARS and scvi-tools print rather than log; capturing the streams keeps
    their output with the job. An exception leaving the block is written to the file with its
    traceback before it propagates. Without a path, logging goes to stderr.
    """
    if log_path is None:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        yield
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                yield
            except BaseException as err:
                # Snakemake points the user at this file: the reason must be in it.
                logging.getLogger("benchmark.job").error(
                    "the job failed: %s: %s", type(err).__name__, err, exc_info=True
                )
                raise
            finally:
                root.removeHandler(handler)
