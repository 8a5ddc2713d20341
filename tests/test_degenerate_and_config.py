"""Silent wrong results (issue 23): degenerate data, config values that act wrongly, stale tables.

Degenerate inputs must never end as a normal-looking success: undefined scores are NaN with a
recorded reason that the table shows; inputs that cannot be scored at all are refused. Config
values are checked at plan time against the methods' signatures and the pre-training
options' ranges; a key given twice in a YAML file is an error. A table asked for directly
after a run folder was deleted is redone, and the run with it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from benchmark import runner, tables
from benchmark.datasets import load_registry
from benchmark.datasets.errors import RegistryError
from benchmark.metrics import integration as im
from benchmark.tasks.annotation import AnnotationTask
from benchmark.tasks.base import Task
from benchmark.tasks.integration import IntegrationTask
from benchmark.workflow import ConfigError, Job, WorkflowPlan, check_config_files
from contract import registry

ROOT = Path(__file__).resolve().parents[1]


def _demo() -> dict:
    return copy.deepcopy(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


# --- 1. degenerate data ------------------------------------------------------------------------
def test_one_cell_type_leaves_bio_scores_undefined_not_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    cell_type = np.full(40, "T")
    batch = np.tile(["b1", "b2"], 20)
    scores = im.integration_scores(x, cell_type, batch, extra=False)
    # Before: NMI = ARI = 1.0 (one cluster vs one label), Overall ~0.9.
    for key in ("nmi", "ari", "asw_cell", "avg_bio", "overall"):
        assert math.isnan(scores[key]), key
    assert np.isfinite(scores["asw_batch"]) and np.isfinite(scores["graph_conn"])
    reasons = im.undefined_scores(cell_type, batch)
    assert set(reasons) >= {"nmi", "ari", "asw_cell", "avg_bio", "overall"}
    assert "one cell type ('T')" in reasons["nmi"]
    assert "asw_batch" not in reasons


def test_undefined_scores_of_batches():
    one_batch = im.undefined_scores(list("aabb"), list("xxxx"))
    assert "one batch ('x')" in one_batch["asw_batch"] and "nmi" not in one_batch
    separated = im.undefined_scores(list("aabb"), list("xxyy"))  # no type in 2 batches
    assert "no cell type" in separated["avg_batch"]
    assert im.undefined_scores(list("aaabbb"), list("xyxyxy")) == {}


def test_fewer_cells_than_the_neighbour_graph_are_refused():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    # Before: scored (AvgBIO 0.833 from a 3-cell "graph").
    with pytest.raises(ValueError, match=r"3 cells cannot be scored: .*n_neighbors = 15"):
        im.integration_scores(x, list("abc"), list("xyx"))


def test_empty_cells_are_left_out_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(30, 20)).astype(np.float32)
    counts[[3, 7]] = 0  # two empty droplets
    names = [f"c{i}" for i in range(30)]
    adata = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": np.tile(["a", "b", "c"], 10), "batch": np.repeat(["x", "y"], 15)},
            index=names,
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(20)]),
    )
    with caplog.at_level("WARNING", logger="benchmark"):
        inputs = IntegrationTask(n_hvg=50).prepare(adata, seed=0)
    assert "c3" not in inputs["obs_names"] and "c7" not in inputs["obs_names"]
    assert len(inputs["obs_names"]) == inputs["args"][0].n_obs == len(inputs["truth"]["batch"])
    assert "2 of 30 cells have no counts" in caplog.text
    empty = adata.copy()
    empty.X = sp.csr_matrix(np.zeros((30, 20), dtype=np.float32))
    with pytest.raises(ValueError, match="all 30 cells of the dataset have no counts"):
        IntegrationTask(n_hvg=50).prepare(empty, seed=0)


def _annotation_data(reference_types: list[str], query_types: list[str]) -> ad.AnnData:
    labels = [*reference_types, *query_types]
    split = ["reference"] * len(reference_types) + ["query"] * len(query_types)
    return ad.AnnData(
        sp.csr_matrix(np.ones((len(labels), 3), dtype=np.float32)),
        obs=pd.DataFrame(
            {"cell_type": labels, "split": split}, index=[f"c{i}" for i in range(len(labels))]
        ),
    )


def test_annotation_refuses_a_one_type_reference():
    with pytest.raises(ValueError, match=r"reference has 1 cell type \['a'\]"):
        AnnotationTask().prepare(_annotation_data(["a"] * 6, ["a"] * 3), seed=0)


def test_annotation_macro_scores_undefined_for_a_one_type_query():
    task = AnnotationTask()
    inputs = task.prepare(_annotation_data(["a", "b"] * 4, ["a"] * 4), seed=0)
    # Before: macro F1 1.0 for a method that always says "a".
    scores = task.score(np.array(["a"] * 4), inputs, seed=0)
    assert scores["accuracy"] == 1.0
    for key in ("precision", "recall", "macro_f1"):
        assert math.isnan(scores[key])
    assert "query has one cell type ('a')" in scores["undefined"]["macro_f1"]


class _UndefinedTask(Task):
    """A toy task whose one score the data leave undefined."""

    name = "integration"
    metrics = ("mae", "spread")
    required_obs = ()

    def prepare(self, adata, *, seed):
        return {"args": (adata,)}

    def save(self, output, inputs, outdir):
        return []

    def score(self, output, inputs, *, seed):
        return {"mae": 0.5, "spread": math.nan, "undefined": {"spread": "one cell type ('T')"}}


def test_undefined_scores_reach_run_json_and_the_table_status(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_DISCOVERED", True)
    monkeypatch.setattr(runner, "get_task", lambda name: _UndefinedTask())
    registry.register("integration", "toy")(lambda adata, *, seed: np.zeros(3))
    data = tmp_path / "toy.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(data)
    out = tmp_path / "results" / "integration" / "toy_data" / "toy" / "seed0"
    record = runner.run_method("integration", "toy", "toy_data", data, out, seed=0)
    assert record["status"] == "ok"
    assert record["undefined"] == {"spread": "one cell type ('T')"}
    assert json.loads((out / "scores.json").read_text())["undefined"] == record["undefined"]
    table = tables.write_task_table(
        [out / "run.json"], ("mae", "spread"), tmp_path / "t.csv", tmp_path / "t.md", title="t"
    )
    assert table.loc[0, "undefined"] == "spread: one cell type ('T')"
    row = next(x for x in (tmp_path / "t.md").read_text().splitlines() if "toy_data" in x)
    assert "| 0.500 | — |" in row
    assert row.endswith("| ok (undefined: spread: one cell type ('T')) |")


# --- 2. config values that pass a dry run and then act wrongly ------------------------------------
@pytest.fixture
def typed_method(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_DISCOVERED", True)

    @registry.register("integration", "typed")
    def typed(
        adata,
        *,
        seed: int,
        scale: bool = True,
        n_comps: int = 30,
        theta: float = 2.0,
        batch_key: str | None = None,
        solver: Literal["a", "b"] = "a",
        genes: list[str] | None = None,
        betas: tuple[float, float] = (0.9, 0.99),
    ):
        return None

    return registry.get_method("integration", "typed")


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("scale", "false", "bool"),  # a string is truthy: scaling stayed on
        ("n_comps", "thirty", "int"),
        ("n_comps", True, "int"),  # bool is an int subclass in Python, not a count
        ("n_comps", 30.0, "int"),
        ("theta", "1e-4", "float"),  # YAML 1.1 reads 1e-4 (no dot) as a string
        ("batch_key", 3, "str | null"),
        ("solver", "c", "one of ['a', 'b']"),
        ("genes", ["A", 1], "list[str] | null"),
        ("betas", [0.9], "tuple[float, float]"),
    ],
)
def test_parameter_of_the_wrong_type_is_refused(typed_method, param, value, expected):
    with pytest.raises(registry.ParameterTypeError) as caught:
        typed_method.check_params({param: value})
    assert caught.value.parameter == param and caught.value.expected == expected


def test_parameters_of_the_right_type_pass(typed_method):
    typed_method.check_params(
        {
            "scale": False,
            "n_comps": 10,
            "theta": 1,  # an int for a float is fine (YAML writes 1 for 1.0)
            "batch_key": None,
            "solver": "b",
            "genes": ["A", "B"],
            "betas": [0.9, 0.999],
        }
    )


def test_plan_names_the_parameter_key_value_and_type():
    config = _demo()
    config["tasks"]["integration"]["methods"]["pca"] = {"n_comps": "thirty"}
    with pytest.raises(
        ConfigError,
        match=r"config tasks\.integration\.methods\.pca\.n_comps: 'thirty' is str, expected int",
    ):
        WorkflowPlan.from_config(config)


def test_resources_of_a_misspelt_method_are_refused():
    config = _demo()
    config["resources"]["harmonyy"] = {"mem_mb": 64000}
    with pytest.raises(ConfigError, match=r"resources\.harmonyy: not a method.*'harmony'"):
        WorkflowPlan.from_config(config)
    config["resources"].pop("harmonyy")
    config["resources"]["pretrain"] = {"gpu": 0}  # not a method, but a valid key
    WorkflowPlan.from_config(config)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", -1, r"settings\.lr: must be > 0; got -1"),
        ("epochs", 0, r"settings\.epochs: must be >= 1; got 0"),
        ("dropout", 1.5, r"settings\.dropout: must be in \[0, 1\); got 1\.5"),
        ("save_every", 0, r"settings\.save_every: must be >= 1"),
        ("epochs", True, r"settings\.epochs: True is a boolean, expected int"),
    ],
)
def test_pretraining_values_out_of_range_are_named(key, value, message):
    config = _demo()
    config["model"]["pretrain"]["settings"][key] = value
    with pytest.raises(ConfigError, match=message):
        WorkflowPlan.from_config(config)


DUPLICATED = """seeds: [0]
model: {source: checkpoint, checkpoint: whole_human}
tasks:
  integration:
    datasets: [sim_celltypes]
    methods:
      pca: {n_comps: 20}
      pca: {n_comps: 50}
"""


def test_key_given_twice_in_a_config_file_is_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(DUPLICATED)
    assert yaml.safe_load(DUPLICATED)["tasks"]["integration"]["methods"] == {
        "pca": {"n_comps": 50}
    }  # what plain YAML (and so Snakemake) does: the first is dropped without a word
    with pytest.raises(
        ConfigError, match=rf"{path}:8:\d+: .*key 'pca' is given twice \(first on line 7\)"
    ):
        check_config_files([path])
    path.write_text(DUPLICATED.replace("      pca: {n_comps: 50}\n", ""))
    check_config_files([path])


def test_dry_run_refuses_a_duplicated_key(tmp_path):
    """Through Snakemake: the file given with --configfile is the one checked."""
    path = tmp_path / "config.yaml"
    path.write_text(DUPLICATED)
    cmd = [sys.executable, "-m", "snakemake", "--nolock", "-n", "--cores", "1", "--quiet"]
    cmd += ["--directory", str(tmp_path), "-s", str(ROOT / "Snakefile")]
    cmd += ["--configfile", str(path)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ":8:7: not valid YAML: key 'pca' is given twice" in result.stdout + result.stderr


def test_registry_with_a_key_given_twice_is_refused(tmp_path):
    text = (ROOT / "config" / "datasets.yaml").read_text()
    load_registry(ROOT / "config" / "datasets.yaml")  # the shipped registry has none
    path = tmp_path / "datasets.yaml"
    path.write_text(text + "\ncheckpoints: {}\n")
    with pytest.raises(RegistryError, match=r"key 'checkpoints' is given twice"):
        load_registry(path)


# --- 3. a table asked for directly after a run folder was deleted -----------------------------------
PROBE = """
from benchmark.workflow import Job, WorkflowPlan

PLAN = WorkflowPlan(
    config={},
    registry=None,
    jobs=(Job("integration", "ds", "m1", 0), Job("integration", "ds", "m2", 0)),
    tasks=("integration",),
)


rule run:
    output:
        "results/{task}/{dataset}/{method}/seed{seed}/run.json",
    shell:
        "echo {wildcards.method} > {output}"


# The inputs of workflow/rules/report.smk's task_table (checked below).
rule table:
    input:
        runs=lambda wc: PLAN.runs_of("integration"),
        folders=lambda wc: PLAN.run_folders("integration", create=not workflow.dryrun),
    output:
        "results/tables/integration.txt",
    shell:
        "cat {input.runs} > {output}"
"""


def test_run_folders_are_listed_and_made_only_when_asked(tmp_path):
    plan = WorkflowPlan(
        config={},
        registry=None,
        jobs=(Job("integration", "ds", "m1", 0), Job("annotation", "ds", "m1", 0)),
        tasks=("integration", "annotation"),
        results_dir=str(tmp_path / "results"),
    )
    folder = f"{tmp_path}/results/integration/ds/m1/seed0"
    assert plan.run_folders("integration") == []  # a dry run creates nothing
    assert plan.run_folders("integration", create=True) == [folder]
    assert Path(folder).is_dir() and not (tmp_path / "results" / "annotation").exists()
    assert plan.run_folders("integration", "other") == []


def test_table_is_redone_after_a_run_folder_is_deleted(tmp_path):
    (tmp_path / "Snakefile").write_text(PROBE)
    table = tmp_path / "results" / "tables" / "integration.txt"

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--nolock", *args]
        cmd.append(str(table.relative_to(tmp_path)))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    first = snakemake()
    assert first.returncode == 0, first.stderr[-3000:]
    assert table.read_text().split() == ["m1", "m2"]
    time.sleep(0.05)  # the deletion comes later than the table, as it would
    gone = tmp_path / "results" / "integration" / "ds" / "m2" / "seed0"
    (gone / "run.json").unlink()
    gone.rmdir()
    # Before: "Nothing to be done" (Snakemake skips a missing input of an up-to-date job).
    again = snakemake()
    assert again.returncode == 0, again.stderr[-3000:]
    assert (gone / "run.json").is_file()
    assert table.stat().st_mtime >= (gone / "run.json").stat().st_mtime  # the table was redone
    # ...and no needless rerun afterwards (the set of inputs stays the same).
    settled = snakemake("-n")
    assert "Nothing to be done" in settled.stdout + settled.stderr


def test_table_rule_has_the_run_folders_as_inputs():
    """The real rules declare what the probe above exercises (tables and figures)."""
    rules = (ROOT / "workflow" / "rules" / "report.smk").read_text()
    assert "folders=lambda wc: PLAN.run_folders(wc.task, create=not workflow.dryrun)" in rules
    assert "PLAN.run_folders(wc.task, wc.dataset, create=not workflow.dryrun)" in rules
    script = (ROOT / "workflow" / "scripts" / "task_table.py").read_text()
    assert "snakemake.input.runs" in script  # the folders are not run files
