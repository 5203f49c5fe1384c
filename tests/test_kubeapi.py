"""The Kubernetes API test server, driven through real clients: the official Python
client over a kubeconfig, kubectl, and plain HTTP where a client cannot say it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import KubeApiServer, RecordedRequest

REPO = Path(__file__).resolve().parent.parent
MANAGED = {"app.kubernetes.io/managed-by": "endpoints-sync"}


# -- helpers -------------------------------------------------------------------------------



@pytest.fixture(autouse=True)
def _as_cluster_admin(kube: KubeApiServer) -> None:
    """These tests exercise the server's whole API (patch, namespaces, delete collection),
    not the syncer's role: no RBAC."""
    kube.enforce_rbac(None)


def make_client(kubeconfig: Path, *, retries: bool | None = None) -> Any:
    """An ApiClient from the kubeconfig; retries=False turns off urllib3's own retries."""
    configuration = client.Configuration()
    if retries is not None:
        configuration.retries = retries
    load: Callable[..., Any] = config.new_client_from_config  # the loader is untyped
    return load(config_file=str(kubeconfig), client_configuration=configuration)


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[Any]:
    with make_client(kubeconfig) as api_client:
        yield api_client


@pytest.fixture
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


@pytest.fixture
def discovery(api: Any) -> Any:
    return client.DiscoveryV1Api(api)


def service(name: str, *ports: int, labels: dict[str, str] | None = None) -> Any:
    named = len(ports) > 1
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1ServiceSpec(ports=[
            client.V1ServicePort(name=f"p{port}" if named else None, port=port)
            for port in ports or (80,)
        ]),
    )


def endpoints(name: str, *ips: str, port: int = 8080) -> Any:
    return client.V1Endpoints(
        metadata=client.V1ObjectMeta(name=name),
        subsets=[client.V1EndpointSubset(
            addresses=[client.V1EndpointAddress(ip=ip) for ip in ips],
            ports=[client.CoreV1EndpointPort(port=port)],
        )],
    )


def endpoint_slice(name: str, *addresses: str, address_type: str = "IPv4") -> Any:
    return client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/service-name": "rgw"}),
        address_type=address_type,
        endpoints=[
            client.V1Endpoint(addresses=[a], conditions=client.V1EndpointConditions(ready=True))
            for a in addresses
        ],
        ports=[client.DiscoveryV1EndpointPort(name="http", port=8080)],
    )


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "null")
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return body


# No proxy from the environment: the server is on 127.0.0.1 and so are we.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(kube: KubeApiServer, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """A plain HTTP request, for what no client sends on purpose."""
    request = urllib.request.Request(kube.url + path, data=body or None, method=method,
                                     headers=headers or {})
    try:
        with _OPENER.open(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- discovery -----------------------------------------------------------------------------


def test_discovery_describes_the_served_resources(api: Any, kube: KubeApiServer) -> None:
    assert client.VersionApi(api).get_code().git_version == "v1.32.0"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = client.ApisApi(api).get_api_versions().groups
    assert [g.name for g in groups] == ["discovery.k8s.io", "events.k8s.io"]

    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core["services"].short_names == ["svc"] and core["services"].namespaced
    assert core["endpoints"].short_names == ["ep"] and core["endpoints"].kind == "Endpoints"
    assert core["namespaces"].short_names == ["ns"] and not core["namespaces"].namespaced
    assert "list" in core["services"].verbs and core["services"].singular_name == "service"
    slices = client.DiscoveryV1Api(api).get_api_resources()
    assert slices.group_version == "discovery.k8s.io/v1"
    assert [r.kind for r in slices.resources] == ["EndpointSlice"]

    assert http(kube, "GET", "/openapi/v3")[0] == 404
    status, body = http(kube, "GET", "/api/v1/pods")
    assert (status, body["reason"]) == (404, "NotFound")


# -- CRUD per kind -------------------------------------------------------------------------


def test_service_create_applies_server_defaults(core: Any) -> None:
    created = core.create_namespaced_service("default", service("rgw", 80, 443))
    spec = created.spec
    assert spec.type == "ClusterIP" and spec.cluster_ip.startswith("198.19.")
    assert spec.cluster_ips == [spec.cluster_ip]
    assert spec.ip_families == ["IPv4"] and spec.ip_family_policy == "SingleStack"
    assert spec.session_affinity == "None"
    assert [(p.protocol, p.target_port) for p in spec.ports] == [("TCP", 80), ("TCP", 443)]
    assert created.status.load_balancer is not None
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and int(meta.resource_version) > 0

    second = core.create_namespaced_service("default", service("other"))
    assert second.spec.cluster_ip != spec.cluster_ip
    assert int(second.metadata.resource_version) > int(meta.resource_version)


def test_headless_and_external_name_services_get_no_cluster_ip(core: Any) -> None:
    headless = service("db")
    headless.spec.cluster_ip = "None"
    assert core.create_namespaced_service("default", headless).spec.cluster_ip == "None"
    external = client.V1Service(
        metadata=client.V1ObjectMeta(name="ext"),
        spec=client.V1ServiceSpec(type="ExternalName", external_name="db.example.com"),
    )
    created = core.create_namespaced_service("default", external)
    assert created.spec.cluster_ip is None and created.spec.ip_families is None


def test_service_get_list_replace_patch_delete(core: Any, kube: KubeApiServer) -> None:
    created = core.create_namespaced_service("storage", service("rgw", labels=MANAGED))
    got = core.read_namespaced_service("rgw", "storage")
    assert got.metadata.uid == created.metadata.uid and got.kind == "Service"

    listed = core.list_namespaced_service("storage")
    assert listed.kind == "ServiceList" and [s.metadata.name for s in listed.items] == ["rgw"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    assert core.list_service_for_all_namespaces().items[0].metadata.namespace == "storage"

    got.spec.cluster_ip = None  # omitted on PUT: the server keeps the allocation
    got.spec.cluster_ips = None
    got.spec.ports[0].port = 8080
    replaced = core.replace_namespaced_service("rgw", "storage", got)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip
    assert replaced.spec.ports[0].port == 8080
    assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)

    patched = core.patch_namespaced_service("rgw", "storage", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {**MANAGED, "x": "y"}

    deleted = core.delete_namespaced_service("rgw", "storage")
    assert deleted.metadata.name == "rgw"
    assert kube.get_object("Service", "storage", "rgw") is None
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_service("rgw", "storage")
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'services "rgw" not found'


def test_replace_with_unchanged_object_writes_nothing(core: Any) -> None:
    created = core.create_namespaced_service("default", service("rgw"))
    replaced = core.replace_namespaced_service("rgw", "default", created)
    assert replaced.metadata.resource_version == created.metadata.resource_version


def test_endpoints_get_list_replace_patch_delete(core: Any) -> None:
    created = core.create_namespaced_endpoints("default", endpoints("rgw", "192.0.2.10"))
    assert created.subsets[0].ports[0].protocol == "TCP"
    got = core.read_namespaced_endpoints("rgw", "default")
    assert got.subsets[0].addresses[0].ip == "192.0.2.10"
    got.subsets[0].addresses.append(client.V1EndpointAddress(ip="2001:db8::1"))
    replaced = core.replace_namespaced_endpoints("rgw", "default", got)
    assert [a.ip for a in replaced.subsets[0].addresses] == ["192.0.2.10", "2001:db8::1"]
    patched = core.patch_namespaced_endpoints(
        "rgw", "default", {"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror":
                                                   "true"}}})
    assert patched.metadata.labels == {"endpointslice.kubernetes.io/skip-mirror": "true"}
    listed = core.list_endpoints_for_all_namespaces()
    assert listed.kind == "EndpointsList" and len(listed.items) == 1
    core.delete_namespaced_endpoints("rgw", "default")
    assert core.list_namespaced_endpoints("default").items == []


def test_endpoint_slice_get_list_replace_patch_delete(discovery: Any) -> None:
    created = discovery.create_namespaced_endpoint_slice(
        "default", endpoint_slice("rgw-abc", "192.0.2.1", "192.0.2.2"))
    assert created.metadata.generation == 1 and created.ports[0].protocol == "TCP"
    got = discovery.read_namespaced_endpoint_slice("rgw-abc", "default")
    assert [e.addresses for e in got.endpoints] == [["192.0.2.1"], ["192.0.2.2"]]
    got.endpoints = got.endpoints[:1]
    replaced = discovery.replace_namespaced_endpoint_slice("rgw-abc", "default", got)
    assert replaced.metadata.generation == 2 and len(replaced.endpoints) == 1
    patched = discovery.patch_namespaced_endpoint_slice(
        "rgw-abc", "default", [{"op": "replace", "path": "/endpoints/0/conditions/ready",
                                "value": False}])
    assert patched.endpoints[0].conditions.ready is False
    listed = discovery.list_endpoint_slice_for_all_namespaces()
    assert listed.kind == "EndpointSliceList" and listed.api_version == "discovery.k8s.io/v1"
    discovery.delete_namespaced_endpoint_slice("rgw-abc", "default")
    assert discovery.list_namespaced_endpoint_slice("default").items == []


def test_ipv6_and_fqdn_slices(discovery: Any) -> None:
    six = discovery.create_namespaced_endpoint_slice(
        "default", endpoint_slice("rgw-v6", "2001:db8::1", address_type="IPv6"))
    assert six.endpoints[0].addresses == ["2001:db8::1"]
    fqdn = discovery.create_namespaced_endpoint_slice(
        "default", endpoint_slice("rgw-fqdn", "rgw.example.com", address_type="FQDN"))
    assert fqdn.address_type == "FQDN"


def test_namespace_lifecycle_deletes_contents(core: Any, kube: KubeApiServer) -> None:
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="ns1")))
    assert created.status.phase == "Active"
    assert created.metadata.labels == {"kubernetes.io/metadata.name": "ns1"}
    names = [n.metadata.name for n in core.list_namespace().items]
    assert names == ["default", "external", "ns1", "storage"]
    core.create_namespaced_service("ns1", service("rgw"))
    core.delete_namespace("ns1")
    assert kube.get_object("Namespace", None, "ns1") is None
    assert kube.list_objects("Service") == []


def test_dry_run_and_generate_name(core: Any, kube: KubeApiServer) -> None:
    core.create_namespaced_service("default", service("dry"), dry_run="All")
    assert kube.get_object("Service", "default", "dry") is None
    body = service("")
    body.metadata = client.V1ObjectMeta(generate_name="rgw-")
    created = core.create_namespaced_service("default", body)
    assert created.metadata.name.startswith("rgw-") and len(created.metadata.name) == 9


def test_service_type_change_to_external_name_drops_the_cluster_ip(core: Any) -> None:
    got = core.create_namespaced_service("default", service("rgw"))
    got.spec.type, got.spec.external_name = "ExternalName", "rgw.example.com"
    replaced = core.replace_namespaced_service("rgw", "default", got)
    assert replaced.spec.cluster_ip is None and replaced.spec.ip_families is None
    replaced.spec.type, replaced.spec.external_name = "ClusterIP", None
    assert core.replace_namespaced_service("rgw", "default", replaced).spec.cluster_ip


def test_delete_collection_by_label(core: Any, kube: KubeApiServer) -> None:
    for name, labels in (("a", MANAGED), ("b", MANAGED), ("c", {})):
        kube.put_object({"kind": "Endpoints",
                         "metadata": {"name": name, "namespace": "default", "labels": labels}})
    core.delete_collection_namespaced_endpoints(
        "default", label_selector="app.kubernetes.io/managed-by=endpoints-sync")
    assert [e["metadata"]["name"] for e in kube.list_objects("Endpoints")] == ["c"]


# -- errors --------------------------------------------------------------------------------


def test_create_existing_is_409_already_exists(core: Any) -> None:
    core.create_namespaced_service("default", service("rgw"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", service("rgw"))
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'services "rgw" already exists'
    assert body["details"] == {"name": "rgw", "kind": "services"}


def test_stale_resource_version_is_409_conflict(core: Any, discovery: Any) -> None:
    stale = core.create_namespaced_service("default", service("rgw"))
    core.patch_namespaced_service("rgw", "default", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_service("rgw", "default", stale)
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on services "rgw": the object has been modified; '
        "please apply your changes to the latest version and try again")

    old = discovery.create_namespaced_endpoint_slice("default", endpoint_slice("s", "192.0.2.1"))
    discovery.replace_namespaced_endpoint_slice("s", "default", old)  # a no-op: rv unchanged
    discovery.patch_namespaced_endpoint_slice("s", "default", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as info:
        discovery.patch_namespaced_endpoint_slice(
            "s", "default", {"metadata": {"resourceVersion": old.metadata.resource_version}})
    assert status_of(info.value)["message"].startswith(
        'Operation cannot be fulfilled on endpointslices.discovery.k8s.io "s"')


def test_update_needs_resource_version_and_an_existing_object(core: Any) -> None:
    body = core.create_namespaced_service("default", service("rgw"))
    body.metadata.resource_version = None
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_service("rgw", "default", body)
    assert status_of(info.value)["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "metadata.resourceVersion",
        "message": "Invalid value: 0: must be specified for an update"}]
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_service("missing", "default", service("missing"))
    assert info.value.status == 404


def test_missing_namespace_is_404(core: Any, discovery: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("nope", service("rgw"))
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'namespaces "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "namespaces"}
    with pytest.raises(ApiException) as info:
        discovery.create_namespaced_endpoint_slice("nope", endpoint_slice("s", "192.0.2.1"))
    assert status_of(info.value)["message"] == 'namespaces "nope" not found'


def test_body_namespace_mismatch_is_400(core: Any) -> None:
    body = service("rgw")
    body.metadata.namespace = "storage"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", body)
    assert (info.value.status, status_of(info.value)["reason"]) == (400, "BadRequest")


def test_loopback_address_in_slice_is_422(discovery: Any) -> None:
    with pytest.raises(ApiException) as info:
        discovery.create_namespaced_endpoint_slice(
            "default", endpoint_slice("rgw-x", "192.0.2.1", "127.0.0.1"))
    body = status_of(info.value)
    assert (info.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["kind"] == "EndpointSlice"
    assert body["details"]["group"] == "discovery.k8s.io"
    assert body["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "endpoints[1].addresses[0]",
        "message": 'Invalid value: "127.0.0.1": may not be in the loopback range '
                   "(127.0.0.0/8, ::1/128)"}]
    assert body["message"].startswith('EndpointSlice.discovery.k8s.io "rgw-x" is invalid: ')


def test_loopback_address_in_endpoints_is_422(core: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_endpoints("default", endpoints("rgw", "192.0.2.1", "::1"))
    body = status_of(info.value)
    assert body["message"] == (
        'Endpoints "rgw" is invalid: subsets[0].addresses[1].ip: Invalid value: "::1": '
        "may not be in the loopback range (127.0.0.0/8, ::1/128)")
    assert [c["field"] for c in body["details"]["causes"]] == ["subsets[0].addresses[1].ip"]


@pytest.mark.parametrize(
    ("address", "address_type", "message"),
    [
        ("0.0.0.0", "IPv4", "may not be unspecified (0.0.0.0)"),
        ("::", "IPv6", "may not be unspecified (::)"),
        ("169.254.169.254", "IPv4", "may not be in the link-local range"),
        ("fe80::1", "IPv6", "may not be in the link-local range"),
        ("224.0.0.251", "IPv4", "may not be in the link-local multicast range"),
        ("ff02::1", "IPv6", "may not be in the link-local multicast range"),
        ("2001:DB8::1", "IPv6", 'must be in canonical form ("2001:db8::1")'),
        ("2001:db8::1", "IPv4", "must be a valid IPv4 address"),
        ("not-an-ip", "IPv6", "must be a valid IPv6 address"),
        ("localhost", "FQDN", "should be a domain with at least two segments"),
    ],
)
def test_special_addresses_are_rejected(
    discovery: Any, address: str, address_type: str, message: str
) -> None:
    with pytest.raises(ApiException) as info:
        discovery.create_namespaced_endpoint_slice(
            "default", endpoint_slice("s", address, address_type=address_type))
    [cause] = status_of(info.value)["details"]["causes"]
    assert cause["field"] == "endpoints[0].addresses[0]" and message in cause["message"]


def test_invalid_service_fields_are_422_with_causes(core: Any) -> None:
    body = service("rgw", 0, 70000)
    body.spec.ports[1].name = None
    body.spec.ports[0].protocol = "HTTP"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", body)
    causes = {(c["field"], c["reason"]) for c in status_of(info.value)["details"]["causes"]}
    assert causes == {
        ("spec.ports[0].port", "FieldValueInvalid"),
        ("spec.ports[0].protocol", "FieldValueNotSupported"),
        ("spec.ports[1].name", "FieldValueRequired"),
        ("spec.ports[1].port", "FieldValueInvalid"),
        # targetPort defaults to port, and is checked too, as on a real server
        ("spec.ports[0].targetPort", "FieldValueInvalid"),
        ("spec.ports[1].targetPort", "FieldValueInvalid"),
    }


def test_bad_names_and_labels_are_422(core: Any, discovery: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", service("Bad_Name"))
    [cause] = status_of(info.value)["details"]["causes"]
    assert cause["field"] == "metadata.name"
    assert cause["message"].startswith('Invalid value: "Bad_Name": a DNS-1035 label must')
    with pytest.raises(ApiException):  # a Service name must start with a letter
        core.create_namespaced_service("default", service("1rgw"))
    # ...an EndpointSlice name is a DNS subdomain, which may
    discovery.create_namespaced_endpoint_slice("default", endpoint_slice("1rgw.a", "192.0.2.1"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", service("rgw", labels={"a": "b c"}))
    assert status_of(info.value)["details"]["causes"][0]["field"] == "metadata.labels"


def test_service_type_rules(core: Any) -> None:
    no_target = client.V1Service(metadata=client.V1ObjectMeta(name="ext"),
                                 spec=client.V1ServiceSpec(type="ExternalName"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service("default", no_target)
    assert status_of(info.value)["details"]["causes"][0]["field"] == "spec.externalName"

    created = core.create_namespaced_service("default", service("rgw"))
    created.spec.cluster_ip = created.spec.cluster_ips[0] = "198.19.200.200"
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_service("rgw", "default", created)
    assert status_of(info.value)["details"]["causes"][0] == {
        "reason": "FieldValueInvalid", "field": "spec.clusterIP",
        "message": 'Invalid value: "198.19.200.200": field is immutable'}


def test_protobuf_bodies_are_415(kube: KubeApiServer) -> None:
    status, body = http(kube, "POST", "/api/v1/namespaces/default/services", b"\x6b\x38\x73",
                        {"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_resource_version_on_create_is_500(kube: KubeApiServer) -> None:
    """As on a real server, where storage refuses it without a reason."""
    payload = {"metadata": {"name": "rgw", "resourceVersion": "5"},
               "spec": {"ports": [{"port": 80}]}}
    status, body = http(kube, "POST", "/api/v1/namespaces/default/services",
                        json.dumps(payload).encode())
    assert status == 500 and "reason" not in body
    assert body["message"] == "resourceVersion should not be set on objects to be created"


def test_delete_preconditions(core: Any) -> None:
    core.create_namespaced_service("default", service("rgw"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_service("rgw", "default", body=options)
    assert "the UID in the precondition (other) does not match" in status_of(info.value)[
        "message"]


def test_json_patch_test_failure_is_422(core: Any) -> None:
    core.create_namespaced_service("default", service("rgw"))
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_service(
            "rgw", "default", [{"op": "test", "path": "/spec/type", "value": "NodePort"}])
    assert info.value.status == 422


# -- selectors and pagination --------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["a", "b"]),
        ("tier==web", ["a", "b"]),
        ("tier!=web", ["c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
        ("tier in (web, db)", ["a", "b", "c"]),
        ("tier notin (web)", ["c", "d"]),
        ("tier=web,zone=a", ["a"]),
        ("tier,!zone", ["c"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selectors(
    core: Any, kube: KubeApiServer, selector: str, expected: list[str]
) -> None:
    for name, labels in (("a", {"tier": "web", "zone": "a"}), ("b", {"tier": "web", "zone": "b"}),
                         ("c", {"tier": "db"}), ("d", {"other": "x"})):
        kube.put_object({"kind": "Service", "apiVersion": "v1",
                         "metadata": {"name": name, "namespace": "default", "labels": labels},
                         "spec": {"ports": [{"port": 80}]}})
    listed = core.list_namespaced_service("default", label_selector=selector)
    assert [s.metadata.name for s in listed.items] == expected


def test_bad_selectors_are_400(core: Any) -> None:
    for kwargs in ({"label_selector": "tier in (web"}, {"field_selector": "spec.type=x"}):
        with pytest.raises(ApiException) as info:
            core.list_namespaced_service("default", **kwargs)
        assert (info.value.status, status_of(info.value)["reason"]) == (400, "BadRequest")


def test_field_selectors(core: Any, kube: KubeApiServer) -> None:
    for namespace in ("default", "storage"):
        for name in ("a", "b"):
            kube.put_object({"kind": "Endpoints", "metadata": {"name": name,
                                                                "namespace": namespace}})
    by_name = core.list_endpoints_for_all_namespaces(field_selector="metadata.name=a")
    assert [(e.metadata.namespace, e.metadata.name) for e in by_name.items] == [
        ("default", "a"), ("storage", "a")]
    by_ns = core.list_endpoints_for_all_namespaces(
        field_selector="metadata.namespace!=default,metadata.name==b")
    assert [(e.metadata.namespace, e.metadata.name) for e in by_ns.items] == [("storage", "b")]


def test_pagination_reaches_every_item_once(discovery: Any) -> None:
    for i in range(5):
        discovery.create_namespaced_endpoint_slice(
            "default", endpoint_slice(f"rgw-{i}", f"192.0.2.{i + 1}"))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = discovery.list_namespaced_endpoint_slice("default", limit=2, _continue=token)
        pages += 1
        seen += [s.metadata.name for s in page.items]
        token = page.metadata.var_continue
        if not token:
            assert page.metadata.remaining_item_count is None
            break
        assert page.metadata.remaining_item_count == 5 - len(seen)
        assert len(page.items) == 2
    assert seen == [f"rgw-{i}" for i in range(5)] and pages == 3


# -- faults and request records ------------------------------------------------------------


def test_fault_429_carries_retry_after(kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.inject_fault("GET", r"/services$", status=429, retry_after=7)
    with make_client(kubeconfig, retries=False) as api_client:
        core = client.CoreV1Api(api_client)
        with pytest.raises(ApiException) as info:
            core.list_namespaced_service("default")
        assert info.value.status == 429 and info.value.headers is not None
        assert info.value.headers["Retry-After"] == "7"
        body = status_of(info.value)
        assert body["reason"] == "TooManyRequests"
        assert body["details"] == {"retryAfterSeconds": 7}
        assert core.list_namespaced_service("default").items == []  # used up: times=1


def test_client_retries_429_on_its_own_by_default(api: Any, kube: KubeApiServer) -> None:
    """The official client's urllib3 layer retries a GET answered 429 with Retry-After."""
    kube.inject_fault("GET", r"/services$", status=429, retry_after=0)
    assert client.CoreV1Api(api).list_namespaced_service("default").items == []
    assert [r.status for r in kube.requests_matching("GET", r"/services$")] == [429, 200]


def test_fault_500_hits_only_matching_requests(
    kube: KubeApiServer, kubeconfig: Path
) -> None:
    kube.inject_fault("post", r"/endpoints$", status=500, times=2)
    with make_client(kubeconfig, retries=False) as api_client:
        core = client.CoreV1Api(api_client)
        core.create_namespaced_service("default", service("rgw"))  # not matched
        for _ in range(2):
            with pytest.raises(ApiException) as info:
                core.create_namespaced_endpoints("default", endpoints("rgw", "192.0.2.1"))
            assert status_of(info.value)["reason"] == "InternalError"
        core.create_namespaced_endpoints("default", endpoints("rgw", "192.0.2.1"))
    assert [r.status for r in kube.write_requests()] == [201, 500, 500, 201]


def test_fault_delay_and_drop(kube: KubeApiServer, kubeconfig: Path) -> None:
    with make_client(kubeconfig, retries=False) as api_client:
        core = client.CoreV1Api(api_client)
        kube.inject_fault("GET", "/namespaces/default/services", delay=0.3)
        started = time.monotonic()
        core.list_namespaced_service("default")
        assert time.monotonic() - started >= 0.3

        kube.inject_fault("*", "/services", drop=True)
        with pytest.raises(urllib3.exceptions.HTTPError):
            core.list_namespaced_service("default")
        assert kube.requests[-1] == RecordedRequest(
            "GET", "/api/v1/namespaces/default/services", "", 0)
        core.list_namespaced_service("default")  # a new connection works


def test_requests_are_recorded(core: Any, kube: KubeApiServer) -> None:
    kube.reset_requests()
    core.create_namespaced_service("default", service("rgw"))
    core.read_namespaced_service("rgw", "default")
    core.list_namespaced_service("default", label_selector="a=b", limit=3)
    with pytest.raises(ApiException):
        core.delete_namespaced_service("nope", "default")
    assert kube.requests == [
        RecordedRequest("POST", "/api/v1/namespaces/default/services", "", 201),
        RecordedRequest("GET", "/api/v1/namespaces/default/services/rgw", "", 200),
        RecordedRequest("GET", "/api/v1/namespaces/default/services",
                        "labelSelector=a%3Db&limit=3", 200),
        RecordedRequest("DELETE", "/api/v1/namespaces/default/services/nope", "", 404),
    ]
    assert [r.method for r in kube.write_requests()] == ["POST", "DELETE"]


def test_keep_alive_requests_do_not_stall(core: Any) -> None:
    """TCP_NODELAY: without it each keep-alive request waits ~40 ms for a delayed ACK."""
    core.list_namespaced_service("default")
    started = time.monotonic()
    for i in range(50):
        core.create_namespaced_endpoints("default", endpoints(f"e{i}", "192.0.2.1"))
    assert time.monotonic() - started < 1.0


def test_concurrent_updates_of_one_version_let_exactly_one_win(kube: KubeApiServer) -> None:
    stored = kube.put_object({"kind": "Service", "metadata": {"name": "rgw"},
                              "spec": {"ports": [{"port": 80}]}})

    def replace(i: int) -> int:
        body = {**stored, "metadata": {**stored["metadata"], "labels": {"writer": str(i)}}}
        return http(kube, "PUT", "/api/v1/namespaces/default/services/rgw",
                    json.dumps(body).encode(), {"Content-Type": "application/json"})[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(replace, range(8)))
    assert statuses == [200] + [409] * 7


# -- seeding helpers -----------------------------------------------------------------------


def test_seeding_helpers(kube: KubeApiServer) -> None:
    kube.create_namespace("extra")
    stored = kube.put_object({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                              "metadata": {"name": "s", "namespace": "extra"},
                              "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}],
                              "ports": [{"port": 80}]})
    assert stored["metadata"]["uid"] and stored["ports"][0]["protocol"] == "TCP"
    assert kube.get_object("EndpointSlice", "extra", "s") == stored
    assert kube.list_objects("EndpointSlice") == [stored]
    assert kube.list_objects("Service", "extra") == []
    assert kube.get_object("Namespace", None, "extra") is not None


# -- kubectl and the command line ----------------------------------------------------------


def kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig),
         "--cache-dir", str(kubeconfig.parent / "kubectl-cache"), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubectl_lists_objects_created_by_the_client(
    core: Any, discovery: Any, kubeconfig: Path
) -> None:
    core.create_namespaced_service("storage", service("rgw", 80, 443))
    core.create_namespaced_endpoints("storage", endpoints("rgw", "192.0.2.7"))
    discovery.create_namespaced_endpoint_slice("storage", endpoint_slice("rgw-1", "192.0.2.7"))
    core.create_namespaced_service("external", service("db"))

    listed = json.loads(kubectl(kubeconfig, "get", "svc,endpoints,endpointslices", "-A",
                                "-o", "json"))
    found = {(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"])
             for i in listed["items"]}
    assert found == {("Service", "storage", "rgw"), ("Service", "external", "db"),
                     ("Endpoints", "storage", "rgw"), ("EndpointSlice", "storage", "rgw-1")}

    lines = kubectl(kubeconfig, "get", "svc", "-A").splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                "PORT(S)", "AGE"]
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    assert rows == {("external", "db", "ClusterIP"), ("storage", "rgw", "ClusterIP")}


def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig, pid_file = tmp_path / "kubeconfig", tmp_path / "pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kubeapi", "--kubeconfig", str(kubeconfig),
         "--pid-file", str(pid_file), "--namespace", "default", "--namespace", "demo"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("kube API test server listening on http://127.0.0.1:")
        assert int(pid_file.read_text()) == process.pid
        with make_client(kubeconfig) as api_client:
            listed: Any = client.CoreV1Api(api_client).list_namespace()
        names = [n.metadata.name for n in listed.items]
        assert names == ["default", "demo"]
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert not pid_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_debug_requests_counts_by_verb_and_is_not_counted_itself(kube: KubeApiServer,
                                                                  core: Any) -> None:
    """What `make bench` reads from the server's process: LIST apart from GET."""
    core.list_namespaced_service("default")
    core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                               "spec": {"ports": [{"port": 80}]}})
    core.read_namespaced_service("web", "default")

    def counts() -> dict[str, int]:
        with urllib.request.urlopen(f"{kube.url}/debug/requests", timeout=5) as answer:
            return dict(json.load(answer))

    assert counts() == {"LIST": 1, "POST": 1, "GET": 1}
    assert counts() == {"LIST": 1, "POST": 1, "GET": 1}  # its own requests are not recorded
