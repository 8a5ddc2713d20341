"""What every published table rests on: a failure of any kind becomes a failed row with its
reason, and nothing is marked ok before its output is saved and scored."""

from __future__ import annotations

import errno
import importlib
import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from benchmark import io, runner, tables
from benchmark.failed_datasets import FailedDatasetError, check_standard_file
from benchmark.logs import job_logging
from benchmark.tasks.base import Task
from benchmark.workflow import Job, WorkflowPlan
from benchmark.yamlfile import YamlFileError, load_yaml
from contract import registry
from contract.conditions import subgroup
from scgpt import load_pretrained
from scgpt.checkpoint import CorruptCheckpointError
from scgpt.embed import embed_cells
from tests._models import random_checkpoint

# The module, not the function of the same name that benchmark.datasets exports.
standardise_module = importlib.import_module("benchmark.datasets.standardise")


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


# --- a full disk is named, and leaves nothing partial -----------------------------------------
def _short_write(fh, array, *args, **kwargs):
    """What np.save does on a full disk: part of the data, then numpy's bare message."""
    fh.write(b"\x93NUMPY" + b"x" * 100)
    raise OSError("600000 requested and 310240 written")


def _hdf5_write_failed(adata, path, *args, **kwargs):
    """h5py's error on a full disk, wrapped the way anndata re-raises it."""
    Path(path).write_bytes(b"\x89HDF\r\n" + b"x" * 100)
    try:
        raise OSError(
            "[Errno 28] Can't synchronously write data (file write failed: errno = 28, "
            "error message = 'No space left on device', total write size = 600000)"
        )
    except OSError as err:
        raise OSError(f"{err}\n\nAbove error raised while writing key 'X'") from err


def _enospc(path, text, *args, **kwargs):
    """A plain write to a full disk: Python's own OSError, naming no file."""
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("patch", "write"),
    [
        (("numpy.save", _short_write), lambda p: io.write_npy(np.zeros(4), p / "emb.npy")),
        (
            ("anndata.AnnData.write_h5ad", _hdf5_write_failed),
            lambda p: io.write_h5ad(ad.AnnData(np.zeros((2, 2))), p / "cells.h5ad"),
        ),
        (
            ("pathlib.Path.write_text", _enospc),
            lambda p: io.write_json({"status": "ok"}, p / "run.json"),
        ),
    ],
    ids=["numpy-short-write", "h5py-via-anndata", "enospc"],
)
def test_full_disk_names_the_file_and_leaves_nothing_partial(monkeypatch, tmp_path, patch, write):
    target, fake = patch
    monkeypatch.setattr(target, fake)
    with pytest.raises(io.DiskFullError, match="no space left on device") as err:
        write(tmp_path)
    written = next(tmp_path.glob("*"), None)
    assert written is None, f"left behind: {written}"  # neither the file nor its temporary
    message = str(err.value)
    assert str(tmp_path) in message and "free in" in message
    assert err.value.errno == errno.ENOSPC


class _FullDiskTask(_FragileTask):
    def save(self, output, inputs, outdir):
        io.write_npy(np.asarray(output), Path(outdir) / "embedding.npy")
        return [Path(outdir) / "embedding.npy"]


def test_full_disk_in_a_run_is_not_recorded_as_a_result(monkeypatch, tmp_path):
    # A failed row would stay (nothing redoes it); the job must fail so that the next run does.
    monkeypatch.setattr("numpy.save", _short_write)
    with pytest.raises(io.DiskFullError, match=r"while writing .*embedding\.npy"):
        _run_toy(monkeypatch, tmp_path, _FullDiskTask("nowhere"), constant)
    assert not (tmp_path / "o" / "run.json").exists()
    assert not list((tmp_path / "o").glob(".embedding*"))


def test_full_disk_in_the_method_process_fails_the_job_naming_the_folder(
    plugin_methods, annotation_dataset, tmp_path
):
    out = tmp_path / "full"
    log_path = tmp_path / "full.log"
    with pytest.raises(io.DiskFullError, match="no space left on device") as err:
        runner.run_method_isolated(
            "annotation", "disk_full", "cells", annotation_dataset, out, seed=0, log_path=log_path
        )
    assert str(out) in str(err.value) and "nothing was recorded" in str(err.value)
    assert not (out / "run.json").exists() and not (out / "scores.json").exists()
    assert "scratch/model.ckpt" in log_path.read_text()  # the file the method was writing


# --- bad checkpoint files are named -----------------------------------------------------------
def test_args_json_value_of_wrong_type_names_file_key_value_and_type(checkpoint):
    args_file = checkpoint / "args.json"
    args = json.loads(args_file.read_text())
    args["nlayers"] = "two"
    args_file.write_text(json.dumps(args))
    with pytest.raises(CorruptCheckpointError) as err:
        load_pretrained(checkpoint)
    message = str(err.value)
    assert str(args_file) in message
    assert "'nlayers'" in message and "'two'" in message and "expected an integer" in message


def test_non_utf8_vocab_json_names_the_file(checkpoint):
    vocab_file = checkpoint / "vocab.json"
    vocab_file.write_bytes(b'{"G0": 0, "\xff\xfe": 1}')
    with pytest.raises(ValueError, match="not UTF-8") as err:
        load_pretrained(checkpoint)
    assert str(vocab_file) in str(err.value)


# --- YAML errors name file, line and column ---------------------------------------------------
BROKEN_YAML = "seeds: [0\ntasks:\n  annotation: {}\n"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN_YAML)
    with pytest.raises(YamlFileError, match=r"expected ',' or ']'") as err:
        load_yaml(path)
    assert str(err.value).startswith(f"{path}:2:6: not valid YAML")


def test_broken_demo_config_is_named_by_the_workflow(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(BROKEN_YAML)
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-n", "--cores", "1"]
    cmd += ["--directory", str(tmp_path)]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "config/config.yaml:2:6: not valid YAML" in result.stdout + result.stderr


# --- raising a failed row's resources redoes it -----------------------------------------------
def test_failed_run_is_redone_when_its_resources_change_and_an_ok_one_is_not(tmp_path):
    def plan(mem_mb: int) -> WorkflowPlan:
        config = {"resources": {"killed": {"mem_mb": mem_mb}}}
        return WorkflowPlan(config, None, (), (), results_dir=str(tmp_path))

    job = Job("annotation", "cells", "killed", 0)
    run_json = Path(plan(4000).run_dir(job)) / "run.json"
    first = plan(4000).retry_resources(job)  # planned before the run: no run.json
    assert first == {"mem_mb": 4000, "runtime": 60, "gpu": 0}
    run_json.parent.mkdir(parents=True)
    recorded = {"mem_mb": 4000, "runtime": 60, "gpu": 0, "threads": 1}
    run_json.write_text(json.dumps({"status": "failed", "resources": recorded}))
    # Snakemake's params trigger compares these values with the ones of the last run.
    assert plan(4000).retry_resources(job) == first  # nothing changed: not redone
    assert plan(8000).retry_resources(job) != first  # mem_mb raised: redone
    run_json.write_text(json.dumps({"status": "ok", "resources": recorded}))
    assert plan(8000).retry_resources(job) == first  # ok: kept, whatever the config says
    run_json.write_text(json.dumps({"status": "ok"}))  # recorded before resources were
    assert not isinstance(plan(8000).retry_resources(job), dict | list | str | int | type(None))


def test_failed_row_tells_what_the_next_run_does():
    assert "next run redoes this run" in runner.describe_exit(-signal.SIGKILL, [])
    assert "next run redoes this run" in runner.describe_exit(0, [signal.SIGTERM])


# --- a dataset that fails standardisation is failed rows, not a stop --------------------------
def test_failed_standardisation_is_recorded_and_becomes_failed_rows(monkeypatch, tmp_path):
    def fails(dataset, output, **kwargs):
        raise ValueError(f"{dataset}: column 'celltype' not in obs")

    monkeypatch.setattr(standardise_module, "prepare_standard_dataset", fails)
    broken = tmp_path / "standard" / "broken.h5ad"
    log_path = tmp_path / "broken.log"
    assert standardise_module.prepare_or_record_failure("broken", broken, log_path=log_path) is None
    with pytest.raises(FailedDatasetError, match="column 'celltype' not in obs") as err:
        check_standard_file(broken)
    assert str(log_path) in str(err.value) and f"delete {broken}" in str(err.value)
    with pytest.raises(OSError, match="signature"):  # no h5ad reader takes it for a dataset
        ad.read_h5ad(broken)

    ok = _run_toy(monkeypatch, tmp_path, _FragileTask("nowhere"), constant)  # dataset "d"
    failed = runner.run_method("integration", "constant", "broken", broken, tmp_path / "b", seed=0)
    assert ok["status"] == "ok" and failed["status"] == "failed"
    assert "failed standardisation: ValueError: broken: column 'celltype'" in failed["error"]
    table = tables.write_task_table(
        [tmp_path / "o" / "run.json", tmp_path / "b" / "run.json"],
        ["mae"],
        tmp_path / "t.csv",
        tmp_path / "t.md",
        title="t",
    )
    assert dict(zip(table["dataset"], table["status"], strict=True)) == {
        "broken": "failed",
        "d": "ok",
    }
    assert (
        "failed: FailedDatasetError: dataset 'broken' failed standardisation"
        in (tmp_path / "t.md").read_text()
    )


def test_full_disk_while_standardising_fails_the_job_instead(monkeypatch, tmp_path):
    def full(dataset, output, **kwargs):
        raise io.disk_full_error(output, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(standardise_module, "prepare_standard_dataset", full)
    with pytest.raises(io.DiskFullError):
        standardise_module.prepare_or_record_failure("x", tmp_path / "x.h5ad")
    assert not (tmp_path / "x.h5ad").exists()


def test_atomic_outputs_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os
    import stat

    from scgpt._utils import write_json_atomic

    old = os.umask(0o022)
    try:
        io.write_text("x", tmp_path / "a.txt")
        write_json_atomic({"a": 1}, tmp_path / "b.json")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
