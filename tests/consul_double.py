"""A Consul HTTP API double: real HTTP on 127.0.0.1, answers shaped like Consul's.

Serves the reads the consul provider makes:

- `GET /v1/catalog/services` -> {name: [tags]}, honouring `dc`, `filter` (catalog selectors:
  ServiceName, ServiceTags, ServiceMeta.x, NodeMeta.x, Node, Address, ...) and `stale`.
- `GET /v1/health/service/<name>` -> [{Node, Service, Checks}], honouring `passing`, `tag`
  (repeatable, all must match), `dc`, `filter` (health selectors: Service.Meta.x,
  Service.Tags, Node.Meta.x, Node.Node, ...) and `stale`.
- `GET /v1/health/state/any` -> every check of the datacenter (the provider's change detector
  when it watches more services than it holds blocking requests for).

Blocking queries as Consul does them
(developer.hashicorp.com/consul/api-docs/features/blocking): every answer carries
`X-Consul-Index`, per endpoint as Consul keeps it: catalog/services = the catalog's index
(moves on register and deregister, not on a check change); health/service/<name> = that
service's index (its instances, their checks, their nodes; a service that never existed or
is gone answers the index of the last service that went away); health/state/any = the checks'
index. `?index=N&wait=D` holds the request until that index moves past N or `wait` (a Go
duration, default 5m, at most 10m, plus up to wait/16 of jitter) passes. `index=0` does not
block. `restart()` resets every index to a low value and answers the held requests at once
(a snapshot restore); `index_header` = "zero" or "absent" reproduces Consul versions that
answered X-Consul-Index 0 or none.

Filter language subset: `<sel> == "v"`, `<sel> != "v"`, `"v" in <sel>`, `"v" not in <sel>`,
joined by `and` / `or`. An unknown selector is a 400, as in Consul.

ACLs as Consul with `default_policy = deny`: no token reads as anonymous (empty results and
`X-Consul-Results-Filtered-By-ACLs: true`), an unknown token gets 403 "ACL not found".

Faults: `fail(status, body)`, `hang()` (accepts, reads the request, never answers),
`delay` (slow answers), `known_leader = False`, `raw_entries` (malformed health entries).
Every request is recorded without its token, with the time it arrived.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from tests.loopback_http import LoopbackHTTPServer

_RANDOM = random.Random()  # own generator: jitter never moves the global random state

Status = Literal["passing", "warning", "critical"]
IndexHeader = Literal["normal", "zero", "absent"]
TOKEN_HEADER = "X-Consul-Token"
DEFAULT_WAIT = 300.0  # Consul holds a blocking query without `wait` for 5 minutes ...
MAX_WAIT = 600.0  # ... and for at most 10
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


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
    at: float = 0.0
    """time.monotonic() when it arrived."""


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
        self.index_header: IndexHeader = "normal"
        self._index = itertools.count(10)
        self._last_index = 9
        # Consul's per-endpoint indexes (see the module docstring).
        self._catalog_index = 9
        self._checks_index = 9
        self._service_index: dict[str, int] = {}
        self._extinct_index = 9
        self._restores = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        """Notified on every change (and on stop and restart): blocked queries look again."""
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
        with self._changed:
            self._changed.notify_all()
        server.stop()

    def restart(self, index: int = 2) -> None:
        """Consul comes back with every index reset to `index` or below (a snapshot restore,
        a rebuilt cluster): held blocking queries are answered at once with the low index, as
        Consul abandons them on a restore; the data stays as it was."""
        with self._changed:
            self._index = itertools.count(index + 1)
            self._last_index = self._catalog_index = self._checks_index = index
            self._extinct_index = min(self._extinct_index, index)
            self._service_index = {name: min(i, index) for name, i in self._service_index.items()}
            self._restores += 1
            self._changed.notify_all()

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
            index = self._bump()
            self._checks_index = index  # its serfHealth check
            if name in self._nodes:  # a changed node changes the health of its services
                self._touch({i.service for i in self._instances.values() if i.node == name},
                            index)
            self._nodes[name] = node
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
            index = self._bump()
            self._instances[sid] = ServiceInstance(
                id=sid, service=service, node=node, port=port, address=address,
                tags=list(tags), meta=dict(meta or {}), tagged=dict(tagged or {}),
                checks=status_by_check, kind=kind, index=index)
            self._catalog_index = index
            if status_by_check:
                self._checks_index = index
            self._touch({service}, index)
        return sid

    def deregister(self, *service_ids: str) -> None:
        """Deregister instances; more than one at once is one catalog update (one index)."""
        with self._lock:
            index = self._bump()
            gone = [self._instances.pop(sid) for sid in service_ids]
            self._catalog_index = index
            if any(inst.checks for inst in gone):
                self._checks_index = index
            names = {inst.service for inst in gone}
            self._touch(names, index)
            if names - {i.service for i in self._instances.values()}:
                self._extinct_index = index  # a service went away: Consul's extinction index

    def set_check(self, service_id: str, status: Status, check: str | None = None) -> None:
        """A check's status changes: the service's health index and the checks' index move,
        the catalog's does not (as in Consul)."""
        with self._lock:
            inst = self._instances[service_id]
            inst.checks[check or f"service:{service_id}"] = status
            index = self._bump()
            self._checks_index = index
            self._touch({inst.service}, index)

    def set_node_status(self, node: str, status: Status) -> None:
        with self._lock:
            self._nodes[node].status = status
            index = self._bump()
            self._checks_index = index
            self._touch({i.service for i in self._instances.values() if i.node == node}, index)

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
        """The next raft index (called with the lock held)."""
        self._last_index = next(self._index)
        return self._last_index

    def _touch(self, services: set[str], index: int) -> None:
        """These services' health index moves to `index`; blocked queries look again."""
        for name in services:
            self._service_index[name] = index
        self._changed.notify_all()

    def _endpoint_index(self, path: str) -> int:
        """The X-Consul-Index of an endpoint (called with the lock held)."""
        if path == "/v1/catalog/services":
            return self._catalog_index
        if path == "/v1/health/state/any":
            return self._checks_index
        name = path.removeprefix("/v1/health/service/")
        return self._service_index.get(name, self._extinct_index)

    def _block(self, path: str, query: Mapping[str, list[str]]) -> bool:
        """Hold a blocking query until its endpoint's index passes `index` or `wait` passes.
        False: the double stopped meanwhile (never answer)."""
        min_index = int(query["index"][0])
        wait = min(parse_wait(query["wait"][0]) if "wait" in query else DEFAULT_WAIT, MAX_WAIT)
        deadline = time.monotonic() + wait + _RANDOM.uniform(0, wait / 16)
        with self._changed:
            restores = self._restores
            while (min_index > 0 and self._endpoint_index(path) <= min_index
                   and restores == self._restores and not self._stopping.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        return not self._stopping.is_set()

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
                token_sent=TOKEN_HEADER in headers, at=time.monotonic()))
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
        blocking = path in ("/v1/catalog/services", "/v1/health/state/any") \
            or path.startswith("/v1/health/service/")
        if blocking and "index" in query:
            try:
                if not self._block(path, query):
                    return None
            except ValueError as e:
                return _text(400, f"Invalid wait or index: {e}")
        with self._lock:
            index = self._endpoint_index(path)
        try:
            if path == "/v1/catalog/services":
                return self._json(self._catalog(dc, query, anonymous), query, anonymous, index)
            if path == "/v1/health/state/any":
                return self._json(self._checks(dc, anonymous), query, anonymous, index)
            if path.startswith("/v1/health/service/"):
                name = path.removeprefix("/v1/health/service/")
                return self._json(self._health(name, dc, query, anonymous), query, anonymous,
                                  index)
        except FilterError as e:
            return _text(400, str(e))
        return _text(404, "")

    def _json(self, data: Any, query: Mapping[str, list[str]],
              anonymous: bool, index: int) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Content-Type": "application/json",
            "X-Consul-KnownLeader": "true" if self.known_leader else "false",
            "X-Consul-LastContact": "0" if self.known_leader else "61000",
            "X-Consul-Effective-Consistency": "stale" if "stale" in query else "leader",
        }
        if self.index_header != "absent":
            headers["X-Consul-Index"] = "0" if self.index_header == "zero" else str(index)
        if anonymous:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return 200, headers, json.dumps(data).encode()

    def _checks(self, dc: str, anonymous: bool) -> list[dict[str, Any]]:
        """GET /v1/health/state/any: every check of the datacenter, node checks included."""
        if anonymous:
            return []
        with self._lock:
            nodes = sorted((n for n in self._nodes.values() if n.datacenter == dc),
                           key=lambda n: n.name)
            out = [_check(n.name, "serfHealth", "Serf Health Status", n.status, "", "", [])
                   for n in nodes]
            for inst in sorted(self._instances.values(), key=lambda i: i.id):
                if self._nodes[inst.node].datacenter == dc:
                    out += [_check(inst.node, cid, f"Service '{inst.service}' check", status,
                                   inst.id, inst.service, inst.tags)
                            for cid, status in sorted(inst.checks.items())]
        return out

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


def parse_wait(text: str) -> float:
    """A Go duration (`10s`, `5m`, `1m30s`, `250ms`) in seconds; ValueError if it is none."""
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"time: invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


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


__all__ = ["ConsulDouble", "FilterError", "RecordedRequest", "matches", "parse_wait", "running"]


def payments_double() -> ConsulDouble:
    """A Consul with one node and one `payments` instance on port 8443."""
    double = ConsulDouble()
    double.add_node("node-1", "203.0.113.10")
    double.register("payments", "node-1", port=8443)
    return double
