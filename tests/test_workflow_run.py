"""A real (small) Snakemake run: a killed method still yields its table, and results lost to
an interrupted run are rebuilt by the next plain run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from baselines.registry import METHOD_MODULES_ENV

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


def test_killed_method_is_a_failed_row_and_lost_results_are_rebuilt(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    first = _snakemake(tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    table = pd.read_csv(tmp_path / "results" / "tables" / "annotation.csv")
    status = dict(zip(table["method"], table["status"], strict=True))
    assert status == {"killed": "failed", "majority_label": "ok"}
    killed_run = tmp_path / "results/annotation/sim_celltypes/killed/seed0/run.json"
    assert "killed by SIGKILL" in json.loads(killed_run.read_text())["error"]

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
