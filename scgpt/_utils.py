"""Small shared helpers: logging, atomic writes, devices, autocast and seeding.

``scgpt`` is a standalone library, so it carries its own atomic writers instead of importing
the benchmark harness (the dependency direction is ``benchmark -> scgpt``, never back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("scgpt")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it onto ``path`` if the block succeeds.

    Parameters
    ----------
    path
        Final file name. Its folder is created if needed.

    Yields
    ------
    Path
        Temporary file (same folder, same suffix) to write to.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    # mkstemp makes the file private (0600); the result gets the usual permissions instead,
    # so that collaborators (and a cluster's other accounts) can read the results.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file + ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def torch_save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically so that a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when available and CPU otherwise.

    Parameters
    ----------
    device
        ``None`` / ``"auto"`` for automatic choice, or anything ``torch.device`` accepts.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_context(
    device: torch.device, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """Autocast context for ``device``: bf16 on CUDA (``precision="auto"``), fp32 elsewhere.

    Parameters
    ----------
    device
        Device the computation runs on.
    precision
        ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
    """
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ValueError(f"precision must be one of auto, bf16, fp16, fp32; got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    # the legacy global generator is seeded too, for user code and libraries that rely on it
    np.random.seed(seed % (2**32))  # noqa: NPY002
    torch.manual_seed(seed)


def cell_rng(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator determined by ``seed`` and integer ``keys`` (e.g. epoch, cell index).

    Deriving one generator per cell makes every random choice (gene sampling, binning ties,
    masking) reproducible from the cell's position alone, which is what lets a resumed run
    continue exactly where it stopped.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), *map(int, keys)]))


def content_rng(
    seed: int, keys: np.ndarray, values: np.ndarray, *extra: int
) -> np.random.Generator:
    """A NumPy generator determined by ``seed``, a cell's own ``keys`` and ``values`` and ``extra``.

    ``keys`` (gene ids or column indices) and ``values`` are hashed (as int64 / float64, so
    float32 and float64 copies of a cell agree). Inference draws from it so that a cell's
    random choices (binning ties, down-sampling) depend on the cell alone: not on its position
    in the data, the other cells, how the data is chunked or batched (:func:`cell_rng` keys
    on the position instead, which a resumable training run needs).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(keys, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    words = np.frombuffer(digest.digest(), dtype="<u4").tolist()
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) % (2**63), *map(int, extra), *words])
    )


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
