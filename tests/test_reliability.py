"""What every published table rests on: a failure of any kind becomes a failed row with its
reason, and nothing is marked ok before its output is saved and scored."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from baselines import registry
from benchmark import runner, tables
from benchmark.conditions import subgroup
from benchmark.logs import job_logging
from benchmark.tasks.base import Task
from scgpt import load_pretrained
from scgpt.checkpoint import CorruptCheckpointError
from scgpt.embed import embed_cells
from tests._models import random_checkpoint


# --- a method killed from outside -------------------------------------------------------------
@pytest.fixture
def plugin_methods(monkeypatch):
    """Methods outside baselines/ (tests/_plugin_methods.py), found by the child process too."""
    monkeypatch.setenv(registry.METHOD_MODULES_ENV, "tests._plugin_methods")


@pytest.fixture
def annotation_dataset(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    adata = ad.AnnData(
        sp.csr_matrix(rng.poisson(2.0, size=(n, 12)).astype(np.float32)),
        obs=pd.DataFrame(
            {
                "cell_type": ["T"] * 25 + ["B"] * 15,
                "split": ["reference", "query"] * (n // 2),
            },
            index=[f"c{i}" for i in range(n)],
        ),
    )
    adata.var_names = [f"G{i}" for i in range(12)]
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_sigkilled_method_is_a_failed_row_and_the_table_is_written(
    plugin_methods, annotation_dataset, tmp_path
):
    runs = []
    for method in ("majority_label", "killed"):
        out = tmp_path / "results" / method / "seed0"
        out.mkdir(parents=True)
        (out / "run.json").write_text('{"status": "ok", "stale": true}')  # an earlier run's
        record = runner.run_method_isolated(
            "annotation",
            method,
            "cells",
            annotation_dataset,
            out,
            seed=0,
            log_path=tmp_path / f"{method}.log",
        )
        runs.append(out / "run.json")
    assert record["status"] == "failed"
    assert "killed by SIGKILL" in record["error"] and "mem_mb" in record["error"]
    assert record["exit"]["returncode"] == -signal.SIGKILL
    assert json.loads(runs[1].read_text())["error"] == record["error"]
    assert json.loads(runs[1].with_name("scores.json").read_text()) == {"status": "failed"}
    ok = json.loads(runs[0].read_text())
    assert ok["status"] == "ok" and "stale" not in ok
    table = tables.write_task_table(
        runs, ["accuracy"], tmp_path / "t.csv", tmp_path / "t.md", title="annotation"
    )
    assert dict(zip(table["method"], table["status"], strict=True)) == {
        "killed": "failed",
        "majority_label": "ok",
    }
    assert "failed: killed by SIGKILL" in (tmp_path / "t.md").read_text()


def test_the_method_process_sizes_every_thread_pool_to_the_job(
    plugin_methods, annotation_dataset, tmp_path, monkeypatch
):
    # A machine-wide setting must not leak into a 1-thread job.
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    record = runner.run_method_isolated(
        "annotation",
        "thread_probe",
        "cells",
        annotation_dataset,
        tmp_path / "probe",
        seed=0,
        threads=1,
        log_path=tmp_path / "probe.log",
    )
    assert record["status"] == "ok", record.get("error")


def test_sigterm_to_the_job_ends_the_method_as_a_failed_row(
    plugin_methods, annotation_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "sleeper"
    log_path = tmp_path / "sleeper.log"

    started = tmp_path / "sleeper.started"
    monkeypatch.setenv("SLEEPER_STARTED", str(started))

    def terminate_once_started() -> None:
        for _ in range(600):
            if started.exists():
                break
            threading.Event().wait(0.1)
        signal.pthread_kill(main, signal.SIGTERM)

    # Sent to the main thread, where the runner waits (as a kill of the process reaches it).
    main = threading.get_ident()
    timer = threading.Thread(target=terminate_once_started, daemon=True)
    timer.start()
    record = runner.run_method_isolated(
        "annotation", "sleeper", "cells", annotation_dataset, out, seed=0, log_path=log_path
    )
    timer.join()
    assert record["status"] == "failed"
    assert "terminated by SIGTERM" in record["error"] and "runtime" in record["error"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


# --- nothing is ok before it is saved and scored ----------------------------------------------
class _FragileTask(Task):
    name = "integration"
    metrics = ("mae",)
    required_obs = ("cell_type",)

    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    def prepare(self, adata, *, seed):
        return {"args": (adata,)}

    def save(self, output, inputs, outdir):
        if self.fail_in == "save":
            raise OSError("disk full")
        return []

    def score(self, output, inputs, *, seed):
        if self.fail_in == "score":
            raise ValueError("metric undefined")
        return {"mae": 0.0}


def _run_toy(monkeypatch, tmp_path, task: Task, method, **kwargs) -> dict:
    """Run ``method`` (registered for integration) under ``task`` on a 3-cell dataset."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_DISCOVERED", True)
    monkeypatch.setattr(runner, "get_task", lambda name: task)
    registry.register("integration", method.__name__)(method)
    adata = ad.AnnData(
        np.ones((3, 2), dtype=np.float32), obs=pd.DataFrame({"cell_type": list("aab")})
    )
    adata.obs_names = ["x", "y", "z"]
    adata.write_h5ad(tmp_path / "d.h5ad")
    return runner.run_method(
        "integration", method.__name__, "d", tmp_path / "d.h5ad", tmp_path / "o", seed=0, **kwargs
    )


def constant(adata, *, seed):
    return np.zeros(adata.n_obs)


@pytest.mark.parametrize(("fail_in", "message"), [("save", "disk full"), ("score", "undefined")])
def test_failure_in_save_or_score_is_a_failed_run(monkeypatch, tmp_path, fail_in, message):
    record = _run_toy(monkeypatch, tmp_path, _FragileTask(fail_in), constant)
    assert record["status"] == "failed" and message in record["error"]
    assert json.loads((tmp_path / "o" / "scores.json").read_text()) == {"status": "failed"}


def test_warnings_are_recorded_and_flagged(monkeypatch, tmp_path):
    def warns(adata, *, seed):
        logging.getLogger("scgpt.vocab").warning(
            "only %.1f%% of %d genes in the vocabulary", 2, 300
        )
        return np.zeros(adata.n_obs)

    record = _run_toy(monkeypatch, tmp_path, _FragileTask("nowhere"), warns)
    assert record["status"] == "ok"
    assert record["warnings"] == ["scgpt.vocab: only 2.0% of 300 genes in the vocabulary"]
    tables.write_task_table(
        [tmp_path / "o" / "run.json"], ["mae"], tmp_path / "t.csv", tmp_path / "t.md", title="t"
    )
    assert "ok (warning: scgpt.vocab: only 2.0% of 300 genes" in (tmp_path / "t.md").read_text()


# --- tables mixing ok and failed seeds --------------------------------------------------------
def _write_run(folder: Path, seed: int, status: str, acc: float | None) -> Path:
    folder.mkdir(parents=True)
    run = {
        "task": "t",
        "dataset": "d",
        "method": "m",
        "label": "M",
        "seed": seed,
        "status": status,
        "error": None if status == "ok" else "RuntimeError: boom",
        "wall_seconds": 1.0,
        "peak_memory_mb": 5.0,
    }
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "scores.json").write_text(
        json.dumps({"status": status, **({"acc": acc} if acc is not None else {})})
    )
    return folder / "run.json"


def test_partial_seeds_are_marked_and_not_counted(tmp_path):
    runs = [
        _write_run(tmp_path / "s0", 0, "ok", 0.5),
        _write_run(tmp_path / "s1", 1, "failed", None),
        _write_run(tmp_path / "s2", 2, "ok", 0.7),
    ]
    table = tables.write_task_table(runs, ["acc"], tmp_path / "t.csv", tmp_path / "t.md", title="t")
    row = table.iloc[0]
    assert row["status"] == "partial" and row["n_seeds"] == 2
    assert row["acc"] == pytest.approx(0.6)
    assert row["acc_se"] == pytest.approx(0.1)
    assert "| 2 | 0.600 ± 0.100 |" in (tmp_path / "t.md").read_text()
    assert "partial: RuntimeError: boom" in (tmp_path / "t.md").read_text()


def test_three_gene_condition_has_no_subgroup():
    with pytest.raises(ValueError, match="single and double"):
        subgroup("A+B+C", {"A"})


# --- corrupt checkpoints are named, never executed --------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    return Path(random_checkpoint(tmp_path / "ckpt", [f"G{i}" for i in range(10)], seed=0))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"<!DOCTYPE html><html><body>Google Drive - Sign in</body></html>", "HTML page"),
        (bytes(range(256)) * 8, "not a PyTorch weights file"),
    ],
)
def test_corrupt_weights_name_the_file(checkpoint, content, message):
    weights = checkpoint / "best_model.pt"
    weights.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=message) as err:
        load_pretrained(checkpoint)
    assert str(weights) in str(err.value)
    assert "weights_only=False" not in str(err.value)


def test_truncated_weights_name_the_file(checkpoint):
    weights = checkpoint / "best_model.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated or not a PyTorch") as err:
        load_pretrained(checkpoint)
    assert str(weights) in str(err.value)


def test_pickled_object_is_refused_not_run(checkpoint):
    weights = checkpoint / "best_model.pt"
    torch.save({"not": "tensors", "x": Path("somewhere")}, weights)
    with pytest.raises(CorruptCheckpointError, match="refused without being executed") as err:
        load_pretrained(checkpoint)
    assert "weights_only=False" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"), [("{'embsize': 8", "not valid JSON"), ("[1, 2]", "JSON object")]
)
def test_broken_args_json_names_the_file(checkpoint, text, message):
    (checkpoint / "args.json").write_text(text)
    with pytest.raises(CorruptCheckpointError, match=message) as err:
        load_pretrained(checkpoint)
    assert str(checkpoint / "args.json") in str(err.value)


def test_embed_cells_refuses_nan(checkpoint):
    X = np.ones((4, 10), dtype=np.float32)
    X[1, 3] = np.nan
    adata = ad.AnnData(X)
    adata.var_names = [f"G{i}" for i in range(10)]
    with pytest.raises(ValueError, match=r"adata.X has 1 NaN/infinite"):
        embed_cells(adata, checkpoint, progress=False)


# --- job logs ---------------------------------------------------------------------------------
def test_job_log_holds_the_exception(tmp_path):
    log_path = tmp_path / "job.log"
    with pytest.raises(KeyError), job_logging(log_path):
        raise KeyError("config datasets.x: something the user must read")
    text = log_path.read_text()
    assert "the job failed: KeyError" in text and "something the user must read" in text
    assert "Traceback" in text


def test_plugin_module_that_cannot_be_imported_is_named(monkeypatch):
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setenv(registry.METHOD_MODULES_ENV, "no_such_module_xyz")
    with pytest.raises(ImportError, match="names module 'no_such_module_xyz'"):
        registry.discover()


def test_metric_options_reach_the_task(monkeypatch, tmp_path):
    chosen = []

    class _OptionTask(_FragileTask):
        def with_metric_options(self, options):
            chosen.append(options)
            return self

    record = _run_toy(
        monkeypatch,
        tmp_path,
        _OptionTask("nowhere"),
        constant,
        metric_options={"clustering": "leiden"},
    )
    assert record["status"] == "ok" and chosen == [{"clustering": "leiden"}]
    assert record["metric_options"] == {"clustering": "leiden"}
