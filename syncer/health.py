"""Loop mode's HTTP endpoints, for a Deployment's probes and Prometheus:

- `/metrics`: the metrics in the Prometheus text format;
- `/healthz`: 200 while the loop is alive: it passed a heartbeat (before and after each run)
  within 2 x interval + RUN_ALLOWANCE; 503 once it is stuck (a liveness probe restarts it);
- `/readyz`: 200 once a run has completed, 503 before.

Served by a ThreadingHTTPServer on a daemon thread: a slow scrape never delays a run.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from syncer.errors import ConfigError

log = logging.getLogger("endpoints_sync")

RUN_ALLOWANCE = 600.0
"""Seconds one run may take before /healthz calls the loop stuck: thousands of Services, each
Kubernetes call with its retry budget (30 s by default), and slow sources."""


class LoopState:
    """Written by the loop, read by the HTTP threads."""

    def __init__(self, interval: float, allowance: float = RUN_ALLOWANCE) -> None:
        self.limit = 2 * interval + allowance
        self._beat = time.monotonic()
        self._ready = threading.Event()

    def beat(self) -> None:
        self._beat = time.monotonic()

    def completed(self) -> None:
        self._ready.set()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._beat <= self.limit

    @property
    def ready(self) -> bool:
        return self._ready.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Callable[[], bytes],
                 state: LoopState) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics, self.state = metrics, state
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        state = self.server.state
        if path == "/metrics":
            self._send(200, self.server.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(*((200, b"ok\n") if state.alive else (503, b"loop stuck\n")))
        elif path == "/readyz":
            self._send(*((200, b"ok\n") if state.ready else (503, b"no run completed yet\n")))
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, body: bytes,
              content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the sync's own log lines


def serve(address: str, port: int, metrics: Callable[[], bytes],
          state: LoopState) -> ThreadingHTTPServer:
    """Start serving on a daemon thread; port 0 picks a free one (logged)."""
    try:
        server = _Server((address, port), metrics, state)
    except OSError as e:
        raise ConfigError("command line", "--metrics-port",
                          f"cannot listen on {address} port {port}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    host, bound = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    log.info("serving /metrics, /healthz and /readyz on http://%s:%d", shown, bound)
    return server
