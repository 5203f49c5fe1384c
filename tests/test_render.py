"""Table tests for render: the object shapes of DESIGN §6."""

from __future__ import annotations

from typing import Any

import pytest

from syncer.model import Backend, ServicePort, ServiceSpec
from syncer.render import RenderSettings, render
from tests.specs import HTTP, rgw_spec, simple_spec

SETTINGS = RenderSettings(owner="cluster-a")


def by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def slice_addresses(s: dict[str, Any]) -> list[str]:
    return [e["addresses"][0] for e in s["endpoints"]]


def test_article_example_shapes() -> None:
    out = render(rgw_spec(), SETTINGS)
    assert [o["kind"] for o in out.objects] == ["Service", "EndpointSlice", "EndpointSlice",
                                                "Endpoints"]
    svc = out.objects[0]
    assert svc["spec"] == {"type": "ClusterIP",
                           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    assert "selector" not in svc["spec"]
    slices = by_kind(out.objects, "EndpointSlice")
    assert sorted(s["ports"][0]["port"] for s in slices) == [8080, 8081]
    for s in slices:
        assert s["addressType"] == "IPv4"
        assert slice_addresses(s) == [f"192.0.2.{i}" for i in range(50, 56)]
        assert all(e["conditions"] == {"ready": True} for e in s["endpoints"])
        assert s["metadata"]["name"].startswith("ocs-external-rgw-lb-")
        assert s["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "endpoints-sync",
            "endpoints-sync.io/owner": "cluster-a",
            "kubernetes.io/service-name": "ocs-external-rgw-lb",
            "endpointslice.kubernetes.io/managed-by": "endpoints-sync",
        }
    (ep,) = by_kind(out.objects, "Endpoints")
    assert ep["metadata"]["name"] == "ocs-external-rgw-lb"
    assert ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    assert [s["ports"] for s in ep["subsets"]] == [
        [{"name": "http", "port": 8080, "protocol": "TCP"}],
        [{"name": "http", "port": 8081, "protocol": "TCP"}]]
    assert all(len(s["addresses"]) == 6 for s in ep["subsets"])
    for obj in out.objects:
        assert obj["metadata"]["annotations"]["endpoints-sync.io/source"] == "rgw"
        assert obj["metadata"]["namespace"] == "storage"


def test_names_are_deterministic_and_distinct() -> None:
    a = [o["metadata"]["name"] for o in render(rgw_spec(), SETTINGS).objects]
    b = [o["metadata"]["name"] for o in render(rgw_spec(addresses=2), SETTINGS).objects]
    assert a == b
    assert len(set(a[1:3])) == 2


def test_dual_stack_goes_to_one_slice_per_family_and_one_endpoints() -> None:
    spec = simple_spec("db", ["2001:db8::2", "192.0.2.9", "2001:db8::1", "192.0.2.10"])
    out = render(spec, SETTINGS)
    slices = by_kind(out.objects, "EndpointSlice")
    assert {s["addressType"]: slice_addresses(s) for s in slices} == {
        "IPv4": ["192.0.2.9", "192.0.2.10"], "IPv6": ["2001:db8::1", "2001:db8::2"]}
    (ep,) = by_kind(out.objects, "Endpoints")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == [
        "192.0.2.9", "192.0.2.10", "2001:db8::1", "2001:db8::2"]


def test_250_backends_make_three_slices() -> None:
    spec = simple_spec("big", [f"198.51.100.{i}" for i in range(1, 251)])
    slices = by_kind(render(spec, SETTINGS).objects, "EndpointSlice")
    assert [len(s["endpoints"]) for s in slices] == [100, 100, 50]
    assert len({s["metadata"]["name"] for s in slices}) == 3
    flat = [a for s in slices for a in slice_addresses(s)]
    assert flat == [f"198.51.100.{i}" for i in range(1, 251)]


@pytest.mark.parametrize(("write_slices", "write_endpoints", "kinds", "skip_mirror"), [
    (True, True, ["Service", "EndpointSlice", "Endpoints"], True),
    (True, False, ["Service", "EndpointSlice"], None),
    (False, True, ["Service", "Endpoints"], False),
])
def test_write_selection(write_slices: bool, write_endpoints: bool, kinds: list[str],
                         skip_mirror: bool | None) -> None:
    settings = RenderSettings(write_slices=write_slices, write_endpoints=write_endpoints)
    out = render(simple_spec("db", ["192.0.2.1"]), settings)
    assert [o["kind"] for o in out.objects] == kinds
    for ep in by_kind(out.objects, "Endpoints"):
        has = "endpointslice.kubernetes.io/skip-mirror" in ep["metadata"]["labels"]
        assert has is skip_mirror


def test_not_ready_backends() -> None:
    spec = ServiceSpec("db", (ServicePort("db", 5432),),
                       (Backend("192.0.2.1"), Backend("192.0.2.2", ready=False)),
                       namespace="external", source="s")
    out = render(spec, SETTINGS)
    (sl,) = by_kind(out.objects, "EndpointSlice")
    assert [e["conditions"]["ready"] for e in sl["endpoints"]] == [True, False]
    (ep,) = by_kind(out.objects, "Endpoints")
    assert ep["subsets"] == [{"addresses": [{"ip": "192.0.2.1"}],
                              "notReadyAddresses": [{"ip": "192.0.2.2"}],
                              "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]


def test_duplicate_address_is_one_endpoint_and_ready_wins() -> None:
    spec = ServiceSpec("db", (ServicePort("db", 5432),),
                       (Backend("192.0.2.1", ready=False), Backend("192.0.2.1")),
                       namespace="external", source="s")
    (sl,) = by_kind(render(spec, SETTINGS).objects, "EndpointSlice")
    assert sl["endpoints"] == [{"addresses": ["192.0.2.1"], "conditions": {"ready": True}}]


def test_headless_and_external_name() -> None:
    headless = ServiceSpec("h", HTTP, (Backend("192.0.2.1"),), namespace="n", type="Headless")
    assert render(headless, SETTINGS).objects[0]["spec"]["clusterIP"] == "None"
    ext = ServiceSpec("db", (ServicePort("pg", 5432),), namespace="n", type="ExternalName",
                      external_name="db.example.com")
    out = render(ext, SETTINGS)
    assert [o["kind"] for o in out.objects] == ["Service"]
    assert out.objects[0]["spec"]["type"] == "ExternalName"
    assert out.objects[0]["spec"]["externalName"] == "db.example.com"


def test_backend_without_ports_uses_service_ports_and_zone_hostname() -> None:
    spec = ServiceSpec("db", (ServicePort("pg", 5432, app_protocol="postgresql"),),
                       (Backend("192.0.2.1", zone="eu-west-1a", hostname="db-1"),),
                       namespace="n", source="s")
    out = render(spec, SETTINGS)
    (sl,) = by_kind(out.objects, "EndpointSlice")
    assert sl["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP",
                            "appProtocol": "postgresql"}]
    assert sl["endpoints"][0]["zone"] == "eu-west-1a"
    assert sl["endpoints"][0]["hostname"] == "db-1"
    assert out.objects[0]["spec"]["ports"][0]["appProtocol"] == "postgresql"
