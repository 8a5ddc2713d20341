"""The committed real subsets (benchmark/data/real/) load through the registry as documented,
and the local ``path:`` source / added registry files behave as the README recipe says."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from benchmark.coverage import OFFICIAL_VOCAB, vocabulary_coverage
from benchmark.datasets import (
    DatasetError,
    RegistryError,
    load_registry,
    prepare_standard_dataset,
)
from benchmark.sources.download import DownloadError
from benchmark.sources.local import copy_local
from contract.conditions import is_control, n_genes

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "config" / "datasets.yaml"


def _standardise(name: str, tmp_path: Path, registry=None):
    """The download rule's copy (sha256-checked) and the standardise rule, as the workflow runs them."""
    reg = registry or load_registry(REGISTRY)
    raw = tmp_path / "downloads"
    for filename in reg.file_names(name):
        source = reg.download_source(filename)
        assert source["url"] is None and Path(source["path"]).is_absolute()
        copy_local(source["path"], raw / filename, sha256=source["sha256"], size=source["size"])
    return prepare_standard_dataset(
        name, tmp_path / "standard" / f"{name}.h5ad", raw_dir=raw, registry=reg
    )


def _is_counts(x) -> bool:
    values = x.data if sp.issparse(x) else np.asarray(x)
    return bool(np.all(values >= 0) and np.all(values == np.round(values)))


def test_norman_real(tmp_path):
    adata = _standardise("norman_real", tmp_path)
    assert adata.shape == (3375, 500)
    conditions = adata.obs["condition"].astype(str)
    unique = set(conditions)
    assert len(unique) == 34
    assert "ctrl" in unique and "control" not in unique
    singles = {c for c in unique if n_genes(c) == 1}
    doubles = {c for c in unique if n_genes(c) == 2}
    # PerturBench's file: 18 single activations (the issue counted 17) and 15 doubles.
    assert (len(singles), len(doubles)) == (18, 15)
    assert "KLF1+ctrl" in singles and "KLF1+MAP2K6" in doubles
    assert (conditions == "ctrl").sum() == 100 and all(is_control(c) for c in ["ctrl"])
    counts = conditions.value_counts()
    assert counts.max() == 100 and counts.min() == 80  # FOXL2+HOXB9 80, PLK4 95 cells
    # The glioma rows of the file are gone, the source names kept beside the standard ones.
    assert set(adata.obs["cell_type"].astype(str)) == {"k562"}
    record = adata.uns["standardisation"]
    assert record["rows"]["dropped"] == {"mcfaline23": 2586}
    source = adata.obs["condition_source"].astype(str)
    assert set(source[conditions == "ctrl"]) == {"control"}
    assert set(source[conditions == "KLF1+ctrl"]) == {"KLF1"}
    # GEARS' split: control in train, every condition wholly in one split.
    split = adata.obs["split"].astype(str)
    assert set(split) == {"train", "val", "test"}
    assert set(split[conditions == "ctrl"]) == {"train"}
    assert all(split[conditions == c].nunique() == 1 for c in unique)
    assert not _is_counts(adata.X)  # log-normalised, declared so
    assert "log-normalised" in record["x"]


def test_bmmc_cite_real(tmp_path):
    adata = _standardise("bmmc_cite_real", tmp_path)
    assert adata.n_obs == 600
    assert adata.var["modality"].value_counts().to_dict() == {"rna": 1000, "protein": 134}
    assert adata.obs["cell_type"].nunique() == 41
    assert adata.obs["batch"].astype(str).value_counts().to_dict() == {"s1d1": 311, "s1d2": 289}
    assert _is_counts(adata.X)  # layers["counts"] of both files


def test_bmmc_cite_rna_real(tmp_path):
    adata = _standardise("bmmc_cite_rna_real", tmp_path)
    assert adata.shape == (600, 1000)
    assert adata.obs["cell_type"].nunique() == 41
    split = adata.obs["split"].astype(str)
    # One donor is the reference, the other the query.
    assert (split == "reference").sum() == 311 and (split == "query").sum() == 289
    assert set(adata.obs["batch"][split == "reference"].astype(str)) == {"s1d1"}
    assert _is_counts(adata.X)


def test_bmmc_multiome_real(tmp_path):
    adata = _standardise("bmmc_multiome_real", tmp_path)
    assert adata.n_obs == 500
    assert adata.var["modality"].value_counts().to_dict() == {"rna": 600, "atac": 600}
    assert adata.obs["cell_type"].nunique() == 21
    assert adata.obs["batch"].astype(str).value_counts().to_dict() == {"s1d2": 279, "s1d1": 221}
    peaks = adata.var_names[adata.var["modality"] == "atac"]
    # Peaks named chrom-start-end (one on an unplaced contig, GL000205.2).
    assert all(re.fullmatch(r"(chr[0-9XY]+|GL\d+\.\d)-\d+-\d+", p) for p in peaks)
    assert _is_counts(adata.X)


def test_committed_files_match_their_readme():
    """The digests in the README beside the files are the files' (and the registry's)."""
    folder = ROOT / "benchmark" / "data" / "real"
    readme = (folder / "README.md").read_text()
    reg = load_registry(REGISTRY)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 6
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in readme, path
    for name in ("norman_real", "bmmc_cite_real", "bmmc_cite_rna_real", "bmmc_multiome_real"):
        for filename in reg.file_names(name):
            source = reg.file_source(name, filename)
            data = Path(source["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == source["sha256"]
            assert len(data) == source["size"]


def test_vocabulary_coverage_of_real_genes(tmp_path):
    """The official vocabulary knows almost every real gene; a vocabulary of other genes none."""
    adata = _standardise("bmmc_multiome_real", tmp_path)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "vocab.json").write_text(json.dumps({"<pad>": 0, "gene0001": 1, "CD74": 2}))
    record = vocabulary_coverage(adata, checkpoint)
    assert record["n_genes"] == 600  # RNA only, the peaks left out
    official = json.loads(OFFICIAL_VOCAB.read_text())
    expected = sum(g in official for g in adata.var_names[adata.var["modality"] == "rna"])
    assert record["official_scgpt"]["n_matched"] == expected
    assert 0.9 < record["official_scgpt"]["fraction"] < 1.0
    assert record["checkpoint"]["n_matched"] == int("CD74" in adata.var_names)


# --- the local path source and added registry files -----------------------------------------
def _user_registry(folder: Path, h5ad: Path, digest: str, name: str = "my_cells") -> Path:
    path = folder / "my_datasets.yaml"
    path.write_text(
        f"""datasets:
  {name}:
    kind: dataset
    description: my own cells
    tasks: [annotation, integration]
    format: h5ad
    files:
      - {{name: mine.h5ad, path: data/{h5ad.name}, sha256: {digest}, format: h5ad}}
    inputs: {{data: mine.h5ad}}
    obs: {{cell_type: cell_type, batch: batch}}
    split: {{by: obs, column: batch, values: {{reference: [s1d1], query: [s1d2]}}}}
    counts: layers/counts
    verification: unverified
"""
    )
    return path


def test_added_registry_resolves_paths_against_its_own_file(tmp_path):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    source = ROOT / "benchmark/data/real/bmmc_cite/bmmc_cite_starter_rna.h5ad"
    h5ad = folder / "data" / "cells.h5ad"
    shutil.copyfile(source, h5ad)
    digest = hashlib.sha256(h5ad.read_bytes()).hexdigest()
    user = _user_registry(folder, h5ad, digest)
    reg = load_registry(REGISTRY, extra=[user])
    assert "my_cells" in reg and "norman_real" in reg
    assert reg.file_source("my_cells", "mine.h5ad")["path"] == str(h5ad.resolve())
    # The built-in committed checkpoint still resolves against config/ (no copied registry).
    checkpoint = reg.checkpoint_source("sim_atlas")["path"]
    assert checkpoint == str((ROOT / "results" / "model" / "sim_atlas").resolve())
    adata = _standardise("my_cells", tmp_path / "work", registry=reg)
    assert adata.n_obs == 600 and set(adata.obs["split"].astype(str)) == {"reference", "query"}
    assert h5ad.read_bytes() == source.read_bytes()  # read, never modified


def test_added_registry_cannot_redefine_an_entry(tmp_path):
    user = _user_registry(tmp_path, tmp_path / "x.h5ad", "a" * 64, name="norman_real")
    with pytest.raises(RegistryError, match=r"norman_real.*already declared in .*datasets\.yaml"):
        load_registry(REGISTRY, extra=[user])


def test_local_file_needs_its_sha256(tmp_path):
    user = _user_registry(tmp_path, tmp_path / "x.h5ad", "a" * 64)
    user.write_text(user.read_text().replace(", sha256: " + "a" * 64, ""))
    with pytest.raises(RegistryError, match=r"files\[0\]\.sha256: missing: a local file"):
        load_registry(REGISTRY, extra=[user])


def test_copy_local_refuses_a_changed_file(tmp_path):
    src = tmp_path / "a.h5ad"
    src.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    copy_local(src, tmp_path / "out" / "a.h5ad", sha256=good)
    assert (tmp_path / "out" / "a.h5ad").read_bytes() == b"abc"
    src.write_bytes(b"abd")
    with pytest.raises(DownloadError, match=r"sha256 .* the registry says"):
        copy_local(src, tmp_path / "out2" / "a.h5ad", sha256=good)
    assert not (tmp_path / "out2" / "a.h5ad").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        copy_local(tmp_path / "missing.h5ad", tmp_path / "o.h5ad", sha256=good)


def test_rows_filter_names_the_values_present(tmp_path):
    text = REGISTRY.read_text().replace("keep: [norman19]", "keep: [norman2019]")
    bad = tmp_path / "config" / "datasets.yaml"
    bad.parent.mkdir()
    bad.write_text(text.replace("path: ../benchmark/", f"path: {ROOT}/benchmark/"))
    with pytest.raises(DatasetError, match=r"norman_real: no cell .* \['norman2019'\].*mcfaline23"):
        _standardise("norman_real", tmp_path, registry=load_registry(bad))


def test_scgpt_perturbation_warns_when_perturbed_genes_are_unmeasured(caplog):
    import anndata as ad
    import pandas as pd

    from baselines.scgpt_perturbation import _warn_unmarkable

    train = ad.AnnData(
        X=np.zeros((3, 2), dtype=np.float32),
        obs=pd.DataFrame({"condition": ["ctrl", "A+ctrl", "B+ctrl"]}, index=["c1", "c2", "c3"]),
        var=pd.DataFrame(index=["A", "G"]),
    )
    with caplog.at_level("WARNING", logger="baselines"):
        _warn_unmarkable(train, ["A+C"])
    assert "2 of the 3 perturbed genes are not among the 2 genes" in caplog.text
    assert "B, C" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="baselines"):
        _warn_unmarkable(train, ["A+ctrl"])
    assert "B" in caplog.text  # the training conditions count too


def test_dataset_params_override_one_dataset_only():
    import copy

    import yaml

    from benchmark.workflow import ConfigError, WorkflowPlan, validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(config, ROOT / "config" / "schema.yaml")
    plan = WorkflowPlan.from_config(copy.deepcopy(config))
    base = plan.method_params("perturbation", "scgpt")
    assert plan.method_params("perturbation", "scgpt", "sim_perturb") == base
    real = plan.method_params("perturbation", "scgpt", "norman_real")
    assert real == {**base, "epochs": 3, "n_control_cells": 30}
    bad = copy.deepcopy(config)
    bad["tasks"]["perturbation"]["dataset_params"] = {"norman_real": {"scgpt": {"epoch": 3}}}
    with pytest.raises(ConfigError, match=r"dataset_params\.norman_real\.scgpt"):
        WorkflowPlan.from_config(bad)
    bad["tasks"]["perturbation"]["dataset_params"] = {"pbmc_demo": {"scgpt": {}}}
    with pytest.raises(ConfigError, match="not a dataset of the task"):
        WorkflowPlan.from_config(bad)
