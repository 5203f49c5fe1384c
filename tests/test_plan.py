"""Table and property tests for the plan: ownership, policies, guards."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.model import Backend, ServicePort, ServiceSpec
from syncer.ownership import is_owned, key_of
from syncer.plan import Plan, PlanSettings, make_plan, needs_update
from syncer.render import RenderSettings, render
from tests.specs import rgw_spec, simple_spec

JSON = dict[str, Any]
OWNER = "cluster-a"
RS = RenderSettings(owner=OWNER)
_rv = itertools.count(1)


def server_copy(obj: JSON) -> JSON:
    """An object as the API server would hand it back: defaults and server fields filled."""
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = str(next(_rv))
    out["metadata"]["uid"] = f"uid-{out['metadata']['name']}"
    if out["kind"] == "Service":
        spec = out["spec"]
        if spec.get("type") != "ExternalName" and "clusterIP" not in spec:
            spec["clusterIP"] = "198.19.0.10"
        for p in spec.get("ports", []):
            p.setdefault("targetPort", p["port"])
        spec.setdefault("sessionAffinity", "None")
    return out


def apply(plan: Plan, current: list[JSON]) -> list[JSON]:
    store = {key_of(o): o for o in current}
    for c in plan.changes:
        if c.action == "delete":
            del store[c.key]
        else:
            assert c.body is not None
            store[c.key] = server_copy(c.body)
    return list(store.values())


def cluster(*specs: ServiceSpec, owner: str = OWNER) -> list[JSON]:
    rs = RenderSettings(owner=owner)
    return [server_copy(o) for s in specs for o in render(s, rs).objects]


def plan_for(desired: list[ServiceSpec], current: list[JSON], **kw: Any) -> Plan:
    return make_plan([render(s, RS) for s in desired], current, PlanSettings(owner=OWNER, **kw))


def actions(plan: Plan) -> list[tuple[str, str, str]]:
    return sorted((c.action, c.kind, c.key[2]) for c in plan.changes)


def test_empty_cluster_creates_everything() -> None:
    plan = plan_for([rgw_spec()], [])
    assert [a for a, _, _ in actions(plan)] == ["create"] * 4
    assert plan.unchanged == 0


def test_no_change_is_an_empty_plan() -> None:
    plan = plan_for([rgw_spec()], cluster(rgw_spec()))
    assert plan.empty and plan.unchanged == 4


def test_one_address_removed_updates_one_slice_and_the_endpoints() -> None:
    current = cluster(rgw_spec())
    full = rgw_spec()
    fewer = dataclasses.replace(full, backends=tuple(
        b for b in full.backends if not (b.address == "192.0.2.55" and b.ports["http"] == 8081)))
    plan = plan_for([fewer], current)
    assert [(a, k) for a, k, _ in actions(plan)] == [("update", "EndpointSlice"),
                                                      ("update", "Endpoints")]
    for c in plan.changes:
        assert c.body is not None
        assert c.current is not None
        assert c.body["metadata"]["resourceVersion"] == c.current["metadata"]["resourceVersion"]


def test_service_gone_from_source_is_deleted_under_sync() -> None:
    keep = simple_spec("a", ["192.0.2.1"])
    gone = simple_spec("b", ["192.0.2.2"])
    current = cluster(keep, gone, simple_spec("c", ["192.0.2.3"]))
    plan = plan_for([keep, simple_spec("c", ["192.0.2.3"])], current)
    assert [(a, k) for a, k, _ in actions(plan)] == [
        ("delete", "EndpointSlice"), ("delete", "Endpoints"), ("delete", "Service")]
    assert all(c.service == ("external", "b") for c in plan.changes)


def test_policies_filter_changes() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"]), simple_spec("b", ["192.0.2.2"]),
                      simple_spec("c", ["192.0.2.3"]))
    desired = [simple_spec("a", ["192.0.2.9"]), simple_spec("c", ["192.0.2.3"]),
               simple_spec("new", ["192.0.2.4"])]
    sync = plan_for(desired, current)
    assert {a for a, _, _ in actions(sync)} == {"create", "update", "delete"}
    upsert = plan_for(desired, current, policy="upsert-only")
    assert {a for a, _, _ in actions(upsert)} == {"create", "update"}
    assert {h.change.action for h in upsert.held} == {"delete"}
    create_only = plan_for(desired, current, policy="create-only")
    assert {a for a, _, _ in actions(create_only)} == {"create"}
    assert {h.change.action for h in create_only.held} == {"delete", "update"}


def test_foreign_service_blocks_the_whole_service() -> None:
    foreign = cluster(simple_spec("a", ["192.0.2.1"]))[0]
    del foreign["metadata"]["labels"]
    plan = plan_for([simple_spec("a", ["192.0.2.9"])], [foreign])
    assert plan.empty
    assert [c.key for c in plan.conflicts] == [("Service", "external", "a")]
    assert "without" in plan.conflicts[0].reason


def test_owned_service_with_a_selector_is_not_touched() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"]))
    current[0]["spec"]["selector"] = {"app": "a"}
    plan = plan_for([simple_spec("a", ["192.0.2.9"])], current)
    assert plan.empty and "selector" in plan.conflicts[0].reason


def test_other_owner_objects_never_appear() -> None:
    theirs = cluster(simple_spec("x", ["192.0.2.7"]), owner="cluster-b")
    plan = plan_for([simple_spec("a", ["192.0.2.1"])], theirs)
    assert all(c.key[2] != "x" and not c.key[2].startswith("x-") for c in plan.changes)
    assert plan.owned == 0


def test_other_owner_same_name_is_a_conflict() -> None:
    theirs = cluster(simple_spec("a", ["192.0.2.7"]), owner="cluster-b")
    plan = plan_for([simple_spec("a", ["192.0.2.1"])], theirs)
    assert plan.empty and "cluster-b" in plan.conflicts[0].reason


def test_failed_source_objects_are_frozen() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"], source="down"),
                      simple_spec("b", ["192.0.2.2"], source="up"))
    plan = plan_for([simple_spec("b", ["192.0.2.3"], source="up")], current,
                    frozen_sources=frozenset({"down"}))
    assert {c.key[2] for c in plan.changes if c.action == "delete"} == set()
    assert all(c.service == ("external", "b") for c in plan.changes)


def test_empty_guard_keeps_addresses_unless_allowed() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"]), simple_spec("b", ["192.0.2.2"]))
    desired = [simple_spec("a", []), simple_spec("b", ["192.0.2.2"])]
    plan = plan_for(desired, current)
    assert plan.empty
    assert {h.reason for h in plan.held} == {"empty"}
    allowed = plan_for(desired, current, allow_empty_sources=frozenset({"src"}))
    kinds = sorted(c.kind for c in allowed.changes)
    assert kinds == ["EndpointSlice", "Endpoints"]
    assert {c.action for c in allowed.changes} == {"delete", "update"}


def test_delete_ratio_guard_and_force() -> None:
    specs = [simple_spec(n, ["192.0.2.1"]) for n in "abcd"]
    current = cluster(*specs)
    plan = plan_for(specs[:1], current)
    assert not plan.of("delete")
    assert len([h for h in plan.held if h.reason == "delete-ratio"]) == 9
    forced = plan_for(specs[:1], current, force=True)
    assert len(forced.of("delete")) == 9
    # Removing one of four is ordinary pruning.
    assert len(plan_for(specs[1:], current).of("delete")) == 3


def test_port_change_replaces_slices_without_tripping_the_ratio() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"], port=5432))
    plan = plan_for([simple_spec("a", ["192.0.2.1"], port=6432)], current)
    assert sorted(actions(plan))[0][0] == "create"
    assert {a for a, _, _ in actions(plan)} == {"create", "update", "delete"}
    assert not plan.held


def test_labels_added_by_people_are_kept_and_do_not_cause_updates() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"]))
    for obj in current:
        obj["metadata"]["labels"]["team"] = "db"
    assert plan_for([simple_spec("a", ["192.0.2.1"])], current).empty
    plan = plan_for([simple_spec("a", ["192.0.2.2"])], current)
    for c in plan.changes:
        assert c.body is not None and c.body["metadata"]["labels"]["team"] == "db"


def test_service_update_keeps_server_fields() -> None:
    current = cluster(simple_spec("a", ["192.0.2.1"], port=5432))
    plan = plan_for([simple_spec("a", ["192.0.2.1"], port=6432)], current)
    (svc,) = [c for c in plan.changes if c.kind == "Service"]
    assert svc.action == "update" and svc.body is not None
    assert svc.body["spec"]["clusterIP"] == "198.19.0.10"
    assert svc.body["spec"]["ports"] == [{"name": "db", "port": 6432, "protocol": "TCP"}]


# --- properties ---------------------------------------------------------------------------

addresses = st.sampled_from([f"192.0.2.{i}" for i in range(1, 40)]
                            + [f"2001:db8::{i:x}" for i in range(1, 20)])
backends = st.builds(Backend, addresses, st.sampled_from([{}, {"p": 81}, {"p": 82}]),
                     st.booleans())
spec_strategy = st.builds(
    lambda name, ns, bs, src: ServiceSpec(name, (ServicePort("p", 80),), tuple(bs), ns,
                                          source=src),
    st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["n1", "n2"]),
    st.lists(backends, max_size=25), st.sampled_from(["s1", "s2"]))
desired_states = st.lists(spec_strategy, max_size=5).map(
    lambda specs: list({(s.namespace, s.name): s for s in specs}.values()))


@settings(max_examples=150, deadline=None)
@given(before=desired_states, after=desired_states, foreign=desired_states,
       per_slice=st.integers(min_value=1, max_value=10))
def test_plan_then_apply_reaches_desired_and_converges(
        before: list[ServiceSpec], after: list[ServiceSpec], foreign: list[ServiceSpec],
        per_slice: int) -> None:
    rs = RenderSettings(owner=OWNER, max_endpoints_per_slice=per_slice)
    theirs = [server_copy(o) for s in foreign
              for o in render(s, RenderSettings(owner="other")).objects]
    theirs_keys = {key_of(o) for o in theirs}
    mine = [server_copy(o) for s in before for o in render(s, rs).objects
            if key_of(o) not in theirs_keys]
    current = mine + theirs
    desired = [render(s, rs) for s in after]
    ps = PlanSettings(owner=OWNER, force=True, allow_empty_sources=frozenset({"s1", "s2"}))
    plan = make_plan(desired, current, ps)

    changed = {c.key for c in plan.changes}
    assert not changed & theirs_keys, "another owner's object is in the plan"
    result = apply(plan, current)
    by_key = {key_of(o): o for o in result}
    for o in theirs:
        assert by_key[key_of(o)] == o
    blocked = {c.service for c in plan.conflicts}
    for svc in desired:
        if (svc.namespace, svc.name) in blocked:
            continue
        for obj in svc.objects:
            got = by_key[key_of(obj)]
            assert is_owned(got, OWNER) and not needs_update(got, obj)
    again = make_plan(desired, result, ps)
    assert again.empty, [c.key for c in again.changes]


@settings(max_examples=60, deadline=None)
@given(state=desired_states)
def test_planning_the_current_state_changes_nothing(state: list[ServiceSpec]) -> None:
    current = [server_copy(o) for s in state for o in render(s, RS).objects]
    plan = make_plan([render(s, RS) for s in state], current, PlanSettings(owner=OWNER))
    assert plan.empty and plan.unchanged == len(current)


def test_adopt_takes_over_unmanaged_objects_only() -> None:
    hand_made = cluster(simple_spec("a", ["192.0.2.1"]))
    for obj in hand_made:
        obj["metadata"]["labels"] = {"team": "db"}
    plan = plan_for([simple_spec("a", ["192.0.2.1"])], hand_made)
    assert plan.empty and "adopt: true" in plan.conflicts[0].reason
    adopted = plan_for([simple_spec("a", ["192.0.2.1"])], hand_made, adopt=True)
    assert not adopted.conflicts
    assert {c.action for c in adopted.changes} == {"update"}
    for c in adopted.changes:
        assert c.body is not None
        assert is_owned(c.body, OWNER) and c.body["metadata"]["labels"]["team"] == "db"


def test_adopt_never_takes_a_selector_or_another_tools_object() -> None:
    with_selector = cluster(simple_spec("a", ["192.0.2.1"]))[:1]
    with_selector[0]["metadata"]["labels"] = {}
    with_selector[0]["spec"]["selector"] = {"app": "a"}
    plan = plan_for([simple_spec("a", ["192.0.2.1"])], with_selector, adopt=True)
    assert plan.empty and "selector" in plan.conflicts[0].reason
    helm = cluster(simple_spec("a", ["192.0.2.1"]))[:1]
    helm[0]["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "Helm"}
    plan = plan_for([simple_spec("a", ["192.0.2.1"])], helm, adopt=True)
    assert plan.empty and "'Helm'" in plan.conflicts[0].reason
