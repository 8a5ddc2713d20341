"""Dataset registry and standardisation: every format on small synthetic files, offline."""

from __future__ import annotations

import gzip
import io
import pickle
import sys
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from benchmark.datasets import (
    TASKS,
    DatasetError,
    Registry,
    RegistryError,
    build_builtin,
    load_registry,
    prepare_standard_dataset,
    raw_files,
    standardise,
    validate_standard,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "bundle.zip"


# --- helpers ---------------------------------------------------------------------------------
def _registry(tmp_path: Path, datasets: dict, checkpoints: dict | None = None) -> Registry:
    path = tmp_path / "datasets.yaml"
    body = {"version": 1, "datasets": datasets}
    if checkpoints is not None:
        body["checkpoints"] = checkpoints
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return load_registry(path)


def _file(name: str, fmt: str = "h5ad") -> dict:
    return {"name": name, "url": f"https://example.org/{name}", "sha256": None, "format": fmt}


def _h5ad_bytes(adata: ad.AnnData, tmp_path: Path) -> bytes:
    path = tmp_path / f"tmp_{id(adata)}.h5ad"
    adata.write_h5ad(path)
    data = path.read_bytes()
    path.unlink()
    return data


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _counts(n_obs: int, n_vars: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(1.0, size=(n_obs, n_vars)).astype(np.float32))


# --- the real registry -----------------------------------------------------------------------
def test_registry_loads_and_every_entry_is_complete():
    registry = load_registry(ROOT / "config" / "datasets.yaml")
    assert {"pbmc_demo", "sim_celltypes", "sim_perturb", "sim_multiome"} <= set(registry)
    paper = {
        "hpancreas", "ms", "myeloid", "covid19", "pbmc10k", "perirhinal", "immune_human",
        "bmmc", "pbmc_multiome", "asap_pbmc", "adamson", "norman", "replogle_k562",
        "gears_gene2go", "cellxgene_census",
    }  # fmt: skip
    assert paper <= set(registry)
    for name, entry in registry.items():
        assert set(entry.tasks) <= set(TASKS), name
        assert entry.description, name
        if entry.kind == "builtin":
            assert entry.builder and not entry.files, name
            continue
        if entry.kind == "dataset":
            assert entry.files and entry.standard_obs, name
            assert entry.verification in ("verified", "partial", "unverified"), name
            assert entry.note, f"{name}: say what was verified"
        for url, filename, sha256, size in raw_files(entry):
            source = registry.file_source(name, filename)
            if url is None:  # a local file (the committed real subsets): its digest is required
                assert Path(source["path"]).is_file() and sha256, (name, filename)
            else:
                assert url.startswith(("http://", "https://")), (name, url)
            assert filename in registry.file_names(name)
            assert source["url"] == url
            assert sha256 is None or len(sha256) == 64
            assert size is None or size > 0
    # Spot checks of verified source keys.
    assert registry["hpancreas"].obs["cell_type"].column == "Celltype"
    ms = registry["ms"]
    assert ms.obs["cell_type"].column == "Factor Value[inferred cell type - authors labels]"
    assert ms.genes.symbol_column == "gene_name"
    assert registry["pbmc10k"].obs["cell_type"].column == "str_labels"
    assert registry["norman"].obs["condition"].column == "condition"
    census = registry["cellxgene_census"].census
    assert census["version"] == "2023-05-08" and "blood" in census["queries"]
    assert set(registry.checkpoints) >= {
        "whole_human", "blood", "brain", "heart", "lung", "kidney", "pan_cancer",
    }  # fmt: skip
    source = registry.checkpoint_source("whole_human")
    assert source["drive_folder_id"] == "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y"
    assert source["files"] == ["args.json", "vocab.json", "best_model.pt"]
    with pytest.raises(KeyError, match="known"):
        registry.entry("nope")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("description"), r"datasets\.bad\.description: missing"),
        (lambda e: e["files"][0].update(sha256="abc"), r"datasets\.bad\.files\[0\]\.sha256: 'abc'"),
        (lambda e: e["files"][0].pop("url"), r"datasets\.bad\.files\[0\]: give exactly one of"),
        (lambda e: e.update(tasks=["annotate"]), r"datasets\.bad\.tasks\[0\]: 'annotate'"),
        (lambda e: e.update(colour="red"), r"datasets\.bad: unknown field\(s\) \['colour'\]"),
        (lambda e: e["inputs"].update(data="other.h5ad"), r"datasets\.bad\.inputs\.data\.file"),
        (lambda e: e["obs"].update(split="x"), r"datasets\.bad\.obs\.split"),
        (lambda e: e.update(counts="layer/counts"), r"datasets\.bad\.counts: 'layer/counts'"),
    ],
)
def test_malformed_entry_names_dataset_and_field(tmp_path, mutate, message):
    entry = {
        "kind": "dataset",
        "description": "x",
        "tasks": ["integration"],
        "verification": "unverified",
        "format": "h5ad",
        "files": [_file("a.h5ad")],
        "inputs": {"data": "a.h5ad"},
        "obs": {"cell_type": "ct"},
        "note": "n",
    }
    mutate(entry)
    with pytest.raises(RegistryError, match=message):
        _registry(tmp_path, {"bad": entry})


def test_checkpoint_needs_model_files(tmp_path):
    with pytest.raises(RegistryError, match=r"checkpoints\.x\.files: .*missing \['vocab\.json'\]"):
        _registry(
            tmp_path,
            {},
            {"x": {"description": "d", "drive_folder_id": "abc", "verification": "partial",
                   "files": ["args.json", "best_model.pt"]}},
        )  # fmt: skip


# --- builtin ---------------------------------------------------------------------------------
def test_builtin_simulator_meets_standard():
    registry = load_registry(ROOT / "config" / "datasets.yaml")
    adata = build_builtin("sim_celltypes", registry["sim_celltypes"], {"n_cells": 120})
    assert isinstance(adata.X, sp.csr_matrix) and adata.X.dtype == np.float32
    assert {"cell_type", "batch", "split"} <= set(adata.obs.columns)
    assert adata.uns["standardisation"]["params"]["n_cells"] == 120
    with pytest.raises(DatasetError, match=r"sim_celltypes: .*\['n_cels'\]; accepted: \["):
        build_builtin("sim_celltypes", registry["sim_celltypes"], {"n_cels": 5})


def test_builtin_with_tiny_builder(tmp_path, monkeypatch):
    (tmp_path / "tiny_builder.py").write_text(
        "import anndata as ad, numpy as np, pandas as pd\n"
        "def build(*, n=4, label='t'):\n"
        "    obs = pd.DataFrame({'cell_type': [label] * n}, index=[f'c{i}' for i in range(n)])\n"
        "    return ad.AnnData(X=np.ones((n, 3)), obs=obs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = {"kind": "builtin", "description": "d", "tasks": ["annotation"],
             "builder": "tiny_builder:build", "params": {"n": 3}}  # fmt: skip
    registry = _registry(
        tmp_path, {"tiny": entry, "needs_batch": {**entry, "required_obs": ["batch"]}}
    )
    out = tmp_path / "std" / "tiny.h5ad"
    prepare_standard_dataset("tiny", out, params={"label": "B"}, registry=registry)
    back = ad.read_h5ad(out)
    assert back.n_obs == 3 and list(back.obs["cell_type"].unique()) == ["B"]
    with pytest.raises(
        DatasetError,
        match=r"needs_batch: obs column 'batch' is missing; obs columns: \['cell_type'\]",
    ):
        build_builtin("needs_batch", registry["needs_batch"])
    sys.modules.pop("tiny_builder", None)


# --- validation ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_validation_errors_name_dataset_key_and_columns():
    obs = pd.DataFrame({"celltype": ["a", "b"], "donor": ["x", "y"]}, index=["c1", "c2"])
    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float64), obs=obs)
    with pytest.raises(
        DatasetError,
        match=r"^toy: obs column 'cell_type' is missing; obs columns: \['celltype', 'donor'\]$",
    ):
        validate_standard(adata, "toy", required_obs=("cell_type",))
    validate_standard(adata, "toy", required_obs=("celltype",))
    assert isinstance(adata.X, sp.csr_matrix) and adata.X.dtype == np.float32

    negative = ad.AnnData(X=np.array([[1.0, -2.0]]))
    with pytest.raises(DatasetError, match=r"toy: X has negative values \(min -2\)"):
        validate_standard(negative, "toy")
    dup = ad.AnnData(X=np.ones((1, 2)), var=pd.DataFrame(index=["G", "G"]))
    with pytest.raises(
        DatasetError, match=r"toy: gene names \(var_names\) are not unique, e.g. \['G'\]"
    ):
        validate_standard(dup, "toy")
    bad = ad.AnnData(
        X=np.ones((2, 1)), obs=pd.DataFrame({"condition": ["ctrl", "A++B"]}, index=["a", "b"])
    )
    with pytest.raises(DatasetError, match=r"toy: obs 'condition' .*\['A\+\+B'\]"):
        validate_standard(bad, "toy")
    missing = ad.AnnData(
        X=np.ones((2, 1)), obs=pd.DataFrame({"batch": ["1", None]}, index=["a", "b"])
    )
    with pytest.raises(DatasetError, match=r"toy: obs column 'batch' has 1 missing values"):
        validate_standard(missing, "toy", required_obs=("batch",))


# --- h5ad: reference + query in a nested zip (MS-like) ---------------------------------------
def _ms_like(tmp_path: Path) -> tuple[Registry, Path]:
    ids = [f"ENSG{i:011d}" for i in range(1, 6)]
    label = "Factor Value[inferred cell type - authors labels]"
    ref = ad.AnnData(
        X=sp.csr_matrix(np.abs(np.random.default_rng(0).normal(size=(4, 5))).astype(np.float32)),
        obs=pd.DataFrame({label: ["T", "B", "T", "NK"], "batch": ["s1", "s1", "s2", "s2"]},
                         index=[f"cell{i}" for i in range(4)]),
        var=pd.DataFrame({"gene_name": ["CD3E", "MS4A1", "NKG7", "GNLY", "ACTB"]}, index=ids),
    )  # fmt: skip
    # The query repeats a cell name, lacks the symbol column and has one gene more.
    query = ad.AnnData(
        X=sp.csr_matrix(np.ones((3, 6), dtype=np.float32)),
        obs=pd.DataFrame({label: ["T", "B", "B"], "disease": ["MS"] * 3},
                         index=["cell0", "q1", "q2"]),
        var=pd.DataFrame(index=[*ids, "ENSG00000000099"]),
    )  # fmt: skip
    inner = _zip({"ms/c_data.h5ad": _h5ad_bytes(ref, tmp_path),
                  "ms/filtered_ms_adata.h5ad": _h5ad_bytes(query, tmp_path)})  # fmt: skip
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / BUNDLE).write_bytes(_zip({"bundle/Fig2/ms-001.zip": inner, "bundle/README": b"x"}))
    entry = {
        "kind": "dataset",
        "description": "MS-like",
        "tasks": ["annotation"],
        "verification": "verified",
        "format": "h5ad",
        "files": [_file(BUNDLE, "zip")],
        "inputs": {
            "reference": {"file": BUNDLE, "member": ["bundle/Fig2/ms-001.zip", "ms/c_data.h5ad"]},
            # An unverified member path: found by file name inside the nested zip.
            "query": {"file": BUNDLE, "member": ["filtered_ms_adata.h5ad"]},
        },
        "split": {"by": "files", "roles": {"reference": "reference", "query": "query"}},
        "obs": {"cell_type": label, "batch": {"from": "input"}},
        "genes": {"id_type": "ensembl", "symbol_column": "gene_name"},
        "counts": "none",
        "x_kind": "normalised",
        "note": "n",
    }
    return _registry(tmp_path, {"ms_like": entry}), raw


def test_reference_query_in_nested_zip(tmp_path):
    registry, raw = _ms_like(tmp_path)
    adata = standardise("ms_like", registry["ms_like"], raw, vocabulary=["CD3E", "NKG7", "XIST"])
    assert adata.n_obs == 7 and adata.n_vars == 5  # the query-only gene is dropped
    assert list(adata.obs["split"].value_counts().sort_index()) == [3, 4]  # query, reference
    assert set(adata.obs["batch"]) == {"reference", "query"}
    assert adata.obs["batch_source"].notna().sum() == 4  # the source "batch" column is kept
    assert list(adata.obs["cell_type"][:4]) == ["T", "B", "T", "NK"]
    assert "Factor Value[inferred cell type - authors labels]" not in adata.obs.columns
    assert adata.obs_names.is_unique and adata.obs_names[0] == "reference:cell0"
    assert list(adata.var_names) == ["CD3E", "MS4A1", "NKG7", "GNLY", "ACTB"]
    assert adata.var["gene_id"].iloc[0] == "ENSG00000000001"
    record = adata.uns["standardisation"]
    assert record["x"] == "normalised" and record["genes"]["id_type"] == "ensembl"
    assert record["coverage"]["n_matched"] == 2 and record["split"]["counts"]["query"] == 3
    assert record["obs"]["cell_type"].startswith("Factor Value")
    # Extraction is cached; a second run does not need the archive's members again.
    assert any((raw / ".extracted").iterdir())


def test_missing_member_and_file_are_named(tmp_path):
    registry, raw = _ms_like(tmp_path)
    entry = registry["ms_like"]
    broken = entry.inputs["query"].__class__(role="query", file=BUNDLE, member=("nothere.h5ad",))
    entry.inputs["query"] = broken
    with pytest.raises(DatasetError, match=r"ms_like: 'nothere.h5ad' not found in bundle.zip"):
        standardise("ms_like", entry, raw)
    (raw / BUNDLE).unlink()
    with pytest.raises(DatasetError, match=r"ms_like: file 'bundle.zip' not found in .*present"):
        standardise("ms_like", registry["ms_like"], raw)


# --- h5ad: obs renaming, counts layer, duplicate symbols --------------------------------------
@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_single_file_counts_layer_and_renames(tmp_path):
    counts = _counts(6, 4, seed=1)
    adata = ad.AnnData(
        X=sp.csr_matrix(np.log1p(counts.toarray())),
        obs=pd.DataFrame({"final_annotation": list("aabbcc"), "batch": [1, 1, 2, 2, 3, 3]},
                         index=[f"c{i}" for i in range(6)]),
        var=pd.DataFrame(index=["A", "B", "A", "C"]),
        layers={"counts": counts},
        obsm={"X_umap": np.zeros((6, 2))},
    )  # fmt: skip
    raw = tmp_path / "raw"
    raw.mkdir()
    adata.write_h5ad(raw / "immune.h5ad")
    entry = {
        "kind": "dataset",
        "description": "d",
        "tasks": ["grn"],
        "verification": "partial",
        "format": "h5ad",
        "files": [_file("immune.h5ad")],
        "inputs": {"data": "immune.h5ad"},
        "obs": {"cell_type": "final_annotation", "batch": "batch"},
        "genes": {"id_type": "symbol"},
        "counts": "layers/counts",
        "note": "n",
    }
    registry = _registry(tmp_path, {"immune": entry})
    out = tmp_path / "standard" / "immune.h5ad"
    prepare_standard_dataset("immune", out, raw_dir=raw, registry=registry)
    std = ad.read_h5ad(out)
    assert list(std.var_names) == ["A", "B", "C"]
    expected = counts.toarray()
    np.testing.assert_array_equal(std.X.toarray()[:, 0], expected[:, 0] + expected[:, 2])
    assert list(std.obs["batch"].astype(str)) == ["1", "1", "2", "2", "3", "3"]
    assert "final_annotation" not in std.obs and len(std.obsm) == 0
    record = std.uns["standardisation"]
    assert record["counts_from"] == "layers/counts" and record["x"] == "counts"
    assert record["genes"]["duplicates"] == "sum" and "obsm[X_umap]" in list(record["dropped"])
    with pytest.raises(
        DatasetError, match=r"immune: config datasets.immune sets builder parameters"
    ):
        prepare_standard_dataset("immune", out, raw_dir=raw, params={"n": 1}, registry=registry)
    entry["obs"]["cell_type"] = "celltype"
    registry = _registry(tmp_path, {"immune": entry})
    with pytest.raises(
        DatasetError,
        match=r"immune: obs column 'celltype' \(registry obs.cell_type\) not in immune.h5ad; "
        r"obs columns: \['final_annotation', 'batch'\]",
    ):
        standardise("immune", registry["immune"], raw)


# --- h5ad.gz with modalities (BMMC-like) ------------------------------------------------------
def test_gzipped_multimodal_file(tmp_path):
    counts = _counts(5, 4, seed=2)
    adata = ad.AnnData(
        X=counts.copy(),
        obs=pd.DataFrame({"cell_type": list("xxyyz"), "batch": list("ssstt")},
                         index=[f"c{i}" for i in range(5)]),
        var=pd.DataFrame({"feature_types": ["GEX", "GEX", "ADT", "ADT"]},
                         index=["CD4", "CD8A", "CD4-1", "CD8"]),
        layers={"counts": counts},
    )  # fmt: skip
    raw = tmp_path / "raw"
    raw.mkdir()
    with gzip.open(raw / "cite.h5ad.gz", "wb") as fh:
        fh.write(_h5ad_bytes(adata, tmp_path))
    entry = {
        "kind": "dataset",
        "description": "d",
        "tasks": ["multiomics"],
        "verification": "partial",
        "format": "h5ad",
        "files": [_file("cite.h5ad.gz", "h5ad.gz")],
        "inputs": {"data": "cite.h5ad.gz"},
        "obs": {"cell_type": "cell_type", "batch": "batch"},
        "modalities": {"column": "feature_types", "map": {"GEX": "rna", "ADT": "protein"}},
        "counts": "layers/counts",
        "note": "n",
    }
    registry = _registry(tmp_path, {"cite": entry})
    std = standardise("cite", registry["cite"], raw)
    assert list(std.var_names) == ["CD4", "CD8A", "prot_CD4-1", "prot_CD8"]
    assert list(std.var["modality"]) == ["rna", "rna", "protein", "protein"]
    assert std.var.loc["prot_CD8", "feature_name"] == "CD8"
    np.testing.assert_array_equal(std.X.toarray(), counts.toarray())


# --- paired modalities and scMoMaT mosaic -----------------------------------------------------
def test_paired_rna_atac_files(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    cells = [f"c{i}" for i in range(4)]
    rna = ad.AnnData(X=_counts(4, 3, 3), obs=pd.DataFrame({"cell_type": list("aabb")}, index=cells),
                     var=pd.DataFrame(index=["G1", "G2", "G3"]))  # fmt: skip
    atac = ad.AnnData(X=_counts(3, 2, 4), obs=pd.DataFrame(index=cells[1:]),
                      var=pd.DataFrame(index=["chr1:1-100", "chr2:5-50"]))  # fmt: skip
    rna.write_h5ad(raw / "rna.h5ad")
    atac.write_h5ad(raw / "atac.h5ad")
    entry = {
        "kind": "dataset", "description": "d", "tasks": ["multiomics"], "verification": "partial",
        "format": "paired_h5ad", "files": [_file("rna.h5ad"), _file("atac.h5ad")],
        "inputs": {"rna": "rna.h5ad", "atac": "atac.h5ad"},
        "obs": {"cell_type": "cell_type", "batch": {"constant": "one"}}, "counts": "X", "note": "n",
    }  # fmt: skip
    std = standardise("pair", _registry(tmp_path, {"pair": entry})["pair"], raw)
    assert list(std.obs_names) == cells[1:]  # the RNA-only cell is dropped
    assert list(std.var["modality"]) == ["rna"] * 3 + ["atac"] * 2
    assert set(std.obs["batch"]) == {"one"}
    assert std.uns["standardisation"]["cells_dropped_unpaired"] == {"rna": 1}


def test_scmomat_mosaic(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "genes.txt").write_text("G1\nG2\n")
    (raw / "proteins.txt").write_text("CD3\n")
    (raw / "regions.txt").write_text("chr1:1-10\nchr1:20-30\nchr2:5-9\n")
    sp.save_npz(raw / "GxC1.npz", sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.float32)))
    sp.save_npz(raw / "PxC1.npz", sp.csr_matrix(np.array([[5, 6, 7]], dtype=np.float32)))
    sp.save_npz(raw / "RxC2.npz", sp.csr_matrix(np.ones((3, 2), dtype=np.float32)))
    sp.save_npz(raw / "PxC2.npz", sp.csr_matrix(np.array([[1, 1]], dtype=np.float32)))
    pd.DataFrame({"coarse_cluster": ["T", "B", "T"]}, index=["a", "b", "c"]).to_csv(raw / "m1.csv")
    pd.DataFrame({"coarse_cluster": ["NK", "T"]}, index=["a", "d"]).to_csv(raw / "m2.csv")
    names = ["genes.txt", "proteins.txt", "regions.txt", "GxC1.npz", "PxC1.npz", "RxC2.npz",
             "PxC2.npz", "m1.csv", "m2.csv"]  # fmt: skip
    entry = {
        "kind": "dataset", "description": "d", "tasks": ["multiomics"], "verification": "partial",
        "format": "scmomat", "files": [_file(n, n.rsplit(".", 1)[1]) for n in names],
        "mosaic": {
            "features": {"rna": "genes.txt", "protein": "proteins.txt", "atac": "regions.txt"},
            "batches": {"b1": {"rna": "GxC1.npz", "protein": "PxC1.npz", "meta": "m1.csv"},
                        "b2": {"atac": "RxC2.npz", "protein": "PxC2.npz", "meta": "m2.csv"}},
        },
        "obs": {"cell_type": "coarse_cluster", "batch": {"from": "input"}}, "counts": "X", "note": "n",
    }  # fmt: skip
    std = standardise("mosaic", _registry(tmp_path, {"mosaic": entry})["mosaic"], raw)
    assert std.shape == (5, 6)
    assert list(std.var_names) == ["G1", "G2", "prot_CD3", "chr1:1-10", "chr1:20-30", "chr2:5-9"]
    assert list(std.obs_names) == ["b1:a", "b1:b", "b1:c", "b2:a", "b2:d"]
    np.testing.assert_array_equal(std.X.toarray()[0], [1, 0, 5, 0, 0, 0])
    np.testing.assert_array_equal(std.X.toarray()[3], [0, 0, 1, 1, 1, 1])
    assert list(std.obs["has_rna"]) == [True] * 3 + [False] * 2
    assert list(std.obs["batch"]) == ["b1"] * 3 + ["b2"] * 2


# --- GEARS processed data --------------------------------------------------------------------
GENES = [f"G{i}" for i in range(12)]


def _gears_like(tmp_path: Path, split_input: bool) -> tuple[Registry, Path]:
    rng = np.random.default_rng(5)
    singles = [f"{g}+ctrl" for g in GENES[:8]] + ["ctrl+G8", "ZZZ+ctrl"]
    doubles = ["G0+G1", "G2+G3", "G4+G5", "G6+G9", "G1+G7"]
    conditions = ["ctrl"] * 6 + [c for c in singles + doubles for _ in range(2)]
    n = len(conditions)
    ids = [f"ENSG{i:011d}" for i in range(len(GENES))]
    adata = ad.AnnData(
        X=sp.csr_matrix(np.log1p(rng.poisson(2.0, size=(n, len(GENES)))).astype(np.float32)),
        obs=pd.DataFrame({"condition": conditions, "cell_type": "K562",
                          "condition_name": [f"K562_{c}_1+1" for c in conditions]},
                         index=[f"cell{i}" for i in range(n)]),
        var=pd.DataFrame({"gene_name": GENES}, index=ids),
    )  # fmt: skip
    adata.uns["rank_genes_groups_cov_all"] = {"K562_G0+ctrl_1+1": np.array(ids[:3], dtype=object)}
    members = {"toy/perturb_processed.h5ad": _h5ad_bytes(adata, tmp_path)}
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "toy.zip").write_bytes(_zip(members))
    gene2go = {g: {f"GO:{i}"} for i, g in enumerate(GENES)}
    (raw / "gene2go_all.pkl").write_bytes(pickle.dumps(gene2go))
    files = [_file("toy.zip", "zip"), _file("gene2go_all.pkl", "pkl")]
    inputs = {"data": {"file": "toy.zip", "member": ["toy/perturb_processed.h5ad"]},
              "gene2go": "gene2go_all.pkl"}  # fmt: skip
    if split_input:
        sets = {"train": ["ctrl", "G0+ctrl", "G1+ctrl", "G0+G1"], "val": ["G2+ctrl"],
                "test": ["ctrl+G8", "G2+G3"]}  # fmt: skip
        (raw / "split.pkl").write_bytes(pickle.dumps(sets))
        files.append(_file("split.pkl", "pkl"))
        inputs["split"] = "split.pkl"
    entry = {
        "kind": "dataset", "description": "d", "tasks": ["perturbation"], "verification": "verified",
        "format": "gears", "files": files, "inputs": inputs,
        "obs": {"condition": "condition", "cell_type": "cell_type"},
        "split": {"by": "gears", "method": "simulation", "seed": 1},
        "genes": {"symbol_column": "gene_name", "duplicates": "make_unique"},
        "counts": "none", "x_kind": "log-normalised", "note": "n",
    }  # fmt: skip
    return _registry(tmp_path, {"toy": entry}), raw


def test_gears_with_split_file(tmp_path):
    registry, raw = _gears_like(tmp_path, split_input=True)
    std = standardise("toy", registry["toy"], raw)
    assert list(std.var_names) == GENES
    assert std.var["gene_id"].iloc[0] == "ENSG00000000000"
    # ENSG ids in GEARS' DE lists are renamed with the genes.
    assert list(std.uns["rank_genes_groups_cov_all"]["K562_G0+ctrl_1+1"]) == GENES[:3]
    by_condition = std.obs.groupby("condition", observed=True)["split"].first()
    assert by_condition["ctrl"] == "train" and by_condition["G2+ctrl"] == "val"
    assert by_condition["G8+ctrl"] == "test"  # "ctrl+G8" re-spelled, split kept
    assert by_condition["G4+G5"] == "excluded"
    assert set(std.obs["condition_source"]) >= {"ctrl+G8"}
    assert std.uns["standardisation"]["x"] == "log-normalised"


def test_gears_split_recomputed_with_gears(tmp_path):
    pytest.importorskip("gears")
    registry, raw = _gears_like(tmp_path, split_input=False)
    std = standardise("toy", registry["toy"], raw)
    split = std.obs.groupby("condition", observed=True)["split"].agg(lambda s: set(s))
    assert all(len(values) == 1 for values in split)  # one split per condition
    split = split.map(lambda s: next(iter(s)))
    assert split["ctrl"] == "train"
    assert split["ZZZ+ctrl"] == "excluded"  # not in the GO graph
    assert set(split.drop(["ctrl", "ZZZ+ctrl"])) <= {"train", "val", "test"}
    assert "test" in set(split)
    record = std.uns["standardisation"]["split"]
    assert record["seed"] == 1 and list(record["excluded_conditions"]) == ["ZZZ+ctrl"]
    assert "test" in std.uns["split_subgroups"]
    again = standardise("toy", registry["toy"], raw)
    assert (again.obs["split"] == std.obs["split"]).all()  # seeded


def test_resource_and_corpus_are_not_standardised(tmp_path):
    registry = load_registry(ROOT / "config" / "datasets.yaml")
    with pytest.raises(
        DatasetError, match=r"gears_gene2go: a resource entry has no standard AnnData"
    ):
        standardise("gears_gene2go", registry["gears_gene2go"], tmp_path)
    with pytest.raises(DatasetError, match=r"cellxgene_census: a corpus entry"):
        standardise("cellxgene_census", registry["cellxgene_census"], tmp_path)


def test_gene_mapping_file_from_registry(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ids = ["ENSG00000000001.2", "ENSG00000000002.1", "ENSG00000000003.5"]
    adata = ad.AnnData(
        X=_counts(3, 3, seed=6),
        obs=pd.DataFrame({"ct": list("abc")}, index=["c1", "c2", "c3"]),
        var=pd.DataFrame(index=ids),
    )
    adata.write_h5ad(raw / "data.h5ad")
    (raw / "genes.csv").write_text("gene_id,symbol\nENSG00000000001,A\nENSG00000000003,C\n")
    entry = {
        "kind": "dataset", "description": "d", "tasks": ["integration"], "verification": "partial",
        "format": "h5ad", "files": [_file("data.h5ad"), _file("genes.csv", "csv")],
        "inputs": {"data": "data.h5ad", "table": "genes.csv"},
        "obs": {"cell_type": "ct"}, "counts": "X", "note": "n",
        "genes": {"id_type": "ensembl", "mapping": {"input": "table"}},
    }  # fmt: skip
    std = standardise("mapped", _registry(tmp_path, {"mapped": entry})["mapped"], raw)
    assert list(std.var_names) == ["A", "ENSG00000000002.1", "C"]
    assert list(std.var["gene_id"]) == ids
    genes = std.uns["standardisation"]["genes"]
    assert genes["n_without_symbol"] == 1 and genes["symbol_source"] == "mapping"
