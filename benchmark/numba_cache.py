"""Keep umap-learn's compiled kernels on disk between processes.

Every scanpy neighbour graph (the integration scores, the UMAP figures, the expansion
clusters) runs umap-learn's ``fuzzy_simplicial_set``, whose numba kernels are declared without
``cache=True``: each job process compiled them again, about 7 s of one core, more than most
methods take. Turning numba's on-disk cache on for them (numba's own ``enable_caching``)
compiles them once per installation; results are unchanged (the same machine code).
"""

from __future__ import annotations

import importlib
import logging

__all__ = ["UMAP_KERNEL_MODULES", "cache_umap_kernels"]

log = logging.getLogger(__name__)

UMAP_KERNEL_MODULES = ("umap.umap_", "umap.layouts", "umap.utils")
"""Modules whose uncached numba functions get the on-disk cache."""


def cache_umap_kernels() -> list[str]:
    """Enable numba's on-disk cache for umap-learn's uncached kernels; return their names.

    Call before the first neighbour graph of a process (a kernel compiled earlier in the
    process stays compiled, just not from the cache). Idempotent; a missing umap-learn or an
    unexpected numba version only logs and returns what was enabled.
    """
    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError as err:  # numba without these internals: nothing to cache
        log.debug("numba on-disk cache not enabled: %s", err)
        return []
    enabled = []
    for module_name in UMAP_KERNEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, obj in vars(module).items():
            try:
                is_kernel = isinstance(obj, Dispatcher) and getattr(obj, "__module__", None) == (
                    module_name
                )
            except Exception:  # objects whose class lookup raises (lazy proxies)
                continue
            if is_kernel and isinstance(obj._cache, NullCache):
                obj.enable_caching()
                enabled.append(f"{module_name}.{name}")
    return enabled
