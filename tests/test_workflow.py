"""The Snakemake layer: schema and config errors stop the run with a message naming the key;
the demo and paper configurations plan offline."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.workflow import ConfigError, WorkflowPlan
from tests._snakemake import run_in_repo
from tests.test_workflow_config import _expected_jobs

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--nolock", "-n", "--forceall", "--quiet", "rules"]


def _demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _dry_run(tmp_path: Path, config: dict | None = None, configfile: str | None = None):
    if config is not None:
        configfile = str(tmp_path / "config.yaml")
        Path(configfile).write_text(yaml.safe_dump(config))
    cmd = [*SNAKEMAKE, "--cores", "1"]
    if configfile:
        cmd += ["--configfile", configfile]
    return run_in_repo(cmd, capture_output=True, text=True, timeout=300)


def test_schema_rejects_unknown_key(tmp_path):
    config = _demo_config()
    config["sedes"] = [0]
    result = _dry_run(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "config (top level): Additional properties are not allowed ('sedes' was unexpected)"
        in output
    )


def test_schema_rejects_wrong_type(tmp_path):
    config = _demo_config()
    config["seeds"] = "zero"
    result = _dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "config seeds: 'zero' is not of type 'array'" in result.stdout + result.stderr


def test_unknown_method_is_named():
    config = _demo_config()
    config["tasks"]["integration"]["methods"]["harmonyy"] = {}
    with pytest.raises(ConfigError, match=r"tasks\.integration\.methods\.harmonyy: no method"):
        WorkflowPlan.from_config(config)


def test_unknown_method_parameter_is_named():
    config = copy.deepcopy(_demo_config())
    config["tasks"]["integration"]["methods"]["harmony"] = {"thetaa": 2}
    with pytest.raises(ConfigError, match=r"methods\.harmony: .*\['thetaa'\]"):
        WorkflowPlan.from_config(config)


def test_unknown_dataset_is_named():
    config = _demo_config()
    config["tasks"]["integration"]["datasets"].append("pbmc_10k_typo")
    with pytest.raises(ConfigError, match=r"tasks\.integration\.datasets: 'pbmc_10k_typo'"):
        WorkflowPlan.from_config(config)


def test_plan_covers_tasks_datasets_methods_seeds():
    config = _demo_config()
    config["seeds"] = [0, 1]
    plan = WorkflowPlan.from_config(config)
    assert len(plan.jobs) == len(_expected_jobs(config))
    targets = plan.final_targets()
    assert f"{plan.results_dir}/tables/integration.md" in targets


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml"])
def test_configurations_plan_offline(tmp_path, configfile):
    result = _dry_run(tmp_path, configfile=configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run_method" in result.stdout + result.stderr


def test_long_jobs_are_scheduled_first():
    config = _demo_config()
    plan = WorkflowPlan.from_config(config)
    assert plan.priority("perturbation", "scgpt") == 1  # uses the checkpoint
    assert plan.priority("perturbation", "linear") == 0
    assert plan.priority("perturbation", "gears") == 1  # resources.gears.priority
    config["resources"]["scgpt"] = {"priority": 0}
    assert WorkflowPlan.from_config(config).priority("perturbation", "scgpt") == 0


def test_task_checkpoint_overrides_the_model_for_that_task_only():
    config = copy.deepcopy(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    plan = WorkflowPlan.from_config(config)
    # The GRN tutorials use the blood model, the other tutorials whole-human.
    assert plan.checkpoint_dir("grn") == f"{plan.data_dir}/checkpoints/blood"
    assert plan.checkpoint_dir("integration") == f"{plan.data_dir}/checkpoints/whole_human"
    assert plan.checkpoint_files("grn")[0].startswith(f"{plan.data_dir}/checkpoints/blood/")
    config["tasks"]["grn"]["checkpoint"] = "bloood"
    with pytest.raises(ConfigError, match=r"tasks\.grn\.checkpoint: 'bloood' is not under"):
        WorkflowPlan.from_config(config)


def test_task_checkpoint_without_a_checkpoint_method_is_refused():
    config = _demo_config()
    config["tasks"]["integration"]["methods"] = {"pca": {}}
    config["tasks"]["integration"]["checkpoint"] = "sim_atlas"
    with pytest.raises(ConfigError, match=r"tasks\.integration\.checkpoint: .*no method"):
        WorkflowPlan.from_config(config)
