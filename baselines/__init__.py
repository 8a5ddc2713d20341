"""Every method the benchmark compares, one module per method, registered per task.

Add a method: write ``baselines/my_method.py`` with a function decorated by
``@register("<task>", "my_method")`` and add ``my_method: {}`` under that task's
``methods:`` in the config.
"""

from baselines.registry import MethodSpec, get_method, list_methods, register

__all__ = ["MethodSpec", "get_method", "list_methods", "register"]
