"""Zone hints (issue 11): `traffic_distribution: PreferClose` writes the Service's
`trafficDistribution` and a `hints.forZones` entry on every EndpointSlice endpoint, all or
nothing per Service. End to end through the CLI against the Kubernetes API test server; the
API's rules for the two fields checked on both servers (`cluster`)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from providers.aws_rds import RdsProvider
from syncer.model import Backend, ServiceSpec
from syncer.probe import use_connector
from syncer.render import RenderedService, RenderSettings, render
from tests.aws_fakes import boto3_session, build, fake_aws_environment
from tests.cli import cli, exited, run_sync
from tests.consul_double import ConsulDouble, running
from tests.kubeapi import KubeApiServer
from tests.realapi import RealCluster, TestServerCluster, object_path
from tests.specs import HTTP

JSON = dict[str, Any]
PREFER = "traffic_distribution: PreferClose\n"


def endpoint(address: str, zone: str | None = None, ready: bool = True) -> JSON:
    out: JSON = {"address": address, "port": 8080}
    if zone is not None:
        out["zone"] = zone
    if not ready:
        out["ready"] = False
    return out


def service(name: str, endpoints: list[JSON], **extra: Any) -> JSON:
    return {"name": name, "ports": [{"name": "http", "port": 80}], "endpoints": endpoints,
            **extra}


ZONED = [endpoint("192.0.2.10", "zone-a"), endpoint("192.0.2.11", "zone-b"),
         endpoint("2001:db8::12", "zone-b")]


def write(tmp: Path, services: list[JSON], source_extra: str = "") -> Path:
    """A static inventory and its config (namespace external); `source_extra` goes on the
    source (e.g. PREFER)."""
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    indented = "".join(f"    {line}\n" for line in source_extra.splitlines())
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      "  - name: vms\n    provider: static\n    path: inventory.yaml\n"
                      + indented)
    return config


def slice_endpoints(kube: KubeApiServer, name: str) -> dict[str, JSON]:
    """address -> endpoint, over every EndpointSlice of the Service."""
    return {e["addresses"][0]: e for s in kube.list_objects("EndpointSlice", "external")
            if s["metadata"]["labels"]["kubernetes.io/service-name"] == name
            for e in s["endpoints"]}


def hints(kube: KubeApiServer, name: str) -> dict[str, list[str] | None]:
    """address -> the zones its hints name (None: no hints)."""
    return {a: [z["name"] for z in e["hints"]["forZones"]] if "hints" in e else None
            for a, e in slice_endpoints(kube, name).items()}


def hintless(kube: KubeApiServer, name: str) -> bool:
    """Every endpoint of the Service without hints (and there are endpoints)."""
    found = hints(kube, name)
    return bool(found) and all(v is None for v in found.values())


def zones(kube: KubeApiServer, name: str) -> dict[str, str | None]:
    return {a: e.get("zone") for a, e in slice_endpoints(kube, name).items()}


def distribution(kube: KubeApiServer, name: str) -> str | None:
    svc = kube.get_object("Service", "external", name)
    assert svc is not None
    found: str | None = svc["spec"].get("trafficDistribution")
    return found


def writes(kube: KubeApiServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.write_requests()]


# -- written -------------------------------------------------------------------------------

def test_the_source_setting_writes_trafficdistribution_and_a_hint_per_endpoint(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", ZONED), service("api", ZONED[:2])], PREFER)
    err = exited(run_sync(config, kubeconfig), 0)
    assert "zone hints" not in err
    for name in ("web", "api"):
        assert distribution(kube, name) == "PreferClose"
    assert hints(kube, "web") == {"192.0.2.10": ["zone-a"], "192.0.2.11": ["zone-b"],
                                  "2001:db8::12": ["zone-b"]}  # IPv4 and IPv6 slices alike
    assert zones(kube, "web") == {"192.0.2.10": "zone-a", "192.0.2.11": "zone-b",
                                  "2001:db8::12": "zone-b"}
    # Endpoints (core/v1) has no place for zones or hints; it is written as before.
    ep = kube.get_object("Endpoints", "external", "web")
    assert ep is not None and "hints" not in json.dumps(ep)

    kube.reset_requests()
    exited(run_sync(config, kubeconfig), 0)
    assert writes(kube) == []  # the server's copy compares equal: a no-op


def test_the_vms_example_renders_zone_hints_without_probing() -> None:
    """examples/vms: `render` shows the hints; it never probes (nothing is dialled)."""
    dials: list[tuple[str, int]] = []

    def refuse(address: str, port: int, timeout: float) -> socket.socket:
        dials.append((address, port))
        raise ConnectionRefusedError(address)

    with use_connector(refuse):
        result = cli("render", "-c", "examples/vms/config.yaml", "-o", "json")
    exited(result, 0)
    assert dials == []
    objs = json.loads(result.stdout)["items"]
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    assert {n: s["spec"].get("trafficDistribution") for n, s in services.items()} == {
        "web": "PreferClose", "db": "PreferClose"}
    hinted = {e["addresses"][0]: [z["name"] for z in e["hints"]["forZones"]]
              for o in objs if o["kind"] == "EndpointSlice" for e in o["endpoints"]}
    assert hinted == {"192.0.2.21": ["zone-a"], "192.0.2.22": ["zone-a"],
                      "192.0.2.23": ["zone-b"], "192.0.2.24": ["zone-b"],
                      "192.0.2.31": ["zone-a"], "192.0.2.32": ["zone-b"]}


def test_a_static_service_sets_it_for_itself(kube: KubeApiServer, kubeconfig: Path,
                                             tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", ZONED, traffic_distribution="PreferClose"),
                              service("plain", ZONED)])
    exited(run_sync(config, kubeconfig), 0)
    assert distribution(kube, "web") == "PreferClose"
    assert hints(kube, "web") == {"192.0.2.10": ["zone-a"], "192.0.2.11": ["zone-b"],
                                  "2001:db8::12": ["zone-b"]}
    assert distribution(kube, "plain") is None
    assert hintless(kube, "plain")
    assert zones(kube, "plain") == zones(kube, "web")


def test_consul_nodes_zone_meta_gives_hints_by_default(kube: KubeApiServer, kubeconfig: Path,
                                                       tmp_path: Path) -> None:
    """zone_node_meta defaults to `zone`: nothing but traffic_distribution to configure."""
    double = ConsulDouble()
    for i, zone in ((1, "eu-1a"), (2, "eu-1b")):
        double.add_node(f"node-{i}", f"198.51.100.{i}", meta={"zone": zone})
        double.register("payments", f"node-{i}", port=8443)
    for consul in running(double):
        config = tmp_path / "config.yaml"
        config.write_text(
            "owner: cluster-a\nnamespace: external\nsources:\n"
            f"  - {{name: pay, provider: consul, url: '{consul.url}', services: [payments], "
            "timeout_seconds: 1, traffic_distribution: PreferClose}\n")
        exited(run_sync(config, kubeconfig), 0)
    assert distribution(kube, "payments") == "PreferClose"
    assert hints(kube, "payments") == {"198.51.100.1": ["eu-1a"], "198.51.100.2": ["eu-1b"]}


# -- withheld ------------------------------------------------------------------------------

def test_one_backend_without_a_zone_withholds_every_hint_and_warns_once(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", [*ZONED, endpoint("192.0.2.13")]),
                              service("api", ZONED[:2])], PREFER)
    for command in ("render", "plan"):
        extra = () if command == "render" else ("--kubeconfig", str(kubeconfig))
        err = exited(cli(command, "-c", config, *extra), 0)
        assert err.count("no zone hints") == 1, err
    err = exited(run_sync(config, kubeconfig), 0)
    (line,) = [ln for ln in err.splitlines() if "no zone hints" in ln]
    assert "Service external/web" in line and "backend 192.0.2.13 has no zone" in line
    assert hintless(kube, "web")
    assert zones(kube, "web")["192.0.2.10"] == "zone-a"  # zones are written as ever
    # The Service keeps its declared intent; without hints kube-proxy uses every zone.
    assert distribution(kube, "web") == "PreferClose"
    assert hints(kube, "api") == {"192.0.2.10": ["zone-a"], "192.0.2.11": ["zone-b"]}


def test_a_zone_without_a_ready_backend_withholds_the_hints_until_one_is_ready(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    down = [endpoint("192.0.2.10", "zone-a"), endpoint("192.0.2.11", "zone-b", ready=False),
            endpoint("192.0.2.12", "zone-b", ready=False)]
    config = write(tmp_path, [service("web", down)], PREFER)
    err = exited(run_sync(config, kubeconfig), 0)
    assert "Service external/web: no zone hints written" in err
    assert "zone zone-b has no ready backend" in err
    assert hintless(kube, "web")

    down[2]["ready"] = True
    write(tmp_path, [service("web", down)], PREFER)
    err = exited(run_sync(config, kubeconfig), 0)
    assert "no zone hints" not in err
    assert hints(kube, "web") == {"192.0.2.10": ["zone-a"], "192.0.2.11": ["zone-b"],
                                  "192.0.2.12": ["zone-b"]}


# -- removed, and nothing without the setting -----------------------------------------------

def test_removing_the_setting_removes_the_field_and_the_hints(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", ZONED)], PREFER)
    exited(run_sync(config, kubeconfig), 0)
    assert distribution(kube, "web") == "PreferClose"

    write(tmp_path, [service("web", ZONED)])
    kube.reset_requests()
    err = exited(run_sync(config, kubeconfig), 0)
    assert "summary created=0 updated=3 deleted=0" in err  # the Service, two slices
    assert all(r.method == "PUT" for r in kube.write_requests())
    assert distribution(kube, "web") is None
    assert "trafficDistribution" not in json.dumps(kube.get_object("Service", "external", "web"))
    assert hintless(kube, "web")
    assert set(zones(kube, "web").values()) == {"zone-a", "zone-b"}
    kube.reset_requests()
    exited(run_sync(config, kubeconfig), 0)
    assert writes(kube) == []


def test_without_the_setting_nothing_changes(kube: KubeApiServer, kubeconfig: Path,
                                             tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", [*ZONED, endpoint("192.0.2.13")])])
    err = exited(run_sync(config, kubeconfig), 0)
    assert "zone hints" not in err  # a backend without a zone is no concern here
    assert distribution(kube, "web") is None
    assert hintless(kube, "web")
    assert zones(kube, "web") == {"192.0.2.10": "zone-a", "192.0.2.11": "zone-b",
                                  "2001:db8::12": "zone-b", "192.0.2.13": None}
    rendered = cli("render", "-c", config, "-o", "json")
    exited(rendered, 0)
    assert "trafficDistribution" not in rendered.stdout and "hints" not in rendered.stdout


def test_a_service_asking_for_hints_but_writing_no_slices_warns(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service("web", ZONED)], PREFER)
    config.write_text(config.read_text().replace("sources:", "write: [endpoints]\nsources:"))
    err = exited(run_sync(config, kubeconfig), 0)
    assert "hints live in EndpointSlices" in err
    assert distribution(kube, "web") == "PreferClose"


# -- configuration errors ------------------------------------------------------------------

@pytest.mark.parametrize("where", ["source", "service"])
def test_an_unsupported_value_is_a_config_error(kube: KubeApiServer, kubeconfig: Path,
                                                tmp_path: Path, where: str) -> None:
    if where == "source":
        config = write(tmp_path, [service("web", ZONED)],
                       "traffic_distribution: PreferSameZone")
        named = ("config.yaml", "sources[0].traffic_distribution")
    else:
        config = write(tmp_path, [service("web", ZONED, traffic_distribution="PreferSameZone")])
        named = ("inventory.yaml", "services[0].traffic_distribution")
    err = exited(run_sync(config, kubeconfig), 2)
    for part in (*named, "PreferClose"):
        assert part in err, err
    assert kube.write_requests() == []


# -- providers' zones ----------------------------------------------------------------------

@pytest.fixture
def rds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    from moto import mock_aws

    fake_aws_environment(monkeypatch, tmp_path)
    with mock_aws():
        yield boto3_session("us-east-1").client("rds")


def test_rds_zones_are_the_primarys_and_each_members(rds: Any) -> None:
    """A Multi-AZ instance's AvailabilityZone is its primary's (the standby's is
    SecondaryAvailabilityZone, which takes no traffic); cluster members have their own."""
    login = {"MasterUsername": "admin", "MasterUserPassword": "password123"}
    rds.create_db_instance(DBInstanceIdentifier="billing", Engine="postgres", MultiAZ=True,
                           AvailabilityZone="us-east-1c", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, **login)
    rds.create_db_cluster(DBClusterIdentifier="ledger", Engine="aurora-postgresql", **login)
    for n, zone in ((1, "us-east-1a"), (2, "us-east-1b")):
        rds.create_db_instance(DBInstanceIdentifier=f"ledger-{n}", Engine="aurora-postgresql",
                               DBClusterIdentifier="ledger", DBInstanceClass="db.r5.large",
                               AvailabilityZone=zone)
    discovered = build(RdsProvider, {"regions": ["us-east-1"], "role": "any"}).discover()
    found = {s.name: s for s in discovered.services}
    assert [b.zone for b in found["billing"].backends] == ["us-east-1c"]
    assert {b.meta["db-instance"]: b.zone for b in found["ledger"].backends} == {
        "ledger-1": "us-east-1a", "ledger-2": "us-east-1b"}


# -- the API's rules for the two fields, on both servers -----------------------------------

def send(cluster: TestServerCluster | RealCluster, obj: JSON) -> tuple[int, JSON]:
    path = object_path(obj["kind"], obj["metadata"]["namespace"])
    if isinstance(cluster, RealCluster):
        status, data = cluster.api.request("POST", path, obj)
    else:
        answer = urllib3.PoolManager().request(
            "POST", cluster.kube.url + path, body=json.dumps(obj), timeout=5.0, retries=False,
            headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"})
        status, data = answer.status, answer.data
    return status, json.loads(data)


def causes(body: JSON) -> list[tuple[str, str]]:
    return [(c["field"], c["reason"]) for c in (body.get("details") or {}).get("causes") or []]


def slice_with(cluster: TestServerCluster | RealCluster, name: str, **fields: Any) -> JSON:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": cluster.ns("external"),
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"], **fields}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def zone_list(*names: str) -> JSON:
    return {"forZones": [{"name": n} for n in names]}


HINTS_REFUSED = {
    "nine-zones": (zone_list(*(f"z{i}" for i in range(9))),
                   [("endpoints[0].hints.forZones", "FieldValueTooMany")]),
    "twice": (zone_list("a", "a"), [("endpoints[0].hints.forZones[1].name",
                                     "FieldValueDuplicate")]),
    "not-a-label": (zone_list("not ok!"), [("endpoints[0].hints.forZones[0].name",
                                            "FieldValueInvalid")]),
    "too-long": (zone_list("x" * 64), [("endpoints[0].hints.forZones[0].name",
                                        "FieldValueInvalid")]),
}


@pytest.mark.parametrize("case", sorted(HINTS_REFUSED))
def test_the_api_refuses_bad_zone_hints(cluster: TestServerCluster | RealCluster,
                                        case: str) -> None:
    hint, expected = HINTS_REFUSED[case]
    status, body = send(cluster, slice_with(cluster, case, hints=hint))
    assert (status, body.get("reason"), causes(body)) == (422, "Invalid", expected), body


def test_the_api_stores_good_zone_hints(cluster: TestServerCluster | RealCluster) -> None:
    """Eight zones at most; an empty or missing name is stored (the docs say required, the
    validation does not check it); the zone itself is not checked at all."""
    for name, fields in (("eight", {"hints": zone_list(*(f"z{i}" for i in range(8)))}),
                         ("unnamed", {"hints": {"forZones": [{}]}}),
                         ("odd-zone", {"zone": "not a label!", "hints": zone_list("a")})):
        status, body = send(cluster, slice_with(cluster, name, **fields))
        assert status == 201, body
        assert body["endpoints"][0]["hints"]["forZones"][0] in ({"name": "z0"}, {"name": ""},
                                                                {"name": "a"})


@pytest.mark.parametrize("value", ["PreferSameZone", "PreferSameNode", ""])
def test_the_api_takes_only_preferclose_on_1_32(cluster: TestServerCluster | RealCluster,
                                                value: str) -> None:
    name = f"td-{value.lower() or 'empty'}"
    spec: JSON = {"ports": [{"name": "http", "port": 80}], "trafficDistribution": value}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": cluster.ns("external")}, "spec": spec}
    status, body = send(cluster, svc)
    assert (status, causes(body)) == (422, [("spec.trafficDistribution",
                                             "FieldValueNotSupported")]), body
    assert 'supported values: "PreferClose"' in body["message"]
    spec["trafficDistribution"] = "PreferClose"
    status, body = send(cluster, svc)
    assert status == 201 and body["spec"]["trafficDistribution"] == "PreferClose", body


# -- the rule itself, on render (pure) -----------------------------------------------------

def rendered(backends: list[Backend], **spec: Any) -> RenderedService:
    return render(ServiceSpec("web", HTTP, tuple(backends), namespace="external",
                              traffic_distribution="PreferClose", **spec), RenderSettings())


@pytest.mark.parametrize(("backends", "why"), [
    ([Backend("192.0.2.1", zone="a"), Backend("192.0.2.2"), Backend("192.0.2.3")],
     "backend 192.0.2.2 (and 1 more) has no zone"),
    ([Backend("192.0.2.1", zone="a"), Backend("192.0.2.2", zone="b", ready=False),
      Backend("192.0.2.3", zone="c", ready=False)], "zone b (and 1 more) has no ready backend"),
    # One address on two port sets is one backend; ready on either makes its zone served.
    ([Backend("192.0.2.1", {"http": 80}, zone="a"),
      Backend("192.0.2.1", {"http": 81}, zone="a", ready=False)], None),
    ([], None),
])
def test_why_hints_are_withheld(backends: list[Backend], why: str | None) -> None:
    svc = rendered(backends)
    assert svc.hints_withheld == why
    hinted = [e for o in svc.objects if o["kind"] == "EndpointSlice" for e in o["endpoints"]
              if "hints" in e]
    assert bool(hinted) == (why is None and bool(backends))


def test_externalname_gets_no_traffic_distribution() -> None:
    svc = rendered([], type="ExternalName", external_name="db.example.com")
    assert "trafficDistribution" not in svc.objects[0]["spec"]
    assert svc.hints_withheld is None
