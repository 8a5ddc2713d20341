"""Builtin (demo) datasets: a registry entry names a Python builder (``module:function``) and
its default ``params``; the config's ``datasets.<name>`` overrides them."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anndata as ad

from benchmark.datasets.errors import DatasetError
from benchmark.datasets.schema import DatasetEntry
from benchmark.datasets.standard import looks_like_counts, plain, validate_standard

__all__ = ["build_builtin", "check_builder_params"]

log = logging.getLogger(__name__)


def _import_builder(path: str, name: str) -> Callable[..., Any]:
    module_name, func_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DatasetError(
            f"{name}: builder module {module_name!r} cannot be imported ({err})"
        ) from err
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise DatasetError(
            f"{name}: builder {path!r}: {module_name} has no {func_name!r}"
        ) from None


def check_builder_params(
    name: str, entry: DatasetEntry, params: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Check a builtin entry's builder parameters without building anything.

    The workflow calls this at plan time, so that a mistyped key in the config's
    ``datasets.<name>`` fails a dry run instead of the job (which would first remove the
    dataset's finished standard file).

    Returns
    -------
    builder, merged
        The builder function and the entry's ``params`` overridden by ``params``.

    Raises
    ------
    DatasetError
        If the entry is not builtin, a key is not a parameter of the builder (naming it and
        the accepted ones) or a value's type differs from the type of the builder's default.
    """
    if entry.kind != "builtin" or entry.builder is None:
        if params:
            raise DatasetError(
                f"{name}: config datasets.{name} sets builder parameters {sorted(params)}, "
                f"but {name} is a {entry.kind} entry, not builtin"
            )
        raise DatasetError(f"{name}: not a builtin entry (kind {entry.kind!r})")
    builder = _import_builder(entry.builder, name)
    merged = {**entry.params, **dict(params or {})}
    signature = inspect.signature(builder)
    accepts_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    accepted = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(k for k in merged if k not in accepted)
    if unknown and not accepts_any:
        raise DatasetError(
            f"{name}: builder {entry.builder} does not accept parameter(s) {unknown}; "
            f"accepted: {list(accepted)}"
        )
    for key, value in merged.items():
        default = accepted[key].default if key in accepted else inspect.Parameter.empty
        if not _same_kind(value, default):
            raise DatasetError(
                f"{name}: parameter {key}={value!r} of builder {entry.builder} should be of "
                f"type {type(default).__name__} like its default {default!r}"
            )
    return builder, merged


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` may replace ``default`` (ints for floats; anything for None defaults)."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, int | str):
        return isinstance(value, type(default))
    return True


def build_builtin(
    name: str, entry: DatasetEntry, params: Mapping[str, Any] | None = None
) -> ad.AnnData:
    """Make a builtin (demo) dataset with its builder and check it meets the standard.

    Parameters
    ----------
    name
        Dataset name (for messages).
    entry
        Its registry entry (``builder``, default ``params``).
    params
        Overrides of the entry's ``params`` (the config's ``datasets.<name>``).

    Raises
    ------
    DatasetError
        If the entry is not builtin, a parameter is not accepted by the builder (naming it and
        the accepted ones), the builder does not return an AnnData, or the result fails
        :func:`validate_standard`.
    """
    builder, merged = check_builder_params(name, entry, params)
    log.info("%s: building with %s(%s)", name, entry.builder, merged)
    adata = builder(**merged)
    if not isinstance(adata, ad.AnnData):
        raise DatasetError(
            f"{name}: builder {entry.builder} returned {type(adata).__name__}, expected AnnData"
        )
    x_kind = "counts" if looks_like_counts(adata.X) else "as built"
    adata.uns["standardisation"] = plain(
        {
            "dataset": name,
            "source": "builtin",
            "builder": entry.builder,
            "params": merged,
            "x": x_kind,
        }
    )
    return validate_standard(
        adata, name, required_obs=entry.standard_obs, required_var=entry.required_var
    )
