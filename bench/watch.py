"""The watch figures (issue 13): `run --watch` beside `run --interval 10`, in one run.

For each mode, against a fresh Kubernetes API test server (its own process) and a Consul
double in this process (tests/consul_double.py, blocking queries as Consul answers them),
one syncer process with two sources: `consul` (CONSUL_SERVICES services x 2 instances, the
catalog) and `files` (a static inventory of FILE_SERVICES Services x 3 addresses). Measured:

- idle cost: the syncer's CPU seconds (utime + stime from /proc) over `idle` seconds with
  nothing changing, as CPU seconds per hour, and requests per minute to each server (the test
  server's GET /debug/requests, the double's request log);
- staleness: from a Consul deregistration, and from an inventory file edit (written to a new
  file and renamed over the old, as editors and ConfigMap updates do), to the EndpointSlice
  update seen on a watch of the test server: CHANGES changes one SPACING apart, each on a
  Service of its own, median and p95;
- a storm: STORM instances of as many services deregistered in one catalog update: the
  writes the server counted against the objects whose content changed.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.measure import ROOT, WRITES, Server, test_server
from tests.consul_double import ConsulDouble

NAMESPACE = OWNER = "bench"
CONSUL_SERVICES = 1000
FILE_SERVICES = 100
CHANGES = 50
SPACING = 0.25  # seconds between two changes
STORM = 200
MODES = {"watch": ["--watch"], "interval 10": ["--interval", "10"]}
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
SERVICE_LABEL = "kubernetes.io/service-name"
TOKEN = "test-token"  # the test server's kubeconfig token


def measure(idle: float) -> dict[str, Any]:
    """Both modes; the figures as bench/results.json's `watch` key."""
    out: dict[str, Any] = {"consul_services": CONSUL_SERVICES, "file_services": FILE_SERVICES,
                           "changes": CHANGES, "spacing_s": SPACING, "storm": STORM,
                           "idle_s": idle, "modes": {}}
    for mode, flags in MODES.items():
        print(f"watch figures: {mode} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out["modes"][mode] = _one_mode(Path(tmp), flags, idle)
    return out


def _one_mode(tmp: Path, flags: list[str], idle: float) -> dict[str, Any]:
    double = _consul()
    inventory = Inventory(tmp / "inventory.yaml")
    with double, test_server(tmp, NAMESPACE) as server:
        base = server.counters.removesuffix("/debug/requests") if server.counters else ""
        slices = SliceWatch(base)
        config = _config(tmp, double)
        with _syncer(config, server, flags, tmp / "syncer.log") as proc:
            slices.wait_until(lambda seen: len(seen) >= CONSUL_SERVICES + FILE_SERVICES, 300)
            time.sleep(5)  # the first sync's tail, the watches set up
            figures: dict[str, Any] = {"idle": _idle(proc, server, double, idle)}
            figures["consul staleness"] = _staleness(slices, [
                _deregister(double, k) for k in range(200, 200 + CHANGES)])
            figures["file staleness"] = _staleness(slices, [
                inventory.drop_one(k) for k in range(CHANGES)])
            figures["storm"] = _storm(double, server, base, slices)
            proc.send_signal(signal.SIGTERM)
            figures["exit code"] = proc.wait(30)
    return figures  # the slice watch ended with the server


# --- the sources ----------------------------------------------------------------------------


def _address(n: int) -> str:
    return f"198.18.{n // 250}.{n % 250 + 1}"


def _consul() -> ConsulDouble:
    double = ConsulDouble()
    for node in range(20):
        double.add_node(f"node-{node:02d}", _address(60000 + node))
    for k in range(CONSUL_SERVICES):
        for i in range(2):
            double.register(f"c-{k:04d}", f"node-{(2 * k + i) % 20:02d}", port=8080,
                            address=_address(2 * k + i), service_id=f"c-{k:04d}-{i}")
    return double


def _deregister(double: ConsulDouble, k: int) -> Callable[[], tuple[str, str]]:
    def change() -> tuple[str, str]:
        double.deregister(f"c-{k:04d}-1")
        return f"c-{k:04d}", _address(2 * k + 1)
    return change


class Inventory:
    """The static source's file; each edit replaces it whole (a new file renamed over it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.services = {f"f-{k:03d}": [f"198.19.{k // 80}.{k % 80 * 3 + i + 1}"
                                        for i in range(3)] for k in range(FILE_SERVICES)}
        self._write()

    def _write(self) -> None:
        doc = {"services": [{"name": name, "ports": [{"name": "http", "port": 80}],
                             "endpoints": [{"address": a} for a in addresses]}
                            for name, addresses in self.services.items()]}
        new = self.path.with_suffix(".new")
        new.write_text(yaml.safe_dump(doc))
        os.replace(new, self.path)

    def drop_one(self, k: int) -> Callable[[], tuple[str, str]]:
        def change() -> tuple[str, str]:
            name = f"f-{k:03d}"
            gone = self.services[name].pop()
            self._write()
            return name, gone
        return change


def _config(tmp: Path, double: ConsulDouble) -> Path:
    config = tmp / "config.yaml"
    config.write_text(
        f"owner: {OWNER}\nnamespace: {NAMESPACE}\nsources:\n"
        f"  - {{name: consul, provider: consul, url: '{double.url}', timeout_seconds: 10}}\n"
        "  - {name: files, provider: static, path: inventory.yaml}\n")
    return config


@contextmanager
def _syncer(config: Path, server: Server, flags: list[str],
            log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncer", "run", "-c", str(config), "--kubeconfig",
             str(server.kubeconfig), *flags], stdout=err, stderr=err, cwd=ROOT)
    try:
        yield proc
    except BaseException:
        sys.stderr.write(log.read_text()[-3000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- what the cluster shows -----------------------------------------------------------------


class SliceWatch:
    """A watch on the namespace's EndpointSlices: each Service's addresses, and when each
    change arrived."""

    def __init__(self, base: str) -> None:
        self._changed = threading.Condition()
        self.history: dict[str, list[tuple[float, frozenset[str]]]] = {}
        self._current: dict[str, dict[str, frozenset[str]]] = {}  # service -> slice -> addrs
        request = urllib.request.Request(f"{base}{SLICES}?watch=true",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        self._stream = urllib.request.urlopen(request, timeout=3600)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._stream:
                self._event(json.loads(line), time.monotonic())
        except (OSError, ValueError):
            return  # the server went away

    def _event(self, event: dict[str, Any], at: float) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_LABEL)
        if service is None:
            return
        addresses = frozenset(a for e in obj.get("endpoints") or [] for a in e["addresses"])
        with self._changed:
            slices = self._current.setdefault(service, {})
            if event["type"] == "DELETED":
                slices.pop(meta["name"], None)
            else:
                slices[meta["name"]] = addresses
            self.history.setdefault(service, []).append(
                (at, frozenset().union(*slices.values())))
            self._changed.notify_all()

    def wait_until(self, done: Callable[[dict[str, list[tuple[float, frozenset[str]]]]], bool],
                   timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.history):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    sys.exit(f"bench/watch.py: the cluster did not follow within {timeout} s")
                self._changed.wait(remaining)

    def gone_at(self, service: str, address: str, after: float) -> float | None:
        with self._changed:
            return next((at for at, addresses in self.history.get(service, ())
                         if at >= after and address not in addresses), None)


def _staleness(slices: SliceWatch, changes: list[Callable[[], tuple[str, str]]],
               ) -> dict[str, float]:
    start = time.monotonic()
    made: list[tuple[str, str, float]] = []
    for i, change in enumerate(changes):
        time.sleep(max(0.0, start + i * SPACING - time.monotonic()))
        service, address = change()
        made.append((service, address, time.monotonic()))
    slices.wait_until(lambda _: all(slices.gone_at(s, a, t) is not None for s, a, t in made),
                      120)
    seconds = sorted(float(slices.gone_at(s, a, t) or 0) - t for s, a, t in made)
    return {"median_s": statistics.median(seconds),
            "p95_s": seconds[max(0, round(0.95 * len(seconds)) - 1)], "max_s": seconds[-1]}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle(proc: subprocess.Popen[bytes], server: Server, double: ConsulDouble,
          seconds: float) -> dict[str, float]:
    kube_before, consul_before = server.counts(), len(double.requests)
    cpu_before, start = _cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    cpu, elapsed = _cpu_seconds(proc.pid) - cpu_before, time.monotonic() - start
    kube = sum(server.counts().values()) - sum(kube_before.values())
    return {"cpu_s_per_hour": cpu * 3600 / elapsed,
            "kube_requests_per_min": kube * 60 / elapsed,
            "consul_requests_per_min": (len(double.requests) - consul_before) * 60 / elapsed}


def _storm(double: ConsulDouble, server: Server, base: str,
           slices: SliceWatch) -> dict[str, int]:
    time.sleep(3)  # the last staleness change's writes are all out
    before, counts = _objects(base), server.counts()
    services = [f"c-{k:04d}" for k in range(300, 300 + STORM)]
    double.deregister(*(f"{s}-0" for s in services))  # one catalog update
    start = time.monotonic()
    slices.wait_until(lambda _: all(slices.gone_at(s, _address(2 * int(s[2:])), start)
                                    is not None for s in services), 120)
    time.sleep(3)  # whatever else would follow
    after = server.counts()
    writes = sum(after.get(v, 0) - counts.get(v, 0) for v in WRITES)
    now = _objects(base)
    changed = sum(before.get(key) != now.get(key) for key in before.keys() | now.keys())
    return {"writes": writes, "objects changed": changed}


def _objects(base: str) -> dict[tuple[str, str], Any]:
    """Every owned object's content (without its resourceVersion and other server fields)."""
    out = {}
    for kind, path in (("Endpoints", f"/api/v1/namespaces/{NAMESPACE}/endpoints"),
                       ("EndpointSlice", SLICES),
                       ("Service", f"/api/v1/namespaces/{NAMESPACE}/services")):
        request = urllib.request.Request(f"{base}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            for obj in json.load(answer)["items"]:
                meta = obj.pop("metadata")
                obj["labels"], obj["annotations"] = meta.get("labels"), meta.get("annotations")
                out[(kind, meta["name"])] = obj
    return out
