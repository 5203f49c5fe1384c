"""Service changes the API server treats as immutable converge, through the CLI.

Decisions (syncer/plan.py, "immutable changes"):
- Headless <-> ClusterIP changes spec.clusterIP, which cannot be updated: the Service must be
  recreated, which gives it a new cluster IP and removes it (and its Endpoints) for a moment.
  It is held by default (exit 1, a message saying what to do); with --force it is deleted
  (that exact version) and created again, and its Endpoints are written again.
- ClusterIP -> ExternalName is an update (the allocation cleared); its address objects no
  longer belong and are pruned. ExternalName -> ClusterIP is an update too.
- A Service deleted by hand (the server deletes its Endpoints with it) is simply recreated.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config

from syncer.apply import apply_plan
from syncer.cli import main
from syncer.kube import connect
from syncer.ownership import owner_selector
from syncer.plan import PlanSettings, make_plan
from syncer.render import RenderSettings, render
from tests.cli import run_sync
from tests.kubeapi import KubeApiServer
from tests.specs import simple_spec

JSON = dict[str, Any]
NS = "storage"
OWNER = "cluster-a"
ADDRESSES = [f"192.0.2.{i}" for i in range(1, 4)]


def service(kind: str, addresses: list[str] = ADDRESSES) -> JSON:
    if kind == "ExternalName":
        return {"name": "db", "namespace": NS, "type": "ExternalName",
                "external_name": "db.example.com"}
    return {"name": "db", "namespace": NS, "type": kind, "ports": [{"name": "pg", "port": 5432}],
            "endpoints": [{"address": a} for a in addresses]}


def write_config(tmp: Path, entry: JSON, extra: str = "") -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": [entry]}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: {OWNER}\n{extra}"
                      "sources:\n  - {name: db, provider: static, path: inventory.yaml}\n")
    return config


def in_process(*args: str | Path) -> tuple[int, str]:
    """The CLI's main in this process (a subprocess costs a second of imports): exit code,
    stdout and stderr."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


def quiet_run(config: Path, kubeconfig: Path) -> int:
    return in_process("run", "-c", config, "--kubeconfig", kubeconfig)[0]


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def svc_of(kube: KubeApiServer) -> JSON:
    obj = kube.get_object("Service", NS, "db")
    assert obj is not None
    return obj


def address_objects(kube: KubeApiServer) -> list[str]:
    return sorted(f"{o['kind']}/{o['metadata']['name']}"
                  for kind in ("EndpointSlice", "Endpoints") for o in kube.list_objects(kind, NS))


def endpoints_ips(kube: KubeApiServer) -> list[str]:
    ep = kube.get_object("Endpoints", NS, "db")
    assert ep is not None
    return [a["ip"] for s in ep["subsets"] for a in s.get("addresses", [])]


def assert_second_run_writes_nothing(kube: KubeApiServer, config: Path,
                                     kubeconfig: Path) -> None:
    kube.reset_requests()
    assert quiet_run(config, kubeconfig) == 0
    assert kube.write_requests() == []


@pytest.mark.parametrize(("old", "new"), [("ClusterIP", "Headless"), ("Headless", "ClusterIP")])
def test_headless_clusterip_switch_is_held_until_force_then_recreated(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, old: str, new: str) -> None:
    config = write_config(tmp_path, service(old))
    assert quiet_run(config, kubeconfig) == 0
    before = svc_of(kube)
    # The addresses change in the same run: they are synced even while the Service is held.
    write_config(tmp_path, service(new, ADDRESSES[:2]))
    advice = (f"switching {old} to {new} needs the Service recreated (clusterIP is immutable; "
              "it gets a new cluster IP and is briefly gone); run with --force to recreate it, "
              "or delete it yourself: kubectl delete service -n storage db")
    code, plan = in_process("plan", "-c", config, "--kubeconfig", kubeconfig)
    assert code == 1, plan
    assert f"= held update Service storage/db: {advice}" in plan
    kube.reset_requests()
    err = ok(run_sync(config, kubeconfig), 1)
    assert f"Service storage/db: {advice}" in err
    assert not [r for r in kube.write_requests() if "/services" in r.path]
    assert svc_of(kube)["metadata"]["uid"] == before["metadata"]["uid"]
    assert endpoints_ips(kube) == ADDRESSES[:2]

    code, plan = in_process("plan", "-c", config, "--kubeconfig", kubeconfig, "--force")
    assert code == 0, plan
    assert "~ recreate (delete, then create) Service storage/db" in plan
    assert "+ create Endpoints storage/db" in plan  # the API deletes it with the Service
    kube.reset_requests()
    err = ok(run_sync(config, kubeconfig, "--force"))
    assert "recreated Service storage/db" in err
    after = svc_of(kube)
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert (after["spec"]["clusterIP"] == "None") == (new == "Headless")
    assert after["spec"]["clusterIP"] != before["spec"]["clusterIP"]
    assert endpoints_ips(kube) == ADDRESSES[:2]
    assert [(r.method, r.status) for r in kube.write_requests() if "/services" in r.path] == [
        ("DELETE", 200), ("POST", 201)]
    assert_second_run_writes_nothing(kube, config, kubeconfig)


def test_upsert_only_never_recreates_even_with_force(kube: KubeApiServer, kubeconfig: Path,
                                                     tmp_path: Path) -> None:
    config = write_config(tmp_path, service("ClusterIP"), "policy: upsert-only\n")
    assert quiet_run(config, kubeconfig) == 0
    uid = svc_of(kube)["metadata"]["uid"]
    write_config(tmp_path, service("Headless"), "policy: upsert-only\n")
    code, out = in_process("run", "-c", config, "--kubeconfig", kubeconfig, "--force")
    assert code == 1
    assert ("policy upsert-only never deletes: delete it yourself: "
            "kubectl delete service -n storage db") in out
    assert svc_of(kube)["metadata"]["uid"] == uid


def test_clusterip_to_externalname_updates_and_prunes_the_addresses(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, service("ClusterIP"))
    assert quiet_run(config, kubeconfig) == 0
    uid = svc_of(kube)["metadata"]["uid"]
    assert len(address_objects(kube)) == 2
    write_config(tmp_path, service("ExternalName"))
    code, plan = in_process("plan", "-c", config, "--kubeconfig", kubeconfig)
    assert code == 0, plan
    assert "~ update Service storage/db" in plan and "- delete Endpoints storage/db" in plan
    assert "held" not in plan
    ok(run_sync(config, kubeconfig))
    spec = svc_of(kube)["spec"]
    assert svc_of(kube)["metadata"]["uid"] == uid
    assert spec["type"] == "ExternalName" and spec["externalName"] == "db.example.com"
    assert "clusterIP" not in spec
    assert address_objects(kube) == []
    assert_second_run_writes_nothing(kube, config, kubeconfig)


def test_externalname_to_clusterip_converges(kube: KubeApiServer, kubeconfig: Path,
                                             tmp_path: Path) -> None:
    config = write_config(tmp_path, service("ExternalName"))
    assert quiet_run(config, kubeconfig) == 0
    write_config(tmp_path, service("ClusterIP"))
    ok(run_sync(config, kubeconfig))
    spec = svc_of(kube)["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP" and "externalName" not in spec
    assert spec["clusterIP"].startswith("198.19.")
    assert endpoints_ips(kube) == ADDRESSES
    assert len(address_objects(kube)) == 2
    assert_second_run_writes_nothing(kube, config, kubeconfig)


def test_service_deleted_by_hand_is_recreated_with_its_endpoints(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, service("ClusterIP"))
    assert quiet_run(config, kubeconfig) == 0
    api = client.CoreV1Api(kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)))
    api.delete_namespaced_service("db", NS)
    assert kube.get_object("Endpoints", NS, "db") is None  # the server's cascade
    assert len(kube.list_objects("EndpointSlice", NS)) == 1  # slices stay
    err = ok(run_sync(config, kubeconfig))
    story = [line for line in err.splitlines() if " summary " not in line]  # its counts
    assert story and not any(" error " in line or "failed" in line for line in story), err
    assert svc_of(kube)["spec"]["clusterIP"].startswith("198.19.")
    assert endpoints_ips(kube) == ADDRESSES
    assert_second_run_writes_nothing(kube, config, kubeconfig)


def test_objects_deleted_between_plan_and_apply_are_created(kube: KubeApiServer,
                                                             kubeconfig: Path) -> None:
    """The plan read the Service and its Endpoints; then someone deleted the Service (and the
    server its Endpoints): the planned updates get 404 and become creates."""
    kube_client = connect(str(kubeconfig))
    rs = RenderSettings(owner=OWNER)
    first = make_plan([render(simple_spec("db", ["192.0.2.1"]), rs)], [],
                      PlanSettings(owner=OWNER))
    assert apply_plan(first, kube_client, OWNER).failed == []
    current = [o for kind in ("Service", "EndpointSlice", "Endpoints")
               for o in kube_client.list(kind, owner_selector(OWNER))]
    spec = simple_spec("db", ["192.0.2.2"], port=6543)
    plan = make_plan([render(spec, rs)], current, PlanSettings(owner=OWNER))
    assert {(c.action, c.kind) for c in plan.changes} >= {("update", "Service"),
                                                          ("update", "Endpoints")}
    assert kube_client.delete("Service", "external", "db")
    assert kube.get_object("Endpoints", "external", "db") is None
    result = apply_plan(plan, kube_client, OWNER)
    assert result.failed == []
    assert kube.get_object("Service", "external", "db") is not None
    ep = kube.get_object("Endpoints", "external", "db")
    assert ep is not None and ep["subsets"][0]["addresses"] == [{"ip": "192.0.2.2"}]
    statuses = [(r.method, r.status) for r in kube.write_requests() if r.method == "PUT"]
    assert ("PUT", 404) in statuses
