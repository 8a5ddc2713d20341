"""The SLURM profile against a fake SLURM on this machine (``tests/_fake_slurm.py``).

snakemake-executor-plugin-slurm (2.8) submits every job with ``sbatch``; the fake runs it here
in the background, where the job's own Snakemake (the slurm-jobstep plugin) starts the rule
with ``srun``, and the plugin polls ``sacct`` until the job has ended. The tests check what was
asked of SLURM (memory, time limit, CPUs, GPUs, partition) and that the workflow completes
under the SLURM executor. Offline; about a minute on 2 cores, nearly all of it the jobs'
own start-up (two Snakemake processes per job).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
FAKE = Path(__file__).with_name("_fake_slurm.py")
COMMANDS = ("sbatch", "srun", "squeue", "sacct", "sinfo", "scontrol", "scancel")

# One builtin dataset, two cheap methods of two tasks; the integration method asks for a GPU.
CONFIG = {
    "seeds": [0],
    "registry": str(ROOT / "config" / "datasets.yaml"),
    "datasets": {"sim_celltypes": {"n_cells": 200, "n_batches": 2, "seed": 0}},
    "model": {"source": "checkpoint", "checkpoint": "whole_human"},
    "tasks": {
        "annotation": {"datasets": ["sim_celltypes"], "methods": {"logreg": {}}},
        "integration": {"datasets": ["sim_celltypes"], "methods": {"pca": {}}},
    },
    "resources": {
        "default": {"mem_mb": 1500, "runtime": 20, "threads": 1},
        "pca": {"gpu": 1, "mem_mb": 3000, "runtime": 45, "threads": 2},
    },
}


class FakeSlurm:
    """The fake's folder on ``PATH`` and its records."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True)
        (self.state / "jobs").mkdir(parents=True)
        # Each command is a copy of the fake run by this interpreter (the project's venv).
        source = FAKE.read_text()
        for name in COMMANDS:
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\n{source}")
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a snakemake run that sees the fake as its cluster."""
        return {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_SLURM_DIR": str(self.state),
            **extra,
        }

    def calls(self, command: str) -> list[dict]:
        """Every recorded call of ``command`` (argument vector and standard input)."""
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [row for row in rows if row["cmd"] == command]

    def jobs(self) -> list[dict]:
        """The submitted jobs with their final states."""
        return [json.loads(p.read_text()) for p in sorted((self.state / "jobs").glob("*.json"))]

    def stop_all(self) -> None:
        """End jobs still running (a failed test must not leave work behind)."""
        for job in self.jobs():
            if job["state"] in ("PENDING", "RUNNING") and job.get("pid"):
                try:
                    os.killpg(job["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass


@pytest.fixture
def fake_slurm(tmp_path: Path) -> Iterator[FakeSlurm]:
    fake = FakeSlurm(tmp_path / "slurm")
    try:
        yield fake
    finally:
        fake.stop_all()


def _snakemake(
    workdir: Path, fake: FakeSlurm, *args: str, **env: str
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    cmd += ["--profile", str(PROFILE), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml")]
    # The plugin waits 40 s before its first status query by default (a real cluster's
    # accounting lags); the fake knows a job's state at once.
    cmd += ["--slurm-init-seconds-before-status-checks", "1", *args]
    return subprocess.run(
        cmd,
        cwd=workdir,
        env=fake.env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _submitted(fake: FakeSlurm) -> dict[str, list[str]]:
    """sbatch argument vectors by job comment (``rule_<rule>_wildcards_<values>``)."""
    out = {}
    for call in fake.calls("sbatch"):
        argv = call["argv"]
        out[argv[argv.index("--comment") + 1]] = argv
    return out


def _value(argv: list[str], flag: str) -> str | None:
    """Value of ``flag`` (``-t 20`` or ``--gpus=1``) in an sbatch argument vector."""
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _job(submitted: dict[str, list[str]], comment: str) -> list[str]:
    assert comment in submitted, f"no sbatch call for {comment}; submitted: {sorted(submitted)}"
    return submitted[comment]


@pytest.mark.slow
def test_demo_jobs_run_under_the_slurm_executor_with_their_resources(tmp_path, fake_slurm):
    """Five jobs (dataset, two methods, two tables) submitted, run, and asked for the right
    memory, time, CPUs, GPUs and partition; the tables are written."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    targets = ["results/tables/annotation.csv", "results/tables/integration.csv"]
    run = _snakemake(workdir, fake_slurm, *targets)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]

    # Every job went through sbatch and ran to completion in the fake's background process.
    jobs = fake_slurm.jobs()
    assert len(jobs) == 5 and {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    for name in ("annotation", "integration"):
        table = pd.read_csv(workdir / "results" / "tables" / f"{name}.csv")
        assert table["status"].tolist() == ["ok"], table.to_string()

    submitted = _submitted(fake_slurm)
    assert len(submitted) == len(fake_slurm.calls("sbatch")) == 5
    # The config's resources per method: memory, time limit, CPUs = threads, GPUs.
    cpu = _job(submitted, "rule_run_method_wildcards_annotation_sim_celltypes_logreg_0")
    gpu = _job(submitted, "rule_run_method_wildcards_integration_sim_celltypes_pca_0")
    assert (_value(cpu, "--mem"), _value(cpu, "-t"), _value(cpu, "--cpus-per-task")) == (
        "1500",
        "20",
        "1",
    )
    assert (_value(gpu, "--mem"), _value(gpu, "-t"), _value(gpu, "--cpus-per-task")) == (
        "3000",
        "45",
        "2",
    )
    assert _value(gpu, "--gpus") == "1"
    assert not [a for a in cpu if a.startswith(("--gpus", "--gres", "--gpus-per"))], cpu
    # partitions.yaml: the GPU job goes to the GPU partition, everything else to the CPU one.
    assert _value(gpu, "-p") == "gpu"
    assert {_value(argv, "-p") for argv in submitted.values() if argv is not gpu} == {"cpu"}
    # Rules without their own resources take the profile's (standardise_dataset: set-resources).
    table_job = _job(submitted, "rule_task_table_wildcards_annotation")
    assert (_value(table_job, "--mem"), _value(table_job, "-t")) == ("16000", "240")
    standardise = _job(submitted, "rule_standardise_dataset_wildcards_sim_celltypes")
    assert _value(standardise, "--mem") == "64000"
    for argv in submitted.values():  # run in the workflow's folder, the job as --wrap
        assert _value(argv, "-D") == str(workdir) and _value(argv, "--wrap"), argv

    # Inside the allocation the job step asks srun for the same CPUs and GPUs.
    steps = {
        next(a for a in call["argv"] if a.startswith("--cpus-per-task")): call["argv"]
        for call in fake_slurm.calls("srun")
        if "run_method" in " ".join(call["argv"])
    }
    assert set(steps) == {"--cpus-per-task=1", "--cpus-per-task=2"}, steps
    assert "--gpus=1" in steps["--cpus-per-task=2"]
    assert not any(a.startswith("--gpus") for a in steps["--cpus-per-task=1"])
    # Job states came from sacct, polled under the run's job name.
    assert fake_slurm.calls("sacct"), "the plugin never asked sacct for job states"


def test_pretraining_job_asks_for_the_profiles_gpu_node(tmp_path, fake_slurm):
    """The pre-training rule's submission: profile overrides plus the config's GPU count.

    The fake records the sbatch call without running it (the job reports FAILED at once),
    so the test checks what a pre-training job asks for in seconds.
    """
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = {
        **CONFIG,
        "model": {"source": "pretrain", "pretrain": {"corpus": ["sim_celltypes"]}},
        "tasks": {"annotation": {"datasets": ["sim_celltypes"], "methods": {"scgpt": {}}}},
        "resources": {"default": {"threads": 1}, "pretrain": {"gpu": 2}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # The corpus exists, so only the pre-training job is planned.
    corpus = workdir / "data" / "corpus" / "pretrain_corpus.h5ad"
    corpus.parent.mkdir(parents=True)
    corpus.write_bytes(b"not a corpus: the fake SLURM records this job and never runs it")
    run = _snakemake(
        workdir,
        fake_slurm,
        "results/model/pretrained/args.json",
        "--allowed-rules",
        "pretrain",
        "--retries",
        "0",
        FAKE_SLURM_RUN="0",
    )
    assert run.returncode != 0  # the fake failed the job on purpose
    submitted = _submitted(fake_slurm)
    assert list(submitted) == ["rule_pretrain"], (run.stdout + run.stderr)[-4000:]
    argv = submitted["rule_pretrain"]
    assert _value(argv, "--gpus") == "2" and _value(argv, "-p") == "gpu"
    assert (_value(argv, "--mem"), _value(argv, "-t"), _value(argv, "--cpus-per-task")) == (
        "128000",
        "4320",
        "16",
    )
    assert not [a for a in argv if a.startswith("--gres")], argv
