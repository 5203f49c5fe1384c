"""The RBAC in deploy/rbac.yaml against a test server that enforces it, as kube-apiserver's
RBAC authorizer would: the sync and the watch of `run --watch` work with exactly those rules,
and each one is needed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from syncer.errors import KubeError
from syncer.kube import Kube, connect
from syncer.kubewatch import KINDS, watch_owned
from syncer.ownership import owner_selector
from syncer.run import load, sync
from tests.cli import ROOT
from tests.kubeapi import KubeApiServer
from tests.kubeapi.api import parse_route
from tests.kubeapi.rbac import Permission, cluster_role_rules, permissions, verb_of, without

RULES = cluster_role_rules(ROOT / "deploy" / "rbac.yaml")
EVENTS = ("events.k8s.io", "events", "create")


@dataclass
class Result:
    codes: list[int]
    messages: str  # every error and warning logged, and any error a run raised


def inventory(tmp: Path, services: dict[str, tuple[int, str]]) -> Path:
    docs = [{"name": name, "ports": [{"name": "http", "port": port}],
             "endpoints": [{"address": ip}]} for name, (port, ip) in services.items()]
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": docs}))
    config = tmp / "config.yaml"
    config.write_text("owner: o\nnamespace: external\n"
                      "sources: [{name: inv, provider: static, path: inventory.yaml}]\n")
    return config


def scenario(kube: KubeApiServer, kubeconfig: Path, tmp: Path,
             caplog: pytest.LogCaptureFixture) -> Result:
    """Create three Services; then change one's port, another's address (a 409 on its slice
    update makes the run read the slice again) and remove the third; Events all along."""
    def client() -> Kube:
        return connect(str(kubeconfig), attempts=1)

    codes: list[int] = []
    raised: list[str] = []
    for services in ({"web": (80, "192.0.2.5"), "api": (80, "192.0.2.7"),
                      "db": (5432, "192.0.2.9")},
                     {"web": (8080, "192.0.2.5"), "api": (80, "192.0.2.8")}):
        if len(codes) == 1:
            kube.inject_fault("PUT", r"/endpointslices/api-", status=409)
        try:
            codes.append(sync(load(str(inventory(tmp, services))), client, apply=True).exit_code)
        except KubeError as e:
            codes.append(1)
            raised.append(str(e))
    try:
        watch_until_open(kube, client())
        codes.append(0)
    except KubeError as e:
        codes.append(1)
        raised.append(str(e))
    logged = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    return Result(codes, "\n".join(logged + raised))


def watch_until_open(kube: KubeApiServer, client: Kube) -> None:
    """watch_owned until each of its streams is open, or it fails (raised here)."""
    stop, failed = threading.Event(), []

    def watch() -> None:
        try:
            watch_owned(client, owner_selector("o"), None, lambda event: None, stop)
        except KubeError as e:
            failed.append(e)

    thread = threading.Thread(target=watch)
    thread.start()
    deadline = time.monotonic() + 10
    while (thread.is_alive() and time.monotonic() < deadline and len(
            [r for r in kube.requests if "watch=true" in r.query and r.status == 200])
           < len(KINDS)):
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    if failed:
        raise failed[0]


def used(kube: KubeApiServer) -> set[Permission]:
    """The (group, resource, verb) of every resource request the server answered."""
    found = set()
    for r in kube.requests:
        route = parse_route(r.path)
        if route is not None:
            found.add((route.res.group, route.res.plural,
                       verb_of(r.method, route.name is None, "watch=true" in r.query)))
    return found


def test_the_sync_passes_with_deploy_rbac_enforced_and_uses_every_rule(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    kube.enforce_rbac(RULES)
    result = scenario(kube, kubeconfig, tmp_path, caplog)
    assert result.codes == [0, 0, 0], result.messages
    assert all(r.status != 403 for r in kube.requests)
    assert used(kube) == permissions(RULES)  # nothing granted that the code does not use
    assert kube.get_object("Service", "external", "db") is None
    assert len(kube.list_objects("Event", "external")) == 6  # each Service, each run


@pytest.mark.parametrize("removed", sorted(permissions(RULES)), ids="/".join)
def test_removing_any_one_rule_fails_the_sync_and_names_the_rule(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, removed: Permission) -> None:
    kube.enforce_rbac(without(RULES, removed))
    result = scenario(kube, kubeconfig, tmp_path, caplog)
    group, resource, verb = removed
    # The operator is told which rule is missing (syncer.kube's hint names RBAC's resource).
    hint = f"needs `{verb}` on {resource}{'.' + group if group else ''}"
    assert hint in result.messages
    assert " 403 Forbidden: " in result.messages
    if removed == EVENTS:  # Events never fail a run: one warning line instead
        assert result.codes == [0, 0, 0]
        lines = [m for m in result.messages.splitlines() if "Events not written" in m]
        assert len(lines) == 2  # one a run, not one a Service
    else:
        assert 1 in result.codes
