"""The one bridge from Python to R (rpy2) that every R-based method uses.

- rpy2 is imported lazily, inside the functions, so that importing :mod:`baselines` never
  needs R; a missing R, rpy2 or R package raises :class:`RUnavailableError` saying what is
  missing and how to install it.
- Matrices go to R as the parts of a sparse matrix (no densifying) and the names are set in
  R; see :func:`sparse_parts`.
- R errors (``RRuntimeError``) come back as :class:`RError` carrying R's message.
- Results come back with their cell names and are re-aligned to the caller's order by name,
  never by position (:func:`align_by_names`): Seurat reorders cells.

Facts checked on this project's machines: Debian R 4.2 + Seurat 4.3 work with rpy2 3.5.17
(rpy2 3.6 does not load against R 4.2).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

_SOURCED: set[Path] = set()
_LOCK = threading.Lock()


class RUnavailableError(RuntimeError):
    """R, rpy2 or a required R package is not installed."""


class RError(RuntimeError):
    """An R function failed; ``r_message`` is R's own error message."""

    def __init__(self, function: str, r_message: str) -> None:
        self.function = function
        self.r_message = r_message.strip()
        super().__init__(f"R function {function}() failed: {self.r_message}")


@functools.cache
def _import_rpy2() -> Any:
    """Import and initialise rpy2's robjects, or raise :class:`RUnavailableError`."""
    try:
        with warnings.catch_warnings():
            # rpy2 warns about R's reticulate / environment on start-up; harmless here.
            warnings.simplefilter("ignore")
            import rpy2.robjects as ro
    except ImportError as err:
        raise RUnavailableError(
            f"rpy2 is not installed ({err}); R methods need the 'r' extra: "
            "pip install 'scgpt-bench[r]' (rpy2==3.5.17) and R >= 4.2 with Seurat 4"
        ) from err
    except Exception as err:  # rpy2 raises various errors when libR cannot be loaded
        raise RUnavailableError(
            f"rpy2 could not start R ({type(err).__name__}: {err}); is R installed and on PATH "
            f"(R_HOME={os.environ.get('R_HOME', '<unset>')})?"
        ) from err
    return ro


def r_available(packages: Sequence[str] = ("Seurat",)) -> tuple[bool, str]:
    """Whether R, rpy2 and ``packages`` are usable; the reason when they are not.

    Returns
    -------
    ``(True, "")`` or ``(False, "<what is missing>")``; never raises.
    """
    try:
        require_r(packages)
    except RUnavailableError as err:
        return False, str(err)
    return True, ""


def require_r(packages: Sequence[str] = ("Seurat",)) -> None:
    """Raise :class:`RUnavailableError` unless R, rpy2 and every R package in ``packages`` load."""
    ro = _import_rpy2()
    missing = [pkg for pkg in packages if not _has_r_package(ro, pkg)]
    if missing:
        raise RUnavailableError(
            f"R package(s) {missing} not installed in R at {ro.r('R.home()')[0]}; install with "
            "install.packages(...) or apt-get install r-cran-seurat (Seurat 4.3 is tested)"
        )


@functools.cache
def _has_r_package(ro: Any, package: str) -> bool:
    # requireNamespace() returns invisibly, which rpy2 turns into None: wrap it.
    found = ro.r(f'as.logical(suppressWarnings(requireNamespace("{package}", quietly = TRUE)))')
    return bool(found[0])


def source_r(path: str | os.PathLike[str]) -> None:
    """``source()`` an R file once per process (its functions land in R's global env)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"R script {path} does not exist")
    ro = _import_rpy2()
    with _LOCK:
        if path in _SOURCED:
            return
        _call(ro, "source", ro.r["source"], ro.StrVector([str(path)]))
        _SOURCED.add(path)


def sparse_parts(matrix: Any) -> dict[str, np.ndarray]:
    """A cells x genes matrix as the parts of the genes x cells CSC matrix R builds.

    A CSR matrix of cells x genes is, read column-wise, the CSC matrix of its transpose, so
    no copy of the values is needed. Returns ``{"i": row (gene) indices, 0-based,
    "p": column pointers, "x": values}`` for ``Matrix::sparseMatrix(..., index1 = FALSE)``.
    """
    csr = sp.csr_matrix(matrix)
    csr.sum_duplicates()
    csr.sort_indices()
    return {
        "i": csr.indices.astype(np.int32, copy=False),
        "p": csr.indptr.astype(np.int32, copy=False),
        "x": csr.data.astype(np.float64, copy=False),
    }


def call_r(function: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call an R function by name (defined by :func:`source_r` or any attached package).

    Numpy arrays convert to R vectors/matrices; ``list``/``tuple`` of ``str`` to character
    vectors; ``bool``/``int``/``float``/``str`` to length-1 vectors. Keyword names use
    Python spelling and are passed as is (use R-valid names).

    Returns
    -------
    A dict of the R list's elements as numpy arrays (the R function must return a named
    list).

    Raises
    ------
    RError
        With R's message when R signals an error.
    """
    ro = _import_rpy2()
    from rpy2.robjects import default_converter, numpy2ri
    from rpy2.robjects.conversion import localconverter

    r_args = [_to_r(ro, a) for a in args]
    r_kwargs = {k: _to_r(ro, v) for k, v in kwargs.items()}
    with localconverter(default_converter + numpy2ri.converter):
        try:
            func = ro.globalenv.find(function)  # global env, then attached packages
        except (KeyError, LookupError) as err:
            raise RError(function, "no such R function (source_r its script first)") from err
        result = _call(ro, function, func, *r_args, **r_kwargs)
    try:
        return {str(k): _from_r(v) for k, v in result.items()}
    except AttributeError as err:
        raise RError(function, f"returned {type(result).__name__}, expected a named list") from err


def _call(ro: Any, name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    from rpy2.rinterface_lib.embedded import RRuntimeError

    try:
        return func(*args, **kwargs)
    except RRuntimeError as err:
        message = str(err)
        try:  # R's condition message is more precise than the wrapped text when present
            last = ro.r("geterrmessage()")[0]
            if last and last.strip():
                message = last
        except Exception:
            pass
        raise RError(name, message) from None


def _to_r(ro: Any, value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return ro.BoolVector([bool(value)])
    if isinstance(value, int | np.integer):
        return ro.IntVector([int(value)])
    if isinstance(value, float | np.floating):
        return ro.FloatVector([float(value)])
    if isinstance(value, str):
        return ro.StrVector([value])
    if isinstance(value, list | tuple) or (
        isinstance(value, np.ndarray) and value.dtype.kind in "OUS"
    ):
        return ro.StrVector([str(v) for v in value])
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":
            return ro.IntVector(value.astype(np.int32, copy=False).ravel())
        if value.dtype.kind == "f":
            if value.ndim == 1:
                return ro.FloatVector(value.astype(np.float64, copy=False))
            return ro.r.matrix(
                ro.FloatVector(value.astype(np.float64).ravel(order="F")),
                nrow=value.shape[0],
                ncol=value.shape[1],
            )
    if value is None:
        return ro.NULL
    raise TypeError(f"cannot pass {type(value).__name__} to R")


def _from_r(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind in "OUS":
        return arr.astype(str)
    return arr


def align_by_names(
    values: np.ndarray, names: Sequence[str], expected: Sequence[str], *, what: str = "cells"
) -> np.ndarray:
    """Reorder the rows of ``values`` (named ``names``) into the order of ``expected``.

    Raises ``ValueError`` naming missing or unexpected names (with examples) when the two
    sets differ, or when ``names`` has duplicates.
    """
    names = [str(n) for n in names]
    expected = [str(n) for n in expected]
    if len(names) != values.shape[0]:
        raise ValueError(f"R returned {values.shape[0]} rows but {len(names)} {what} names")
    position = {name: i for i, name in enumerate(names)}
    if len(position) != len(names):
        raise ValueError(f"R returned duplicated {what} names")
    missing = [n for n in expected if n not in position]
    extra = sorted(set(names) - set(expected))
    if missing or extra:
        raise ValueError(
            f"R returned {what} that do not match the input: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); R may have "
            "renamed them"
        )
    return values[np.fromiter((position[n] for n in expected), dtype=np.int64, count=len(expected))]
