"""A Consul HTTP API double: real HTTP on 127.0.0.1, answers shaped like Consul's.

Serves the two reads the consul provider makes:

- `GET /v1/catalog/services` -> {name: [tags]}, honouring `dc`, `filter` (catalog selectors:
  ServiceName, ServiceTags, ServiceMeta.x, NodeMeta.x, Node, Address, ...) and `stale`.
- `GET /v1/health/service/<name>` -> [{Node, Service, Checks}], honouring `passing`, `tag`
  (repeatable, all must match), `dc`, `filter` (health selectors: Service.Meta.x,
  Service.Tags, Node.Meta.x, Node.Node, ...) and `stale`.

Filter language subset: `<sel> == "v"`, `<sel> != "v"`, `"v" in <sel>`, `"v" not in <sel>`,
joined by `and` / `or`. An unknown selector is a 400, as in Consul.

ACLs as Consul with `default_policy = deny`: no token reads as anonymous (empty results and
`X-Consul-Results-Filtered-By-ACLs: true`), an unknown token gets 403 "ACL not found".

Faults: `fail(status, body)`, `hang()` (accepts, reads the request, never answers),
`delay` (slow answers), `known_leader = False`, `raw_entries` (malformed health entries).
Every request is recorded without its token.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from tests.loopback_http import LoopbackHTTPServer

Status = Literal["passing", "warning", "critical"]
TOKEN_HEADER = "X-Consul-Token"


@dataclass
class Node:
    name: str
    address: str
    id: str
    datacenter: str = "dc1"
    meta: dict[str, str] = field(default_factory=dict)
    tagged: dict[str, str] = field(default_factory=dict)
    status: Status = "passing"
    """Status of the node's serfHealth check, which every instance on the node inherits."""


@dataclass
class ServiceInstance:
    id: str
    service: str
    node: str
    port: int
    address: str = ""
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    tagged: dict[str, tuple[str, int]] = field(default_factory=dict)
    checks: dict[str, Status] = field(default_factory=dict)
    kind: str = ""
    index: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Every header but X-Consul-Token, so that test output never shows a token."""
    token_sent: bool
    """Whether an X-Consul-Token header came with the request."""


@dataclass
class Fault:
    status: int = 0
    body: str = ""
    hang: bool = False
    path_prefix: str = "/"


class FilterError(ValueError):
    """An expression the double (like Consul) cannot evaluate: answered with 400."""


# --- filter expressions ---------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(==|!=)|([A-Za-z_][A-Za-z0-9_.\-]*))')


def _tokens(expression: str) -> list[str]:
    out, pos = [], 0
    while pos < len(expression.rstrip()):
        m = _TOKEN.match(expression, pos)
        if not m or m.end() == pos:
            raise FilterError(f"Failed to create boolean expression evaluator: syntax error "
                              f"at {expression[pos:]!r}")
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


def _lookup(doc: Mapping[str, Any], selector: str, free_maps: frozenset[str]) -> Any:
    """The value a selector names; keys of free-form maps (Meta) may be missing, others not."""
    value: Any = doc
    parent = ""
    for part in selector.split("."):
        if isinstance(value, dict) and part in value:
            value, parent = value[part], part
        elif isinstance(value, dict) and parent in free_maps:
            return None
        else:
            raise FilterError(f'Failed to create boolean expression evaluator: Selector '
                              f'"{selector}" is not valid')
    return value


def _clause(tokens: list[str], doc: Mapping[str, Any], free: frozenset[str]) -> bool:
    if len(tokens) >= 3 and tokens[0].startswith('"'):
        value, negate = json.loads(tokens[0]), tokens[1] == "not"
        selector = tokens[3] if negate else tokens[2]
        if tokens[1 + negate] != "in":
            raise FilterError(f"Failed to create boolean expression evaluator: {tokens}")
        found = value in (_lookup(doc, selector, free) or ())
        return found != negate
    if len(tokens) == 3 and tokens[1] in ("==", "!=") and tokens[2].startswith('"'):
        equal: bool = _lookup(doc, tokens[0], free) == json.loads(tokens[2])
        return equal == (tokens[1] == "==")
    raise FilterError(f"Failed to create boolean expression evaluator: {' '.join(tokens)}")


def matches(expression: str, doc: Mapping[str, Any],
            free_maps: frozenset[str] = frozenset({"Meta", "ServiceMeta", "NodeMeta"})) -> bool:
    """Evaluate the filter subset: clauses joined by `and`, groups of those joined by `or`."""
    tokens = _tokens(expression)
    groups: list[list[list[str]]] = [[[]]]
    for tok in tokens:
        if tok == "or":
            groups.append([[]])
        elif tok == "and":
            groups[-1].append([])
        else:
            groups[-1][-1].append(tok)
    # Evaluate every clause (no short-circuit) so that a bad selector is always reported.
    results = [[_clause(c, doc, free_maps) for c in group] for group in groups]
    return any(all(r) for r in results)


# --- the server -----------------------------------------------------------------------------


class ConsulDouble:
    """A small Consul: nodes, service instances with checks, and the HTTP API over them."""

    def __init__(self, *, acl_token: str | None = None, datacenters: Sequence[str] = ("dc1",),
                 local_datacenter: str = "dc1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.acl_token = acl_token
        self.datacenters = set(datacenters)
        self.local_datacenter = local_datacenter
        self.delay = 0.0
        self.known_leader = True
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[RecordedRequest] = []
        self._ssl_context = ssl_context
        self._nodes: dict[str, Node] = {}
        self._instances: dict[str, ServiceInstance] = {}
        self._faults: list[Fault] = []
        self.raw_entries: dict[str, list[Any]] = {}
        """Service name -> entries appended as they are to its health answers (malformed
        data a real Consul would not produce, or an agent of another version might)."""
        self._index = itertools.count(10)
        self._last_index = 9
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._port = 0
        # Consul servers register themselves as the `consul` service.
        self.add_node("consul-server-1", "192.0.2.250")
        self.register("consul", "consul-server-1", port=8300, service_id="consul")

    # -- lifecycle

    def start(self) -> ConsulDouble:
        """Listen on 127.0.0.1; a restarted double takes its old port again."""
        server = _Server(self._port, _Handler)
        self._port = int(server.server_address[1])
        server.double = self
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._stopping.clear()
        server.serve_in_thread("consul-double")
        return self

    def stop(self) -> None:
        """Consul goes away: the port is closed and open keep-alive connections are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.stop()

    def __enter__(self) -> ConsulDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (or listened on, once stopped)."""
        assert self._port, "start() the double first"
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- the catalog

    def add_node(self, name: str, address: str, *, datacenter: str = "dc1",
                 meta: Mapping[str, str] | None = None,
                 tagged: Mapping[str, str] | None = None, node_id: str | None = None) -> Node:
        """A node. Like Consul, its tagged addresses default to lan/wan = its address."""
        default_tagged = {"lan": address, "lan_ipv4": address, "wan": address,
                          "wan_ipv4": address} if ":" not in address else \
            {"lan": address, "lan_ipv6": address, "wan": address, "wan_ipv6": address}
        node = Node(name=name, address=address, datacenter=datacenter, meta=dict(meta or {}),
                    tagged=dict(tagged) if tagged is not None else default_tagged,
                    id=node_id or f"00000000-0000-4000-8000-{len(self._nodes) + 1:012d}")
        with self._lock:
            self._nodes[name] = node
            self._bump()
        return node

    def register(self, service: str, node: str, *, port: int, address: str = "",
                 tags: Sequence[str] = (), meta: Mapping[str, str] | None = None,
                 checks: Mapping[str, Status] | Status = "passing",
                 tagged: Mapping[str, tuple[str, int]] | None = None, kind: str = "",
                 service_id: str | None = None) -> str:
        """Register an instance on a node; returns its service ID.

        `checks` is one status (a single check named `service:<id>`) or check name -> status.
        """
        if node not in self._nodes:
            raise KeyError(f"add_node({node!r}, ...) first")
        sid = service_id or f"{service}-{node}-{port}"
        status_by_check = ({f"service:{sid}": checks} if isinstance(checks, str)
                           else dict(checks))
        with self._lock:
            self._instances[sid] = ServiceInstance(
                id=sid, service=service, node=node, port=port, address=address,
                tags=list(tags), meta=dict(meta or {}), tagged=dict(tagged or {}),
                checks=status_by_check, kind=kind, index=self._bump())
        return sid

    def deregister(self, service_id: str) -> None:
        with self._lock:
            del self._instances[service_id]
            self._bump()

    def set_check(self, service_id: str, status: Status, check: str | None = None) -> None:
        with self._lock:
            inst = self._instances[service_id]
            inst.checks[check or f"service:{service_id}"] = status
            self._bump()

    def set_node_status(self, node: str, status: Status) -> None:
        with self._lock:
            self._nodes[node].status = status
            self._bump()

    # -- faults and records

    def fail(self, status: int, body: str = "", path_prefix: str = "/") -> None:
        """Answer requests under `path_prefix` with this status and body."""
        self._faults.append(Fault(status=status, body=body, path_prefix=path_prefix))

    def hang(self, path_prefix: str = "/") -> None:
        """Accept and read requests under `path_prefix`, then never answer."""
        self._faults.append(Fault(hang=True, path_prefix=path_prefix))

    def clear_faults(self) -> None:
        self._faults.clear()
        self.delay = 0.0

    def wait_for_stop(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    # -- answering (called from the handler threads)

    def _bump(self) -> int:
        self._last_index = next(self._index)
        return self._last_index

    def answer(self, method: str, raw_path: str, headers: Mapping[str, str],
               ) -> tuple[int, dict[str, str], bytes] | None:
        """Status, headers and body for one request; None means: never answer."""
        parts = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        token = headers.get(TOKEN_HEADER) or next(iter(query.get("token", [])), None)
        with self._lock:
            self.requests.append(RecordedRequest(
                method, path, query, {k: v for k, v in headers.items()
                                      if k.lower() != TOKEN_HEADER.lower()},
                token_sent=TOKEN_HEADER in headers))
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(method, path, query, token)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, method: str, path: str, query: dict[str, list[str]],
                token: str | None) -> tuple[int, dict[str, str], bytes] | None:
        if self.delay:
            self._stopping.wait(self.delay)
        for fault in self._faults:
            if path.startswith(fault.path_prefix):
                return None if fault.hang else _text(fault.status, fault.body)
        if method != "GET":
            return _text(405, "method not allowed")
        if self.acl_token is not None and token is not None and token != self.acl_token:
            return _text(403, "ACL not found")
        anonymous = self.acl_token is not None and token is None
        dc = next(iter(query.get("dc", [])), self.local_datacenter)
        if dc not in self.datacenters:
            return _text(500, "No path to datacenter")
        try:
            if path == "/v1/catalog/services":
                return self._json(self._catalog(dc, query, anonymous), query, anonymous)
            if path.startswith("/v1/health/service/"):
                name = path.removeprefix("/v1/health/service/")
                return self._json(self._health(name, dc, query, anonymous), query, anonymous)
        except FilterError as e:
            return _text(400, str(e))
        return _text(404, "")

    def _json(self, data: Any, query: Mapping[str, list[str]],
              anonymous: bool) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Content-Type": "application/json",
            "X-Consul-Index": str(self._last_index),
            "X-Consul-KnownLeader": "true" if self.known_leader else "false",
            "X-Consul-LastContact": "0" if self.known_leader else "61000",
            "X-Consul-Effective-Consistency": "stale" if "stale" in query else "leader",
        }
        if anonymous:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return 200, headers, json.dumps(data).encode()

    def _catalog(self, dc: str, query: Mapping[str, list[str]],
                 anonymous: bool) -> dict[str, list[str]]:
        expression = next(iter(query.get("filter", [])), None)
        out: dict[str, set[str]] = {}
        with self._lock:
            for inst in self._instances.values():
                node = self._nodes[inst.node]
                if node.datacenter != dc or anonymous:
                    continue
                if expression and not matches(expression, self._service_node(inst, node)):
                    continue
                out.setdefault(inst.service, set()).update(inst.tags)
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    def _health(self, name: str, dc: str, query: Mapping[str, list[str]],
                anonymous: bool) -> list[dict[str, Any]]:
        expression = next(iter(query.get("filter", [])), None)
        wanted_tags = set(query.get("tag", []))
        out = []
        with self._lock:
            for inst in sorted(self._instances.values(), key=lambda i: i.id):
                node = self._nodes[inst.node]
                if inst.service != name or node.datacenter != dc or anonymous:
                    continue
                if not wanted_tags.issubset(inst.tags):
                    continue
                entry = self._entry(inst, node)
                if "passing" in query and any(c["Status"] != "passing" for c in entry["Checks"]):
                    continue
                if expression and not matches(expression, entry):
                    continue
                out.append(entry)
            out += self.raw_entries.get(name, [])
        return out

    @staticmethod
    def _entry(inst: ServiceInstance, node: Node) -> dict[str, Any]:
        """One health entry as Consul documents it (GET /v1/health/service/:service)."""
        checks = [_check(node.name, "serfHealth", "Serf Health Status", node.status, "", "",
                         [])]
        checks += [_check(node.name, cid, f"Service '{inst.service}' check", status, inst.id,
                          inst.service, inst.tags) for cid, status in sorted(inst.checks.items())]
        return {
            "Node": {
                "ID": node.id, "Node": node.name, "Address": node.address,
                "Datacenter": node.datacenter, "TaggedAddresses": dict(node.tagged),
                "Meta": dict(node.meta), "CreateIndex": 5, "ModifyIndex": 5,
            },
            "Service": {
                "Kind": inst.kind, "ID": inst.id, "Service": inst.service,
                "Tags": list(inst.tags), "Address": inst.address,
                "TaggedAddresses": {k: {"Address": a, "Port": p}
                                    for k, (a, p) in inst.tagged.items()},
                "Meta": dict(inst.meta), "Port": inst.port,
                "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "Connect": {}, "PeerName": "", "CreateIndex": inst.index,
                "ModifyIndex": inst.index,
            },
            "Checks": checks,
        }

    @staticmethod
    def _service_node(inst: ServiceInstance, node: Node) -> dict[str, Any]:
        """The flat ServiceNode shape that /v1/catalog/services filters run against."""
        return {
            "ID": node.id, "Node": node.name, "Address": node.address,
            "Datacenter": node.datacenter, "TaggedAddresses": dict(node.tagged),
            "NodeMeta": dict(node.meta), "ServiceKind": inst.kind, "ServiceID": inst.id,
            "ServiceName": inst.service, "ServiceTags": list(inst.tags),
            "ServiceAddress": inst.address, "ServiceMeta": dict(inst.meta),
            "ServicePort": inst.port,
        }


def _check(node: str, check_id: str, name: str, status: Status, service_id: str,
           service: str, tags: list[str]) -> dict[str, Any]:
    return {
        "Node": node, "CheckID": check_id, "Name": name, "Status": status, "Notes": "",
        "Output": "" if status == "passing" else f"check is {status}",
        "ServiceID": service_id, "ServiceName": service, "ServiceTags": list(tags),
        "Type": "" if check_id == "serfHealth" else "http", "Definition": {},
        "CreateIndex": 5, "ModifyIndex": 5,
    }


def _text(status: int, body: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, body.encode()


class _Server(LoopbackHTTPServer):
    double: ConsulDouble


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle keep-alive connection does not hold a thread for ever

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        double = self.server.double
        answer = double.answer(self.command, self.path, dict(self.headers.items()))
        if answer is None:
            # Never answer: hold the connection until the double stops.
            double.wait_for_stop(60)
            self.close_connection = True
            return
        status, headers, body = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on recorded requests instead


def running(double: ConsulDouble) -> Iterator[ConsulDouble]:
    """For fixtures: `yield from running(ConsulDouble(...))`."""
    double.start()
    try:
        yield double
    finally:
        double.stop()


__all__ = ["ConsulDouble", "FilterError", "RecordedRequest", "matches", "running"]


def payments_double() -> ConsulDouble:
    """A Consul with one node and one `payments` instance on port 8443."""
    double = ConsulDouble()
    double.add_node("node-1", "203.0.113.10")
    double.register("payments", "node-1", port=8443)
    return double
