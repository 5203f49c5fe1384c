"""The test server's watch, through the official client's `watch.Watch().stream(...)` over
real HTTP (plain HTTP where the client hides what is on the wire), against what
kube-apiserver's watch cache does."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import KubeApiServer
from tests.kubeapi.rbac import Rule

LABELS = {"app.kubernetes.io/managed-by": "endpoints-sync"}
SELECTOR = "app.kubernetes.io/managed-by=endpoints-sync"
Event = dict[str, Any]


@pytest.fixture(autouse=True)
def _as_cluster_admin(kube: KubeApiServer) -> None:
    """The server's watch itself, not the syncer's role (tested at the end)."""
    kube.enforce_rbac(None)


@pytest.fixture
def core(kubeconfig: Path) -> Iterator[Any]:
    load: Callable[..., Any] = config.new_client_from_config  # the loader is untyped
    with load(config_file=str(kubeconfig)) as api_client:
        yield client.CoreV1Api(api_client)


def service(name: str, namespace: str = "external", labels: dict[str, str] | None = None,
            port: int = 80) -> dict[str, Any]:
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"ports": [{"port": port}]}}


def collect(method: Callable[..., Any], *args: Any, until: int, timeout: float = 5,
            **kwargs: Any) -> list[Event]:
    """The first `until` events of a watch (type and raw object), or all within `timeout`."""
    events: list[Event] = []
    w: Any = watch.Watch()  # type: ignore[no-untyped-call]
    for event in w.stream(method, *args, timeout_seconds=max(1, round(timeout)), **kwargs):
        events.append({"type": event["type"], "object": event["raw_object"]})
        if len(events) >= until:
            w.stop()
    return events


def later(seconds: float, *actions: Callable[[], object]) -> threading.Thread:
    """Run the actions in a thread after a pause (while the test reads a watch)."""
    def run() -> None:
        time.sleep(seconds)
        for action in actions:
            action()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def names(events: list[Event]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def raw_watch(kube: KubeApiServer, path: str) -> tuple[int, list[Event]]:
    with urllib.request.urlopen(f"{kube.url}{path}", timeout=5) as response:
        return response.status, [json.loads(line) for line in response if line.strip()]


def test_watch_from_a_list_sees_create_update_delete_in_order(kube: KubeApiServer,
                                                              core: Any) -> None:
    start = core.list_namespaced_service("external").metadata.resource_version
    writer = later(0.2, lambda: core.create_namespaced_service("external", service("web")),
                   lambda: core.patch_namespaced_service("web", "external",
                                                         {"metadata": {"labels": {"a": "b"}}}),
                   lambda: core.delete_namespaced_service("web", "external"))
    events = collect(core.list_namespaced_service, "external", resource_version=start,
                     until=3)
    writer.join()
    assert names(events) == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]
    added, modified, deleted = (e["object"] for e in events)
    assert added["kind"] == "Service" and added["apiVersion"] == "v1"
    assert modified["metadata"]["labels"] == {"a": "b"}
    # DELETED carries the last state at the deletion's own resourceVersion
    assert deleted["metadata"]["labels"] == {"a": "b"}
    assert rv(added) < rv(modified) < rv(deleted) == int(kube.store.resource_version())


@pytest.mark.parametrize("start", [None, "0"])
def test_watch_without_a_version_starts_with_synthetic_added_events(
        kube: KubeApiServer, core: Any, start: str | None) -> None:
    kube.put_object(service("a"))
    kube.put_object(service("b"))
    kube.put_object(service("elsewhere", "storage"))
    writer = later(0.2, lambda: kube.put_object(service("c")))
    kwargs: dict[str, Any] = {} if start is None else {"resource_version": start}
    events = collect(core.list_namespaced_service, "external", until=3, **kwargs)
    writer.join()
    assert names(events) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_a_label_selector_turns_matching_and_unmatching_into_added_and_deleted(
        kube: KubeApiServer, core: Any) -> None:
    kube.put_object(service("other"))
    start = kube.store.resource_version()
    writer = later(0.2,
                   lambda: kube.put_object(service("other", port=81)),  # never matches
                   lambda: kube.put_object(service("web", labels=LABELS)),
                   lambda: kube.put_object(service("web", labels=LABELS, port=81)),
                   lambda: kube.put_object(service("web")),  # label removed
                   lambda: kube.put_object(service("other", labels=LABELS)))  # label added
    events = collect(core.list_namespaced_service, "external", resource_version=start,
                     label_selector=SELECTOR, until=4)
    writer.join()
    assert names(events) == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web"),
                             ("ADDED", "other")]
    # Stopping to match is a DELETED with the content that matched, at the change's version
    gone = events[2]["object"]
    assert gone["metadata"]["labels"] == LABELS
    assert gone["spec"]["ports"][0]["port"] == 81
    assert rv(gone) == rv(kube.get_object("Service", "external", "web") or {})


def test_a_namespace_watch_sees_its_namespace_and_a_cluster_watch_sees_all(
        kube: KubeApiServer, core: Any) -> None:
    start = kube.store.resource_version()
    writer = later(0.2, lambda: kube.put_object(service("s", "storage")),
                   lambda: kube.put_object(service("e", "external")))
    everywhere = collect(core.list_service_for_all_namespaces, resource_version=start,
                         until=2)
    writer.join()
    one = collect(core.list_namespaced_service, "external", resource_version=start, until=1)
    assert names(everywhere) == [("ADDED", "s"), ("ADDED", "e")]
    assert names(one) == [("ADDED", "e")]


def test_bookmarks_carry_only_the_version_and_come_only_when_allowed(
        kube: KubeApiServer, core: Any) -> None:
    kube.bookmark_interval = 0.1
    start = kube.store.resource_version()
    kube.put_object(service("unrelated", "storage"))  # moves the version, no event here
    events = collect(core.list_namespaced_service, "external", resource_version=start,
                     allow_watch_bookmarks=True, until=2)
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert events[0]["object"] == {"kind": "Service", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": kube.store.resource_version()}}
    started = time.monotonic()
    assert collect(core.list_namespaced_service, "external", resource_version=start,
                   until=1, timeout=1) == []
    assert 0.9 < time.monotonic() - started < 3  # timeoutSeconds ended it, bookmark-free


def test_timeout_seconds_ends_the_stream_with_a_bookmark_two_seconds_before(
        kube: KubeApiServer) -> None:
    started = time.monotonic()
    status, events = raw_watch(kube, "/api/v1/namespaces/external/services?watch=true"
                               "&allowWatchBookmarks=true&timeoutSeconds=3")
    took = time.monotonic() - started
    assert status == 200 and 2.9 < took < 4.5
    assert [e["type"] for e in events] == ["BOOKMARK"]  # the default interval is a minute


def test_a_version_older_than_the_history_is_an_expired_error_event(
        core: Any, tmp_path: Path) -> None:
    with KubeApiServer(["external"], watch_history=2) as small:
        for port in (80, 81, 82):
            small.put_object(service("web", port=port))
        status, events = raw_watch(small, "/api/v1/namespaces/external/services?watch=true"
                                   "&resourceVersion=1")
        assert status == 200  # as kube-apiserver: the error comes as the stream's only event
        assert events == [{"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410}}]
        # the last two changes are kept: a watch from just before them is served
        _, events = raw_watch(small, "/api/v1/namespaces/external/services?watch=true"
                              "&resourceVersion=2&timeoutSeconds=1")
        assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
        # the official client turns the ERROR event into ApiException 410
        load: Callable[..., Any] = config.new_client_from_config
        kc = small.write_kubeconfig(tmp_path / "kc")
        with load(config_file=str(kc)) as api_client, pytest.raises(ApiException) as raised:
            collect(client.CoreV1Api(api_client).list_namespaced_service, "external",
                    resource_version="1", until=1)
        assert raised.value.status == 410 and "Expired" in str(raised.value.reason)


def test_compaction_expires_new_watches_from_before_it_but_not_open_ones(
        kube: KubeApiServer, core: Any) -> None:
    start = kube.store.resource_version()
    writer = later(0.3, lambda: kube.put_object(service("before")), kube.compact,
                   lambda: kube.put_object(service("after")))
    events = collect(core.list_namespaced_service, "external", resource_version=start,
                     until=2)
    writer.join()
    assert names(events) == [("ADDED", "before"), ("ADDED", "after")]
    _, expired = raw_watch(kube, "/api/v1/namespaces/external/services?watch=true"
                           f"&resourceVersion={start}")
    assert [(e["type"], e["object"]["code"]) for e in expired] == [("ERROR", 410)]


def test_bad_and_future_versions(kube: KubeApiServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as bad:
        raw_watch(kube, "/api/v1/services?watch=true&resourceVersion=abc")
    assert bad.value.code == 400
    _, events = raw_watch(kube, "/api/v1/services?watch=true&resourceVersion=999999")
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 504)]
    assert "Too large resource version" in events[0]["object"]["message"]


def test_a_watch_of_one_object_by_its_path(kube: KubeApiServer) -> None:
    start = kube.store.resource_version()
    kube.put_object(service("web"))
    kube.put_object(service("api"))
    _, events = raw_watch(kube, "/api/v1/namespaces/external/services/web?watch=true"
                          f"&resourceVersion={start}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "web")]


def test_endpointslices_and_endpoints_stream_too(kube: KubeApiServer, kubeconfig: Path) -> None:
    load: Callable[..., Any] = config.new_client_from_config
    start = kube.store.resource_version()
    kube.put_object({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                     "metadata": {"name": "web-1", "namespace": "external", "labels": LABELS},
                     "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}]})
    kube.put_object({"kind": "Endpoints", "apiVersion": "v1",
                     "metadata": {"name": "web", "namespace": "external", "labels": LABELS},
                     "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]})
    with load(config_file=str(kubeconfig)) as api_client:
        slices = collect(client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces,
                         resource_version=start, label_selector=SELECTOR, until=1)
        endpoints = collect(client.CoreV1Api(api_client).list_namespaced_endpoints, "external",
                            resource_version=start, label_selector=SELECTOR, until=1)
    assert names(slices) == [("ADDED", "web-1")] and names(endpoints) == [("ADDED", "web")]
    assert slices[0]["object"]["apiVersion"] == "discovery.k8s.io/v1"


def test_stop_ends_open_watches_at_once(kube: KubeApiServer, core: Any) -> None:
    done = threading.Event()
    seen: list[BaseException] = []

    def read() -> None:
        try:
            collect(core.list_namespaced_service, "external", until=1, timeout=30)
        except Exception as e:  # the connection goes away under the client
            seen.append(e)
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    while not [r for r in kube.requests if "watch=true" in r.query]:
        time.sleep(0.01)
    started = time.monotonic()
    kube.stop()
    assert done.wait(2)
    assert time.monotonic() - started < 1.5
    reader.join()


def test_a_watch_is_counted_and_authorized_as_the_watch_verb(kube: KubeApiServer) -> None:
    raw_watch(kube, "/api/v1/services?watch=true&timeoutSeconds=1")
    assert kube.counts_by_verb().get("WATCH") == 1
    kube.enforce_rbac([Rule(("",), ("services",), ("get", "list"))])
    with pytest.raises(urllib.error.HTTPError) as refused:
        raw_watch(kube, "/api/v1/services?watch=true&timeoutSeconds=1")
    assert refused.value.code == 403
    assert 'cannot watch resource "services"' in json.loads(refused.value.read())["message"]
    kube.enforce_rbac([Rule(("",), ("services",), ("watch",))])
    assert raw_watch(kube, "/api/v1/services?watch=true&timeoutSeconds=1")[0] == 200


def test_discovery_advertises_watch(core: Any) -> None:
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert "watch" in resources["services"].verbs and "watch" in resources["endpoints"].verbs
