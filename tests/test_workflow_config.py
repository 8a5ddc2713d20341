"""A config file is the whole configuration, and every key is checked when the plan is made.

The plan is read through Snakemake itself (a probe Snakefile that includes ours), so these
tests see what a real ``snakemake --configfile ...`` run would do, not a re-implementation.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.workflow import ConfigError, WorkflowPlan
from tests._snakemake import run_in_repo

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json
include: {snakefile!r}
print("PLAN=" + json.dumps({{
    "config": config,
    "jobs": sorted([j.task, j.dataset, j.method, j.seed] for j in PLAN.jobs),
    "params": {{f"{{j.task}}/{{j.method}}": PLAN.method_params(j.task, j.method) for j in PLAN.jobs}},
    "metrics": {{task: PLAN.metric_options(task) for task in PLAN.tasks}},
    "targets": PLAN.final_targets(),
}}))
"""


def _plan(tmp_path: Path, configfile: str | Path | None) -> dict:
    probe = tmp_path / "Probe.smk"
    probe.write_text(PROBE.format(snakefile=str(ROOT / "Snakefile")))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(probe), "--nolock", "-n", "--cores", "1"]
    cmd += ["--quiet", "rules"]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    result = run_in_repo(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("PLAN="))
    return json.loads(line.removeprefix("PLAN="))


def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def _expected_jobs(config: dict) -> list[list]:
    return sorted(
        [task, dataset, method, seed]
        for task, section in config["tasks"].items()
        for dataset, method, seed in itertools.product(
            section["datasets"], section["methods"], config["seeds"]
        )
        # tasks.<task>.method_datasets restricts a method to some of the task's datasets
        if dataset in section.get("method_datasets", {}).get(method, [dataset])
    )


def test_paper_plan_is_exactly_paper_yaml(tmp_path):
    paper = _yaml("config/paper.yaml")
    demo = _yaml("config/config.yaml")
    plan = _plan(tmp_path, "config/paper.yaml")
    assert plan["jobs"] == _expected_jobs(paper)
    for task, section in paper["tasks"].items():
        for method, params in section["methods"].items():
            expected = {
                key: (f"data/downloads/{value['download']}" if isinstance(value, dict) else value)
                for key, value in (params or {}).items()
            }
            assert plan["params"][f"{task}/{method}"] == expected, (task, method)
    # Scoring choices reach the jobs: the paper's (scib 1.0.3's Louvain, GEARS' NaN = 0).
    assert plan["metrics"]["integration"] == {"clustering": "louvain"}
    assert plan["metrics"]["perturbation"] == {"nan_policy": "zero"}
    assert plan["metrics"]["annotation"] == {}
    # A file named in a metric option is a registry download, passed as its path.
    assert plan["metrics"]["grn"]["target_lists"]["DDIT3"] == "data/downloads/DDIT3.10.tsv"
    # Nothing of the demo file: its builder parameters, pre-training settings, extra methods.
    assert "datasets" not in plan["config"]
    assert plan["config"]["model"]["pretrain"]["settings"] == paper["model"]["pretrain"]["settings"]
    assert plan["config"]["resources"] == paper["resources"]
    demo_only = {
        (task, method)
        for task, section in demo["tasks"].items()
        for method in section["methods"]
        if method not in paper["tasks"].get(task, {}).get("methods", {})
    }
    assert demo_only, "the test needs a demo-only method to be meaningful"
    planned = {(task, method) for task, _, method, _ in plan["jobs"]}
    assert not planned & demo_only


def test_one_task_config_plans_only_that_task(tmp_path):
    config = {
        "seeds": [0],
        "model": {"source": "checkpoint", "checkpoint": "whole_human"},
        "tasks": {"annotation": {"datasets": ["sim_celltypes"], "methods": {"logreg": {}}}},
    }
    path = tmp_path / "one_task.yaml"
    path.write_text(yaml.safe_dump(config))
    plan = _plan(tmp_path, path)
    assert plan["jobs"] == [["annotation", "sim_celltypes", "logreg", 0]]
    # Defaults of absent keys come from the schema, not from the demo file.
    assert plan["config"]["results_dir"] == "results"
    assert plan["config"]["registry"] == "config/datasets.yaml"
    assert set(plan["config"]) == {"seeds", "model", "tasks", "results_dir", "data_dir", "registry"}
    assert all(
        "/annotation" in t or "annotation." in t or "/report/" in t or "/claims." in t
        for t in plan["targets"]
    )


def test_without_configfile_the_demo_is_planned(tmp_path):
    plan = _plan(tmp_path, None)
    assert plan["jobs"] == _expected_jobs(_yaml("config/config.yaml"))


# --- keys a dry run must check ---------------------------------------------------------------
def _demo() -> dict:
    return copy.deepcopy(_yaml("config/config.yaml"))


def test_misspelt_pretraining_setting_is_named():
    config = _demo()
    config["model"]["pretrain"]["settings"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"model\.pretrain\.settings\.epoch: not a pre-training"):
        WorkflowPlan.from_config(config)


def test_pretraining_setting_of_wrong_type_is_named():
    config = _demo()
    config["model"]["pretrain"]["settings"]["epochs"] = "three"
    with pytest.raises(ConfigError, match=r"model\.pretrain\.settings\.epochs: 'three'"):
        WorkflowPlan.from_config(config)


def test_invalid_pretraining_value_is_named():
    config = _demo()
    config["model"]["pretrain"]["settings"]["objective"] = "masked"
    with pytest.raises(ConfigError, match=r"model\.pretrain\.settings: objective must be"):
        WorkflowPlan.from_config(config)


def test_misspelt_dataset_builder_parameter_is_named():
    config = _demo()
    config["datasets"]["sim_celltypes"]["n_cell"] = 100
    with pytest.raises(ConfigError, match=r"datasets\.sim_celltypes: .*\['n_cell'\]"):
        WorkflowPlan.from_config(config)


def test_dataset_builder_parameter_of_wrong_type_is_named():
    config = _demo()
    config["datasets"]["sim_celltypes"]["n_cells"] = "many"
    with pytest.raises(ConfigError, match=r"datasets\.sim_celltypes: parameter n_cells='many'"):
        WorkflowPlan.from_config(config)


def test_builder_parameters_for_a_downloaded_dataset_are_refused():
    config = _demo()
    config["datasets"]["hpancreas"] = {"n_cells": 10}
    with pytest.raises(ConfigError, match=r"datasets\.hpancreas: .*not builtin"):
        WorkflowPlan.from_config(config)


def test_dataset_not_registered_for_the_task_is_named():
    config = _demo()
    config["tasks"]["integration"]["datasets"].append("sim_perturb")
    with pytest.raises(ConfigError, match=r"'sim_perturb' is registered .* not 'integration'"):
        WorkflowPlan.from_config(config)


def test_metrics_option_a_task_does_not_have_is_named():
    config = _demo()
    config["tasks"]["annotation"]["metrics"] = {"clustering": "louvain"}
    with pytest.raises(ConfigError, match=r"tasks\.annotation\.metrics: .*\['clustering'\]"):
        WorkflowPlan.from_config(config)


def test_unknown_download_in_metric_options_is_named():
    config = _yaml("config/paper.yaml")
    config["tasks"]["grn"]["metrics"]["target_lists"]["DDIT3"] = {"download": "DDIT3.1O.tsv"}
    with pytest.raises(ConfigError, match=r"tasks\.grn\.metrics: \{download: DDIT3\.1O\.tsv\}"):
        WorkflowPlan.from_config(config)
