"""The per-Service guards: max_change_ratio (hold big address changes) and flap damping
(remove_after_misses). Table tests of the pure steps, then the CLI against the test server."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.config import load_config
from syncer.damping import MAX_KEPT, DampingSettings, damp
from syncer.desired import AddressPolicy
from syncer.errors import ConfigError
from syncer.model import Backend, ServiceSpec
from syncer.ownership import MISSES
from syncer.plan import Plan, PlanSettings, make_plan
from syncer.render import RenderSettings, address_entries, render
from tests.cli import cli, run_sync
from tests.kubeapi import KubeApiServer
from tests.specs import HTTP, rgw_entry, rgw_spec, simple_spec
from tests.test_plan import apply, cluster

JSON = dict[str, Any]
OWNER = "cluster-a"
RS = RenderSettings(owner=OWNER)
GONE = "192.0.2.55"


def without(spec: ServiceSpec, *addresses: str) -> ServiceSpec:
    return dataclasses.replace(spec, backends=tuple(b for b in spec.backends
                                                   if b.address not in addresses))


def one_run(specs: list[ServiceSpec], current: list[JSON], misses: int,
            policy: AddressPolicy | None = None, **plan: Any) -> tuple[Plan, list[JSON]]:
    """Render, damp, plan and apply in process, as `run` does; returns the new cluster."""
    rendered = [render(s, RS) for s in specs]
    policies = {"rgw": policy} if policy else {}
    damped = damp(specs, rendered, current, DampingSettings(OWNER, RS, {"rgw": misses},
                                                            policies))
    result = make_plan(damped.rendered, current, PlanSettings(owner=OWNER, **plan))
    return result, apply(result, current)


def addresses(objs: list[JSON]) -> dict[tuple[str, str, int], bool]:
    """(kind, address, port) -> ready, over every address object."""
    return {(o["kind"], e.address, port): e.ready for o in objs
            for e in address_entries(o) for _, port in e.ports}


def misses_of(objs: list[JSON]) -> dict[str, str]:
    """Object name/kind -> its misses annotation, where it has one."""
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["annotations"][MISSES]
            for o in objs if MISSES in (o["metadata"].get("annotations") or {})}


# --- flap damping, in process ------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5])
def test_missing_address_is_kept_not_ready_for_n_minus_1_runs_then_removed(n: int) -> None:
    state = cluster(rgw_spec())
    smaller = without(rgw_spec(), GONE)
    for run in range(1, n):
        plan, state = one_run([smaller], state, n)
        seen = addresses(state)
        assert {seen[(k, GONE, p)] for k in ("EndpointSlice", "Endpoints")
                for p in (8080, 8081)} == {False}, f"run {run}"
        assert all(ready for (_, a, _), ready in seen.items() if a != GONE)
        counts = [json.loads(v) for v in misses_of(state).values()]
        # Both slices (one per port) and the Endpoints (both ports) count this run.
        assert sorted(counts, key=len) == [{f"{GONE}:8080": run}, {f"{GONE}:8081": run},
                                           {f"{GONE}:8080": run, f"{GONE}:8081": run}]
    plan, state = one_run([smaller], state, n)
    assert not any(a == GONE for _, a, _ in addresses(state)), "removed on run n"
    assert set(misses_of(state).values()) == {"{}"}
    assert len(plan.of("update")) == 3
    plan, _ = one_run([smaller], state, n)
    assert plan.empty, "the run after removal writes nothing"


def test_address_that_comes_back_is_ready_and_its_count_reset() -> None:
    state = cluster(rgw_spec())
    _, state = one_run([without(rgw_spec(), GONE)], state, 3)
    _, state = one_run([without(rgw_spec(), GONE)], state, 3)
    assert "2" in "".join(misses_of(state).values())
    plan, state = one_run([rgw_spec()], state, 3)
    assert len(plan.of("update")) == 3
    assert all(addresses(state).values())
    assert set(misses_of(state).values()) == {"{}"}
    _, state = one_run([without(rgw_spec(), GONE)], state, 3)
    assert json.loads(misses_of(state)["Endpoints/ocs-external-rgw-lb"]) == {
        f"{GONE}:8080": 1, f"{GONE}:8081": 1}
    assert one_run([without(rgw_spec(), GONE)], state, 3)[0].of("update"), "counts go on"


def test_off_changes_nothing_and_writes_no_annotation() -> None:
    state = cluster(rgw_spec())
    specs = [without(rgw_spec(), GONE)]
    rendered = [render(s, RS) for s in specs]
    damped = damp(specs, rendered, state, DampingSettings(OWNER, RS, {"rgw": 1}))
    assert damped.rendered == rendered and not damped.kept
    plan, state = one_run(specs, state, 1)
    assert len(plan.of("update")) == 3
    assert not any(a == GONE for _, a, _ in addresses(state))
    assert misses_of(state) == {}


def test_annotation_is_compact_sorted_json_across_families() -> None:
    spec = simple_spec("db", ["192.0.2.9", "192.0.2.5", "2001:db8::5"], source="rgw")
    state = cluster(spec)
    _, state = one_run([without(spec, "192.0.2.5", "2001:db8::5")], state, 2)
    assert misses_of(state)["Endpoints/db"] == '{"192.0.2.5:5432":1,"[2001:db8::5]:5432":1}'


def test_vanished_service_is_pruned_not_damped() -> None:
    state = cluster(rgw_spec(), simple_spec("db", ["192.0.2.9"], source="rgw"))
    plan, state = one_run([rgw_spec()], state, 3)
    assert {c.service for c in plan.of("delete")} == {("external", "db")}
    assert len(plan.of("delete")) == 3 and not plan.held


def test_empty_source_is_still_held_by_the_empty_guard_unless_allowed() -> None:
    state = cluster(rgw_spec())
    empty = dataclasses.replace(rgw_spec(), backends=())
    plan, after = one_run([empty], state, 3)
    assert plan.empty and {h.reason for h in plan.held} == {"empty"}
    assert after == state
    plan, after = one_run([empty], state, 2, allow_empty_sources=frozenset({"rgw"}))
    assert addresses(after) and not any(addresses(after).values()), "kept, all not ready"
    _, after = one_run([empty], after, 2, allow_empty_sources=frozenset({"rgw"}))
    assert addresses(after) == {}, "emptied on run 2"


@pytest.mark.parametrize("value", ["not json", "[1]", '{"192.0.2.55:8080": true}',
                                   '{"192.0.2.55:8080": -1}', '{"192.0.2.55:8080": 7}'])
def test_a_stale_or_edited_annotation_counts_as_nothing(value: str) -> None:
    """The last one: a count for an address that is ready is not believed."""
    state = cluster(rgw_spec())
    for obj in state:
        obj["metadata"]["annotations"][MISSES] = value
    _, state = one_run([without(rgw_spec(), GONE)], state, 3)
    assert json.loads(misses_of(state)["Endpoints/ocs-external-rgw-lb"]) == {
        f"{GONE}:8080": 1, f"{GONE}:8081": 1}


def test_an_address_the_policy_now_refuses_is_not_kept() -> None:
    state = cluster(rgw_spec())
    deny = AddressPolicy(deny=(ipaddress.ip_network(f"{GONE}/32"),))
    _, state = one_run([without(rgw_spec(), GONE)], state, 3, policy=deny)
    assert not any(a == GONE for _, a, _ in addresses(state))


def test_kept_addresses_are_bounded_per_service() -> None:
    many = simple_spec("bulk", [str(ipaddress.ip_address("198.18.0.0") + i)
                                for i in range(MAX_KEPT + 5)], source="rgw")
    rendered = [render(dataclasses.replace(many, backends=()), RS)]
    damped = damp([dataclasses.replace(many, backends=())], rendered, cluster(many),
                  DampingSettings(OWNER, RS, {"rgw": 3}))
    assert damped.kept == {("external", "bulk"): MAX_KEPT}
    assert damped.trimmed == {("external", "bulk"): 5}
    assert damped.rendered[0].address_count == 0, "the empty guard still sees an empty source"


# --- max_change_ratio, in process ---------------------------------------------------------

def replaced(count: int) -> ServiceSpec:
    """The rgw Service with its first `count` gateways swapped for new ones."""
    spec = rgw_spec()
    return dataclasses.replace(spec, backends=tuple(
        Backend(b.address.replace("192.0.2.5", "192.0.2.6", 1)
                if int(b.address.rsplit(".", 1)[1]) < 50 + count else b.address, b.ports)
        for b in spec.backends))


@pytest.mark.parametrize(("desired", "ratio", "held"), [
    (replaced(1), 0.5, None),                        # 4 of 12 pairs
    (replaced(2), 0.5, "8 of 12 addresses would change"),
    (without(rgw_spec(), *(f"192.0.2.{i}" for i in (53, 54, 55))), 0.5, None),  # 6 of 12: not over
    (without(rgw_spec(), *(f"192.0.2.{i}" for i in (52, 53, 54, 55))), 0.5,
     "8 of 12 addresses would change"),
    (replaced(6), 0.99, "24 of 12 addresses would change"),
    (replaced(6), 0.0, None),                        # 0: off
    (dataclasses.replace(rgw_spec(), backends=tuple(dataclasses.replace(b, ready=False)
                                                     for b in rgw_spec().backends)), 0.1, None),
])
def test_change_ratio_table(desired: ServiceSpec, ratio: float, held: str | None) -> None:
    other = simple_spec("db", ["192.0.2.9"], source="other")
    current = cluster(rgw_spec(), other)
    ratios = {"rgw": ratio} if ratio else {}
    plan = make_plan([render(desired, RS), render(simple_spec("db", ["192.0.2.8"],
                                                              source="other"), RS)],
                     current, PlanSettings(owner=OWNER, max_change_ratios=ratios))
    held_here = [h for h in plan.held if h.change.service[1] == "ocs-external-rgw-lb"]
    assert {h.detail for h in held_here} == ({held} if held else set())
    assert {h.reason for h in held_here} <= {"change-ratio"}
    assert any(c.service == ("external", "db") for c in plan.changes), "others go on"
    if held:
        assert not any(c.service[1] == "ocs-external-rgw-lb" for c in plan.changes)
        forced = make_plan([render(desired, RS)], current, PlanSettings(
            owner=OWNER, max_change_ratios=ratios, force=True, max_delete_ratio=1.0))
        assert not forced.held and forced.of("update")


def test_change_ratio_spares_new_services_the_service_object_and_recreated_endpoints() -> None:
    ratios = {"rgw": 0.1}
    assert not make_plan([render(rgw_spec(), RS)], [],
                         PlanSettings(owner=OWNER, max_change_ratios=ratios)).held
    current = cluster(rgw_spec())
    # The Endpoints deleted by hand: writing them again adds no address the slices lack.
    current = [o for o in current if o["kind"] != "Endpoints"]
    new_port = dataclasses.replace(replaced(6), ports=(dataclasses.replace(HTTP[0], port=90),))
    assert not make_plan([render(rgw_spec(), RS)], current,
                         PlanSettings(owner=OWNER, max_change_ratios=ratios)).held
    plan = make_plan([render(new_port, RS)], current,
                     PlanSettings(owner=OWNER, max_change_ratios=ratios))
    assert [c.kind for c in plan.changes] == ["Service"]
    assert {h.change.kind for h in plan.held} == {"EndpointSlice", "Endpoints"}


# --- configuration ----------------------------------------------------------------------

def config_file(tmp: Path, top: str = "", source: str = "") -> Path:
    (tmp / "inventory.yaml").write_text("services: []\n")
    path = tmp / "config.yaml"
    path.write_text(f"owner: {OWNER}\n{top}sources:\n"
                    f"  - {{name: rgw, provider: static, path: inventory.yaml{source}}}\n"
                    "  - {name: other, provider: static, path: inventory.yaml}\n")
    return path


@pytest.mark.parametrize(("top", "source", "ratios", "misses"), [
    ("", "", {}, {"rgw": 1, "other": 1}),
    ("max_change_ratio: 0.5\nremove_after_misses: 3\n", "", {"rgw": 0.5, "other": 0.5},
     {"rgw": 3, "other": 3}),
    ("max_change_ratio: 0.5\n", ", max_change_ratio: 0.9, remove_after_misses: 2",
     {"rgw": 0.9, "other": 0.5}, {"rgw": 2, "other": 1}),
    ("max_change_ratio: 0.5\n", ", max_change_ratio: 0", {"other": 0.5},
     {"rgw": 1, "other": 1}),
    ("max_change_ratio: 1\n", "", {"rgw": 1.0, "other": 1.0}, {"rgw": 1, "other": 1}),
])
def test_config_levels(tmp_path: Path, top: str, source: str, ratios: dict[str, float],
                       misses: dict[str, int]) -> None:
    config = load_config(config_file(tmp_path, top, source))
    assert config.change_ratios() == ratios
    assert config.misses() == misses


@pytest.mark.parametrize(("top", "source", "field"), [
    ("max_change_ratio: 1.5\n", "", "max_change_ratio"),
    ("max_change_ratio: true\n", "", "max_change_ratio"),
    ("max_change_ratio: '0.5'\n", "", "max_change_ratio"),
    ("remove_after_misses: 0\n", "", "remove_after_misses"),
    ("remove_after_misses: 2.5\n", "", "remove_after_misses"),
    ("remove_after_misses: 100000\n", "", "remove_after_misses"),
    ("", ", remove_after_misses: 0", "sources[0].remove_after_misses"),
    ("", ", max_change_ratio: -0.1", "sources[0].max_change_ratio"),
])
def test_config_errors_name_the_field(tmp_path: Path, top: str, source: str,
                                      field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(config_file(tmp_path, top, source))
    assert e.value.field == field


# --- through the CLI ---------------------------------------------------------------------

def write(tmp: Path, services: list[JSON], top: str = "", source: str = "") -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: {OWNER}\nnamespace: external\n{top}sources:\n"
                      f"  - {{name: rgw, provider: static, path: inventory.yaml{source}}}\n")
    return config


def writes_to(kube: KubeApiServer, name: str) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.write_requests() if f"/{name}" in r.path]


def pairs(kube: KubeApiServer, service: str) -> dict[str, bool]:
    """address:port -> ready, from the slices and the Endpoints (which must agree)."""
    objs = [s for s in kube.list_objects("EndpointSlice", "storage")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service]
    from_slices = {f"{e.address}:{p}": e.ready for o in objs for e in address_entries(o)
                   for _, p in e.ports}
    ep = kube.get_object("Endpoints", "storage", service)
    assert ep is not None
    from_endpoints = {f"{e.address}:{p}": e.ready for e in address_entries(ep)
                      for _, p in e.ports}
    assert from_slices == from_endpoints
    return from_slices


def objects_of(kube: KubeApiServer, service: str) -> list[JSON]:
    return [o for kind in ("EndpointSlice", "Endpoints") for o in kube.list_objects(kind, "storage")
            if o["metadata"]["name"].startswith(service)]


def test_change_over_the_ratio_is_held_until_force(kube: KubeApiServer, kubeconfig: Path,
                                                   tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(), rgw_entry(range(60, 64), name="other")],
                   top="max_change_ratio: 0.5\n")
    assert run_sync(config, kubeconfig).returncode == 0
    # Four of six gateways replaced (16 of 12 pairs change); `other` loses one of four.
    write(tmp_path, [rgw_entry([50, 51, 70, 71, 72, 73]), rgw_entry(range(60, 63), name="other")],
          top="max_change_ratio: 0.5\n")
    before = pairs(kube, "ocs-external-rgw-lb")
    kube.reset_requests()
    result = run_sync(config, kubeconfig)
    assert result.returncode == 1, result.stderr
    assert "over max_change_ratio (16 of 12 addresses would change)" in result.stderr
    assert writes_to(kube, "ocs-external-rgw-lb") == []
    assert pairs(kube, "ocs-external-rgw-lb") == before
    assert len(pairs(kube, "other")) == 6, "the other Service is synced"

    shown = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    assert shown.returncode == 1
    assert ("= held update EndpointSlice storage/ocs-external-rgw-lb-ipv4-" in shown.stdout)
    assert ("over max_change_ratio (16 of 12 addresses would change; check the source, then "
            "run with --force)") in shown.stdout

    result = run_sync(config, kubeconfig, "--force")
    assert result.returncode == 0, result.stderr
    assert set(pairs(kube, "ocs-external-rgw-lb")) == {
        f"192.0.2.{i}:{p}" for i in (50, 51, 70, 71, 72, 73) for p in (8080, 8081)}

    # The source's own value wins over the config's: 0.9 lets 8 of 12 through.
    write(tmp_path, [rgw_entry([50, 51, 52, 53, 72, 73]), rgw_entry(range(60, 63), name="other")],
          top="max_change_ratio: 0.1\n", source=", max_change_ratio: 0.9")
    result = run_sync(config, kubeconfig)
    assert result.returncode == 0, result.stderr
    assert pairs(kube, "ocs-external-rgw-lb") == {
        f"192.0.2.{i}:{p}": True for i in (50, 51, 52, 53, 72, 73) for p in (8080, 8081)}


def test_flap_damping_end_to_end(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    top = "remove_after_misses: 3\n"
    config = write(tmp_path, [rgw_entry()], top=top)
    assert run_sync(config, kubeconfig).returncode == 0
    gone = [f"{GONE}:8080", f"{GONE}:8081"]

    def misses() -> list[dict[str, int]]:
        return sorted((json.loads(o["metadata"]["annotations"][MISSES])
                       for o in objects_of(kube, "ocs-external-rgw-lb")), key=len)

    write(tmp_path, [rgw_entry(range(50, 55))], top=top)
    assert run_sync(config, kubeconfig).returncode == 0
    assert [pairs(kube, "ocs-external-rgw-lb")[g] for g in gone] == [False, False]
    assert misses() == [{gone[0]: 1}, {gone[1]: 1}, {gone[0]: 1, gone[1]: 1}]

    # Back again: ready, and the count is gone.
    write(tmp_path, [rgw_entry()], top=top)
    assert run_sync(config, kubeconfig).returncode == 0
    assert all(pairs(kube, "ocs-external-rgw-lb").values())
    assert misses() == [{}, {}, {}]

    write(tmp_path, [rgw_entry(range(50, 55))], top=top)
    for run in (1, 2):
        assert run_sync(config, kubeconfig).returncode == 0
        assert [pairs(kube, "ocs-external-rgw-lb")[g] for g in gone] == [False, False]
        assert misses() == [{gone[0]: run}, {gone[1]: run}, {gone[0]: run, gone[1]: run}]
    result = run_sync(config, kubeconfig)
    assert result.returncode == 0, result.stderr
    assert not set(gone) & set(pairs(kube, "ocs-external-rgw-lb")), "removed on run 3"
    assert len(pairs(kube, "ocs-external-rgw-lb")) == 10
    kube.reset_requests()
    result = run_sync(config, kubeconfig)
    assert kube.write_requests() == [] and "updated=0" in result.stderr


def test_damping_off_behaves_as_before(kube: KubeApiServer, kubeconfig: Path,
                                       tmp_path: Path) -> None:
    """The article test's counts with remove_after_misses: 1 spelled out."""
    top = "remove_after_misses: 1\n"
    config = write(tmp_path, [rgw_entry(), rgw_entry(range(60, 62), name="other")], top=top)
    assert "summary created=8 updated=0 deleted=0" in run_sync(config, kubeconfig).stderr
    smaller = rgw_entry()
    smaller["endpoints"].remove({"address": GONE, "port": 8081})
    write(tmp_path, [smaller, rgw_entry(range(60, 62), name="other")], top=top)
    kube.reset_requests()
    assert run_sync(config, kubeconfig).returncode == 0
    assert sorted(r.method for r in kube.write_requests()) == ["PUT", "PUT"]
    assert f"{GONE}:8081" not in pairs(kube, "ocs-external-rgw-lb")
    assert not any(MISSES in (o["metadata"].get("annotations") or {})
                   for o in objects_of(kube, ""))


def test_an_address_moved_to_other_ports_is_not_kept_on_the_old_ones() -> None:
    state = cluster(rgw_spec())
    moved = rgw_spec(ports=(9090, 9091))
    _, state = one_run([moved], state, 3)
    assert {p for _, _, p in addresses(state)} == {9090, 9091}
    assert misses_of(state) == {}
