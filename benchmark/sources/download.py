"""Download datasets and checkpoints: streamed, retried, resumed, verified and atomic.

One entry point, :func:`download`, used by the workflow's data rules. Its guarantees:

- The final ``dest`` appears only after the data verified (size and sha256), by an atomic
  rename. A failed call leaves no ``dest``.
- Bytes received so far live in ``<dest>.part``. An interrupted download (lost connection,
  timeout, server closing early, killed process) is continued from there with an HTTP
  ``Range: bytes=<n>-`` request; a server that answers ``206`` is appended to, one that answers
  ``200`` (Range not supported) is downloaded again from the start.
- Connection errors, timeouts, truncated bodies, ``408``, ``429`` and ``5xx`` are retried with
  exponential back-off. Other ``4xx`` (``404``, ``403``, ...) fail at once.
- Data that fails verification is deleted (a resumed file that fails is downloaded once more
  from scratch first, in case the partial came from an older version of the file).
- Google Drive's large-file confirmation page ("can't scan this file for viruses") is parsed
  and its download form or confirm link followed. Pages are recognised by their content, so
  mirrors and local test servers behave like Drive.

Checksum records
----------------
When no ``sha256`` is given, the digest is *recorded on first download and checked
afterwards*: it is written, before ``dest`` appears, to a record file (default
``<dest>.sha256``; ``checksum_file`` chooses another path) in ``sha256sum`` format
(``<hex digest>  <file name>``, so ``sha256sum -c`` can check it from ``dest``'s folder).
Later calls verify ``dest`` (or a new download of it) against that record. An explicit
``sha256`` always wins and no record is written.

Because a first download is trusted, it is first checked to *be* what the registry says it
is (:func:`benchmark.sources.formats.check_format`): an HTML error page served with ``200``, a gzipped body where a
table was expected or a text file where an archive was expected is deleted, named in the
error and never recorded, so the correct file is accepted on the next run.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

import requests
import urllib3
from tqdm import tqdm

from benchmark.io import write_text
from benchmark.sources.formats import check_format, format_from_name

__all__ = [
    "DRIVE_HOSTS",
    "DownloadError",
    "download",
    "google_drive_url",
    "sha256sum",
]

log = logging.getLogger(__name__)

#: Hosts whose HTML answers are never the file itself (an HTML answer from them that is not a
#: confirmation page is an error page: quota exceeded, no permission, ...).
DRIVE_HOSTS = frozenset({"drive.google.com", "drive.usercontent.google.com", "docs.google.com"})

CHUNK_SIZE = 1 << 20
_MAX_BACKOFF_S = 60.0
# A Drive confirmation page is a few kB; an HTML answer larger than this is treated as data.
_HTML_PEEK_BYTES = 1 << 20
_MAX_CONFIRM_HOPS = 3
# Transient client errors worth retrying; every other 4xx is final.
_RETRY_STATUSES = frozenset({408, 425, 429})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_ID_RE = re.compile(r"[-\w]+")
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)


class DownloadError(RuntimeError):
    """A download failed for good (after retries where the failure was transient).

    Attributes
    ----------
    url
        The URL that was requested.
    status
        The last HTTP status received, or ``None`` when none was (connection errors).
    expected, actual
        The expected and the received checksum or size, for verification failures.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        expected: str | int | None = None,
        actual: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.expected = expected
        self.actual = actual


class _TransientError(Exception):
    """One attempt failed in a way that a later attempt may not."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def google_drive_url(file_id: str) -> str:
    """Return the direct-download URL of a public Google Drive file.

    Parameters
    ----------
    file_id
        The file's Drive id, or a share link that contains it
        (``https://drive.google.com/file/d/<id>/view``, ``...open?id=<id>``, ``...uc?id=<id>``).

    Returns
    -------
    str
        ``https://drive.usercontent.google.com/download?id=<id>&export=download``. Large files
        answer it with a confirmation page, which :func:`download` follows.
    """
    file_id = file_id.strip()
    if "://" in file_id:
        parsed = urllib.parse.urlsplit(file_id)
        match = re.search(r"/d/([-\w]+)", parsed.path)
        ids = urllib.parse.parse_qs(parsed.query).get("id")
        if match:
            file_id = match.group(1)
        elif ids:
            file_id = ids[0]
        else:
            raise ValueError(f"no Google Drive file id in {file_id!r} (expected /d/<id> or id=)")
    if not _DRIVE_ID_RE.fullmatch(file_id):
        raise ValueError(
            f"invalid Google Drive file id {file_id!r}: expected letters, digits, '-' and '_'"
        )
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download"


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    checksum_file: str | os.PathLike[str] | None = None,
    file_format: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists and verifies.

    Parameters
    ----------
    url
        HTTP(S) URL of the file (a Google Drive URL from :func:`google_drive_url` works too).
    dest
        Final path of the file. Its folder is created. ``<dest>.part`` holds a partial download.
    sha256
        Expected hex sha256 digest (an optional ``"sha256:"`` prefix is accepted). When
        ``None``, the digest is recorded on first download and checked afterwards (see the
        module docstring).
    size
        Expected size in bytes. Also lets a complete ``.part`` skip the network and a server
        announcing another size fail before transferring anything.
    checksum_file
        Where the recorded digest lives when ``sha256`` is ``None``; default ``<dest>.sha256``.
    file_format
        What the file must be (a registry ``format``: ``h5ad``, ``zip``, ``tar.gz``, ``csv``,
        ...; ``None``: guessed from ``dest``'s suffix). Checked by :func:`check_format`
        before a first digest is recorded.
    retries
        How many failed attempts in a row are retried (an attempt that added data to the
        ``.part`` resets the count, so a long download over a flaky link keeps going).
    backoff
        Seconds before the first retry, doubled each further retry (at most 60 s).
    timeout
        Seconds to wait for the connection and for each read from it.
    progress
        Show a tqdm progress bar (bytes).
    chunk_size
        Bytes read and written at a time.

    Returns
    -------
    Path
        ``dest``, complete and verified.

    Raises
    ------
    DownloadError
        On a final HTTP status (``404``, ``403``, ...), when retries are exhausted, when
        Google Drive refuses the file, when the data does not match ``size`` / ``sha256``
        / the recorded digest, or when a file with no known digest is not of ``file_format``. The message names the URL, the HTTP status, and the expected
        and actual values.
    """
    dest = Path(dest)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0 bytes, got {size}")
    expected = _normalise_sha256(sha256, what="sha256 argument") if sha256 else None
    record: Path | None = None
    if expected is None:
        record = Path(checksum_file) if checksum_file else dest.with_name(dest.name + ".sha256")
        if record.exists():
            expected = _read_record(record)

    fmt = file_format or format_from_name(dest.name)
    if dest.exists():
        problem, digest = _verify(dest, size=size, sha256=expected)
        if problem is None and expected is None:
            wrong = check_format(dest, fmt)
            if wrong is not None:
                problem = _Mismatch("format", fmt or "?", wrong)
        if problem is None:
            if record is not None and not record.exists():
                # A file placed by hand or by an older run: trust it once and pin it.
                log.warning(
                    "%s has no known sha256 (registry sha256: null): trusting the file that "
                    "is there and recording its digest %s in %s; later runs check against "
                    "it. Compare it with the source's published digest, or put it in the "
                    "registry.",
                    dest,
                    digest,
                    record,
                )
                _write_record(record, digest, dest)
            return dest
        log.warning("%s exists but %s; downloading it again", dest, problem)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        # Identity encoding: the bytes on disk are the bytes the checksum was made from.
        session.headers.update({"Accept-Encoding": "identity", "User-Agent": "scgpt-bench"})
        for fresh in (False, True):
            resumed = _fetch(
                session,
                url,
                part,
                size=size,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
                chunk_size=chunk_size,
                desc=dest.name,
            )
            problem, digest = _verify(part, size=size, sha256=expected)
            if problem is None and expected is None:
                # Nothing vouches for these bytes yet: before they are trusted (and their digest
                # pinned), they must at least be the kind of file the registry names.
                wrong = check_format(part, fmt)
                if wrong is not None:
                    part.unlink()
                    raise DownloadError(
                        f"download of {url} to {dest}: expected a {fmt} file but got {wrong}; "
                        "the data was removed and no checksum was recorded (is the URL right, "
                        "or did the server answer with an error page?)",
                        url=url,
                        expected=fmt,
                        actual=wrong,
                    )
            if problem is None:
                break
            part.unlink()
            if resumed and not fresh:
                log.warning("%s: resumed data %s; downloading from scratch", url, problem)
                continue
            recorded = record is not None and problem.what == "sha256"
            origin = f" (recorded in {record})" if recorded else ""
            raise DownloadError(
                f"download of {url} to {dest} failed verification: {problem}{origin}; "
                f"the bad data was removed",
                url=url,
                expected=problem.expected,
                actual=problem.actual,
            )
    if record is not None and expected is None:
        # Written before dest appears: a crash in between leaves a record and no dest, and
        # the next run's download is checked against it.
        log.warning(
            "%s: no known sha256 (registry sha256: null); the first download records its "
            "digest %s in %s and later runs check against it",
            url,
            digest,
            record,
        )
        _write_record(record, digest, dest)
    os.replace(part, dest)
    return dest


def _fetch(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
    chunk_size: int,
    desc: str,
) -> bool:
    """Bring ``part`` to a complete copy of ``url``; return whether earlier bytes were reused."""
    # Whether the part holds bytes from more than one response (or from an earlier run).
    state = {"resumed": False}
    failures = 0
    attempts = 0
    hops = 0
    current = url
    best = part.stat().st_size if part.exists() else 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is not None and part.exists() and offset == size:
            return True  # complete already (an earlier run stopped before verifying)
        if offset == 0:
            state["resumed"] = False
        attempts += 1
        try:
            follow = _attempt(
                session,
                current,
                part,
                offset,
                size=size,
                timeout=timeout,
                progress=progress,
                chunk_size=chunk_size,
                desc=desc,
                state=state,
            )
        except _TransientError as err:
            now = part.stat().st_size if part.exists() else 0
            if now > best:
                best = now
                failures = 0
            failures += 1
            if failures > retries:
                status = f"HTTP {err.status}, " if err.status is not None else ""
                raise DownloadError(
                    f"download of {url} failed after {attempts} attempts "
                    f"({status}last error: {err}); "
                    + (
                        f"{now} bytes kept in {part} for the next run"
                        if now
                        else "nothing was kept"
                    ),
                    url=url,
                    status=err.status,
                ) from err
            delay = min(backoff * 2 ** (failures - 1), _MAX_BACKOFF_S)
            log.warning("%s: %s; retry %d/%d in %.1f s", current, err, failures, retries, delay)
            time.sleep(delay)
            continue
        if follow is None:
            return state["resumed"]
        hops += 1
        if hops > _MAX_CONFIRM_HOPS:
            raise DownloadError(
                f"download of {url}: Google Drive answered {hops} confirmation pages in a row "
                f"(last link {follow})",
                url=url,
            )
        log.info("%s: following the Google Drive confirmation to %s", url, follow)
        current = follow


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    offset: int,
    *,
    size: int | None,
    timeout: float,
    progress: bool,
    chunk_size: int,
    desc: str,
    state: dict[str, bool],
) -> str | None:
    """Make one request; return a URL to follow (Drive confirmation) or ``None`` when done.

    Sets ``state["resumed"]`` when the answer is appended to bytes already in ``part``.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except _NETWORK_ERRORS as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from err
    except requests.RequestException as err:
        raise DownloadError(f"request for {url} failed: {err}", url=url) from err

    with response:
        status = response.status_code
        if status == 416 and offset:
            _, total = _parse_content_range(response.headers.get("Content-Range"))
            if total == offset:
                state["resumed"] = True
                return None  # the part already holds the whole file
            part.unlink()
            raise _TransientError(
                f"HTTP 416 for Range bytes={offset}- (server size {total}); starting over", 416
            )
        if status in _RETRY_STATUSES or status >= 500:
            raise _TransientError(f"HTTP {status} {response.reason}", status)
        if status not in (200, 206):
            raise DownloadError(
                f"download of {url} failed: HTTP {status} {response.reason}"
                + (f" (from {response.url})" if response.url != url else ""),
                url=url,
                status=status,
            )

        chunks = _guarded(response.raw.stream(chunk_size, decode_content=False))
        head: list[bytes] = []
        content_type = response.headers.get("Content-Type", "")
        if status == 200 and content_type.lower().startswith("text/html"):
            head, exhausted = _peek(chunks, _HTML_PEEK_BYTES)
            if exhausted:
                page = b"".join(head).decode(response.encoding or "utf-8", errors="replace")
                follow = _drive_follow_url(page, response)
                if follow is not None:
                    return follow
            if _is_drive(response.url):
                raise DownloadError(
                    f"download of {url}: Google Drive answered with an HTML page, not the file "
                    "(is it shared as 'anyone with the link'?)",
                    url=url,
                    status=status,
                )

        length = _int_header(response.headers.get("Content-Length"))
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _TransientError(
                    f"asked for bytes={offset}- but got Content-Range "
                    f"{response.headers.get('Content-Range')!r}; starting over",
                    status,
                )
            mode = "ab"
            state["resumed"] = True
        else:
            if offset:
                log.info("%s: server ignored the Range request; starting over", url)
            offset, total, mode = 0, None, "wb"
            state["resumed"] = False
        if total is None and length is not None:
            total = offset + length
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"download of {url}: the server announces {total} bytes, expected size {size} "
                "bytes",
                url=url,
                status=status,
                expected=size,
                actual=total,
            )

        received = offset
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
            ) as bar,
        ):
            for chunk in itertools.chain(head, chunks):
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and received < total:
        raise _TransientError(f"connection closed after {received} of {total} bytes", status)
    if total is not None and received > total:
        part.unlink()
        raise _TransientError(f"received {received} bytes, more than the {total} announced")
    return None


def _guarded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Turn network errors raised while reading the body into transient errors."""
    try:
        yield from chunks
    except _NETWORK_ERRORS as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from err


def _peek(chunks: Iterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """Read up to ``limit`` bytes; return them and whether the body ended within them."""
    head: list[bytes] = []
    n = 0
    for chunk in chunks:
        head.append(chunk)
        n += len(chunk)
        if n >= limit:
            return head, False
    return head, True


def _is_drive(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in DRIVE_HOSTS


class _PageParser(HTMLParser):
    """Collect the forms, links and error caption of a Google Drive interstitial page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[dict[str, str], dict[str, str]]] = []
        self.links: list[dict[str, str]] = []
        self.error = ""
        self._in_form = False
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((attr, {}))
            self._in_form = True
        elif tag == "input" and self._in_form and attr.get("name"):
            if attr.get("type", "text").lower() in ("hidden", "text"):
                self.forms[-1][1][attr["name"]] = attr.get("value", "")
        elif tag == "a" and attr.get("href"):
            self.links.append(attr)
        elif "uc-error-subcaption" in attr.get("class", "").split():
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif self._in_error and tag in ("p", "div", "span"):
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data


def _drive_follow_url(page: str, response: requests.Response) -> str | None:
    """Return the URL a Drive confirmation page leads to, ``None`` if it is not one.

    Recognised by content, on any host: the virus-scan warning's ``form#download-form`` (its
    action plus hidden inputs, ``confirm`` and ``uuid`` among them) or the older
    ``a#uc-download-link`` with a ``confirm=`` token. On Drive hosts also a bare
    ``confirm=<token>`` in the page or a ``download_warning`` cookie.
    """
    base = response.url
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    forms = [f for f in parser.forms if f[0].get("id") == "download-form"]
    if not forms and _is_drive(base):
        forms = [f for f in parser.forms if "confirm" in f[1]]
    if forms:
        attrs, inputs = forms[0]
        action = urllib.parse.urljoin(base, attrs.get("action") or base)
        return _with_query(action, inputs)
    for link in parser.links:
        if "confirm=" in link["href"] and (link.get("id") == "uc-download-link" or _is_drive(base)):
            return urllib.parse.urljoin(base, link["href"])
    if _is_drive(base):
        match = re.search(r"confirm=([-\w]+)", page)
        if match:
            return _with_query(base, {"confirm": match.group(1)})
        for name, value in response.cookies.items():
            if name.startswith("download_warning"):
                return _with_query(base, {"confirm": value})
    if parser.error.strip():
        raise DownloadError(
            f"Google Drive refused {base}: {' '.join(parser.error.split())}",
            url=base,
            status=response.status_code,
        )
    return None


def _with_query(url: str, params: dict[str, str]) -> str:
    """Return ``url`` with ``params`` added to (or replacing keys of) its query string."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes <start>-<end>/<total>`` or ``bytes */<total>`` into (start, total)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Mismatch(NamedTuple):
    """What failed verification: ``what`` ("size", "sha256" or "format"), expected and actual."""

    what: str
    expected: str | int
    actual: str | int

    def __str__(self) -> str:
        unit = " bytes" if self.what == "size" else ""
        return f"expected {self.what} {self.expected}{unit}, got {self.actual}{unit}"


def _verify(path: Path, *, size: int | None, sha256: str | None) -> tuple[_Mismatch | None, str]:
    """Return (the mismatch or ``None``, the file's sha256; "" when not computed)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return _Mismatch("size", size, actual_size), ""
    digest = sha256sum(path)
    if sha256 is not None and digest != sha256:
        return _Mismatch("sha256", sha256, digest), digest
    return None, digest


def _normalise_sha256(value: str, *, what: str) -> str:
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.fullmatch(digest):
        raise ValueError(f"{what}: {value!r} is not a sha256 digest (64 hex characters)")
    return digest


def _read_record(record: Path) -> str:
    fields = record.read_text().split()
    if not fields:
        raise ValueError(f"{record}: empty checksum record, expected '<sha256>  <file name>'")
    return _normalise_sha256(fields[0], what=str(record))


def _write_record(record: Path, digest: str, dest: Path) -> None:
    write_text(f"{digest}  {dest.name}\n", record)
    log.info("%s: recorded sha256 %s in %s", dest, digest, record)
