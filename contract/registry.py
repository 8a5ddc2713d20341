"""The method registry: every compared method registers one function per task.

A method module (in :mod:`baselines`, or any module named in ``$SCGPT_BENCH_METHOD_MODULES``)
decorates its task functions with :func:`register`, which checks the function against its
task's contract (:data:`contract.tasks.TASK_CONTRACTS`); the harness finds them with
:func:`get_method`. Heavy imports (torch, rpy2, scvi) belong inside the functions so that
discovering the registry stays fast and a missing optional dependency only fails the method
that needs it.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import os
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from contract.tasks import ENVS, TASK_CONTRACTS, TASKS

__all__ = [
    "ENVS",
    "TASKS",
    "MethodSpec",
    "ParameterTypeError",
    "describe_type",
    "discover",
    "get_method",
    "list_methods",
    "register",
    "value_matches",
]


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
        The task function the harness calls (see ``DESIGN.md``, method contract): the
        registered function, or, when ``bound`` is not empty, a wrapper that calls it with
        those keyword arguments and whose signature lacks them (:attr:`function` is the
        registered function itself).
    label
        Display name used in tables; matches the ``method`` column of the paper's tables.
    env
        Environment group the rule runs in (one of :data:`ENVS`).
    needs_checkpoint
        Whether the harness passes ``checkpoint=<folder of a pre-trained scGPT model>``.
    description
        First line of the function's docstring.
    bound
        Keyword arguments fixed by the registration (``register(..., bind=...)``): passed on
        every call, not parameters the config may set.
    """

    task: str
    name: str
    func: Callable[..., Any]
    label: str
    env: str = "base"
    needs_checkpoint: bool = False
    description: str = field(default="", compare=False)
    bound: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def function(self) -> Callable[..., Any]:
        """The registered function, before :attr:`bound` is applied."""
        return self.func.__wrapped__ if self.bound else self.func  # type: ignore[attr-defined]

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters the config may set, and their defaults (``bound`` ones excluded)."""
        sig = inspect.signature(self.func)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("seed", "checkpoint")
        }

    def check_params(self, params: dict[str, Any]) -> None:
        """Check parameter names, then each value against the function's type annotation.

        Raises
        ------
        TypeError
            Naming any parameter the function does not accept.
        ParameterTypeError
            For a value that does not match its annotation (e.g. the string ``"false"`` for
            a ``bool``), naming the parameter, the value and the expected type.
        """
        fixed = sorted(set(params) & set(self.bound))
        if fixed:
            raise TypeError(
                f"method {self.name!r} ({self.task}) fixes {', '.join(fixed)} in its "
                f"registration ({', '.join(f'{n}={self.bound[n]!r}' for n in fixed)}); "
                f"it cannot be set. Parameters: {sorted(self.parameters())}"
            )
        sig = inspect.signature(self.func)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            unknown = sorted(set(params) - set(self.parameters()))
            if unknown:
                raise TypeError(
                    f"method {self.name!r} ({self.task}) has no parameter(s) {unknown}; "
                    f"it accepts {sorted(self.parameters())}"
                )
        for name, value in params.items():
            parameter = sig.parameters.get(name)
            if parameter is None:
                continue  # taken by **kwargs: nothing to check against
            annotation = _resolve_annotation(self.function, parameter.annotation)
            if annotation is not None and not value_matches(value, annotation):
                raise ParameterTypeError(self, name, value, annotation)


class ParameterTypeError(TypeError):
    """A method parameter's value does not match the type its function declares.

    Attributes
    ----------
    parameter
        The parameter's name.
    value
        The value given.
    expected
        The annotation, in words (e.g. ``"int | None"``).
    hint
        How to write the value, when it is a string that reads as a number or a boolean
        (else ``""``).
    """

    def __init__(self, spec: MethodSpec, parameter: str, value: Any, annotation: Any) -> None:
        self.parameter = parameter
        self.value = value
        self.expected = describe_type(annotation)
        hint = ""
        if isinstance(value, str) and _is_number_text(value):
            # YAML 1.1 reads 1e-4 (no dot) as a string; a quoted number is a string too.
            hint = " (a string: write numbers unquoted, exponents with a dot, e.g. 1.0e-4)"
        elif isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            hint = " (a string: write true or false unquoted)"
        self.hint = hint
        super().__init__(
            f"method {spec.name!r} ({spec.task}) parameter {parameter}: {value!r} is "
            f"{type(value).__name__}, expected {self.expected}{hint}"
        )


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _resolve_annotation(func: Callable[..., Any], annotation: Any) -> Any:
    """The annotation as a type, or ``None`` when there is none or it cannot be evaluated.

    Modules use ``from __future__ import annotations``, so annotations are strings; each one
    is evaluated on its own in the function's module, so that one name imported only for
    type checking (``ad.AnnData``) does not stop the others from being checked.
    """
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            # What typing.get_type_hints does, one annotation at a time: the text is the
            # registered function's own source, never a config value.
            return eval(annotation, getattr(func, "__globals__", {}))
        except Exception:  # a name imported only for type checking: leave it unchecked
            return None
    return annotation


def value_matches(value: Any, annotation: Any) -> bool:
    """Whether a config value (YAML: None, bool, int, float, str, list, dict) fits ``annotation``.

    Strict where a YAML value would silently change meaning: ``bool`` takes only true/false
    (the string ``"false"`` is truthy), ``int`` takes no bool and no float, ``float`` takes
    an int (YAML writes ``1`` for ``1.0``), ``str`` takes no number. ``X | None``,
    ``Literal[...]``, ``list[X]``, ``tuple[...]``, ``dict[K, V]`` and ``Path`` (a string)
    are checked; an annotation this function does not know (``Any``, a callable, a class)
    accepts any value of that class, or anything when it is not a class.
    """
    if annotation is Any or annotation is object:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(value_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, set, frozenset):
        return isinstance(value, list) and all(value_matches(v, args[0]) for v in value if args)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(value_matches(v, args[0]) for v in value)
        return not args or (
            len(value) == len(args)
            and all(value_matches(v, a) for v, a in zip(value, args, strict=True))
        )
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return all(
            value_matches(k, key_type) and value_matches(v, value_type) for k, v in value.items()
        )
    if origin is not None:
        return True  # another generic (Callable[...], ...): not a config value to check
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type):
        if issubclass(annotation, PurePath) or annotation is os.PathLike:
            return isinstance(value, str | PurePath)
        return isinstance(value, annotation)
    return True


def describe_type(annotation: Any) -> str:
    """An annotation in the words a config author reads (``int | None``, ``one of [...]``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(describe_type(arg) for arg in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return "null"
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_REGISTRY: dict[tuple[str, str], MethodSpec] = {}
_DISCOVERED = False


def register(
    task: str,
    name: str,
    *,
    label: str | None = None,
    env: str = "base",
    needs_checkpoint: bool = False,
    bind: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func`` as method ``name`` for ``task``.

    ``bind`` fixes keyword-only parameters of ``func`` for this registration: the harness
    passes them on every call, and they are not parameters the config may set. One function
    can so serve several methods (stack the decorators), each with its own bound values.
    The decorator returns ``func`` unchanged.

    Examples
    --------
    >>> @register("integration", "my_pca", label="My PCA")  # doctest: +SKIP
    ... def my_pca(adata, *, seed, n_comps=30):
    ...     ...

    >>> @register("integration", "my_model", bind={"pretrained": True})  # doctest: +SKIP
    ... @register("integration", "my_model_scratch", bind={"pretrained": False})
    ... def my_model(adata, *, seed, pretrained=True, epochs=10):
    ...     ...
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} for method {name!r}; tasks are {list(TASKS)}")
    if env not in ENVS:
        raise ValueError(f"unknown env {env!r} for method {name!r}; envs are {list(ENVS)}")

    bound = dict(bind or {})

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        _check_contract(task, name, func)
        _check_bind(task, name, func, bound)
        key = (task, name)
        existing = _REGISTRY.get(key)
        if existing is not None:
            old = existing.function
            if old.__qualname__ != func.__qualname__:
                raise ValueError(
                    f"method {name!r} is registered twice for {task!r}: "
                    f"{old.__module__}.{old.__qualname__} and "
                    f"{func.__module__}.{func.__qualname__}"
                )
            if dict(existing.bound) != bound:
                raise ValueError(
                    f"method {name!r} is registered twice for {task!r} "
                    f"({func.__module__}.{func.__qualname__}) with different bound values: "
                    f"{dict(existing.bound)} and {bound}"
                )
        _REGISTRY[key] = MethodSpec(
            task=task,
            name=name,
            func=_bind(func, bound) if bound else func,
            label=label or name,
            env=env,
            needs_checkpoint=needs_checkpoint,
            description=(inspect.getdoc(func) or "").split("\n")[0],
            bound=types.MappingProxyType(bound),
        )
        return func

    return decorator


def _check_bind(task: str, name: str, func: Callable[..., Any], bound: dict[str, Any]) -> None:
    """Each bound name is a keyword-only parameter of ``func`` the harness does not pass."""
    params = inspect.signature(func).parameters
    for key, value in bound.items():
        parameter = params.get(key)
        where = f"method {name!r} ({task}, {func.__module__}.{func.__qualname__}) binds {key!r}"
        if key in ("seed", "checkpoint"):
            raise TypeError(f"{where}, which the harness passes")
        if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{where}, which is not one of its keyword-only parameters")
        annotation = _resolve_annotation(func, parameter.annotation)
        if annotation is not None and not value_matches(value, annotation):
            raise TypeError(f"{where} to {value!r}, expected {describe_type(annotation)}")


def _bind(func: Callable[..., Any], bound: dict[str, Any]) -> Callable[..., Any]:
    """``func`` with ``bound`` passed by keyword; the signature and callers lose those names."""

    @functools.wraps(func)
    def method(*args: Any, **kwargs: Any) -> Any:
        fixed = sorted(set(kwargs) & set(bound))
        if fixed:
            raise TypeError(f"{func.__qualname__}: {fixed} are bound by the registration")
        return func(*args, **kwargs, **bound)

    sig = inspect.signature(func)
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in sig.parameters.items() if n not in bound]
    )
    return method


def _check_contract(task: str, name: str, func: Callable[..., Any]) -> None:
    """The function takes its task's inputs by position and ``seed`` by keyword."""
    contract = TASK_CONTRACTS[task]
    params = inspect.signature(func).parameters
    positional = tuple(
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    problems = []
    if positional != contract.inputs:
        problems.append(f"positional parameters {positional}, expected {contract.inputs}")
    seed = params.get("seed")
    if seed is None or seed.kind is not inspect.Parameter.KEYWORD_ONLY:
        problems.append("no keyword-only parameter 'seed'")
    if problems:
        raise TypeError(
            f"method {name!r} ({func.__module__}.{func.__qualname__}) does not follow the "
            f"{task} contract {contract.signature()}: {'; '.join(problems)}"
        )


METHOD_MODULES_ENV = "SCGPT_BENCH_METHOD_MODULES"
METHOD_PACKAGES: tuple[str, ...] = ("baselines",)
"""Packages whose every public module is imported by :func:`discover`."""


def discover() -> None:
    """Import every module of :data:`METHOD_PACKAGES`, then those in ``$SCGPT_BENCH_METHOD_MODULES``.

    The environment variable (comma-separated importable module names) registers methods
    that live outside this repository; it reaches the child process each job runs its method
    in, which a registration made at run time in the parent would not.
    """
    global _DISCOVERED
    if _DISCOVERED:
        return
    for package_name in METHOD_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package_name}.{info.name}")
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
