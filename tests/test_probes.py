"""Health probes (issue 11), end-to-end through the CLI against the Kubernetes API test
server. Backends have documentation addresses; syncer.probe's connector seam maps them to
listeners these tests start on 127.0.0.1, and records every dial. One test runs the CLI in a
network namespace of its own with a backend address on its loopback device, no seam at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.ownership import MISSES, PROBE_STATE
from syncer.probe import use_connector
from tests.cli import ROOT, cli, exited, run_sync
from tests.kubeapi import KubeApiServer
from tests.loopback_http import HOST, LoopbackHTTPServer

JSON = dict[str, Any]
NS = "external"


# --- loopback backends and the connector that reaches them ---------------------------------

class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: StatusServer = self.server  # type: ignore[assignment]
        server.seen.append((self.path, self.headers.get("Host", "")))
        self.send_response(server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StatusServer(LoopbackHTTPServer):
    """Answers every GET with `status`; remembers each request's path and Host header."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.seen: list[tuple[str, str]] = []
        super().__init__(0, _Status)


@dataclass
class Dial:
    address: str
    port: int
    peer: str


@dataclass
class Loopback:
    """The probes' connector: backend (address, port) -> a 127.0.0.1 port. A backend with no
    route is refused without any connection being made."""

    routes: dict[tuple[str, int], int] = field(default_factory=dict)
    dials: list[Dial] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, address: str, port: int, to: int | None) -> None:
        if to is None:
            self.routes.pop((address, port), None)
        else:
            self.routes[(address, port)] = to

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        to = self.routes.get((address, port))
        if to is None:
            with self.lock:
                self.dials.append(Dial(address, port, ""))
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        sock = socket.create_connection((HOST, to), timeout=timeout)
        with self.lock:
            self.dials.append(Dial(address, port, sock.getpeername()[0]))
        return sock

    def dialled(self) -> set[str]:
        return {f"{d.address}:{d.port}" for d in self.dials}

    def only_loopback(self) -> None:
        assert all(d.peer in ("", HOST) for d in self.dials), self.dials


class Silent:
    """A TCP listener that accepts and never answers (a hung backend)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept() (Linux); shutdown() does.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        for s in self.held:
            s.close()


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    """Loopback ports by behaviour: ok (HTTP 200), moved (301), down (503), tcp (accepts),
    silent (accepts, never answers)."""
    servers = {name: StatusServer(status) for name, status in
               (("ok", 200), ("moved", 301), ("down", 503))}
    for s in servers.values():
        s.serve_in_thread()
    tcp, silent = Silent(), Silent()
    ports = {name: s.server_address[1] for name, s in servers.items()}
    ports.update(tcp=tcp.port, silent=silent.port)
    try:
        yield ports
    finally:
        for s in servers.values():
            s.stop()
        tcp.close()
        silent.close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    conn = Loopback()
    with use_connector(conn):
        yield conn
    conn.only_loopback()


# --- configuration and cluster helpers -----------------------------------------------------

def service(name: str, *addresses: str | JSON, port: int = 80, **extra: Any) -> JSON:
    return {"name": name, "ports": [{"name": "http", "port": port}],
            "endpoints": [{"address": a} if isinstance(a, str) else a for a in addresses],
            **extra}


def write(tmp: Path, services: list[JSON], probe: JSON | None = None, **source: Any) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    entry: JSON = {"name": "vms", "provider": "static", "path": "inventory.yaml", **source}
    if probe is not None:
        entry["probe"] = probe
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"owner": "cluster-a", "namespace": NS,
                                      "sources": [entry]}))
    return config


def readiness(kube: KubeApiServer, name: str) -> dict[str, tuple[bool, bool]]:
    """address -> (ready in the EndpointSlices, ready in Endpoints), serving checked too."""
    out: dict[str, tuple[bool, bool]] = {}
    slices = [s for s in kube.list_objects("EndpointSlice", NS)
              if s["metadata"]["labels"]["kubernetes.io/service-name"] == name]
    in_slice = {}
    for s in slices:
        for e in s["endpoints"]:
            c = e["conditions"]
            assert c.get("serving", c["ready"]) == c["ready"], e
            in_slice[e["addresses"][0]] = c["ready"]
    ep = kube.get_object("Endpoints", NS, name)
    assert ep is not None
    in_endpoints = {a["ip"]: key == "addresses" for sub in ep["subsets"]
                    for key in ("addresses", "notReadyAddresses") for a in sub.get(key, [])}
    assert in_slice.keys() == in_endpoints.keys(), "probes never remove an address"
    for address, ready in in_slice.items():
        out[address] = (ready, in_endpoints[address])
    return out


def ready_set(kube: KubeApiServer, name: str) -> dict[str, bool]:
    both = readiness(kube, name)
    assert all(a == b for a, b in both.values()), both
    return {address: a for address, (a, _) in both.items()}


def probe_state(kube: KubeApiServer, name: str) -> list[str | None]:
    """The state annotation of each of the Service's address objects."""
    objs = [s for s in kube.list_objects("EndpointSlice", NS)
            if s["metadata"]["labels"]["kubernetes.io/service-name"] == name]
    objs.append(kube.get_object("Endpoints", NS, name) or {})
    return [(o["metadata"].get("annotations") or {}).get(PROBE_STATE) for o in objs]


def summary(err: str) -> dict[str, str]:
    line = [x for x in err.splitlines() if "summary " in x][-1]
    return dict(kv.split("=", 1) for kv in line.split("summary ", 1)[1].split())


def writes(kube: KubeApiServer) -> int:
    return len(kube.write_requests())


# --- probes decide readiness ---------------------------------------------------------------

def test_failing_backends_stay_listed_not_ready_and_every_dial_is_loopback(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    """HTTP: 200 and 301 pass (default status 200-399), 503 and refused fail; TCP: a
    listener passes, a refusal fails. A Service's own probe wins over its source's."""
    for address, to in (("192.0.2.10", "ok"), ("192.0.2.11", "moved"), ("192.0.2.12", "down"),
                        ("192.0.2.20", "tcp")):
        loopback.route(address, 80, backends[to])
    config = write(tmp_path, [
        service("web", "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"),
        service("db", "192.0.2.20", "192.0.2.21", probe={"type": "tcp", "timeout": 0.5}),
    ], probe={"type": "http", "path": "/healthz", "timeout": 0.5})
    err = exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": True,
                                      "192.0.2.12": False, "192.0.2.13": False}
    assert ready_set(kube, "db") == {"192.0.2.20": True, "192.0.2.21": False}
    assert summary(err)["probe_failed"] == "3"
    assert loopback.dialled() == {f"192.0.2.{i}:80" for i in (10, 11, 12, 13, 20, 21)}
    assert len(loopback.dials) == 6, "each backend once"
    # Every connection made went to 127.0.0.1; the unrouted ones were refused unmade.
    assert {d.peer for d in loopback.dials} == {HOST, ""}
    states = {s for s in probe_state(kube, "web") if s}
    assert states == {'{"192.0.2.12:80":"down","192.0.2.13:80":"down"}'}

    # The same answers again: nothing to write, and the state annotation stays as it is.
    kube.reset_requests()
    err = exited(run_sync(config, kubeconfig), 0)
    assert writes(kube) == 0
    assert summary(err)["readiness_changed"] == "0"

    # A narrower status range fails the 301 too.
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11", "192.0.2.12")],
                   probe={"type": "http", "path": "/healthz", "status": [200, 200],
                          "timeout": 0.5})
    err = exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False,
                                      "192.0.2.12": False}
    assert "Service external/web: 192.0.2.11:80 ready -> not ready (probe: HTTP 301)" in err


def test_http_probe_sends_the_path_and_host_header(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, loopback: Loopback) -> None:
    server = StatusServer(204)
    server.serve_in_thread()
    try:
        loopback.route("192.0.2.30", 8080, server.server_address[1])
        loopback.route("2001:db8::30", 8080, server.server_address[1])
        config = write(tmp_path, [service("web", {"address": "192.0.2.30", "port": 8080},
                                          {"address": "2001:db8::30", "port": 8080}),
                                  service("api", {"address": "192.0.2.30", "port": 8080},
                                          probe={"type": "http", "path": "/ready?full=1",
                                                 "host": "api.example"})],
                       probe={"type": "http", "path": "/healthz"})
        exited(run_sync(config, kubeconfig), 0)
    finally:
        server.stop()
    assert sorted(server.seen) == [("/healthz", "192.0.2.30:8080"),
                                   ("/healthz", "[2001:db8::30]:8080"),
                                   ("/ready?full=1", "api.example")]
    assert ready_set(kube, "web") == {"192.0.2.30": True, "2001:db8::30": True}


def test_probe_port_by_name_number_and_default(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    """Default: the backend's port for the Service's first port; a name: the backend's port
    for that Service port; a number: that port on the backend."""
    two_ports = {"name": "two", "ports": [{"name": "http", "port": 80},
                                          {"name": "admin", "port": 9000}],
                 "endpoints": [{"address": "192.0.2.40", "ports": {"http": 8080,
                                                                   "admin": 9090}}]}
    loopback.route("192.0.2.40", 8080, backends["tcp"])
    config = write(tmp_path, [two_ports], probe={"type": "tcp"})
    exited(run_sync(config, kubeconfig), 0)
    assert loopback.dialled() == {"192.0.2.40:8080"}
    for port, dialled in (("admin", "192.0.2.40:9090"), (7000, "192.0.2.40:7000")):
        loopback.dials.clear()
        exited(run_sync(write(tmp_path, [two_ports], probe={"type": "tcp", "port": port}),
                        kubeconfig), 0)
        assert loopback.dialled() == {dialled}
    assert ready_set(kube, "two") == {"192.0.2.40": False}


def test_each_address_and_port_is_probed_once_per_run(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    """Two Services listing one backend: one probe. One address on two ports: two."""
    loopback.route("192.0.2.50", 8080, backends["tcp"])
    gateway = {"ports": [{"name": "http", "port": 80}],
               "endpoints": [{"address": "192.0.2.50", "port": 8080},
                             {"address": "192.0.2.50", "port": 8081}]}
    config = write(tmp_path, [{"name": "rgw", **gateway}, {"name": "rgw-internal", **gateway}],
                   probe={"type": "tcp"})
    exited(run_sync(config, kubeconfig), 0)
    assert sorted(f"{d.address}:{d.port}" for d in loopback.dials) == ["192.0.2.50:8080",
                                                                      "192.0.2.50:8081"]
    for name in ("rgw", "rgw-internal"):
        ports = {(e["addresses"][0], s["ports"][0]["port"]): e["conditions"]["ready"]
                 for s in kube.list_objects("EndpointSlice", NS)
                 if s["metadata"]["labels"]["kubernetes.io/service-name"] == name
                 for e in s["endpoints"]}
        assert ports == {("192.0.2.50", 8080): True, ("192.0.2.50", 8081): False}


def test_no_probe_no_connection(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
                                loopback: Loopback) -> None:
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11")])
    exited(run_sync(config, kubeconfig), 0)
    assert loopback.dials == []
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": True}
    assert probe_state(kube, "web") == [None, None]


def test_the_source_not_ready_wins_and_is_not_probed(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    for address in ("192.0.2.10", "192.0.2.11"):
        loopback.route(address, 80, backends["ok"])
    config = write(tmp_path, [service("web", "192.0.2.10",
                                      {"address": "192.0.2.11", "ready": False})],
                   probe={"type": "http"})
    exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False}
    assert loopback.dialled() == {"192.0.2.10:80"}


# --- thresholds, flapping, fail-open, removal ---------------------------------------------

def test_thresholds_count_consecutive_runs_and_a_flapping_backend_stays_ready(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    loopback.route("192.0.2.10", 80, backends["tcp"])
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11")],
                   probe={"type": "tcp", "failure_threshold": 2, "success_threshold": 2})

    def run(up: bool) -> tuple[bool, str | None]:
        loopback.route("192.0.2.11", 80, backends["tcp"] if up else None)
        exited(run_sync(config, kubeconfig), 0)
        (state,) = set(probe_state(kube, "web"))
        return ready_set(kube, "web")["192.0.2.11"], state

    assert run(up=True) == (True, None)  # healthy: no annotation at all
    assert run(up=False) == (True, '{"192.0.2.11:80":"up-1"}')
    assert run(up=False) == (False, '{"192.0.2.11:80":"down"}')
    assert run(up=False) == (False, '{"192.0.2.11:80":"down"}')  # capped: stable
    assert run(up=True) == (False, '{"192.0.2.11:80":"down+1"}')
    assert run(up=True) == (True, "{}")
    # Flapping: never two failures in a row, so never published not ready.
    for up in (False, True, False, True, False):
        assert run(up)[0] is True
    assert ready_set(kube, "web")["192.0.2.10"] is True


@pytest.mark.parametrize("edited", ["not json", "[1]", '{"192.0.2.11:80": 5}',
                                    '{"192.0.2.11:80": "down+x"}'])
def test_an_edited_state_annotation_counts_as_nothing(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback, edited: str) -> None:
    loopback.route("192.0.2.10", 80, backends["tcp"])
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11")],
                   probe={"type": "tcp"})
    exited(run_sync(config, kubeconfig), 0)
    for obj in [*kube.list_objects("EndpointSlice", NS), kube.get_object("Endpoints", NS, "web")]:
        assert obj is not None
        obj["metadata"]["annotations"][PROBE_STATE] = edited
        kube.put_object(obj)
    exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False}
    assert set(probe_state(kube, "web")) == {'{"192.0.2.11:80":"down"}'}


def test_fail_open_publishes_all_as_the_source_says(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback, caplog: pytest.LogCaptureFixture) -> None:
    loopback.route("192.0.2.10", 80, backends["tcp"])
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11", "192.0.2.12"),
                              service("api", "192.0.2.20")],
                   probe={"type": "tcp", "min_ready_ratio": 0.5})
    err = exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == dict.fromkeys(("192.0.2.10", "192.0.2.11", "192.0.2.12"),
                                                   True)
    assert ready_set(kube, "api") == {"192.0.2.20": True}
    assert ("Service external/web: probes fail open (min_ready_ratio): only 1 of 3 probed "
            "backends would be ready, under min_ready_ratio 0.5") in err
    assert "Service external/api: probes fail open" in err
    # Two of three pass: over the ratio, the failing one is not ready now.
    loopback.route("192.0.2.11", 80, backends["tcp"])
    err = exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": True,
                                      "192.0.2.12": False}
    assert "external/web: probes fail open" not in err


def test_a_removed_probe_gives_back_the_source_readiness(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, loopback: Loopback) -> None:
    services = [service("web", "192.0.2.10", "192.0.2.11")]
    exited(run_sync(write(tmp_path, services, probe={"type": "tcp"}), kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": False, "192.0.2.11": False}
    loopback.dials.clear()
    err = exited(run_sync(write(tmp_path, services), kubeconfig), 0)
    assert loopback.dials == []
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": True}
    assert set(probe_state(kube, "web")) == {"{}"}
    assert "192.0.2.10:80 not ready -> ready (no probe: as the source reports)" in err
    kube.reset_requests()
    exited(run_sync(write(tmp_path, services), kubeconfig), 0)
    assert writes(kube) == 0


def test_probes_and_flap_damping_together(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    """Damping keeps a vanished address (not ready) beside the probed ones; each state
    annotation holds only its own addresses."""
    loopback.route("192.0.2.10", 80, backends["tcp"])
    probe = {"type": "tcp"}
    exited(run_sync(write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11", "192.0.2.12")],
                          probe=probe, remove_after_misses=2), kubeconfig), 0)
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11")], probe=probe,
                   remove_after_misses=2)
    exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False,
                                      "192.0.2.12": False}
    assert set(probe_state(kube, "web")) == {'{"192.0.2.11:80":"down"}'}
    (slice_,) = kube.list_objects("EndpointSlice", NS)
    assert json.loads(slice_["metadata"]["annotations"][MISSES]) == {
        "192.0.2.12:80": 1}
    exited(run_sync(config, kubeconfig), 0)
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False}


# --- time bound ----------------------------------------------------------------------------

def test_hung_backends_cost_timeout_times_rounds_not_their_number(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    """20 backends that accept and never answer, timeout 0.3, 10 at a time: two rounds
    (about 0.6 s), where one at a time would take 6 s. The bound is a hang guard."""
    addresses = [f"198.18.0.{i}" for i in range(1, 21)]
    for a in addresses:
        loopback.route(a, 80, backends["silent"])
    config = write(tmp_path, [service("web", *addresses)],
                   probe={"type": "http", "timeout": 0.3, "concurrency": 10})
    started = time.monotonic()
    err = exited(run_sync(config, kubeconfig), 0)
    assert time.monotonic() - started < 4.0
    assert set(ready_set(kube, "web").values()) == {False}
    assert summary(err)["probe_failed"] == "20"
    assert len(loopback.dials) == 20


# --- plan, Events, metrics -----------------------------------------------------------------

def test_plan_shows_readiness_changes_and_the_run_reports_them(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, backends: dict[str, int],
        loopback: Loopback) -> None:
    for address in ("192.0.2.10", "192.0.2.11"):
        loopback.route(address, 80, backends["ok"])
    config = write(tmp_path, [service("web", "192.0.2.10", "192.0.2.11")],
                   probe={"type": "http", "path": "/healthz"})
    exited(run_sync(config, kubeconfig), 0)
    loopback.route("192.0.2.11", 80, backends["down"])

    kube.reset_requests()
    plan = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    exited(plan, 0)
    assert ("~ readiness Service external/web: 192.0.2.11:80 ready -> not ready "
            "(probe: HTTP 503)") in plan.stdout
    assert "plan summary " in plan.stderr and summary(plan.stderr)["readiness_changed"] == "1"
    doc = json.loads(exited_out(cli("plan", "-c", config, "--kubeconfig", kubeconfig,
                                    "-o", "json")))
    assert doc["readiness"] == [{"service": "external/web", "source": "vms",
                                 "endpoint": "192.0.2.11:80", "ready": False,
                                 "reason": "probe: HTTP 503"}]
    assert doc["summary"]["probe_failed"] == 1
    assert writes(kube) == 0, "plan writes nothing"

    metrics = tmp_path / "m.prom"
    err = exited(run_sync(config, kubeconfig, "--metrics-file", str(metrics)), 0)
    assert "Service external/web: 192.0.2.11:80 ready -> not ready (probe: HTTP 503)" in err
    assert ready_set(kube, "web") == {"192.0.2.10": True, "192.0.2.11": False}
    text = metrics.read_text()
    assert 'endpoints_sync_probes_total{result="fail",source="vms"} 1.0' in text
    assert 'endpoints_sync_probes_total{result="pass",source="vms"} 1.0' in text
    assert 'endpoints_sync_probe_not_ready_addresses{source="vms"} 1.0' in text
    (event,) = [e for e in kube.list_objects("Event", NS)
                if e["regarding"]["name"] == "web" and "readiness" in e["note"]]
    assert event["reason"] == "Synced"
    assert "readiness: 192.0.2.11:80 ready -> not ready (probe: HTTP 503)" in event["note"]


def exited_out(result: subprocess.CompletedProcess[str]) -> str:
    exited(result, 0)
    return result.stdout


# --- HTTPS ----------------------------------------------------------------------------------

def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (its own CA), made with the openssl CLI."""
    cert, key = folder / "ca.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def test_https_verifies_against_the_ca_file_beside_the_inventory(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, loopback: Loopback) -> None:
    import ssl

    inventories = tmp_path / "inventories"
    inventories.mkdir()
    cert, key = _certificate(inventories, "rgw.example")
    server = StatusServer(200)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_in_thread()
    try:
        for address in ("192.0.2.10", "192.0.2.11", "192.0.2.12"):
            loopback.route(address, 443, server.server_address[1])
        checked = {"type": "https", "ca_file": "ca.pem", "server_name": "rgw.example"}
        services = [service("good", "192.0.2.10", port=443, probe=checked),
                    service("wrongname", "192.0.2.11", port=443,
                            probe={**checked, "server_name": "other.example"}),
                    service("unchecked", "192.0.2.12", port=443,
                            probe={"type": "https", "verify": False})]
        (inventories / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"owner": "cluster-a", "namespace": NS, "sources": [
            {"name": "vms", "provider": "static", "path": "inventories/inventory.yaml"}]}))
        err = exited(run_sync(config, kubeconfig), 0)
    finally:
        server.stop()
    assert ready_set(kube, "good") == {"192.0.2.10": True}
    assert ready_set(kube, "wrongname") == {"192.0.2.11": False}
    assert ready_set(kube, "unchecked") == {"192.0.2.12": True}
    assert summary(err)["probe_failed"] == "1"
    assert sorted(server.seen) == [("/", "192.0.2.10"), ("/", "192.0.2.12")]


# --- configuration errors (validate: nothing contacted) ------------------------------------

BAD_PROBES: dict[str, tuple[JSON, str]] = {
    "path without slash": ({"type": "http", "path": "healthz"}, "sources[0].probe.path"),
    "path on tcp": ({"type": "tcp", "path": "/x"}, "sources[0].probe"),
    "status backwards": ({"type": "http", "status": [500, 200]}, "sources[0].probe.status"),
    "zero timeout": ({"timeout": 0}, "sources[0].probe.timeout"),
    "unknown key": ({"typ": "tcp"}, "sources[0].probe.typ"),
    "bad type": ({"type": "icmp"}, "sources[0].probe.type"),
    "bad host": ({"type": "http", "host": "a b"}, "sources[0].probe.host"),
    "missing ca_file": ({"type": "https", "ca_file": "nope.pem"}, "sources[0].probe.ca_file"),
    "threshold 0": ({"failure_threshold": 0}, "sources[0].probe.failure_threshold"),
    "ratio over 1": ({"min_ready_ratio": 1.5}, "sources[0].probe.min_ready_ratio"),
    "port 0": ({"port": 0}, "sources[0].probe.port"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROBES))
def test_bad_probe_settings_exit_2_naming_file_and_field(case: str, tmp_path: Path) -> None:
    probe, where = BAD_PROBES[case]
    config = write(tmp_path, [service("web", "192.0.2.10")], probe=probe)
    err = exited(cli("validate", "-c", config), 2)
    assert f"{config}: {where}:" in err or f"{config}: {where} " in err, err


@pytest.mark.parametrize(("probe", "why"), [
    ({"type": "tcp", "port": "admin"}, "no Service port named 'admin'"),
    ({"type": "tcp"}, "port 'dns' is UDP"),
])
def test_a_static_services_probe_port_must_be_one_of_its_tcp_ports(
        tmp_path: Path, probe: JSON, why: str) -> None:
    entry = {"name": "dns", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
             "endpoints": [{"address": "192.0.2.53"}], "probe": probe}
    config = write(tmp_path, [entry])
    err = exited(cli("validate", "-c", config), 2)
    assert f"{tmp_path / 'inventory.yaml'}: services[0].probe.port: " in err and why in err


# --- no seam: a network namespace with the backend on its loopback -------------------------

NETNS_DRIVER = textwrap.dedent("""
    import json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.kubeapi import KubeApiServer
    from syncer.cli import main

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a):
            pass

    backend = ThreadingHTTPServer(("192.0.2.10", 8080), Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    tmp = Path(sys.argv[2])
    with KubeApiServer(["default", "external"]) as kube:
        code = main(["run", "-c", str(tmp / "config.yaml"), "--kubeconfig",
                     str(kube.write_kubeconfig(tmp / "kubeconfig"))])
        slices = kube.list_objects("EndpointSlice", "external")
    backend.shutdown()
    print(json.dumps({"code": code, "endpoints": [e for s in slices for e in s["endpoints"]]}))
""")


def test_in_a_network_namespace_the_system_connector_reaches_the_backend(tmp_path: Path) -> None:
    """No connector injection: the CLI in a subprocess inside `unshare -n`, whose only
    interface is its own loopback carrying 192.0.2.10; 192.0.2.11 is unreachable there."""
    allowed = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True,
                             check=False)
    if allowed.returncode != 0:
        pytest.skip(f"unshare -n is not permitted here: {allowed.stderr.strip()}")
    write(tmp_path, [service("web", {"address": "192.0.2.10", "port": 8080},
                             {"address": "192.0.2.11", "port": 8080})],
          probe={"type": "http", "timeout": 0.5})
    script = ("ip link set lo up && ip addr add 192.0.2.10/32 dev lo && "
              'exec "$0" -c "$1" "$2" "$3"')
    done = subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable, NETNS_DRIVER,
                           str(ROOT), str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    ready = {e["addresses"][0]: e["conditions"]["ready"] for e in result["endpoints"]}
    assert ready == {"192.0.2.10": True, "192.0.2.11": False}
