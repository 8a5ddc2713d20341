"""Shared fixtures: a real HTTP server on 127.0.0.1 for download tests."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


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
