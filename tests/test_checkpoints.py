"""Fetching a released checkpoint folder from a (local) server."""

from __future__ import annotations

import json

import pytest

from benchmark.sources.checkpoints import fetch_checkpoint
from benchmark.sources.download import DownloadError
from tests.conftest import Route

ARGS = json.dumps({"embsize": 8, "nlayers": 1, "nheads": 2}).encode()
VOCAB = json.dumps({"<pad>": 0, "<cls>": 1, "GATA1": 2}).encode()
WEIGHTS = b"\x80\x02weights"


def _serve(server, args=ARGS):
    server.routes["/ckpt/args.json"] = Route(args)
    server.routes["/ckpt/vocab.json"] = Route(VOCAB)
    server.routes["/ckpt/best_model.pt"] = Route(WEIGHTS)
    return {"name": "tiny", "kind": "url", "url": server.url("/ckpt"), "files": [], "sha256": {}}


def test_checkpoint_folder_is_fetched_and_checked(server, tmp_path):
    out = fetch_checkpoint(_serve(server), tmp_path / "tiny")
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".sha256")) == [
        "args.json",
        "best_model.pt",
        "vocab.json",
    ]
    assert (out / "best_model.pt").read_bytes() == WEIGHTS


def test_bad_args_json_leaves_no_checkpoint(server, tmp_path):
    source = _serve(server, args=json.dumps({"embsize": 8}).encode())
    with pytest.raises(ValueError, match="no 'nlayers'"):
        fetch_checkpoint(source, tmp_path / "tiny")
    assert not (tmp_path / "tiny").exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_reported_with_status(server, tmp_path):
    source = _serve(server)
    del server.routes["/ckpt/best_model.pt"]
    with pytest.raises(DownloadError, match="404"):
        fetch_checkpoint(source, tmp_path / "tiny")
    assert not (tmp_path / "tiny").exists()
