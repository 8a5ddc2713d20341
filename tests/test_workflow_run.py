"""A real (small) Snakemake run: a killed method still yields its table, and results lost to
an interrupted run are rebuilt by the next plain run; a dataset that fails standardisation
yields failed rows, and raising a failed method's resources redoes its failed runs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from contract.registry import METHOD_MODULES_ENV

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "seeds": [0],
    "registry": str(ROOT / "config" / "datasets.yaml"),
    "datasets": {"sim_celltypes": {"n_cells": 200, "n_batches": 2, "seed": 0}},
    "model": {"source": "checkpoint", "checkpoint": "whole_human"},
    "tasks": {
        "annotation": {
            "datasets": ["sim_celltypes"],
            "methods": {"majority_label": {}, "killed": {}},
        }
    },
}


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    # No --profile: the workflow profile (profiles/default) must be found by itself; it
    # gives keep-going, without which the killed method would stop the run.
    cmd += ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    cmd += ["--cores", "2", *args]
    # The workflow's methods module for tests is imported from the repository root.
    env = {**os.environ, METHOD_MODULES_ENV: "tests._plugin_methods", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _with_broken_dataset(tmp_path: Path) -> Path:
    """The project's registry plus ``broken``: a builtin dataset whose builder fails."""
    registry = yaml.safe_load((ROOT / "config" / "datasets.yaml").read_text())
    registry["datasets"]["broken"] = {
        "kind": "builtin",
        "description": "A dataset whose standardisation fails (test).",
        "tasks": ["annotation"],
        "builder": "tests._plugin_methods:broken_dataset",
        "params": {},
        "required_obs": ["cell_type"],
    }
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path


def _planned_runs(result: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(dataset, method) of every run_method job a dry run lists."""
    runs = set()
    for line in (result.stdout + result.stderr).splitlines():
        if "wildcards:" in line and "method=" in line:
            fields = dict(f.strip().split("=") for f in line.split(":", 1)[1].split(","))
            runs.add((fields["dataset"], fields["method"]))
    return runs


@pytest.mark.slow
def test_killed_method_is_a_failed_row_and_lost_results_are_rebuilt(tmp_path):
    config = copy.deepcopy(CONFIG)
    # A second dataset whose standardisation fails: failed rows, not a stop.
    config["registry"] = str(_with_broken_dataset(tmp_path))
    config["tasks"]["annotation"]["datasets"] = ["sim_celltypes", "broken"]
    config["tasks"]["annotation"]["method_datasets"] = {"killed": ["sim_celltypes"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    first = _snakemake(tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    table = pd.read_csv(tmp_path / "results" / "tables" / "annotation.csv")
    status = {(r.dataset, r.method): r.status for r in table.itertuples()}
    assert status == {
        ("sim_celltypes", "killed"): "failed",
        ("sim_celltypes", "majority_label"): "ok",
        ("broken", "majority_label"): "failed",
    }
    killed_run = tmp_path / "results/annotation/sim_celltypes/killed/seed0/run.json"
    assert "killed by SIGKILL" in json.loads(killed_run.read_text())["error"]
    broken_error = table.set_index(["dataset", "method"])["error"]["broken", "majority_label"]
    assert "failed standardisation" in broken_error and "simulated broken source" in broken_error
    log = (tmp_path / "logs" / "standardise" / "broken.log").read_text()
    assert "ERROR" in log and "Traceback" in log
    assert not list((tmp_path / "results" / "figures" / "annotation" / "broken").glob("*.png"))

    # What an interruption leaves: a run's files gone while its table is up to date.
    lost = tmp_path / "results/annotation/sim_celltypes/majority_label/seed0"
    for name in ("run.json", "scores.json"):
        (lost / name).unlink()
    plan = _snakemake(tmp_path, "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "run_method" in plan.stdout and "task_table" in plan.stdout
    again = _snakemake(tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert json.loads((lost / "run.json").read_text())["status"] == "ok"
    assert (lost / "scores.json").is_file()
    table_again = pd.read_csv(tmp_path / "results" / "tables" / "annotation.csv")
    assert (table_again["n_seeds"].tolist(), table_again["status"].tolist()) == (
        table["n_seeds"].tolist(),
        table["status"].tolist(),
    )

    # The killed row's advice followed (mem_mb raised): its failed run is redone; successful
    # runs and the other methods' runs are not.
    assert _planned_runs(_snakemake(tmp_path, "-n")) == set()
    config["resources"] = {"killed": {"mem_mb": 8000}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    raised = _snakemake(tmp_path, "-n")
    assert raised.returncode == 0, raised.stderr[-3000:]
    assert _planned_runs(raised) == {("sim_celltypes", "killed")}
