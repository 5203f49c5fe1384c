"""The end-to-end scenarios against both servers, the test server and a real kube-apiserver
(`cluster` fixture), and RBAC on the real one. In-process (load + sync over a kubeconfig)
to keep the tier fast; the CLI runs once, for the RBAC failure a user sees.

On the real server the syncer is the token user "syncer", bound only to deploy/rbac.yaml's
ClusterRole, so every scenario also proves those rules suffice. Its write counts come from
the audit log."""

from __future__ import annotations

import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.apply import apply_plan
from syncer.kube import connect
from syncer.kubewatch import WatchEvent, watch_owned
from syncer.ownership import owner_selector, ownership_labels
from syncer.run import Outcome, load, sync
from tests.cli import Loop, run_sync
from tests.conftest import deploy_rules
from tests.realapi import RealApiServer, RealCluster, TestServerCluster, Write
from tests.specs import dual_stack_entries, rgw_entry

JSON = dict[str, Any]
Cluster = TestServerCluster | RealCluster
RGW = "ocs-external-rgw-lb"


def write(tmp: Path, cluster: Cluster, services: list[JSON], policy: str = "sync",
          extra: str = "") -> Path:
    """The inventory and config, in this cluster's namespaces and with its owner."""
    placed = [{**s, "namespace": cluster.ns(s.get("namespace", "external"))} for s in services]
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": placed}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: {cluster.owner}\nnamespace: {cluster.ns('external')}\n"
                      f"policy: {policy}\n{extra}"
                      "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


def run(cluster: Cluster, config: Path, **kwargs: Any) -> Outcome:
    return sync(load(str(config)), lambda: connect(str(cluster.kubeconfig)), apply=True,
                **kwargs)


def counts(outcome: Outcome, *keys: str) -> tuple[int, ...]:
    c = outcome.counts()
    return tuple(c[k] for k in keys)


def slices_of(cluster: Cluster, service: str, ns: str) -> list[JSON]:
    return [s for s in cluster.list_objects("EndpointSlice", cluster.ns(ns))
            if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service]


def slice_pairs(cluster: Cluster, service: str, ns: str = "storage") -> set[str]:
    return {f"{e['addresses'][0]}:{s['ports'][0]['port']}"
            for s in slices_of(cluster, service, ns) for e in s["endpoints"]}


def endpoints_pairs(cluster: Cluster, service: str, ns: str = "storage") -> set[str]:
    ep = cluster.get("Endpoints", cluster.ns(ns), service)
    assert ep is not None
    return {f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
            for a in s.get("addresses", []) for p in s["ports"]}


def verbs(writes: list[Write]) -> list[str]:
    return sorted(w.verb for w in writes)


def test_article_example_first_run_no_op_run_and_removals(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    storage = cluster.ns("storage")
    config = write(tmp_path, cluster, [rgw_entry(), rgw_entry(range(60, 62), name="other")])
    cluster.mark()
    first = run(cluster, config)
    assert first.exit_code == 0
    assert counts(first, "created", "updated", "deleted") == (8, 0, 0)
    assert verbs(cluster.writes()) == ["create"] * 8
    svc = cluster.get("Service", storage, RGW)
    assert svc is not None and "selector" not in svc["spec"]
    assert sorted(s["ports"][0]["port"] for s in slices_of(cluster, RGW, "storage")) == [
        8080, 8081]
    ep = cluster.get("Endpoints", storage, RGW)
    assert ep is not None and len(ep["subsets"]) == 2
    assert ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    assert len(slice_pairs(cluster, RGW)) == 12 == len(endpoints_pairs(cluster, RGW))

    # The second run writes nothing at all (on the real server: per its audit log).
    cluster.mark()
    second = run(cluster, config)
    assert cluster.writes() == []
    assert counts(second, "created", "updated", "deleted", "unchanged") == (0, 0, 0, 8)

    smaller = rgw_entry()
    smaller["endpoints"].remove({"address": "192.0.2.55", "port": 8081})
    write(tmp_path, cluster, [smaller, rgw_entry(range(60, 62), name="other")])
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert verbs(cluster.writes()) == ["update", "update"]
    expected = {f"192.0.2.{i}:{p}" for i in range(50, 56) for p in (8080, 8081)}
    expected.discard("192.0.2.55:8081")
    assert slice_pairs(cluster, RGW) == expected == endpoints_pairs(cluster, RGW)

    # "other" leaves the inventory: its objects go. (A real API server deletes a Service's
    # same-named Endpoints itself; the syncer must not mind finding it gone.)
    write(tmp_path, cluster, [smaller])
    gone = run(cluster, config)
    assert gone.exit_code == 0, gone.applied
    assert cluster.get("Service", storage, "other") is None
    assert cluster.get("Endpoints", storage, "other") is None
    assert slices_of(cluster, "other", "storage") == []
    assert cluster.get("Service", storage, RGW) is not None


def test_upsert_only_never_deletes_and_create_only_never_updates(cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    config = write(tmp_path, cluster, [rgw_entry(), rgw_entry(range(60, 62), name="other")])
    assert run(cluster, config).exit_code == 0
    write(tmp_path, cluster, [rgw_entry(range(50, 53))], policy="upsert-only")
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert {w.verb for w in cluster.writes()} == {"update"}
    assert cluster.get("Service", cluster.ns("storage"), "other") is not None
    assert len(slice_pairs(cluster, RGW)) == 6

    write(tmp_path, cluster, [rgw_entry(range(50, 51)), rgw_entry(name="brand-new")],
          policy="create-only")
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert {w.verb for w in cluster.writes()} == {"create"}
    assert len(slice_pairs(cluster, RGW)) == 6
    assert cluster.get("Service", cluster.ns("storage"), "brand-new") is not None


def foreign_service(cluster: Cluster, name: str, selector: bool,
                    labels: dict[str, str] | None = None) -> JSON:
    spec: JSON = {"ports": [{"name": "http", "port": 80}]}
    if selector:
        spec["selector"] = {"app": name}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": cluster.ns("storage"),
                         "labels": labels or {}}, "spec": spec}


def test_foreign_objects_are_never_touched(cluster: Cluster, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    storage = cluster.ns("storage")
    cluster.seed(foreign_service(cluster, "with-selector", selector=True))
    cluster.seed(foreign_service(cluster, "hand-made", selector=False))
    theirs = {"app.kubernetes.io/managed-by": "endpoints-sync",
              "endpoints-sync.io/owner": "cluster-b"}
    cluster.seed(foreign_service(cluster, "theirs", selector=False, labels=theirs))
    cluster.seed({"apiVersion": "v1", "kind": "Endpoints",
                  "metadata": {"name": "theirs", "namespace": storage, "labels": theirs},
                  "subsets": [{"addresses": [{"ip": "198.51.100.7"}],
                               "ports": [{"port": 80}]}]})
    before = {k: cluster.list_objects(k, storage) for k in ("Service", "Endpoints")}

    config = write(tmp_path, cluster, [rgw_entry(name="with-selector"),
                                       rgw_entry(name="hand-made"), rgw_entry(name="mine")])
    assert run(cluster, config).exit_code == 1
    assert "with-selector" in caplog.text and "selector" in caplog.text
    assert "hand-made" in caplog.text and "without" in caplog.text
    assert cluster.get("Service", storage, "mine") is not None
    assert slices_of(cluster, "with-selector", "storage") == []
    assert slices_of(cluster, "hand-made", "storage") == []
    after = {k: cluster.list_objects(k, storage) for k in ("Service", "Endpoints")}
    for kind, objects in before.items():
        for obj in objects:
            assert obj in after[kind]  # resourceVersion and all: not even rewritten
    write(tmp_path, cluster, [rgw_entry(name="mine"), rgw_entry(name="mine2")])
    assert run(cluster, config).exit_code == 0
    assert cluster.get("Service", storage, "theirs") is not None
    assert cluster.get("Endpoints", storage, "theirs") is not None


def test_ipv6_dual_stack_and_250_backends(cluster: Cluster, tmp_path: Path) -> None:
    dual, v6, big = dual_stack_entries()
    config = write(tmp_path, cluster, [dual, v6, big])
    assert run(cluster, config).exit_code == 0
    dual_slices = {s["addressType"]: [e["addresses"][0] for e in s["endpoints"]]
                   for s in slices_of(cluster, "dual", "external")}
    assert dual_slices == {"IPv4": ["192.0.2.10"], "IPv6": ["2001:db8::10", "2001:db8::11"]}
    ep = cluster.get("Endpoints", cluster.ns("external"), "dual")
    assert ep is not None
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == [
        "192.0.2.10", "2001:db8::10", "2001:db8::11"]
    (v6slice,) = slices_of(cluster, "v6only", "external")
    assert v6slice["addressType"] == "IPv6" and v6slice["ports"][0]["protocol"] == "UDP"
    assert sorted(len(s["endpoints"]) for s in slices_of(cluster, "big", "external")) == [
        50, 100, 100]
    assert len(endpoints_pairs(cluster, "big", "external")) == 250
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert cluster.writes() == []


def test_special_addresses_are_filtered(cluster: Cluster, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    svc = {"name": "web", "ports": [{"port": 80}],
           "endpoints": [{"address": a} for a in (
               "192.0.2.1", "127.0.0.1", "0.0.0.0", "169.254.1.1", "::1", "fe80::1",
               "224.0.0.5", "ff02::1", "203.0.113.9")]}
    config = write(tmp_path, cluster, [svc], extra="deny_cidrs: [203.0.113.0/24]\n")
    assert run(cluster, config).exit_code == 0
    (sl,) = slices_of(cluster, "web", "external")
    assert [e["addresses"][0] for e in sl["endpoints"]] == ["192.0.2.1"]
    assert endpoints_pairs(cluster, "web", "external") == {"192.0.2.1:80"}
    for reason in ("loopback", "unspecified", "link-local", "deny_cidrs"):
        assert reason in caplog.text


def test_adopt_takes_over_a_hand_kept_endpoints(cluster: Cluster, tmp_path: Path) -> None:
    storage = cluster.ns("storage")
    cluster.seed(foreign_service(cluster, RGW, selector=False))
    cluster.seed({"apiVersion": "v1", "kind": "Endpoints",
                  "metadata": {"name": RGW, "namespace": storage},
                  "subsets": [{"addresses": [{"ip": "192.0.2.40"}],
                               "ports": [{"name": "http", "port": 8080}]}]})
    config = write(tmp_path, cluster, [rgw_entry()])
    assert run(cluster, config).exit_code == 1
    assert endpoints_pairs(cluster, RGW) == {"192.0.2.40:8080"}
    write(tmp_path, cluster, [rgw_entry()], extra="adopt: true\n")
    assert run(cluster, config).exit_code == 0
    assert len(endpoints_pairs(cluster, RGW)) == 12
    svc = cluster.get("Service", storage, RGW)
    assert svc is not None
    assert svc["metadata"]["labels"]["endpoints-sync.io/owner"] == cluster.owner


def test_a_concurrent_writer_gets_a_409_answered_by_a_reread(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    """Between the plan's read and its writes someone else writes: the stale update gets
    409 and is re-read and made again; the delete with a precondition gets 409 and stops."""
    storage = cluster.ns("storage")
    config = write(tmp_path, cluster, [rgw_entry(), rgw_entry(range(60, 62), name="other")])
    assert run(cluster, config).exit_code == 0
    write(tmp_path, cluster, [rgw_entry(range(50, 54))])
    loaded = load(str(config))
    planned = sync(loaded, lambda: connect(str(cluster.kubeconfig)), apply=False)
    for kind in ("Endpoints", "EndpointSlice"):
        name = RGW if kind == "Endpoints" else slices_of(cluster, "other", "storage")[0][
            "metadata"]["name"]
        theirs = cluster.get(kind, storage, name)
        assert theirs is not None
        theirs["metadata"].setdefault("annotations", {})["someone"] = secrets.token_hex(2)
        cluster.replace(theirs)
    cluster.mark()
    result = apply_plan(planned.plan, connect(str(cluster.kubeconfig)), cluster.owner)
    writes = cluster.writes()
    endpoints_writes = [w.status for w in writes if w.resource == "endpoints"
                        and w.verb == "update"]
    assert endpoints_writes == [409, 200]
    assert next(w.status for w in writes if w.verb == "delete") == 409
    assert len(result.failed) == 1 and "changed since it was read" in result.failed[0]
    assert endpoints_pairs(cluster, RGW) == {f"192.0.2.{i}:{p}" for i in range(50, 54)
                                             for p in (8080, 8081)}
    assert cluster.get("Service", storage, "other") is not None


def test_zone_hints_are_stored_as_written_and_removed_with_the_setting(
        cluster: Cluster, tmp_path: Path) -> None:
    """traffic_distribution: PreferClose (issue 11): the server takes trafficDistribution and
    the hints, hands them back so that a second run writes nothing, and drops both on the
    PUT that leaves them out."""
    storage = cluster.ns("storage")
    entry = {**rgw_entry(range(50, 54)), "traffic_distribution": "PreferClose"}
    for e in entry["endpoints"]:
        e["zone"] = f"zone-{int(e['address'].rsplit('.', 1)[1]) % 2}"
    config = write(tmp_path, cluster, [entry])
    assert run(cluster, config).exit_code == 0
    svc = cluster.get("Service", storage, RGW)
    assert svc is not None and svc["spec"]["trafficDistribution"] == "PreferClose"
    endpoints = [e for s in slices_of(cluster, RGW, "storage") for e in s["endpoints"]]
    assert len(endpoints) == 8
    assert all(e["hints"] == {"forZones": [{"name": e["zone"]}]} for e in endpoints)
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert cluster.writes() == []

    del entry["traffic_distribution"]
    write(tmp_path, cluster, [entry])
    assert run(cluster, config).exit_code == 0
    svc = cluster.get("Service", storage, RGW)
    assert svc is not None and "trafficDistribution" not in svc["spec"]
    endpoints = [e for s in slices_of(cluster, RGW, "storage") for e in s["endpoints"]]
    assert [e.get("hints") for e in endpoints] == [None] * 8
    assert {e["zone"] for e in endpoints} == {"zone-0", "zone-1"}
    cluster.mark()
    assert run(cluster, config).exit_code == 0
    assert cluster.writes() == []


# -- RBAC, on the real server only ---------------------------------------------------------

def without(rules: list[JSON], group: str, verb: str) -> list[JSON]:
    return [{**r, "verbs": [v for v in r["verbs"] if v != verb]}
            if group in r["apiGroups"] else r for r in rules]


@pytest.mark.slow
def test_run_watch_follows_an_inventory_edit_and_repairs_a_hand_edited_slice(
        cluster: Cluster, tmp_path: Path) -> None:
    """`run --watch` end to end on both servers (on the real one as the "syncer" user with
    deploy/rbac.yaml's rules, so `watch` is proven granted and sufficient)."""
    config = write(tmp_path, cluster, [rgw_entry()])
    watching = Loop(config, cluster.kubeconfig, "--watch", "--interval", "300")
    try:
        watching.wait_for(lambda: "summary created=4" in watching.log, timeout=60)
        everything = {f"192.0.2.{i}:{p}" for i in range(50, 56) for p in (8080, 8081)}
        assert slice_pairs(cluster, RGW) == everything

        smaller = rgw_entry(range(50, 55))  # 192.0.2.55 leaves the inventory
        write(tmp_path, cluster, [smaller])
        fewer = {f"192.0.2.{i}:{p}" for i in range(50, 55) for p in (8080, 8081)}
        watching.wait_for(lambda: slice_pairs(cluster, RGW) == fewer)
        watching.wait_for(lambda: endpoints_pairs(cluster, RGW) == fewer)

        # Someone edits an owned EndpointSlice by hand: it is put back.
        edited = {**slices_of(cluster, RGW, "storage")[0], "kind": "EndpointSlice",
                  "apiVersion": "discovery.k8s.io/v1"}  # list items lack them
        edited["endpoints"] = edited["endpoints"][:1]
        synced = watching.log.count("watch: synced")
        cluster.replace(edited)
        watching.wait_for(lambda: watching.log.count("watch: synced") > synced
                          and slice_pairs(cluster, RGW) == fewer)
        watching.stop()
        assert watching.proc.returncode == 0, watching.log
    finally:
        watching.kill()


def test_rbac_without_list_on_endpointslices_fails_with_the_hint(
        real_apiserver: RealApiServer, tmp_path: Path) -> None:
    """Through the CLI, as a user sees it: exit 1, the API's message and what to grant."""
    cluster = RealCluster(real_apiserver, tmp_path, user="limited-1")
    real_apiserver.grant("limited-1", without(deploy_rules(), "discovery.k8s.io", "list"),
                         f"minus-list-{cluster.suffix}")
    result = run_sync(write(tmp_path, cluster, [rgw_entry()]), cluster.kubeconfig)
    assert result.returncode == 1, result.stderr
    assert 'cannot list resource "endpointslices"' in result.stderr
    assert ("needs `list` on endpointslices.discovery.k8s.io in all namespaces"
            in result.stderr)
    assert "deploy/rbac.yaml" in result.stderr
    assert cluster.get("Service", cluster.ns("storage"), RGW) is None


def test_rbac_without_create_on_core_objects_fails_that_write(
        real_apiserver: RealApiServer, tmp_path: Path) -> None:
    cluster = RealCluster(real_apiserver, tmp_path, user="limited-2")
    real_apiserver.grant("limited-2", without(deploy_rules(), "", "create"),
                         f"minus-create-{cluster.suffix}")
    outcome = run(cluster, write(tmp_path, cluster, [rgw_entry()]))
    assert outcome.exit_code == 1
    assert outcome.applied is not None
    (failed,) = outcome.applied.failed
    assert f"needs `create` on services in namespace {cluster.ns('storage')}" in failed
    assert cluster.list_objects("EndpointSlice", cluster.ns("storage")) == []  # nothing after it


def test_watch_owned_sees_changes_and_an_object_leaving_the_selector_as_deleted(
        real_apiserver: RealApiServer, tmp_path: Path) -> None:
    """`run --watch`'s watch with deploy/rbac.yaml's rules: an owned Service created by
    someone else is seen, one of another owner is not, and taking our labels off is a
    DELETED carrying the labels it had, as the test server does (tests/kubeapi/watch.py)."""
    cluster = RealCluster(real_apiserver, tmp_path)
    ns = cluster.ns("external")
    events: queue.Queue[WatchEvent] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=watch_owned, args=(
        connect(str(cluster.kubeconfig)), owner_selector(cluster.owner), [ns], events.put,
        stop))
    thread.start()

    def service(name: str, owner: str, port: int = 80) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": ownership_labels(owner)},
                "spec": {"ports": [{"port": port}]}}

    try:
        cluster.seed(service("theirs", "someone-else"))
        cluster.seed(service("web", cluster.owner))
        # The watch starts from its LIST: a change before it is no event. Change the
        # Service until one is seen (the first, unless the LIST came late).
        for port in range(81, 101):
            try:
                first = events.get(timeout=0.5)
                break
            except queue.Empty:
                current = cluster.get("Service", ns, "web")
                assert current is not None
                current["spec"]["ports"][0]["port"] = port
                cluster.replace(current)
        else:
            pytest.fail("no watch event within 10 s")
        assert first.type in ("ADDED", "MODIFIED") and first.obj is not None
        web = cluster.get("Service", ns, "web")
        assert web is not None
        web["metadata"]["labels"] = ownership_labels("someone-else")
        cluster.replace(web)
        seen = [first]
        while seen[-1].type != "DELETED":
            seen.append(events.get(timeout=5))
        assert {(e.obj or {})["metadata"]["name"] for e in seen} == {"web"}
        gone = seen[-1].obj or {}
        assert gone["metadata"]["labels"] == ownership_labels(cluster.owner)
    finally:
        started = time.monotonic()
        stop.set()
        thread.join(5)
    assert time.monotonic() - started < 1.5
