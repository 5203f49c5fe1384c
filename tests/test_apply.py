"""Applying a plan through the official client when the cluster moves underneath it."""

from __future__ import annotations

import copy
from pathlib import Path

from syncer.apply import apply_plan
from syncer.kube import Kube, connect
from syncer.ownership import owner_selector
from syncer.plan import Plan, PlanSettings, make_plan
from syncer.render import RenderSettings, render
from tests.kubeapi import KubeApiServer
from tests.specs import simple_spec

OWNER = "cluster-a"


def current(kube: Kube) -> list[dict[str, object]]:
    return [o for kind in ("Service", "EndpointSlice", "Endpoints")
            for o in kube.list(kind, owner_selector(OWNER))]


def test_stale_update_rereads_and_retries(kube: KubeApiServer, kubeconfig: Path) -> None:
    client = connect(str(kubeconfig))
    rs = RenderSettings(owner=OWNER)
    first = make_plan([render(simple_spec("db", ["192.0.2.1"]), rs)], [],
                      PlanSettings(owner=OWNER))
    assert apply_plan(first, client, OWNER).created == 3
    plan = make_plan([render(simple_spec("db", ["192.0.2.2"]), rs)], current(client),
                     PlanSettings(owner=OWNER))
    # Someone else touches the Endpoints between our read and our write.
    ep = kube.get_object("Endpoints", "external", "db")
    assert ep is not None
    ep = copy.deepcopy(ep)
    ep["metadata"]["labels"]["team"] = "db"
    kube.put_object(ep)
    result = apply_plan(plan, client, OWNER)
    assert result.failed == [] and result.updated == 2
    statuses = [r.status for r in kube.requests if r.method == "PUT"]
    assert 409 in statuses
    fresh = kube.get_object("Endpoints", "external", "db")
    assert fresh is not None
    assert fresh["subsets"][0]["addresses"] == [{"ip": "192.0.2.2"}]
    assert fresh["metadata"]["labels"]["team"] == "db"


def test_create_race_with_our_own_object_becomes_an_update(kube: KubeApiServer,
                                                            kubeconfig: Path) -> None:
    client = connect(str(kubeconfig))
    rs = RenderSettings(owner=OWNER)
    plan = make_plan([render(simple_spec("db", ["192.0.2.1"]), rs)], [],
                     PlanSettings(owner=OWNER))
    # A concurrent run of the same owner created the Endpoints, with an older address.
    (ep,) = [c.body for c in plan.changes if c.kind == "Endpoints"]
    assert ep is not None
    older = copy.deepcopy(ep)
    older["subsets"][0]["addresses"] = [{"ip": "192.0.2.9"}]
    kube.put_object(older)
    result = apply_plan(plan, client, OWNER)
    assert result.failed == []
    assert (result.created, result.updated) == (2, 1)
    fresh = kube.get_object("Endpoints", "external", "db")
    assert fresh is not None and fresh["subsets"][0]["addresses"] == [{"ip": "192.0.2.1"}]


def test_create_race_with_a_foreign_object_is_reported_not_overwritten(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    client = connect(str(kubeconfig))
    plan = make_plan([render(simple_spec("db", ["192.0.2.1"]), RenderSettings(owner=OWNER))],
                     [], PlanSettings(owner=OWNER))
    foreign = {"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "db", "namespace": "external"},
               "subsets": [{"addresses": [{"ip": "198.51.100.1"}], "ports": [{"port": 1}]}]}
    kube.put_object(foreign)
    result = apply_plan(plan, client, OWNER)
    assert len(result.failed) == 1 and "without endpoints-sync's ownership" in result.failed[0]
    fresh = kube.get_object("Endpoints", "external", "db")
    assert fresh is not None and fresh["subsets"][0]["addresses"] == [{"ip": "198.51.100.1"}]


def synced_then_c_dropped(kubeconfig: Path) -> tuple[Kube, Plan]:
    """Services a, b, c in the cluster, and the plan that deletes c."""
    client = connect(str(kubeconfig))
    rs = RenderSettings(owner=OWNER)
    specs = [simple_spec(n, ["192.0.2.1"]) for n in ("a", "b", "c")]
    apply_plan(make_plan([render(s, rs) for s in specs], [], PlanSettings(owner=OWNER)),
               client, OWNER)
    plan = make_plan([render(s, rs) for s in specs[:2]], current(client),
                     PlanSettings(owner=OWNER))
    return client, plan


def test_delete_of_an_object_already_gone_is_done(kube: KubeApiServer,
                                                  kubeconfig: Path) -> None:
    client, plan = synced_then_c_dropped(kubeconfig)
    assert client.delete("Endpoints", "external", "c")
    result = apply_plan(plan, client, OWNER)
    assert result.failed == [] and result.deleted == 2
    assert kube.get_object("Service", "external", "c") is None


def test_list_reads_every_page(kube: KubeApiServer, kubeconfig: Path) -> None:
    client = connect(str(kubeconfig))
    rs = RenderSettings(owner=OWNER)
    specs = [simple_spec(f"s{i}", ["192.0.2.1"]) for i in range(7)]
    apply_plan(make_plan([render(s, rs) for s in specs], [], PlanSettings(owner=OWNER)),
               client, OWNER)
    kube.reset_requests()
    services = client.list("Service", owner_selector(OWNER), page_size=3)
    assert sorted(s["metadata"]["name"] for s in services) == [f"s{i}" for i in range(7)]
    assert len(kube.requests) == 3
    assert all("limit=3" in r.query for r in kube.requests)


def test_delete_only_removes_the_version_the_plan_saw(kube: KubeApiServer,
                                                      kubeconfig: Path) -> None:
    client, plan = synced_then_c_dropped(kubeconfig)
    # Between plan and apply someone takes the Service over (a new resourceVersion).
    svc = kube.get_object("Service", "external", "c")
    assert svc is not None
    svc = copy.deepcopy(svc)
    svc["metadata"]["labels"] = {"team": "db"}
    kube.put_object(svc)
    result = apply_plan(plan, client, OWNER)
    assert result.deleted == 2
    assert len(result.failed) == 1 and "changed since it was read" in result.failed[0]
    assert kube.get_object("Service", "external", "c") is not None
