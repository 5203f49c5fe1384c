"""KubeApiServer: the HTTP side of the Kubernetes API test server, and its Python API.

Real HTTP/1.1 with keep-alive on 127.0.0.1 only. Every answer has a Content-Length but a
watch's, which is chunked, one event a chunk (tests/kubeapi/watch.py). Accepted sockets get
TCP_NODELAY: without it Nagle's algorithm meets the client's delayed ACK and every keep-alive
request stalls ~40 ms."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, urlsplit

from tests.kubeapi import errors, rbac
from tests.kubeapi.api import Api, Request, Response, is_watch, parse_route
from tests.kubeapi.faults import FaultInjector
from tests.kubeapi.resources import by_kind
from tests.kubeapi.store import HISTORY, Store
from tests.loopback_http import HOST, LoopbackHTTPServer

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DROPPED = 0  # the status recorded for a request whose connection was dropped
EVENTS_PATH = "/apis/events.k8s.io/"
# GET: the requests so far by verb, as JSON, for a client in another process (bench/).
# Not a Kubernetes path; its own requests are neither recorded nor delayed.
DEBUG_REQUESTS = "/debug/requests"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int


class _HttpServer(LoopbackHTTPServer):
    def __init__(self, owner: KubeApiServer, port: int) -> None:
        self.owner = owner
        super().__init__(port, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer
    timeout = 300  # idle keep-alive connections end eventually

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read server.requests instead

    def _serve(self) -> None:
        split = urlsplit(self.path)
        with self.server.owner.writing(self.command, split.path):
            self._answer(split)

    def _answer(self, split: SplitResult) -> None:
        owner = self.server.owner
        body = self._read_body()  # always: keeps the keep-alive stream in step
        if split.path == DEBUG_REQUESTS and self.command == "GET":
            self._send(split.path, split.query, Response(200, owner.counts_by_verb()),
                       record=False)
            return
        fault = owner.faults.take(self.command, split.path)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.drop:
                owner.record(RecordedRequest(self.command, split.path, split.query, DROPPED))
                self.close_connection = True
                return
            if fault.status is not None:
                err = errors.generic(fault.status, _fault_message(fault.status),
                                     fault.retry_after)
                if fault.details is not None:
                    err.details = {**(err.details or {}), **fault.details}
                self._send(split.path, split.query, Response(err.code, err.status_body(),
                                                             err.headers))
                return
        request = Request(self.command, split.path, split.query, self.headers, body)
        try:
            response = owner.api.handle(request)
        except Exception as exc:  # a server bug: answer it, and say so on stderr
            traceback.print_exc(file=sys.stderr)
            err = errors.ApiError(500, f"Internal error occurred: {exc!r}", "InternalError")
            response = Response(500, err.status_body())
        if response.stream is not None:
            self._stream(split.path, split.query, response.stream)
        else:
            self._send(split.path, split.query, response)

    def _stream(self, path: str, query: str, events: Iterator[dict[str, Any]]) -> None:
        """A watch: chunked JSON lines until the stream ends (timeout, server stopping) or
        the client goes away."""
        self.server.owner.record(RecordedRequest(self.command, path, query, 200))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away, or stop() shut the socket down
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, path: str, query: str, response: Response, record: bool = True) -> None:
        if isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            payload = json.dumps(response.body, separators=(",", ":")).encode()
            content_type = "application/json"
        # Record before answering, so a test that has its response sees the record.
        if record:
            self.server.owner.record(RecordedRequest(self.command, path, query,
                                                     response.status))
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _fault_message(status: int) -> str:
    if status == 429:
        return "Too many requests, please try again later."
    if status == 503:
        return "The service is unavailable."
    return f"Internal error occurred: injected fault ({status})"


class KubeApiServer:
    """A kube-apiserver stand-in for namespaces, services, endpoints and endpointslices."""

    def __init__(self, namespaces: Iterable[str] = ("default",), *,
                 endpoints_warning: bool = False,
                 rbac_rules: Iterable[rbac.Rule] | None = None,
                 watch_history: int = HISTORY) -> None:
        """`endpoints_warning`: answer Endpoints creates and updates with the deprecation
        `Warning` header of Kubernetes 1.33+. `rbac_rules`: authorize every resource request
        against these rules (see enforce_rbac). `watch_history`: how many changes are kept
        for watches (older resourceVersions get 410 Expired)."""
        self.store = Store(namespaces, watch_history)
        self.faults = FaultInjector()
        self.api = Api(self.store, lambda: self.url.removeprefix("http://"))
        self.api.endpoints_warning = endpoints_warning
        if rbac_rules is not None:
            self.enforce_rbac(rbac_rules)
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._write_observers: list[Callable[[RecordedRequest], None]] = []
        self._writes_in_flight = 0
        self.peak_writes_in_flight = 0
        """The most object writes (not Events) being answered at one moment."""
        self._httpd: _HttpServer | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, port: int = 0) -> KubeApiServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HttpServer(self, port)
        self._httpd.serve_in_thread(f"kubeapi-{self.port}")
        return self

    def stop(self) -> None:
        """Stop serving: open watches end at once, connections are closed; the objects are
        kept, so start() again is a restarted API server (same data, same port if given)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.end_watches()
        httpd.stop()

    def __enter__(self) -> KubeApiServer:
        return self.start() if self._httpd is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def write_kubeconfig(self, path: str | Path, context: str = "test") -> Path:
        """A kubeconfig whose current context points at this server (YAML, dummy token)."""
        path = Path(path)
        q = json.dumps  # JSON strings are valid YAML scalars
        path.write_text(
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            f"- name: {q(context)}\n"
            "  cluster:\n"
            f"    server: {q(self.url)}\n"
            "users:\n"
            f"- name: {q(context)}\n"
            "  user:\n"
            "    token: test-token\n"
            "contexts:\n"
            f"- name: {q(context)}\n"
            "  context:\n"
            f"    cluster: {q(context)}\n"
            f"    user: {q(context)}\n"
            "    namespace: default\n"
            f"current-context: {q(context)}\n"
        )
        return path

    # -- state -------------------------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        self.store.create_namespace(name)

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as is (create or replace), with server metadata and defaults filled
        in but no validation; its namespace is created if missing."""
        return self.store.seed(obj)

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.store.find(by_kind(kind), namespace or "", name)

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.store.list(by_kind(kind), namespace).items

    # -- watches -----------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the change history (an etcd compaction): a new watch from an earlier
        resourceVersion gets the 410 Expired ERROR event; open watches go on."""
        self.store.compact()

    def end_watches(self) -> None:
        """End every open watch now, as their timeouts would: clients watch again."""
        self.api.watches.close_all()

    @property
    def bookmark_interval(self) -> float:
        """Seconds between BOOKMARK events of watches that allow them (default 60)."""
        return self.api.watches.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self.api.watches.bookmark_interval = seconds

    # -- behaviour switches ------------------------------------------------------------

    @property
    def endpoints_warning(self) -> bool:
        return self.api.endpoints_warning

    @endpoints_warning.setter
    def endpoints_warning(self, on: bool) -> None:
        self.api.endpoints_warning = on

    def enforce_rbac(self, rules: Iterable[rbac.Rule] | None) -> None:
        """From now on a resource request no rule allows is answered 403 Forbidden, as by
        kube-apiserver's RBAC authorizer (tests.kubeapi.rbac.cluster_role_rules reads them
        from a manifest); None turns enforcement off."""
        self.api.rules = list(rules) if rules is not None else None

    # -- requests and faults -----------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, method: str, path: str) -> Iterator[None]:
        """Counts an object write while it is being answered (faults' delays included)."""
        counted = method in WRITE_METHODS and not path.startswith(EVENTS_PATH)
        if counted:
            with self._requests_lock:
                self._writes_in_flight += 1
                self.peak_writes_in_flight = max(self.peak_writes_in_flight,
                                                 self._writes_in_flight)
        try:
            yield
        finally:
            if counted:
                with self._requests_lock:
                    self._writes_in_flight -= 1

    def record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)
            observers = list(self._write_observers) if request.method in WRITE_METHODS else []
        for observe in observers:
            observe(request)

    def observe_writes(self, observer: Callable[[RecordedRequest], None]) -> None:
        """Call `observer` after every write request is answered by the store (before the
        client sees the answer), e.g. to check an invariant of the stored state at every
        step. It runs on the server's request thread: keep it quick."""
        with self._requests_lock:
            self._write_observers.append(observer)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    def write_requests(self, include_events: bool = False) -> list[RecordedRequest]:
        """Every write so far. Events are records about objects, not changes to them: they
        are left out unless `include_events`."""
        return [r for r in self.requests if r.method in WRITE_METHODS
                and (include_events or not r.path.startswith(EVENTS_PATH))]

    def requests_matching(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[RecordedRequest]:
        pattern = re.compile(path_regex) if path_regex else None
        return [
            r for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
        ]

    def counts_by_verb(self) -> dict[str, int]:
        """How many requests so far per verb; a GET of a collection counts as LIST, a watch
        as WATCH, and any request for Events as EVENT (records about objects, not changes to
        them)."""
        def verb(r: RecordedRequest) -> str:
            if r.path.startswith(EVENTS_PATH):
                return "EVENT"
            if r.method == "GET" and is_watch(r.query):
                return "WATCH"
            route = parse_route(r.path) if r.method == "GET" else None
            return "LIST" if route is not None and route.name is None else r.method
        return dict(Counter(verb(r) for r in self.requests))

    def reset_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()
            self.peak_writes_in_flight = self._writes_in_flight

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        drop: bool = False,
        times: int = 1,
        after: int = 0,
        details: dict[str, Any] | None = None,
    ) -> None:
        """The next `times` requests whose method matches (`*` for any, `POST|PUT` for
        either) and whose path matches `path_regex` (re.search, query excluded) are delayed
        by `delay` seconds, then dropped without an answer (`drop`), answered with a Status
        of `status` (429 carries Retry-After when `retry_after` is given), or else served
        normally. With `after`, the first `after` matching requests pass untouched;
        `details` goes into the Status body (a 422's `causes`, say)."""
        self.faults.add(method, path_regex, status=status, retry_after=retry_after,
                        delay=delay, drop=drop, times=times, after=after, details=details)

    def clear_faults(self) -> None:
        self.faults.clear()
