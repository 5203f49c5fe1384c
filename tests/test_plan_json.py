"""`plan -o json`: the document scripts read. In process, through syncer.run.sync against the
Kubernetes API test server; the CLI's own wiring is in tests/test_cli_habits.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from syncer.desired import Desired
from syncer.kube import connect
from syncer.output import plan_json
from syncer.plan import Plan
from syncer.run import Outcome, load, sync
from tests.kubeapi import KubeApiServer
from tests.specs import rgw_entry

JSON = dict[str, Any]
TOP = {"version", "changes", "held", "conflicts", "failed_sources", "kept_services", "readiness",
       "summary"}
OBJECT = {"kind", "namespace", "name", "service", "source"}
SUMMARY = {"created", "updated", "deleted", "unchanged", "skipped", "conflicts",
           "failed_sources", "failed_writes", "probe_failed", "readiness_changed"}


def write(tmp: Path, services: list[JSON], policy: str = "sync") -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: cluster-a\npolicy: {policy}\n"
                      "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


def planned(config: Path, kubeconfig: Path, *, apply: bool = False) -> tuple[JSON, Outcome]:
    outcome = sync(load(str(config)), lambda: connect(str(kubeconfig)), apply=apply)
    doc = json.loads(plan_json(outcome.plan, outcome.desired, outcome.counts()))
    assert doc.keys() == TOP
    assert doc["version"] == 1
    assert doc["summary"].keys() == SUMMARY
    for change in doc["changes"]:
        assert change.keys() == OBJECT | {"action", "diff"}
    return doc, outcome


def by_kind(doc: JSON) -> dict[str, list[JSON]]:
    out: dict[str, list[JSON]] = {}
    for change in doc["changes"]:
        out.setdefault(change["kind"], []).append(change)
    return out


def test_first_plan_lists_creates_with_the_added_addresses(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(range(50, 52), ports=(8080,))])
    doc, outcome = planned(config, kubeconfig)
    assert {c["action"] for c in doc["changes"]} == {"create"}
    kinds = by_kind(doc)
    (service,) = kinds["Service"]
    assert service == {"action": "create", "kind": "Service", "namespace": "storage",
                       "name": "ocs-external-rgw-lb", "service": "storage/ocs-external-rgw-lb",
                       "source": "rgw", "diff": None}
    (endpoint_slice,) = kinds["EndpointSlice"]
    assert endpoint_slice["diff"] == {"added": ["192.0.2.50:8080/TCP http",
                                                "192.0.2.51:8080/TCP http"], "removed": []}
    assert doc["summary"] == outcome.counts()
    assert doc["summary"]["created"] == len(doc["changes"]) == 3
    assert doc["held"] == doc["conflicts"] == doc["kept_services"] == []
    assert doc["failed_sources"] == {}


def test_updates_deletes_held_and_conflicts(kube: KubeApiServer, kubeconfig: Path,
                                           tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(range(50, 52), ports=(8080,)),
                              rgw_entry(range(60, 61), ports=(8080,), name="other")])
    planned(config, kubeconfig, apply=True)
    # One address swapped, `other` gone, and `third` blocked by a Service nobody manages.
    kube.put_object({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "third", "namespace": "storage"},
                     "spec": {"ports": [{"port": 80}]}})
    config = write(tmp_path, [rgw_entry([50, 53], ports=(8080,)),
                              rgw_entry(range(70, 71), ports=(8080,), name="third")])
    doc, _ = planned(config, kubeconfig)
    updates = [c for c in doc["changes"] if c["action"] == "update"]
    assert {c["kind"] for c in updates} == {"EndpointSlice", "Endpoints"}
    assert all(c["diff"] == {"added": ["192.0.2.53:8080/TCP http"],
                             "removed": ["192.0.2.51:8080/TCP http"]} for c in updates)
    deletes = [c for c in doc["changes"] if c["action"] == "delete"]
    assert {(c["kind"], c["service"]) for c in deletes} == {
        ("Service", "storage/other"), ("EndpointSlice", "storage/other"),
        ("Endpoints", "storage/other")}
    slice_delete = next(c for c in deletes if c["kind"] == "EndpointSlice")
    assert slice_delete["diff"] == {"added": [], "removed": ["192.0.2.60:8080/TCP http"]}
    (conflict,) = [c for c in doc["conflicts"] if c["kind"] == "Service"]
    assert conflict.keys() == OBJECT | {"reason"}
    assert (conflict["namespace"], conflict["name"], conflict["service"]) == (
        "storage", "third", "storage/third")
    assert doc["summary"]["updated"] == 2 and doc["summary"]["deleted"] == 3

    # upsert-only: the deletes are held, by policy.
    config.write_text(config.read_text().replace("policy: sync", "policy: upsert-only"))
    doc, _ = planned(config, kubeconfig)
    assert not [c for c in doc["changes"] if c["action"] == "delete"]
    held = [h for h in doc["held"] if h["service"] == "storage/other"]
    assert len(held) == 3
    assert all(h.keys() == OBJECT | {"reason", "action", "detail"} for h in held)
    assert {(h["reason"], h["action"]) for h in held} == {("policy", "delete")}


def test_failed_sources_and_kept_services_are_named() -> None:
    desired = Desired(failed_sources={"consul": "timed out", "aws": "access denied"},
                      skipped={("storage", "b"), ("external", "a")})
    doc = json.loads(plan_json(Plan(), desired, {"created": 0}))
    assert doc["failed_sources"] == {"aws": "access denied", "consul": "timed out"}
    assert list(doc["failed_sources"]) == ["aws", "consul"]  # sorted: stable for diffs
    assert doc["kept_services"] == ["external/a", "storage/b"]
    assert doc["changes"] == []
