"""The contract room: one task list that the schema, the harness and the registry follow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contract.conditions import parse_condition
from contract.registry import list_methods, register
from contract.tasks import TASK_CONTRACTS, TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_schema_names_exactly_the_tasks_of_the_one_list():
    from benchmark.yamlfile import load_yaml

    schema = load_yaml(ROOT / "config" / "schema.yaml")
    patterns = schema["properties"]["tasks"]["patternProperties"]
    (pattern,) = patterns
    named = re.fullmatch(r"\^\((.*)\)\$", pattern).group(1).split("|")
    assert named == list(TASKS)


def test_every_task_has_its_harness_module_and_the_registry_its_tasks():
    from benchmark.datasets.fields import TASKS as REGISTRY_TASKS
    from benchmark.tasks import available_tasks, get_task

    assert available_tasks() == list(TASKS)
    for task in TASKS:
        assert get_task(task) is not None
    assert REGISTRY_TASKS == (*TASKS, "pretraining")
    assert {spec.task for spec in list_methods()} == set(TASKS)


def test_registered_methods_follow_their_task_contract():
    for spec in list_methods():
        import inspect

        params = inspect.signature(spec.func).parameters
        positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert tuple(positional) == TASK_CONTRACTS[spec.task].inputs, spec.name


def test_a_function_that_breaks_the_contract_is_refused_at_registration():
    def wrong_inputs(adata, query, *, seed: int):
        return None

    with pytest.raises(TypeError, match=r"annotation contract f\(reference, query.*positional"):
        register("annotation", "wrong_inputs_test")(wrong_inputs)

    def no_seed(adata, *, n_comps: int = 3):
        return None

    with pytest.raises(TypeError, match="no keyword-only parameter 'seed'"):
        register("integration", "no_seed_test")(no_seed)


def test_harness_methods_and_model_do_not_import_each_other_but_the_contract():
    """Workflow -> harness -> {model, baselines} -> contract; the contract imports none."""
    forbidden = {
        "contract": ("benchmark", "baselines", "scgpt", "workflow"),
        "baselines": ("benchmark", "workflow"),
        "scgpt": ("benchmark", "baselines", "workflow"),
    }
    offenders = []
    for room, banned in forbidden.items():
        for path in (ROOT / room).rglob("*.py"):
            for line in path.read_text().splitlines():
                match = re.match(r"\s*(?:from|import)\s+([a-zA-Z_]+)", line)
                if match and match.group(1) in banned:
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_condition_grammar_with_another_control_name():
    assert parse_condition("B+ctrl") == ("B",)
    assert parse_condition("control+B", control="control") == ("B",)
    with pytest.raises(ValueError, match="empty part"):
        parse_condition("A++B")


def test_the_contributor_guide_lists_every_method_contract():
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    for task, contract in TASK_CONTRACTS.items():
        assert f"- {task}: `{contract.signature()}`" in guide, task
