"""The method registry: every compared method registers one function per task.

A method module in :mod:`baselines` decorates its task functions with :func:`register`;
the harness finds them with :func:`get_method`. Heavy imports (torch, rpy2, scvi) belong
inside the functions so that discovering the registry stays fast and a missing optional
dependency only fails the method that needs it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TASKS: tuple[str, ...] = (
    "annotation",
    "reference_mapping",
    "integration",
    "multiomics",
    "perturbation",
    "reverse_perturbation",
    "perturbation_expansion",
    "grn",
)
"""Task names a method can register for (the keys of ``tasks:`` in the config)."""

ENVS: tuple[str, ...] = ("base", "r", "gears", "glue")
"""Environment groups; each has an ``envs/<name>.yaml`` conda file."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes
    ----------
    task
        Task the function solves (one of :data:`TASKS`).
    name
        Config key of the method, e.g. ``"harmony"``.
    func
        The task function (see ``DESIGN.md``, method contract).
    label
        Display name used in tables; matches the ``method`` column of the paper's tables.
    env
        Environment group the rule runs in (one of :data:`ENVS`).
    needs_checkpoint
        Whether the harness passes ``checkpoint=<folder of a pre-trained scGPT model>``.
    """

    task: str
    name: str
    func: Callable[..., Any]
    label: str
    env: str = "base"
    needs_checkpoint: bool = False
    description: str = field(default="", compare=False)

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters of the function and their defaults."""
        sig = inspect.signature(self.func)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("seed", "checkpoint")
        }

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming any parameter the function does not accept."""
        sig = inspect.signature(self.func)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            return
        unknown = sorted(set(params) - set(self.parameters()))
        if unknown:
            raise TypeError(
                f"method {self.name!r} ({self.task}) has no parameter(s) {unknown}; "
                f"it accepts {sorted(self.parameters())}"
            )


_REGISTRY: dict[tuple[str, str], MethodSpec] = {}
_DISCOVERED = False


def register(
    task: str,
    name: str,
    *,
    label: str | None = None,
    env: str = "base",
    needs_checkpoint: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func`` as method ``name`` for ``task``.

    Examples
    --------
    >>> @register("integration", "my_pca", label="My PCA")  # doctest: +SKIP
    ... def my_pca(adata, *, seed, n_comps=30):
    ...     ...
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} for method {name!r}; tasks are {list(TASKS)}")
    if env not in ENVS:
        raise ValueError(f"unknown env {env!r} for method {name!r}; envs are {list(ENVS)}")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        key = (task, name)
        existing = _REGISTRY.get(key)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(
                f"method {name!r} is registered twice for {task!r}: "
                f"{existing.func.__module__}.{existing.func.__qualname__} and "
                f"{func.__module__}.{func.__qualname__}"
            )
        _REGISTRY[key] = MethodSpec(
            task=task,
            name=name,
            func=func,
            label=label or name,
            env=env,
            needs_checkpoint=needs_checkpoint,
            description=(inspect.getdoc(func) or "").split("\n")[0],
        )
        return func

    return decorator


METHOD_MODULES_ENV = "SCGPT_BENCH_METHOD_MODULES"


def discover() -> None:
    """Import every module of :mod:`baselines`, then those named in ``$SCGPT_BENCH_METHOD_MODULES``.

    The environment variable (comma-separated importable module names) registers methods
    that live outside this repository; it reaches the child process each job runs its method
    in, which a registration made at run time in the parent would not.
    """
    global _DISCOVERED
    if _DISCOVERED:
        return
    import baselines

    for info in pkgutil.iter_modules(baselines.__path__):
        if info.name.startswith("_") or info.name == "registry":
            continue
        importlib.import_module(f"baselines.{info.name}")
    for name in filter(None, os.environ.get(METHOD_MODULES_ENV, "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as err:
            raise ImportError(
                f"${METHOD_MODULES_ENV} names module {name.strip()!r}, which cannot be "
                f"imported: {err}"
            ) from err
    _DISCOVERED = True


def get_method(task: str, name: str) -> MethodSpec:
    """Return the registered method, or raise ``KeyError`` listing the available ones."""
    discover()
    try:
        return _REGISTRY[(task, name)]
    except KeyError:
        available = sorted(n for t, n in _REGISTRY if t == task)
        raise KeyError(
            f"no method {name!r} registered for task {task!r}; available: {available}. "
            "A new method is a module in baselines/ that uses @register(task, name)."
        ) from None


def list_methods(task: str | None = None) -> list[MethodSpec]:
    """All registered methods, optionally of one task, sorted by task and name."""
    discover()
    return sorted(
        (s for s in _REGISTRY.values() if task is None or s.task == task),
        key=lambda s: (s.task, s.name),
    )
