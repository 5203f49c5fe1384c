"""syncer.kubewatch.watch_owned against the Kubernetes API test server over HTTP: the events
of owned objects (and no others), resuming after bookmarks, 410 Expired, restarts and
dropped connections, a prompt stop, and namespace scope."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

from syncer.errors import KubeError
from syncer.kube import connect
from syncer.kubewatch import KINDS, WatchEvent, watch_owned
from syncer.ownership import owner_selector, ownership_labels
from tests.cli import exited, run_sync
from tests.kubeapi import KubeApiServer
from tests.kubeapi.rbac import Rule
from tests.kubeapi.resources import by_kind

OWNER = "o"
OWNED = ownership_labels(OWNER)
HANG_GUARD = 10.0  # seconds: a bound against hanging, not a performance figure


def service(name: str, namespace: str = "external", labels: dict[str, str] | None = None,
            port: int = 80) -> dict[str, Any]:
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": OWNED if labels is None else labels},
            "spec": {"ports": [{"port": port}]}}


def open_watches(kube: KubeApiServer) -> list[dict[str, str]]:
    """The queries of the watches the server answered, oldest first."""
    return [{k: v[-1] for k, v in parse_qs(r.query).items()} | {"path": r.path}
            for r in kube.requests if "watch=true" in r.query and r.status == 200]


def wait_until(condition: Any, what: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Watching:
    """watch_owned in a thread, its events in a queue; `with` waits until every stream is
    open, and at the end checks that stop returned promptly and nothing was raised."""

    def __init__(self, kube: KubeApiServer, kubeconfig: Path,
                 namespaces: list[str] | None = None, on_event: Any = None) -> None:
        self.kube = kube
        self.events: queue.Queue[WatchEvent] = queue.Queue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.streams = len(KINDS) * len(namespaces or [None])
        self._args = (connect(str(kubeconfig)), owner_selector(OWNER), namespaces,
                      on_event or self.events.put, self.stop)
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            watch_owned(*self._args)
        except BaseException as e:
            self.error = e

    def __enter__(self) -> Watching:
        already = len(open_watches(self.kube))
        self._thread.start()
        wait_until(lambda: len(open_watches(self.kube)) >= already + self.streams,
                   "the watches to open")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        took = self.close()
        if exc_type is None:
            assert self.error is None, self.error
            assert took < 1.5, f"stop took {took:.2f} s"

    def close(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self._thread.join(HANG_GUARD)
        assert not self._thread.is_alive()
        return time.monotonic() - started

    def next(self, timeout: float = 5) -> WatchEvent:
        return self.events.get(timeout=timeout)

    def seen(self, count: int) -> list[tuple[str, str, str]]:
        """The next `count` events as (type, kind, name)."""
        found: list[tuple[str, str, str]] = []
        for _ in range(count):
            event = self.next()
            obj = event.obj or {}
            found.append((event.type, obj.get("kind", ""),
                          (obj.get("metadata") or {}).get("name", "")))
        return found

    def quiet(self, seconds: float = 0.3) -> None:
        time.sleep(seconds)
        assert self.events.empty(), list(self.events.queue)


def test_a_sync_and_hand_edits_of_owned_objects_are_seen_others_are_not(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"services": [
        {"name": "web", "ports": [{"name": "http", "port": 80}],
         "endpoints": [{"address": "192.0.2.10", "port": 8080}]}]}))
    config = tmp_path / "config.yaml"
    config.write_text(f"owner: {OWNER}\nnamespace: external\n"
                      "sources: [{name: inv, provider: static, path: inventory.yaml}]\n")
    with Watching(kube, kubeconfig) as w:
        exited(run_sync(config, kubeconfig), 0)
        created = sorted(w.seen(3))
        assert [(t, k) for t, k, _ in created] == [
            ("ADDED", "EndpointSlice"), ("ADDED", "Endpoints"), ("ADDED", "Service")]
        kube.put_object(service("unowned", labels={}))
        kube.put_object(service("theirs", labels=ownership_labels("someone-else")))
        w.quiet()
        (slice_name,) = [n for _, k, n in created if k == "EndpointSlice"]
        obj = kube.get_object("EndpointSlice", "external", slice_name)
        assert obj is not None
        obj["endpoints"] = []
        kube.put_object(obj)
        assert w.seen(1) == [("MODIFIED", "EndpointSlice", slice_name)]
        kube.store.delete(by_kind("Endpoints"), "external", "web")
        assert w.seen(1) == [("DELETED", "Endpoints", "web")]
        # Someone removes our labels: for us it is gone (the server sends DELETED)
        svc = kube.get_object("Service", "external", "web")
        assert svc is not None
        svc["metadata"]["labels"] = {}
        kube.put_object(svc)
        assert w.seen(1) == [("DELETED", "Service", "web")]


def test_bookmarks_move_the_resume_point_so_a_compaction_costs_no_relist(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.bookmark_interval = 0.1
    with Watching(kube, kubeconfig) as w:
        kube.put_object(service("unowned", labels={}))  # moves the version, no event for us
        time.sleep(0.3)  # a few bookmarks
        version = kube.store.resource_version()
        kube.compact()
        before = len(open_watches(kube))
        kube.end_watches()
        wait_until(lambda: len(open_watches(kube)) >= before + len(KINDS), "the re-watches")
        resumed = open_watches(kube)[before:]
        assert {q["resourceVersion"] for q in resumed} == {version}
        assert all(q["allowWatchBookmarks"] == "true" for q in resumed)
        kube.put_object(service("web"))
        assert w.seen(1) == [("ADDED", "Service", "web")]  # not RELISTED


def test_an_expired_version_relists_once_per_kind_and_resumes(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    with Watching(kube, kubeconfig) as w:
        kube.put_object(service("web"))
        assert w.seen(1) == [("ADDED", "Service", "web")]
        kube.put_object(service("unowned", labels={}))
        kube.compact()  # no bookmark has come (a minute apart): every stream is behind
        lists = kube.counts_by_verb()["LIST"]
        kube.end_watches()
        relisted = [w.next() for _ in KINDS]
        assert [e.type for e in relisted] == ["RELISTED"] * len(KINDS)
        assert all(e.obj is None for e in relisted)
        assert kube.counts_by_verb()["LIST"] == lists + len(KINDS)
        kube.put_object(service("web", port=81))
        assert w.seen(1) == [("MODIFIED", "Service", "web")]
        w.quiet()


def test_a_restarted_api_server_is_watched_again_from_where_it_was(
        kube: KubeApiServer, kubeconfig: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Watching(kube, kubeconfig) as w:
        kube.put_object(service("web"))
        assert w.seen(1) == [("ADDED", "Service", "web")]
        port = kube.port
        kube.stop()
        kube.put_object(service("web", port=81))  # while it is down: kept in its history
        time.sleep(0.3)
        kube.start(port)
        assert w.seen(1) == [("MODIFIED", "Service", "web")]  # resumed, no RELISTED
        w.quiet()
    assert "watching again in" in caplog.text


@pytest.mark.slow  # the backoff: 1 s, then 2 s
def test_a_dropped_or_refused_watch_backs_off_and_resumes(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    with Watching(kube, kubeconfig) as w:
        before = len(open_watches(kube))
        kube.inject_fault("GET", r"/api/v1/services$", drop=True)
        kube.inject_fault("GET", r"/api/v1/services$", status=503)
        kube.end_watches()
        kube.put_object(service("web"))
        assert w.seen(1) == [("ADDED", "Service", "web")]
        assert kube.faults.pending() == 0
        assert len(open_watches(kube)) >= before + len(KINDS)
        w.quiet()


def test_stop_returns_at_once_even_while_a_request_hangs_or_backs_off(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    with Watching(kube, kubeconfig) as w:
        pass  # __exit__ asserts the prompt return with open streams
    kube.inject_fault("GET", r"/services", delay=5, times=10)  # LIST and watch both hang
    w = Watching(kube, kubeconfig)
    w._thread.start()
    time.sleep(0.3)
    assert w.close() < 1.5
    assert w.error is None
    kube.clear_faults()
    port = kube.port
    kube.stop()
    w = Watching(kube, kubeconfig)
    w._thread.start()
    time.sleep(1.5)  # in its backoff after connection refused
    assert w.close() < 1.5
    kube.start(port)


def test_with_namespaces_it_watches_each_and_sees_nothing_elsewhere(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    with Watching(kube, kubeconfig, namespaces=["storage", "external"]) as w:
        paths = {q["path"] for q in open_watches(kube)}
        assert paths == {f"/api/v1/namespaces/{ns}/{plural}" for ns in ("storage", "external")
                         for plural in ("services", "endpoints")} | {
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
            for ns in ("storage", "external")}
        kube.put_object(service("elsewhere", "default"))
        kube.put_object(service("web", "storage"))
        assert w.seen(1) == [("ADDED", "Service", "web")]
        w.quiet()


def test_without_the_watch_verb_it_raises_naming_the_rule(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.enforce_rbac([Rule(("", "discovery.k8s.io"),
                            ("services", "endpoints", "endpointslices"), ("list",))])
    stop = threading.Event()
    started = time.monotonic()
    with pytest.raises(KubeError) as raised:
        watch_owned(connect(str(kubeconfig)), owner_selector(OWNER), None, lambda e: None,
                    stop)
    assert time.monotonic() - started < HANG_GUARD
    assert raised.value.status == 403
    assert "needs `watch` on" in str(raised.value) and "deploy/rbac.yaml" in str(raised.value)


def test_a_failing_consumer_ends_the_watch_with_its_error(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    def broken(event: WatchEvent) -> None:
        raise RuntimeError("consumer bug")

    w = Watching(kube, kubeconfig, on_event=broken)
    w._thread.start()
    wait_until(lambda: len(open_watches(kube)) >= len(KINDS), "the watches to open")
    kube.put_object(service("web"))
    w._thread.join(HANG_GUARD)
    assert isinstance(w.error, RuntimeError) and str(w.error) == "consumer bug"
    w.stop.set()
