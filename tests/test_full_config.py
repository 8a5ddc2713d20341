"""config/full.yaml (issue 27.2): the full-budget run plans offline, apart from the demo."""

from __future__ import annotations

from tests.test_workflow_config import _expected_jobs, _plan, _yaml

SCGPT = ("scgpt", "scgpt_scratch", "scgpt_finetuned")


def test_full_plan_is_exactly_full_yaml(tmp_path):
    full = _yaml("config/full.yaml")
    plan = _plan(tmp_path, "config/full.yaml")
    assert plan["jobs"] == _expected_jobs(full)
    assert (
        plan["config"]["results_dir"]
        == "results/full_budget"
        != _yaml("config/config.yaml").get("results_dir", "results")
    )
    assert "results/full_budget/tables/multiomics.csv" in plan["targets"]
    assert sorted({seed for *_, seed in plan["jobs"]}) == [0, 1, 2]


def test_full_budgets_are_at_least_the_demos_and_unmarked():
    demo, full = _yaml("config/config.yaml"), _yaml("config/full.yaml")
    raised = []
    for task, section in full["tasks"].items():
        assert "budget_limited" not in section, task
        for method in SCGPT:
            if method not in section["methods"] or "epochs" not in section["methods"][method]:
                continue
            if method not in demo["tasks"][task]["methods"]:
                continue  # a from-scratch twin the demo leaves to this run
            demo_epochs = demo["tasks"][task]["methods"][method]["epochs"]
            full_epochs = section["methods"][method]["epochs"]
            assert full_epochs >= demo_epochs, (task, method)
            if full_epochs > demo_epochs:
                raised.append((task, method))
    # every method the demo marks budget-limited runs longer here
    for task, section in demo["tasks"].items():
        for method in section.get("budget_limited", {}):
            assert (task, method) in raised, (task, method)
