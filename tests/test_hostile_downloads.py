"""A downloaded file is hostile until checked: nothing from it runs or lands outside its folder.

Every hostile archive and pickle is made by the test. Each security test checks that nothing
was written or executed outside a temporary folder: a "marker" file that a payload would
create, and the folder an escaping member would write to.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import torch

from benchmark.datasets import archives
from benchmark.datasets.archives import ArchiveError, extract_tar
from benchmark.datasets.errors import RegistryError
from benchmark.sources.download import DownloadError, download
from benchmark.sources.formats import check_format
from scgpt.checkpoint import CorruptCheckpointError, load_weights
from scgpt.safe_pickle import UnsafePickleError, load_pickle
from tests.conftest import Route


class _RunsCommand:
    """Unpickling this runs ``touch <marker>``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder whose data/ is where archives may write; tmp_path/outside is not."""
    (tmp_path / "project" / "data").mkdir(parents=True)
    return tmp_path / "project"


def _outside(tmp_path: Path) -> list[str]:
    """Everything under tmp_path that is not the project (what an escape would leave)."""
    return sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if "project" not in p.relative_to(tmp_path).parts[:1]
    )


# --- tar archives ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_file("../../escaped.txt"), "'..' component"),
        (_file("ok/../../../escaped.txt"), "'..' component"),
        (_file("/tmp/escaped-absolute.txt"), "absolute path"),
        (_link("link", "../../outside", tarfile.SYMTYPE), "symbolic link"),
        (_link("hard", "/etc/passwd", tarfile.LNKTYPE), "hard link"),
        (_link("fifo", "", tarfile.FIFOTYPE), "special file"),
    ],
)
def test_tar_members_that_could_escape_are_refused_before_anything_is_written(
    tmp_path, project, member, why
):
    archive = _tar(project / "data" / "bad.tar.gz", [_file("good/matrix.mtx"), member])
    dest = project / "data" / "extracted"
    with pytest.raises(ArchiveError, match=why) as info:
        extract_tar(archive, dest)
    assert str(archive) in str(info.value)
    assert not dest.exists()
    assert sorted(p.name for p in (project / "data").iterdir()) == ["bad.tar.gz"]
    assert _outside(tmp_path) == []
    assert not Path("/tmp/escaped-absolute.txt").exists()


def test_a_symlink_then_a_file_through_it_cannot_write_outside(tmp_path, project):
    # The classic two-step escape: a link to a folder outside, then a member under the link.
    archive = _tar(
        project / "data" / "two_step.tar.gz",
        [_link("sub", str(tmp_path / "outside"), tarfile.SYMTYPE), _file("sub/evil.txt")],
    )
    (tmp_path / "outside").mkdir()
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_tar(archive, project / "data" / "x")
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_clean_tar_is_extracted_whole_and_only_once(project):
    archive = _tar(
        project / "data" / "ok.tar.gz",
        [_file("m/GRCh38/matrix.mtx", b"abc"), _file("m/GRCh38/genes.tsv", b"g\n")],
    )
    dest = extract_tar(archive, project / "data" / "ok")
    assert (dest / "m" / "GRCh38" / "matrix.mtx").read_bytes() == b"abc"
    assert sorted(p.name for p in (project / "data").iterdir()) == ["ok", "ok.tar.gz"]
    archive.unlink()
    assert extract_tar(archive, dest) == dest  # an existing extraction is reused


def test_tar_bomb_is_refused_naming_the_archive(project, monkeypatch):
    monkeypatch.setattr(archives, "MIN_EXPANSION_LIMIT", 1 << 20)
    archive = _tar(project / "data" / "bomb.tar.gz", [_file("zeros.bin", bytes(8 << 20))])
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(ArchiveError, match="decompression bomb") as info:
        extract_tar(archive, project / "data" / "bomb")
    assert "bomb.tar.gz" in str(info.value) and "zeros.bin" in str(info.value)
    assert sorted(p.name for p in (project / "data").iterdir()) == ["bomb.tar.gz"]
    # A genuine source can raise the ratio, as the message says.
    monkeypatch.setenv(archives.RATIO_ENV, "5000")
    assert (extract_tar(archive, project / "data" / "bomb") / "zeros.bin").stat().st_size == 8 << 20


def test_a_file_that_is_not_a_tar_is_named(project):
    bad = project / "data" / "page.tar.gz"
    bad.write_text("<html>not found</html>")
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        extract_tar(bad, project / "data" / "page")


# --- zip members and gz files (benchmark.datasets.inputs) ----------------------------------
def _entry_with_member(file: str, fmt: str, member: tuple[str, ...] = ()):
    from benchmark.datasets.schema import DatasetEntry

    return DatasetEntry.model_validate(
        {
            "name": "bombed",
            "kind": "dataset",
            "description": "test",
            "tasks": ["integration"],
            "format": "h5ad",
            "verification": "unverified",
            "files": [{"name": file, "url": "https://example.org/x", "format": fmt}],
            "inputs": {"data": {"file": file, "member": list(member)}},
            "obs": {"cell_type": "ct", "batch": "b"},
        }
    )


def test_zip_member_bomb_is_refused_naming_the_archive(project, monkeypatch):
    from benchmark.datasets.inputs import resolve_input

    monkeypatch.setattr(archives, "MIN_EXPANSION_LIMIT", 1 << 20)
    raw = project / "data" / "downloads"
    raw.mkdir()
    with zipfile.ZipFile(raw / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner/data.h5ad", bytes(8 << 20))
    entry = _entry_with_member("bundle.zip", "zip", ("inner/data.h5ad",))
    with pytest.raises(ArchiveError, match="decompression bomb") as info:
        resolve_input("bombed", entry, entry.inputs["data"], raw)
    assert "bundle.zip" in str(info.value)
    assert not (raw / ".extracted").exists() or not any((raw / ".extracted").iterdir())


def test_gz_bomb_is_refused_naming_the_file(project, monkeypatch):
    from benchmark.datasets.inputs import resolve_input

    monkeypatch.setattr(archives, "MIN_EXPANSION_LIMIT", 1 << 20)
    raw = project / "data" / "downloads"
    raw.mkdir()
    (raw / "data.h5ad.gz").write_bytes(gzip.compress(bytes(8 << 20)))
    entry = _entry_with_member("data.h5ad.gz", "h5ad.gz")
    with pytest.raises(ArchiveError, match="decompression bomb") as info:
        resolve_input("bombed", entry, entry.inputs["data"], raw)
    assert "data.h5ad.gz" in str(info.value)
    assert [p.name for p in (raw / ".extracted").iterdir()] == []


# --- pickles ---------------------------------------------------------------------------------
def test_a_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "gene2go_all.pkl"
    path.write_bytes(pickle.dumps({"GENE": _RunsCommand(marker)}))
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsafePickleError):
        load_pickle(path, pandas=True)
    assert not marker.exists()


def test_gears_gene2go_and_split_pickles_are_read_without_running(tmp_path):
    from baselines.gears import load_gene2go

    marker = tmp_path / "ran"
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"A": {"GO:1", "GO:2"}, "B": frozenset({"GO:3"})}, protocol=2))
    assert load_gene2go(good) == {"A": {"GO:1", "GO:2"}, "B": {"GO:3"}}
    split = tmp_path / "split.pkl"
    split.write_bytes(pickle.dumps({"train": ["A+ctrl"], "val": [], "test": ["B+ctrl"]}))
    assert load_pickle(split) == {"train": ["A+ctrl"], "val": [], "test": ["B+ctrl"]}
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(_RunsCommand(marker)))
    with pytest.raises(UnsafePickleError):
        load_gene2go(bad)
    assert not marker.exists()


def test_numpy_and_pandas_data_only_when_asked(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["a-1", "b-1"], name="barcodes"))
    payload = {"barcodes": frame, "clusters": np.array([0, 1]), "names": np.array(["t", "b"])}
    path = tmp_path / "meta.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match="not a plain data type"):
        load_pickle(path)
    loaded = load_pickle(path, pandas=True)
    pd.testing.assert_frame_equal(loaded["barcodes"], frame)
    np.testing.assert_array_equal(loaded["clusters"], [0, 1])


def test_a_truncated_pickle_is_named(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(ValueError, match=r"cut\.pkl: not a readable pickle"):
        load_pickle(path)


# --- scvi-tools' PBMC dataset, assembled by the benchmark -----------------------------------
def _tenx_tarball(path: Path, barcodes: list[str], genes: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(2.0, size=(len(genes), len(barcodes))).astype(float))
    files = {}
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, counts)
    files["matrix.mtx"] = buffer.getvalue()
    files["genes.tsv"] = "".join(f"{g}\tSYM{g[-3:]}\n" for g in genes).encode()
    files["barcodes.tsv"] = "".join(f"{b}\n" for b in barcodes).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _tar(path, [_file(f"filtered_gene_bc_matrices/GRCh38/{n}", d) for n, d in files.items()])


def _pbmc_entry():
    from benchmark.datasets.schema import DatasetEntry

    tar = {"url": "https://example.org/x", "format": "tar.gz"}
    return DatasetEntry.model_validate(
        {
            "name": "pbmc10k",
            "kind": "dataset",
            "description": "test",
            "tasks": ["integration"],
            "format": "scvi_pbmc",
            "verification": "unverified",
            "files": [
                {"name": "gene_info_pbmc.csv", "url": "https://example.org/g", "format": "csv"},
                {"name": "pbmc_metadata.pickle", "url": "https://example.org/m", "format": "pkl"},
                {"name": "pbmc8k/filtered_gene_bc_matrices.tar.gz", **tar},
                {"name": "pbmc4k/filtered_gene_bc_matrices.tar.gz", **tar},
            ],
            "obs": {"cell_type": "str_labels", "batch": "batch"},
            "genes": {"id_type": "ensembl", "symbol_column": "gene_symbols"},
        }
    )


def _pbmc_files(raw: Path, *, metadata: object) -> None:
    genes = [f"ENSG00000000{i:03d}" for i in range(12)]
    _tenx_tarball(raw / "pbmc8k/filtered_gene_bc_matrices.tar.gz", ["A-1", "B-1", "C-1"], genes, 0)
    _tenx_tarball(raw / "pbmc4k/filtered_gene_bc_matrices.tar.gz", ["D-1", "E-1"], genes, 1)
    pd.DataFrame({"ENSG": genes[:10]}).to_csv(raw / "gene_info_pbmc.csv", index=False)
    (raw / "pbmc_metadata.pickle").write_bytes(pickle.dumps(metadata))


def test_pbmc_dataset_is_assembled_like_scvi_tools_without_scvi_extracting(project):
    from benchmark.datasets.loaders import LOADERS

    raw = project / "data" / "downloads"
    # The metadata lists cells in its own order; one (ending in 11) is not in the matrices.
    barcodes = pd.DataFrame(index=pd.Index(["E-1", "A-1", "Z-11", "C-1"]))
    metadata = {
        "barcodes": barcodes,
        "clusters": np.array([1, 0, 2, 1]),
        "list_clusters": np.array(["B cells", "T cells", "NK"]),
    }
    _pbmc_files(raw, metadata=metadata)
    record: dict = {}
    adata = LOADERS["scvi_pbmc"]("pbmc10k", _pbmc_entry(), raw, record)
    assert list(adata.obs_names) == ["E-1", "A-1", "C-1"]
    assert list(adata.obs["cell_type"]) == ["T cells", "B cells", "T cells"]  # Z-11 skipped
    assert list(adata.obs["batch"].astype(str)) == ["1", "0", "0"]
    assert adata.n_vars == 10 and adata.var_names[0] == "ENSG00000000000"
    assert "gene_symbols" in adata.var.columns
    assert record["x"] == "counts"


def test_pbmc_dataset_with_a_hostile_pickle_or_tarball_runs_and_writes_nothing(tmp_path, project):
    from benchmark.datasets.loaders import LOADERS

    marker = tmp_path / "ran"
    raw = project / "data" / "downloads"
    _pbmc_files(raw, metadata={"barcodes": _RunsCommand(marker)})
    with pytest.raises(UnsafePickleError):
        LOADERS["scvi_pbmc"]("pbmc10k", _pbmc_entry(), raw, {})
    assert not marker.exists()

    (raw / "pbmc_metadata.pickle").write_bytes(
        pickle.dumps(
            {"barcodes": pd.DataFrame(index=["A-1"]), "clusters": [0], "list_clusters": ["T"]}
        )
    )
    _tar(
        raw / "pbmc8k/filtered_gene_bc_matrices.tar.gz",
        [_file("../../../../escaped.txt"), _link("s", str(tmp_path), tarfile.SYMTYPE)],
    )
    with pytest.raises(ArchiveError, match="pbmc8k"):
        LOADERS["scvi_pbmc"]("pbmc10k", _pbmc_entry(), raw, {})
    assert _outside(tmp_path) == []


# --- step checkpoints and registry file names ------------------------------------------------
def test_a_planted_pretraining_step_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    step = tmp_path / "checkpoints" / "step_000000010.pt"
    step.parent.mkdir()
    torch.save({"model": {}, "step": 10, "rng": _RunsCommand(marker)}, step)
    with pytest.raises(CorruptCheckpointError, match="refused without being executed"):
        load_weights(step)
    assert not marker.exists()


def test_pretraining_resume_reads_step_files_with_weights_only():
    import inspect

    from scgpt.pretrain import run

    source = inspect.getsource(run)
    assert "weights_only=False" not in source
    assert "load_weights(existing[-1]" in source


@pytest.mark.parametrize("bad", ["../../escaped.pt", "sub/best_model.pt", ".hidden", "a\\b"])
def test_checkpoint_file_names_must_be_bare_names(tmp_path, bad):
    from benchmark.datasets.schema import CheckpointEntry
    from benchmark.sources.checkpoints import fetch_checkpoint

    entry = {
        "name": "evil",
        "description": "test",
        "url": "http://127.0.0.1:9/ckpt",
        "files": ["args.json", "vocab.json", "best_model.pt", bad],
        "verification": "unverified",
    }
    with pytest.raises(Exception, match="bare file name") as info:
        CheckpointEntry.model_validate(entry)
    assert repr(bad) in str(info.value)
    source = {"name": "evil", "kind": "url", "url": "http://127.0.0.1:9", "files": entry["files"]}
    with pytest.raises(ValueError, match="not bare file names"):
        fetch_checkpoint(source, tmp_path / "data" / "checkpoints" / "evil")
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["data", "checkpoints"])


def test_registry_with_an_escaping_checkpoint_file_is_refused_at_load(tmp_path):
    import yaml

    from benchmark.datasets import load_registry

    registry = yaml.safe_load(Path("config/datasets.yaml").read_text())
    name = next(iter(registry["checkpoints"]))
    files = registry["checkpoints"][name].get("files") or ["args.json", "vocab.json"]
    registry["checkpoints"][name]["files"] = [*files, "best_model.pt", "../../../escape.pt"]
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(registry))
    with pytest.raises(RegistryError, match=r"escape\.pt"):
        load_registry(path)


# --- first downloads are checked for their format before their digest is pinned -------------
def _fetch(server, path: str, dest: Path, **kwargs):
    options = {"backoff": 0.0, "timeout": 5.0, "progress": False}
    return download(server.url(path), dest, **{**options, **kwargs})


H5AD_HEAD = b"\x89HDF\r\n\x1a\n" + bytes(200)


def test_an_html_error_page_with_200_is_not_saved_or_pinned(server, tmp_path):
    page = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
    server.routes["/data.h5ad"] = Route(page, content_type="text/html")
    dest = tmp_path / "raw" / "data.h5ad"
    with pytest.raises(DownloadError, match="expected a h5ad file but got an HTML page"):
        _fetch(server, "/data.h5ad", dest, file_format="h5ad")
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # no data, no .sha256, no .part
    # The next run, with the server fixed, accepts the right file and pins its digest.
    server.routes["/data.h5ad"] = Route(H5AD_HEAD)
    assert _fetch(server, "/data.h5ad", dest, file_format="h5ad").read_bytes() == H5AD_HEAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.h5ad", "data.h5ad.sha256"]


def test_a_gzipped_body_where_a_table_was_expected_is_refused(server, tmp_path):
    server.routes["/genes.csv"] = Route(gzip.compress(b"ENSG,symbol\nE1,A\n"))
    dest = tmp_path / "genes.csv"
    with pytest.raises(DownloadError, match="expected a csv file but got gzip data"):
        _fetch(server, "/genes.csv", dest, file_format="csv")
    assert not dest.exists() and not dest.with_name("genes.csv.sha256").exists()


def test_a_file_already_on_disk_is_format_checked_before_it_is_pinned(server, tmp_path):
    server.routes["/data.zip"] = Route(b"PK\x03\x04" + bytes(100))
    dest = tmp_path / "data.zip"
    dest.write_text("<html>login</html>")
    _fetch(server, "/data.zip", dest)  # format from the suffix: the page is replaced
    assert dest.read_bytes().startswith(b"PK\x03\x04")


@pytest.mark.parametrize(
    ("head", "fmt", "problem"),
    [
        (b"PK\x03\x04rest", "zip", None),
        (b"\x1f\x8b\x08rest", "tar.gz", None),
        (b"<html>", "tar.gz", "an HTML page"),
        (b"\x80\x04\x95rest", "pkl", None),
        (b"(dp0\nS'a'", "pkl", None),
        (b"<?xml version='1.0'?><Error>", "pkl", "an XML document"),
        (b'{"a": 1}', "json", None),
        (b"gene,x\n", "json", "text starting b'gene,x\\n'"),
        (b"gene\tx\n", "txt", None),
        (b"", "csv", "an empty file"),
        (H5AD_HEAD, "zip", "hdf5 data"),
    ],
)
def test_check_format(tmp_path, head, fmt, problem):
    path = tmp_path / "f"
    path.write_bytes(head)
    assert check_format(path, fmt) == problem
