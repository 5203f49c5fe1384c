"""The Kubernetes API test server measured against a real kube-apiserver: every request shape
the syncer sends goes to both, raw over HTTP with a token, and the answers must agree on
status code, reason and the body fields the syncer (or a user reading its message) relies on:
Status.reason, details.kind/name and the causes' field paths."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3

from tests.kubeapi import KubeApiServer
from tests.realapi import RealApiServer, object_path

JSON = dict[str, Any]
NS = f"diff-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Side:
    name: str
    url: str
    token: str
    pool: urllib3.PoolManager

    def send(self, method: str, path: str, body: JSON | None = None) -> tuple[int, JSON]:
        answer = self.pool.request(
            method, self.url + path, body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     "Content-Type": "application/json"}, timeout=10.0, retries=False)
        return answer.status, json.loads(answer.data) if answer.data else {}


@pytest.fixture(scope="module")
def sides(real_apiserver: RealApiServer) -> Iterator[tuple[Side, Side]]:
    real_apiserver.json("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    real = Side("real", real_apiserver.url, real_apiserver.tokens["admin"],
                urllib3.PoolManager(ca_certs=str(real_apiserver.ca_file)))
    with KubeApiServer((NS,)) as server:
        yield Side("testserver", server.url, "test-token", urllib3.PoolManager()), real


Answer = tuple[int, str, str, str, tuple[str, ...]]


def essence(status: int, body: JSON) -> Answer:
    """What must agree: code, Status.reason, details.kind and name, the causes' fields."""
    if body.get("kind") != "Status":
        return status, "", "", "", ()
    details = body.get("details") or {}
    fields = tuple(sorted({c["field"] for c in details.get("causes") or [] if c.get("field")}))
    return (status, body.get("reason", ""), details.get("kind", ""), details.get("name", ""),
            fields)


def both(sides: tuple[Side, Side], act: Callable[[Side], tuple[int, JSON]]) -> Answer:
    test, real = (essence(*act(side)) for side in sides)
    assert test == real, f"test server {test} != real {real}"
    return real


def service(name: str, labels: dict[str, str] | None = None, port: int = 80) -> JSON:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"ports": [{"name": "http", "port": port}]}}


def endpoint_slice(name: str, address: str, port: int = 8080) -> JSON:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6" if ":" in address else "IPv4",
            "endpoints": [{"addresses": [address]}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


def endpoints(name: str, address: str, port: int = 8080) -> JSON:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": NS},
            "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "http",
                                                                     "port": port}]}]}


def create(obj: JSON) -> Callable[[Side], tuple[int, JSON]]:
    return lambda side: side.send("POST", object_path(obj["kind"], NS), obj)


def test_list_with_a_label_selector_pages_alike(sides: tuple[Side, Side]) -> None:
    for side in sides:
        for i in range(3):
            side.send("POST", object_path("Service", NS), service(f"paged-{i}", {"set": "p"}))
        side.send("POST", object_path("Service", NS), service("unlabelled"))
    pages: dict[str, list[list[str]]] = {}
    for side in sides:
        names, token = [], ""
        while True:
            query = "?labelSelector=set%3Dp&limit=2" + (f"&continue={token}" if token else "")
            status, body = side.send("GET", object_path("Service", NS) + query)
            assert status == 200 and body["kind"] == "ServiceList", (side.name, body)
            names.append([i["metadata"]["name"] for i in body["items"]])
            token = body["metadata"].get("continue", "")
            if not token:
                break
        pages[side.name] = names
    assert pages["testserver"] == pages["real"] == [["paged-0", "paged-1"], ["paged-2"]]
    # All namespaces, as the syncer lists without `namespaces:` in its config.
    for side in sides:
        status, body = side.send("GET", "/api/v1/services?labelSelector=set%3Dp&limit=500")
        assert status == 200 and len(body["items"]) == 3, side.name


def test_get_and_a_missing_object(sides: tuple[Side, Side]) -> None:
    both(sides, create(service("got")))
    assert both(sides, lambda s: s.send("GET", object_path("Service", NS, "got")))[0] == 200
    assert both(sides, lambda s: s.send("GET", object_path("Service", NS, "nope"))) == (
        404, "NotFound", "services", "nope", ())
    assert both(sides, lambda s: s.send("GET", object_path("EndpointSlice", NS, "nope"))) == (
        404, "NotFound", "endpointslices", "nope", ())  # the group is in details.group


def test_create_twice_is_already_exists(sides: tuple[Side, Side]) -> None:
    assert both(sides, create(service("twice")))[0] == 201
    assert both(sides, create(service("twice"))) == (
        409, "AlreadyExists", "services", "twice", ())


def test_replace_with_a_stale_resource_version_is_a_conflict(sides: tuple[Side, Side]) -> None:
    def stale_replace(side: Side) -> tuple[int, JSON]:
        path = object_path("Endpoints", NS, "stale")
        side.send("POST", object_path("Endpoints", NS), endpoints("stale", "192.0.2.1"))
        _, read = side.send("GET", path)
        fresh = {**read, "metadata": {**read["metadata"], "annotations": {"x": "1"}}}
        assert side.send("PUT", path, fresh)[0] == 200, side.name
        return side.send("PUT", path, read)  # read's resourceVersion is now stale

    assert both(sides, stale_replace) == (409, "Conflict", "endpoints", "stale", ())


def test_delete_with_a_resource_version_precondition(sides: tuple[Side, Side]) -> None:
    def delete(version: Callable[[str], str]) -> Callable[[Side], tuple[int, JSON]]:
        def act(side: Side) -> tuple[int, JSON]:
            path = object_path("EndpointSlice", NS, "pre")
            _, read = side.send("GET", path)
            return side.send("DELETE", path, {"preconditions": {
                "resourceVersion": version(read["metadata"]["resourceVersion"])}})
        return act

    both(sides, create(endpoint_slice("pre", "192.0.2.2")))
    # Unlike an update's 409 (details.kind "endpoints"), a delete's names the Kind.
    assert both(sides, delete(lambda rv: str(int(rv) + 1000))) == (
        409, "Conflict", "EndpointSlice", "pre", ())
    assert both(sides, delete(lambda rv: rv))[0] == 200
    assert both(sides, lambda s: s.send("GET", object_path("EndpointSlice", NS, "pre")))[0] \
        == 404


LONG = "x" * 64
REFUSED = {
    "slice-loopback": (endpoint_slice("slice-loopback", "127.0.0.1"),
                       "EndpointSlice", ("endpoints[0].addresses[0]",)),
    "slice-link-local": (endpoint_slice("slice-link-local", "169.254.1.1"),
                         "EndpointSlice", ("endpoints[0].addresses[0]",)),
    "slice-v6-loopback": (endpoint_slice("slice-v6-loopback", "::1"),
                          "EndpointSlice", ("endpoints[0].addresses[0]",)),
    "endpoints-loopback": (endpoints("endpoints-loopback", "127.0.0.1"),
                           "Endpoints", ("subsets[0].addresses[0].ip",)),
    "endpoints-link-local": (endpoints("endpoints-link-local", "fe80::1"),
                             "Endpoints", ("subsets[0].addresses[0].ip",)),
    "endpoints-bad-port": (endpoints("endpoints-bad-port", "192.0.2.4", port=0),
                           "Endpoints", ("subsets[0].ports[0].port",)),
    # targetPort defaults to port before validation, so it is invalid too.
    "service-bad-port": (service("service-bad-port", port=70000),
                         "Service", ("spec.ports[0].port", "spec.ports[0].targetPort")),
    "service-long-name": (service(LONG), "Service", ("metadata.name",)),
    "service-bad-label": (service("service-bad-label", {"app": "not ok!"}),
                          "Service", ("metadata.labels",)),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_creates_the_api_refuses(sides: tuple[Side, Side], case: str) -> None:
    obj, kind, fields = REFUSED[case]
    assert both(sides, create(obj)) == (422, "Invalid", kind, obj["metadata"]["name"], fields)


@pytest.mark.parametrize("port", [70000, 0, -1])
def test_a_slice_port_out_of_range_is_stored(sides: tuple[Side, Side], port: int) -> None:
    """kube-apiserver 1.32 does not range-check EndpointSlice ports (Endpoints and Services
    it does): the API will not catch a bad port in a slice, so the syncer must
    (syncer/apirules.py)."""
    name = f"slice-port-{port}".replace("-1", "minus-1")
    assert both(sides, create(endpoint_slice(name, "192.0.2.3", port=port)))[0] == 201


def test_deleting_a_service_deletes_its_endpoints(sides: tuple[Side, Side]) -> None:
    """The real API server deletes a Service's same-named Endpoints with it (not its
    EndpointSlices: that is a controller's job, and none runs): the syncer's own delete of
    that Endpoints may find it gone."""
    both(sides, create(service("paired")))
    both(sides, create(endpoints("paired", "192.0.2.5")))
    both(sides, create(endpoint_slice("paired-x", "192.0.2.5")))
    assert both(sides, lambda s: s.send("DELETE", object_path("Service", NS, "paired")))[0] \
        == 200
    assert both(sides, lambda s: s.send("GET", object_path("Endpoints", NS, "paired")))[0] \
        == 404
    assert both(sides, lambda s: s.send("GET", object_path("EndpointSlice", NS,
                                                           "paired-x")))[0] == 200
