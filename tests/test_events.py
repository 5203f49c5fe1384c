"""Kubernetes Events about each Service a run changed, failed or held; and the test server's
events.k8s.io/v1 resource, validated as kube-apiserver validates it."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from syncer.events import NOTE_LIMIT, ServiceEvent, _fit, event_body
from syncer.kube import Kube, connect
from syncer.run import Outcome, load, sync
from tests.kubeapi import KubeApiServer

JSON = dict[str, Any]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def service(name: str, *ips: str) -> JSON:
    return {"name": name, "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": ip} for ip in ips]}


def write(tmp: Path, *services: JSON) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": list(services)}))
    config = tmp / "config.yaml"
    config.write_text("owner: o\nnamespace: external\n"
                      "sources: [{name: inv, provider: static, path: inventory.yaml}]\n")
    return config


def run(config: Path, kubeconfig: Path, apply: bool = True) -> Outcome:
    def client_() -> Kube:
        return connect(str(kubeconfig))

    return sync(load(str(config)), client_, apply=apply)


def events(kube: KubeApiServer, name: str | None = None) -> list[JSON]:
    found = kube.list_objects("Event", "external")
    return [e for e in found if name is None or e["regarding"]["name"] == name]


def event_posts(kube: KubeApiServer) -> int:
    return len(kube.requests_matching("POST", r"/apis/events\.k8s\.io/v1/namespaces/.*/events"))


def test_changed_services_get_one_event_each_and_unchanged_ones_none(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "endpoints-sync-29000000-abcde")
    config = write(tmp_path, service("web", "192.0.2.5", "192.0.2.6"), service("db", "192.0.2.9"))
    assert run(config, kubeconfig).exit_code == 0
    (web,) = events(kube, "web")
    assert web["reason"] == "Synced" and web["type"] == "Normal"
    assert web["note"] == ("created Service, created EndpointSlice, created Endpoints: "
                           "+192.0.2.5 +192.0.2.6")
    assert web["reportingController"] == "endpoints-sync"
    assert web["reportingInstance"] == "endpoints-sync-29000000-abcde"
    assert web["action"] == "Sync"
    assert MICRO_TIME.match(web["eventTime"])
    assert re.fullmatch(r"web\.[0-9a-f]{15,16}", web["metadata"]["name"])
    assert web["regarding"] == {"apiVersion": "v1", "kind": "Service",
                                "namespace": "external", "name": "web"}
    assert len(events(kube, "db")) == 1

    posts = event_posts(kube)
    assert run(config, kubeconfig).exit_code == 0
    assert event_posts(kube) == posts  # nothing changed: no Event

    write(tmp_path, service("web", "192.0.2.7", "192.0.2.6"), service("db", "192.0.2.9"))
    assert run(config, kubeconfig).exit_code == 0
    assert len(events(kube, "db")) == 1
    latest = max(events(kube, "web"), key=lambda e: e["eventTime"])
    assert latest["note"] == "updated EndpointSlice, updated Endpoints: +192.0.2.7 -192.0.2.5"
    svc = kube.get_object("Service", "external", "web")
    assert svc is not None and latest["regarding"]["uid"] == svc["metadata"]["uid"]


def test_held_and_failed_services_get_warning_events(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.put_object({"apiVersion": "v1", "kind": "Service",  # someone else's: a conflict
                     "metadata": {"name": "theirs", "namespace": "external"},
                     "spec": {"ports": [{"port": 80}]}})
    config = write(tmp_path, service("web", "192.0.2.5"), service("api", "192.0.2.8"))
    assert run(config, kubeconfig).exit_code == 0
    kube.inject_fault("PUT", r"/endpointslices/api", status=422, times=1)
    write(tmp_path, service("web"), service("api", "192.0.2.10"), service("theirs", "192.0.2.1"))
    outcome = run(config, kubeconfig)
    assert outcome.exit_code == 1
    (web,) = [e for e in events(kube, "web") if e["reason"] != "Synced"]
    assert (web["reason"], web["type"]) == ("Held", "Warning")
    assert "the source lists no address" in web["note"]
    (api,) = [e for e in events(kube, "api") if e["reason"] != "Synced"]
    assert (api["reason"], api["type"]) == ("SyncFailed", "Warning")
    assert "replace EndpointSlice external/api-" in api["note"] and "422 Invalid" in api["note"]
    (theirs,) = events(kube, "theirs")
    assert theirs["reason"] == "SyncFailed" and "not synced: Service external/theirs" in \
        theirs["note"]


@pytest.mark.parametrize(("status", "posts", "stored"), [
    (403, 1, 0),  # RBAC: would fail them all, so the rest are skipped
    (500, 1, 0),  # one try, no retries
    (422, 3, 2),  # this one Event refused: the others are still written
])
def test_events_that_cannot_be_written_never_fail_the_run(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, status: int, posts: int, stored: int) -> None:
    kube.inject_fault("POST", r"/events$", times=1 if status == 422 else 10, status=status)
    config = write(tmp_path, service("web", "192.0.2.5"), service("db", "192.0.2.9"),
                   service("api", "192.0.2.8"))
    outcome = run(config, kubeconfig)
    assert outcome.exit_code == 0 and outcome.applied and outcome.applied.created == 9
    assert event_posts(kube) == posts
    warned = [r.getMessage() for r in caplog.records if "Events" in r.getMessage()]
    assert len(warned) == 1
    assert (f"{3 - stored} of 3 Events not written (Events never fail a run): "
            "create Event external/") in warned[0]
    assert f": {status} " in warned[0]
    assert len(events(kube)) == stored


def test_no_events_without_writes_dry_run_and_plan(kube: KubeApiServer, kubeconfig: Path,
                                                   tmp_path: Path) -> None:
    config = write(tmp_path, service("web", "192.0.2.5"))
    outcome = run(config, kubeconfig, apply=False)
    assert len(outcome.plan.changes) == 3
    assert event_posts(kube) == 0


def test_a_long_note_is_cut_to_the_api_limit_on_a_character_boundary() -> None:
    note = _fit("é" * 2000)
    assert len(note.encode()) <= NOTE_LIMIT and note.endswith(" ...")
    assert _fit("short") == "short"


# --- the test server's events.k8s.io/v1 --------------------------------------------------


def api_client(kube: KubeApiServer) -> Any:
    configuration = client.Configuration()
    configuration.host = kube.url
    return client.ApiClient(configuration)


def test_server_serves_and_validates_events_like_kube_apiserver(kube: KubeApiServer) -> None:
    kube.enforce_rbac(None)  # lists and gets events, which the syncer's role may not
    api = api_client(kube)
    resources = client.EventsV1Api(api).get_api_resources()
    assert [r.name for r in resources.resources] == ["events"]
    events_api = client.EventsV1Api(api)
    body: Any = event_body(ServiceEvent("external", "web", "Synced", "created Service"), "pod-1",
                      now_ns=1_700_000_000_123_456_789)
    assert body["eventTime"] == "2023-11-14T22:13:20.123456Z"
    assert body["metadata"]["name"] == f"web.{1_700_000_000_123_456_789:x}"
    created = events_api.create_namespaced_event("external", body)
    assert created.reason == "Synced" and created.regarding and created.regarding.name == "web"
    assert created.event_time == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    listed = events_api.list_namespaced_event("external").items
    assert [e.metadata.name for e in listed if e.metadata] == [body["metadata"]["name"]]

    bad: Any = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
           "metadata": {"name": "web.1", "namespace": "external"},
           "eventTime": body["eventTime"], "type": "Info", "note": "x" * 1025,
           "regarding": {"kind": "Service", "name": "web"}}
    with pytest.raises(client.ApiException) as caught:
        events_api.create_namespaced_event("external", bad)
    assert caught.value.status == 422
    causes = {(c["field"], c["reason"]) for c in
              json.loads(caught.value.body or "{}")["details"]["causes"]}
    assert causes == {("involvedObject.namespace", "FieldValueInvalid"),
                      ("reportingController", "FieldValueRequired"),
                      ("reportingController", "FieldValueInvalid"),  # "" is no qualified name
                      ("reportingInstance", "FieldValueRequired"),
                      ("action", "FieldValueRequired"), ("reason", "FieldValueRequired"),
                      ("message", "FieldValueInvalid"), ("type", "FieldValueInvalid")}
    # What the official client refuses to send, sent as plain HTTP.
    status, answer = post(kube, {**body, "eventTime": None})
    assert status == 422 and "eventTime: Required value" in answer["message"]
    status, answer = post(kube, {**body, "eventTime": "yesterday"})
    assert (status, answer["reason"]) == (400, "BadRequest")


def post(kube: KubeApiServer, body: JSON) -> tuple[int, JSON]:
    request = urllib.request.Request(
        f"{kube.url}/apis/events.k8s.io/v1/namespaces/external/events",
        json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
