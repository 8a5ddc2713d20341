"""Committed checkpoints (registry ``path:``): copied with a checksum check, never downloaded.

Also checks the registry's own ``sim_atlas`` entry against the committed files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmark.datasets import load_registry
from benchmark.datasets.errors import RegistryError
from benchmark.sources.checkpoints import fetch_checkpoint
from benchmark.sources.download import DownloadError, sha256sum

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "args.json": json.dumps({"embsize": 8, "nlayers": 1, "nheads": 2}).encode(),
    "vocab.json": json.dumps({"<pad>": 0, "<cls>": 1, "GATA1": 2}).encode(),
    "best_model.pt": b"\x80\x02weights",
}


def _committed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "committed"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    return folder, {name: sha256sum(folder / name) for name in FILES}


def _registry(tmp_path: Path, entry: dict):
    path = tmp_path / "config" / "datasets.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"version": 1, "datasets": {}, "checkpoints": {"c": entry}}))
    return load_registry(path)


def test_committed_checkpoint_is_copied_and_checked(tmp_path, monkeypatch):
    folder, digests = _committed(tmp_path)
    # A relative path is read from the registry file's folder, not the working directory.
    registry = _registry(
        tmp_path,
        {"description": "d", "path": "../committed", "sha256": digests, "verification": "builtin"},
    )
    monkeypatch.chdir(tmp_path / "config")
    source = registry.checkpoint_source("c")
    assert source["kind"] == "local" and source["url"] is None
    assert source["path"] == str(folder.resolve())
    out = fetch_checkpoint(source, tmp_path / "data" / "c")
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data
    assert all((folder / name).is_file() for name in FILES)  # the source stays


def test_changed_committed_file_fails_the_checksum(tmp_path):
    folder, digests = _committed(tmp_path)
    source = _registry(
        tmp_path,
        {"description": "d", "path": str(folder), "sha256": digests, "verification": "builtin"},
    ).checkpoint_source("c")
    (folder / "best_model.pt").write_bytes(b"\x80\x02other")
    with pytest.raises(DownloadError, match=r"best_model\.pt has sha256"):
        fetch_checkpoint(source, tmp_path / "data" / "c")
    assert not (tmp_path / "data" / "c").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "x", "sha256": {}}, r"committed \(path\) checkpoint needs the sha256"),
        ({"path": "x", "url": "https://example.org/x"}, "exactly one of"),
    ],
)
def test_path_entries_are_validated(tmp_path, entry, message):
    with pytest.raises(RegistryError, match=message):
        _registry(tmp_path, {"description": "d", "verification": "builtin", **entry})


def test_registry_sim_atlas_matches_the_committed_files():
    registry = load_registry(ROOT / "config" / "datasets.yaml")
    source = registry.checkpoint_source("sim_atlas")
    folder = ROOT / source["path"]
    for name in source["files"]:
        assert sha256sum(folder / name) == source["sha256"][name], name
    args = json.loads((folder / "args.json").read_text())
    assert args["pretrain"]["data"].endswith("sim_atlas_corpus.h5ad")
