"""Tests for benchmark.sources.download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from benchmark.sources.download import DownloadError, download, google_drive_url
from tests.conftest import FakeServer, Route

# Starts like a zip (as .pt and .zip downloads do), so first-download format checks pass.
PAYLOAD = b"PK\x03\x04" + random.Random(0).randbytes(9_996)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def fetch(server: FakeServer, path: str, dest: Path, **kwargs: Any) -> Path:
    options = {"backoff": 0.0, "timeout": 5.0, "progress": False, "chunk_size": 1024}
    options.update(kwargs)
    return download(server.url(path), dest, **options)


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_download_verifies_and_later_calls_skip_the_network(server, tmp_path):
    server.routes["/data.bin"] = Route(PAYLOAD)
    dest = tmp_path / "raw" / "data.bin"
    assert fetch(server, "/data.bin", dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["data.bin"]  # no .part, no record when the sha256 is given
    assert "Range" not in server.requests[0].headers

    fetch(server, "/data.bin", dest, sha256=f"sha256:{PAYLOAD_SHA.upper()}")
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [403, 404, 410])
def test_client_errors_fail_at_once_and_leave_nothing(server, tmp_path, status):
    server.routes["/gone.bin"] = Route(PAYLOAD, actions=[status])
    dest = tmp_path / "gone.bin"
    url = server.url("/gone.bin")
    with pytest.raises(DownloadError, match=f"HTTP {status}") as info:
        fetch(server, "/gone.bin", dest, sha256=PAYLOAD_SHA)
    assert url in str(info.value)
    assert info.value.status == status
    assert len(server.requests) == 1
    assert leftovers(dest) == []


def test_server_errors_are_retried_then_succeed(server, tmp_path):
    server.routes["/flaky.bin"] = Route(PAYLOAD, actions=[503, 500])
    dest = fetch(server, "/flaky.bin", tmp_path / "flaky.bin", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_server_errors_give_up_after_retries(server, tmp_path):
    server.routes["/down.bin"] = Route(PAYLOAD, actions=[503] * 10)
    dest = tmp_path / "down.bin"
    with pytest.raises(DownloadError, match=r"3 attempts.*HTTP 503") as info:
        fetch(server, "/down.bin", dest, retries=2)
    assert info.value.status == 503
    assert server.url("/down.bin") in str(info.value)
    assert len(server.requests) == 3
    assert leftovers(dest) == []


def test_truncated_response_is_retried_and_resumed(server, tmp_path):
    server.routes["/cut.bin"] = Route(PAYLOAD, actions=[("truncate", 3000)])
    dest = fetch(server, "/cut.bin", tmp_path / "cut.bin", sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in server.requests] == [None, "bytes=3000-"]
    assert leftovers(dest) == ["cut.bin"]


def test_interrupted_download_resumes_on_the_next_call(server, tmp_path):
    server.routes["/big.bin"] = Route(PAYLOAD, actions=[("truncate", 4000)])
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="4000 bytes kept"):
        fetch(server, "/big.bin", dest, sha256=PAYLOAD_SHA, retries=0)
    assert not dest.exists()
    assert (tmp_path / "big.bin.part").read_bytes() == PAYLOAD[:4000]

    fetch(server, "/big.bin", dest, sha256=PAYLOAD_SHA, retries=0)
    assert server.requests[-1].headers.get("Range") == "bytes=4000-"
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["big.bin"]


def test_server_without_range_support_starts_over(server, tmp_path):
    server.routes["/plain.bin"] = Route(PAYLOAD, ranges=False)
    (tmp_path / "plain.bin.part").write_bytes(PAYLOAD[:500])
    dest = fetch(server, "/plain.bin", tmp_path / "plain.bin", sha256=PAYLOAD_SHA)
    assert server.requests[0].headers.get("Range") == "bytes=500-"
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_finished_from_a_416_answer(server, tmp_path):
    server.routes["/done.bin"] = Route(PAYLOAD)
    (tmp_path / "done.bin.part").write_bytes(PAYLOAD)
    dest = fetch(server, "/done.bin", tmp_path / "done.bin", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_resumed_part_with_bad_bytes_is_downloaded_again(server, tmp_path):
    server.routes["/stale.bin"] = Route(PAYLOAD)
    (tmp_path / "stale.bin.part").write_bytes(b"x" * 1000)
    dest = fetch(server, "/stale.bin", tmp_path / "stale.bin", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in server.requests] == ["bytes=1000-", None]


def test_wrong_checksum_names_both_digests_and_removes_the_data(server, tmp_path):
    server.routes["/data.bin"] = Route(PAYLOAD)
    wrong = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        fetch(server, "/data.bin", dest, sha256=wrong)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA in message
    assert server.url("/data.bin") in message
    assert (info.value.expected, info.value.actual) == (wrong, PAYLOAD_SHA)
    assert leftovers(dest) == []


def test_wrong_size_fails_before_the_transfer(server, tmp_path):
    server.routes["/data.bin"] = Route(PAYLOAD)
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=f"{len(PAYLOAD)} bytes, expected size 12345"):
        fetch(server, "/data.bin", dest, size=12345)
    assert leftovers(dest) == []


def test_timeout_is_retried(server, tmp_path):
    server.routes["/slow.bin"] = Route(PAYLOAD, actions=[("stall", 2.0)])
    dest = fetch(server, "/slow.bin", tmp_path / "slow.bin", sha256=PAYLOAD_SHA, timeout=0.5)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


DRIVE_WARNING = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
</head><body><div class="uc-main"><div id="uc-text">
<p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id=FILE123">
best_model.pt</a> (196M)</span> is too large for Google to scan for viruses.
Would you still like to download this file?</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="FILE123"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f1e-uuid">
</form></div></div></body></html>"""


def test_drive_confirmation_form_is_followed(server, tmp_path):
    page = DRIVE_WARNING.format(action=server.url("/download")).encode()
    html = "text/html; charset=utf-8"
    server.routes["/uc"] = Route(page, content_type=html)
    server.routes["/download"] = lambda q: (
        Route(PAYLOAD) if q.get("confirm") == "t" and q.get("uuid") else Route(page, html)
    )
    dest = fetch(server, "/uc?id=FILE123&export=download", tmp_path / "model.pt")
    assert dest.read_bytes() == PAYLOAD
    first, second = server.requests
    assert first.path == "/uc"
    assert second.path == "/download"
    assert second.query == {
        "id": "FILE123",
        "export": "download",
        "confirm": "t",
        "uuid": "0f1e-uuid",
    }


def test_drive_old_style_confirm_link_is_followed(server, tmp_path):
    page = (
        b'<html><body><a id="uc-download-link" class="goog-inline-block jfk-button" '
        b'href="/uc?export=download&amp;confirm=Ab-C1&amp;id=FILE123">Download anyway</a>'
        b"</body></html>"
    )
    server.routes["/uc"] = lambda q: (
        Route(PAYLOAD) if q.get("confirm") else Route(page, "text/html; charset=utf-8")
    )
    dest = fetch(server, "/uc?export=download&id=FILE123", tmp_path / "model.pt")
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1].query == {"export": "download", "confirm": "Ab-C1", "id": "FILE123"}


def test_drive_error_page_is_a_clear_error(server, tmp_path):
    page = (
        b"<html><body><p class='uc-error-caption'>Sorry, you can't view or download this file "
        b"at this time.</p><p class='uc-error-subcaption'>Too many users have viewed or "
        b"downloaded this file recently.</p></body></html>"
    )
    server.routes["/uc"] = Route(page, content_type="text/html")
    dest = tmp_path / "model.pt"
    with pytest.raises(DownloadError, match="Too many users have viewed"):
        fetch(server, "/uc?id=FILE123", dest)
    assert len(server.requests) == 1
    assert leftovers(dest) == []


def test_html_that_is_not_a_drive_page_is_data(server, tmp_path):
    body = b"<html><body><a href='/x?confirm=1'>an ordinary page</a></body></html>"
    server.routes["/index.html"] = Route(body, content_type="text/html")
    dest = fetch(server, "/index.html", tmp_path / "index.html")
    assert dest.read_bytes() == body
    assert len(server.requests) == 1


def test_checksum_recorded_on_first_download_and_checked_afterwards(server, tmp_path):
    server.routes["/data.bin"] = Route(PAYLOAD)
    dest = tmp_path / "data.bin"
    record = tmp_path / "data.bin.sha256"
    fetch(server, "/data.bin", dest)
    assert record.read_text() == f"{PAYLOAD_SHA}  data.bin\n"

    fetch(server, "/data.bin", dest)  # verified against the record, no request
    assert len(server.requests) == 1

    dest.write_bytes(b"corrupted on disk")  # a bad local copy is fetched again
    fetch(server, "/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2

    changed = PAYLOAD[:-1] + b"!"  # the server now serves other bytes
    server.routes["/data.bin"] = Route(changed)
    dest.unlink()
    with pytest.raises(DownloadError) as info:
        fetch(server, "/data.bin", dest)
    new_sha = hashlib.sha256(changed).hexdigest()
    assert PAYLOAD_SHA in str(info.value) and new_sha in str(info.value)
    assert str(record) in str(info.value)
    assert leftovers(dest) == ["data.bin.sha256"]
    assert record.read_text() == f"{PAYLOAD_SHA}  data.bin\n"


def test_checksum_file_path_is_configurable(server, tmp_path):
    server.routes["/data.bin"] = Route(PAYLOAD)
    record = tmp_path / "checksums" / "data.sha256"
    fetch(server, "/data.bin", tmp_path / "data.bin", checksum_file=record)
    assert record.read_text().split() == [PAYLOAD_SHA, "data.bin"]
    assert not (tmp_path / "data.bin.sha256").exists()


def test_google_drive_url():
    expected = "https://drive.usercontent.google.com/download?id=1AbC-d_E&export=download"
    assert google_drive_url("1AbC-d_E") == expected
    assert google_drive_url("https://drive.google.com/file/d/1AbC-d_E/view?usp=sharing") == expected
    assert google_drive_url("https://drive.google.com/open?id=1AbC-d_E") == expected
    with pytest.raises(ValueError, match="invalid Google Drive file id"):
        google_drive_url("not/an id")
    with pytest.raises(ValueError, match="no Google Drive file id"):
        google_drive_url("https://drive.google.com/drive/folders")
