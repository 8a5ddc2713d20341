"""Fetch a scGPT checkpoint folder (args.json, vocab.json, best_model.pt): released or committed."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from benchmark.sources.download import DownloadError, download, sha256sum

log = logging.getLogger(__name__)

REQUIRED_FILES = ("args.json", "vocab.json", "best_model.pt")


def fetch_checkpoint(source: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Download (or copy, for a committed one) a checkpoint into ``out_dir`` and check its layout.

    Parameters
    ----------
    source
        ``Registry.checkpoint_source(name)``: ``kind`` is ``"google_drive_folder"`` (fetched
        with gdown's folder download), ``"url"`` (a base URL under which each file lies) or
        ``"local"`` (``path``: a folder of this repository, copied);
        ``files`` the file names; ``sha256`` known digests by file name.
    out_dir
        Destination folder; files appear there only after the whole folder verified.

    Returns
    -------
    ``out_dir``.
    """
    out = Path(out_dir)
    files = list(source.get("files") or REQUIRED_FILES)
    unsafe = [n for n in files if PurePath(n).name != n or n.startswith(".") or "\\" in n]
    if unsafe:
        raise ValueError(
            f"checkpoint {source.get('name')!r}: file names {unsafe} are not bare file names; "
            "refused (they would be written outside the checkpoint folder)"
        )
    missing_required = sorted(set(REQUIRED_FILES) - set(files))
    if missing_required:
        raise ValueError(f"checkpoint {source.get('name')!r}: registry lists no {missing_required}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if source.get("kind") == "local":
            # A checkpoint committed to this repository: copied (never downloaded), then
            # checked against the registry's digests like a download.
            folder = Path(source["path"])
            for name in files:
                if not (folder / name).is_file():
                    raise FileNotFoundError(
                        f"checkpoint {source.get('name')!r}: {folder / name} does not exist "
                        "(a relative path: is resolved against the registry file's folder)"
                    )
                shutil.copyfile(folder / name, staging / name)
        elif source.get("kind") == "google_drive_folder":
            _fetch_drive_folder(source["drive_folder_id"], staging)
        else:
            base = str(source["url"]).rstrip("/")
            for name in files:
                download(
                    f"{base}/{name}", staging / name, sha256=source.get("sha256", {}).get(name)
                )
        found = {name: _find(staging, name, source) for name in files}
        for name, path in found.items():
            expected = source.get("sha256", {}).get(name)
            if expected and sha256sum(path) != expected.lower():
                raise DownloadError(
                    f"checkpoint {source.get('name')!r}: {name} has sha256 {sha256sum(path)}, "
                    f"expected {expected}",
                    url=str(source.get("url") or source.get("path")),
                )
        check_checkpoint_layout(found)
        out.mkdir(parents=True, exist_ok=True)
        # best_model.pt last: it is the file the consuming rules wait on the longest.
        for name in sorted(found, key=lambda n: n == "best_model.pt"):
            os.replace(found[name], out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("checkpoint %s ready in %s", source.get("name"), out)
    return out


def check_checkpoint_layout(files: Mapping[str, Path]) -> None:
    """Check that args.json and vocab.json parse and best_model.pt looks like weights.

    Raises
    ------
    scgpt.checkpoint.CorruptCheckpointError
        (a ``ValueError``) naming the file and what is wrong with it.
    """
    from scgpt.checkpoint import CorruptCheckpointError, check_weights_file, read_args_json
    from scgpt.vocab import GeneVocab

    args = read_args_json(files["args.json"])
    for key in ("embsize", "nlayers", "nheads"):
        if key not in args:
            raise CorruptCheckpointError(f"{files['args.json']}: no {key!r}; keys: {sorted(args)}")
    try:
        vocab = GeneVocab.from_file(files["vocab.json"])
    except ValueError as err:
        raise CorruptCheckpointError(str(err)) from None
    if "<pad>" not in vocab:
        raise CorruptCheckpointError(
            f"{files['vocab.json']}: expected a {{gene: index}} object with '<pad>'"
        )
    check_weights_file(files["best_model.pt"])


def _find(folder: Path, name: str, source: Mapping[str, Any]) -> Path:
    matches = sorted(folder.rglob(name))
    if not matches:
        present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        raise FileNotFoundError(
            f"checkpoint {source.get('name')!r} from {source.get('url')}: no {name} among the "
            f"downloaded files {present}"
        )
    return matches[0]


def _fetch_drive_folder(folder_id: str, dest: Path) -> None:
    import gdown

    paths = gdown.download_folder(id=folder_id, output=str(dest), quiet=False, resume=True)
    root = dest.resolve()
    escaped = [p for p in paths or [] if not Path(p).resolve().is_relative_to(root)]
    if escaped:
        # Drive names the files; a name with '..' must not leave the staging folder unnoticed.
        raise DownloadError(
            f"Google Drive folder {folder_id}: files were written outside {dest}: {escaped}; "
            "refused (delete them: the folder's file names are hostile)",
            url=f"https://drive.google.com/drive/folders/{folder_id}",
        )
    if not paths:
        raise DownloadError(
            f"Google Drive folder {folder_id}: nothing downloaded (folder private, quota "
            "exceeded or no network)",
            url=f"https://drive.google.com/drive/folders/{folder_id}",
        )
