"""Task contracts. ``get_task(name)`` returns the :class:`~benchmark.tasks.base.Task`."""

from __future__ import annotations

import importlib
import importlib.util

from benchmark.tasks.base import Task
from contract.tasks import TASKS

# One module per task of the one task list: benchmark.tasks.<task> defines TASK.
_TASK_MODULES: dict[str, str] = {task: f"benchmark.tasks.{task}" for task in TASKS}


def available_tasks() -> list[str]:
    """Tasks whose module exists in this installation."""
    found = []
    for name, module in _TASK_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def get_task(name: str) -> Task:
    """Return the task object (module attribute ``TASK``) for ``name``."""
    if name not in _TASK_MODULES:
        raise KeyError(f"unknown task {name!r}; tasks are {sorted(_TASK_MODULES)}")
    if name not in available_tasks():
        raise KeyError(f"task {name!r} is not implemented yet; implemented: {available_tasks()}")
    return importlib.import_module(_TASK_MODULES[name]).TASK


__all__ = ["Task", "available_tasks", "get_task"]
