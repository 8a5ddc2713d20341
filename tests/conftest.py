"""Shared set-up: one thread per core for parallel runs (pytest-xdist, ``make test``), the
order of test modules, and a real HTTP server on 127.0.0.1 for download tests."""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# --- parallel runs (pytest-xdist) -------------------------------------------------------------
# The thread pools that torch, numba and the BLAS libraries size from the environment when
# they are loaded (the runner's THREAD_ENV_VARS).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def _worker_threads() -> int | None:
    """Each xdist worker's share of the cores; None when not run by pytest-xdist."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(workers))


WORKER_THREADS = _worker_threads()
if WORKER_THREADS is not None:
    # Two workers on two cores that each started two threads per pool would oversubscribe the
    # machine (idle OpenMP/BLAS threads spin). The test modules import torch and numba after
    # this file, so the environment sizes their pools; numpy's BLAS is already loaded (by a
    # pytest plugin), so it is limited directly. Subprocesses inherit the environment; the
    # method runner sets its own job's threads.
    for _name in THREAD_ENV_VARS:
        os.environ[_name] = str(WORKER_THREADS)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=WORKER_THREADS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the modules with a test marked ``slow`` first (order within a module is kept).

    ``make test`` runs ``--dist loadfile --no-loadscope-reorder``: each module goes whole to
    one worker (its module-scoped fixtures, trained models and simulated data, are built
    once), in collection order. A long module handed out last would leave one worker running
    it alone at the end.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)  # stable


@dataclass
class Route:
    """What the server answers on one path.

    ``actions`` are consumed one per request before serving normally: an ``int`` answers with
    that HTTP status, ``("truncate", n)`` announces the full length but sends ``n`` bytes and
    closes, ``("stall", s)`` sleeps ``s`` seconds and closes without answering.
    """

    body: bytes
    content_type: str = "application/octet-stream"
    actions: list[Any] = field(default_factory=list)
    ranges: bool = True


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route | Callable[[dict[str, str]], Route]] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        state: FakeServer = self.server.state  # type: ignore[attr-defined]
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        with state.lock:
            state.requests.append(Seen(parsed.path, query, dict(self.headers.items())))
            route = state.routes.get(parsed.path)
            if callable(route):
                route = route(query)
            action = route.actions.pop(0) if route is not None and route.actions else None
        if route is None:
            self.send_error(404)
            return
        if isinstance(action, int):
            self.send_error(action)
            return
        if action is not None and action[0] == "stall":
            time.sleep(action[1])
            self.close_connection = True
            return
        body, start = route.body, 0
        range_header = self.headers.get("Range")
        if range_header and route.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        try:
            if action is not None and action[0] == "truncate":
                self.wfile.write(chunk[: action[1]])
                self.close_connection = True
                return
            self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
