"""Every method the benchmark compares, one module per method, registered per task.

Add a method: write ``baselines/my_method.py`` with a function decorated by
``@register("<task>", "my_method")`` (:mod:`contract.registry`; the function follows its
task's contract, :mod:`contract.tasks`) and add ``my_method: {}`` under that task's
``methods:`` in the config.
"""
