"""Make-before-break: while one Service's objects are replaced, the Service never holds fewer
ready addresses than min(old, new), nor one that is in neither; not after any single write,
and not when a write fails half way (every write step in turn, 503 for good and a 422).

The sweep over the failing step runs the CLI's own `main` in-process against a fresh API
test server per step (a subprocess per run would take minutes); one subprocess run per
fault kind proves the same through `python -m syncer run`."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.cli import main
from tests.cli import run_sync
from tests.conftest import TEST_NAMESPACES
from tests.kubeapi import KubeApiServer
from tests.kubeapi.server import RecordedRequest

JSON = dict[str, Any]
NS = "storage"
Pairs = set[tuple[str, int]]
WRITES = "POST|PUT|DELETE|PATCH"


def svc(name: str, addresses: list[str], port: int = 8080) -> JSON:
    return {"name": name, "namespace": NS, "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": a, "port": port} for a in addresses]}


def v4(r: range) -> list[str]:
    return [f"192.0.2.{i}" for i in r]


def v6(r: range) -> list[str]:
    return [f"2001:db8::{i:x}" for i in r]


@dataclass(frozen=True)
class Scenario:
    name: str
    old: list[JSON]
    new: list[JSON]
    extra: str = ""

    @property
    def writes(self) -> list[str]:
        written: list[str] = (yaml.safe_load(self.extra) or {}).get(
            "write", ["endpointslices", "endpoints"])
        return written

    @property
    def slices(self) -> bool:
        return "endpointslices" in self.writes

    @property
    def endpoints(self) -> bool:
        return "endpoints" in self.writes


SCENARIOS = [
    # A port change renames the slice (the name hashes the ports): new one first, old after.
    Scenario("port-change", [svc("rgw", v4(range(1, 5)))],
             [svc("rgw", v4(range(1, 5)), port=9090)]),
    Scenario("ipv4-to-ipv6", [svc("rgw", v4(range(1, 4)))], [svc("rgw", v6(range(1, 4)))]),
    # Sorted chunks of 3 shift when addresses come and go: contents move between slices.
    Scenario("churn", [svc("grow", v4(range(1, 8))), svc("shrink", v4(range(20, 29)))],
             [svc("grow", v4(range(3, 11))), svc("shrink", v4(range(23, 27)))],
             "max_endpoints_per_slice: 3\n"),
    Scenario("endpoints-only", [svc("rgw", v4(range(1, 5)))],
             [svc("rgw", v4(range(3, 8)), port=9090)], "write: [endpoints]\n"),
    Scenario("slices-only", [svc("rgw", v4(range(1, 8)))], [svc("rgw", v4(range(4, 12)))],
             "write: [endpointslices]\nmax_endpoints_per_slice: 3\n"),
]


def write_config(tmp: Path, services: list[JSON], extra: str) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: cluster-a\n{extra}"
                      "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


def run_in_process(config: Path, kubeconfig: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "-c", str(config), "--kubeconfig", str(kubeconfig)])
    return code, err.getvalue()


def inventory_pairs(service: JSON) -> Pairs:
    return {(e["address"], e["port"]) for e in service["endpoints"]}


def slice_ready(kube: KubeApiServer, service: str) -> Pairs:
    return {(e["addresses"][0], p["port"]) for s in kube.list_objects("EndpointSlice", NS)
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready", True)
            for p in s.get("ports") or []}


def endpoints_ready(kube: KubeApiServer, service: str) -> Pairs:
    ep = kube.get_object("Endpoints", NS, service) or {}
    return {(a["ip"], p["port"]) for s in ep.get("subsets") or []
            for a in s.get("addresses") or [] for p in s.get("ports") or []}


def violations(kube: KubeApiServer, sc: Scenario) -> list[str]:
    """What breaks make-before-break in the server's state right now."""
    found = []
    news = {s["name"]: s for s in sc.new}
    for old_svc in sc.old:
        name = old_svc["name"]
        old, new = inventory_pairs(old_svc), inventory_pairs(news[name])
        if kube.get_object("Service", NS, name) is None:
            found.append(f"{name}: the Service is gone")
        views = [("slices", slice_ready)] if sc.slices else []
        views += [("Endpoints", endpoints_ready)] if sc.endpoints else []
        for what, read in views:
            have = read(kube, name)
            if len(have) < min(len(old), len(new)):
                found.append(f"{name}: {what} hold {len(have)} ready addresses, fewer than "
                             f"min(old {len(old)}, new {len(new)})")
            if not have <= old | new:
                found.append(f"{name}: {what} hold {sorted(have - old - new)}, in neither")
    return found


SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation")


def snapshot(kube: KubeApiServer) -> dict[tuple[str, str], JSON]:
    """Every object, without what the server assigns (versions, ids, cluster IPs)."""
    out = {}
    for kind in ("Service", "EndpointSlice", "Endpoints"):
        for obj in kube.list_objects(kind, NS):
            md = {k: v for k, v in obj["metadata"].items() if k not in SERVER_FIELDS}
            body = {**obj, "metadata": md}
            if kind == "Service":
                body["spec"] = {k: v for k, v in obj["spec"].items()
                                if k not in ("clusterIP", "clusterIPs")}
            out[(kind, md["name"])] = body
    return out


@contextlib.contextmanager
def fresh_server(tmp: Path, sc: Scenario) -> Iterator[tuple[KubeApiServer, Path, Path]]:
    """A new API server holding the scenario's old state, and a config now listing the new."""
    with KubeApiServer(TEST_NAMESPACES) as kube:
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
        config = write_config(tmp, sc.old, sc.extra)
        assert run_in_process(config, kubeconfig)[0] == 0
        assert violations(kube, Scenario(sc.name, sc.old, sc.old, sc.extra)) == []
        write_config(tmp, sc.new, sc.extra)
        kube.reset_requests()
        yield kube, kubeconfig, config


def watch(kube: KubeApiServer, sc: Scenario) -> list[str]:
    """Check the invariant after every single write the server answers."""
    seen: list[str] = []

    def observe(request: RecordedRequest) -> None:
        seen.extend(f"after {request.method} {request.path} ({request.status}): {v}"
                    for v in violations(kube, sc))

    kube.observe_writes(observe)
    return seen


def baseline(tmp: Path, sc: Scenario) -> tuple[int, dict[tuple[str, str], JSON]]:
    """A clean run from old to new: how many writes it makes, and the state it ends in."""
    with fresh_server(tmp, sc) as (kube, kubeconfig, config):
        seen = watch(kube, sc)
        assert run_in_process(config, kubeconfig)[0] == 0
        assert seen == []
        writes = len(kube.write_requests())
        kube.reset_requests()
        assert run_in_process(config, kubeconfig)[0] == 0
        assert kube.write_requests() == []
        return writes, snapshot(kube)


Inject = Callable[[KubeApiServer, int], None]


def persistent_503(kube: KubeApiServer, k: int) -> None:
    # Retry-After 0: the client's retries (all of them failing) take no time.
    kube.inject_fault(WRITES, r".*", status=503, retry_after=0, times=10_000, after=k)


def one_422(kube: KubeApiServer, k: int) -> None:
    kube.inject_fault(WRITES, r".*", status=422, after=k)


FAULTS: dict[str, Inject] = {"503-persistent": persistent_503, "422": one_422}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_a_failed_write_at_every_step_leaves_enough_addresses_then_converges(
        sc: Scenario, fault: str, tmp_path: Path) -> None:
    writes, desired = baseline(tmp_path, sc)
    assert writes >= 1
    for k in range(writes):
        with fresh_server(tmp_path, sc) as (kube, kubeconfig, config):
            seen = watch(kube, sc)
            FAULTS[fault](kube, k)
            code, err = run_in_process(config, kubeconfig)
            assert code == 1, f"step {k}: {err}"
            assert seen == [], f"step {k}: {seen}"
            assert violations(kube, sc) == []
            kube.clear_faults()
            assert run_in_process(config, kubeconfig)[0] == 0, f"step {k}"
            assert snapshot(kube) == desired, f"step {k}"
            kube.reset_requests()
            assert run_in_process(config, kubeconfig)[0] == 0
            assert kube.write_requests() == [], f"step {k}"


def test_a_failed_write_stops_only_that_service(tmp_path: Path) -> None:
    """The first write of `grow` fails once: none of its other writes are made, while
    `shrink` is synced completely."""
    sc = SCENARIOS[2]
    with fresh_server(tmp_path, sc) as (kube, kubeconfig, config):
        before = slice_ready(kube, "grow"), endpoints_ready(kube, "grow")
        kube.inject_fault(WRITES, r"/namespaces/storage/(endpointslices|endpoints)/grow",
                          status=422)
        code, err = run_in_process(config, kubeconfig)
        assert code == 1 and "422" in err
        assert "grow: " in err and "more writes left for the next run" in err
        grow_writes = [r for r in kube.write_requests() if "/grow" in r.path]
        assert len(grow_writes) == 1 and grow_writes[0].status == 422
        assert (slice_ready(kube, "grow"), endpoints_ready(kube, "grow")) == before
        assert slice_ready(kube, "shrink") == inventory_pairs(sc.new[1])
        assert endpoints_ready(kube, "shrink") == inventory_pairs(sc.new[1])


@pytest.mark.parametrize("status", [503, 422])
def test_cli_subprocess_fault_half_way_keeps_the_old_addresses(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, status: int) -> None:
    """Through `python -m syncer run`: the new slice is created, the Endpoints update fails,
    so the old slice is not deleted; the next run finishes the job."""
    sc = SCENARIOS[0]
    config = write_config(tmp_path, sc.old, sc.extra)
    assert run_sync(config, kubeconfig).returncode == 0
    write_config(tmp_path, sc.new, sc.extra)
    seen = watch(kube, sc)
    kube.reset_requests()
    kube.inject_fault("PUT", r"/endpoints/rgw$", status=status, retry_after=0, times=10)
    failed = run_sync(config, kubeconfig)
    assert failed.returncode == 1, failed.stderr
    assert seen == []
    methods = [(r.method, r.status) for r in kube.write_requests()]
    assert methods[0] == ("POST", 201) and ("DELETE", 200) not in methods
    old, new = inventory_pairs(sc.old[0]), inventory_pairs(sc.new[0])
    assert slice_ready(kube, "rgw") == old | new
    assert endpoints_ready(kube, "rgw") == old
    kube.clear_faults()
    assert run_sync(config, kubeconfig).returncode == 0
    assert seen == []
    assert slice_ready(kube, "rgw") == endpoints_ready(kube, "rgw") == new
