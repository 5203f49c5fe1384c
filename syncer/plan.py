"""The plan: what to create, update and delete to turn the cluster into the desired state.

Pure: no I/O. Ownership lives here (only our objects are ever changed), and so do the
policies and guards, applied as filters after the diff, as external-dns does.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from syncer.ownership import (
    ADDRESS_KINDS,
    JSON,
    MANAGED_BY,
    MANAGED_LABELS,
    OWNER,
    TOOL,
    annotations_of,
    is_owned,
    key_of,
    labels_of,
    service_of,
    source_of,
)
from syncer.render import RenderedService, address_entries

if TYPE_CHECKING:
    from syncer.readiness import ReadinessChange

Key = tuple[str, str, str]
Action = Literal["create", "update", "delete"]
Policy = Literal["sync", "upsert-only", "create-only"]


@dataclass(frozen=True)
class Change:
    action: Action
    key: Key
    body: JSON | None
    """What to send: the object to create, the full object to PUT; None for a delete."""
    current: JSON | None
    service: tuple[str, str]
    """(namespace, name) of the Service the object belongs to."""
    source: str
    recreate: bool = False
    """An update the API refuses (an immutable field): delete `current`, then create `body`."""

    @property
    def kind(self) -> str:
        return self.key[0]

    @property
    def name(self) -> str:
        return f"{self.key[1]}/{self.key[2]}"


@dataclass(frozen=True)
class Held:
    """A change the plan found but does not make, and why."""

    change: Change
    reason: Literal["policy", "empty", "delete-ratio", "immutable", "change-ratio"]
    detail: str = ""
    """What to do about it, for the reasons that need a person (immutable)."""

    @property
    def why(self) -> str:
        """The one wording of why, for the plan and the Events."""
        if self.reason == "immutable":
            return self.detail.removeprefix(f"Service {self.change.name}: ")
        if self.reason == "change-ratio":
            return f"over max_change_ratio ({self.detail}; check the source, then run with --force)"
        return {"policy": "the policy does not allow it",
                "empty": "the source lists no address (allow_empty is off)",
                "delete-ratio": "over max_delete_ratio (use --force)"}[self.reason]


@dataclass(frozen=True)
class Conflict:
    """An object in the way that is not ours; the Service it blocks is left alone."""

    key: Key
    service: tuple[str, str]
    source: str
    reason: str


@dataclass(frozen=True)
class PlanSettings:
    owner: str = "default"
    policy: Policy = "sync"
    max_delete_ratio: float = 0.5
    force: bool = False
    frozen_sources: frozenset[str] = frozenset()
    """Sources that failed: their objects are left exactly as they are."""
    allow_empty_sources: frozenset[str] = frozenset()
    adopt: bool = False
    """Take over same-named objects that no tool manages (never one with a selector)."""
    kept_services: frozenset[tuple[str, str]] = frozenset()
    max_change_ratios: Mapping[str, float] = field(default_factory=dict)
    """Per source, where max_change_ratio is on: hold a Service's address writes that would
    change more than this share of its address+port pairs (see _hold_large_changes)."""
    """(namespace, name) of Services whose source got them wrong: left as they are."""


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    unchanged: int = 0
    owned: int = 0
    readiness: list[ReadinessChange] = field(default_factory=list)
    """Backends whose published readiness changes (health probes; syncer.readiness)."""

    def of(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    @property
    def empty(self) -> bool:
        return not self.changes


def make_plan(desired: Sequence[RenderedService], current: Iterable[JSON],
              settings: PlanSettings) -> Plan:
    """Diff desired against current. `current` may hold objects that are not ours (found by
    name): they are never changed, and a desired object they stand in the way of becomes a
    Conflict."""
    plan = Plan()
    owned: dict[Key, JSON] = {}
    foreign: dict[Key, JSON] = {}
    for obj in current:
        (owned if is_owned(obj, settings.owner) else foreign)[key_of(obj)] = obj
    plan.owned = len(owned)
    owned_by_service: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for key, obj in owned.items():
        owned_by_service[(key[1], service_of(obj))].append(key)

    keep: set[Key] = {k for k, o in owned.items()
                      if source_of(o) in settings.frozen_sources
                      or (k[1], service_of(o)) in settings.kept_services}
    for svc in desired:
        _plan_service(plan, svc, owned, foreign, owned_by_service, keep, settings)

    gone_services: set[tuple[str, str]] = set()
    for key, obj in owned.items():
        if key in keep:
            continue
        service = (key[1], service_of(obj))
        plan.changes.append(Change("delete", key, None, obj, service, source_of(obj)))
        if key[0] == "Service":
            gone_services.add(service)
    _apply_policy(plan, settings, gone_services)
    _hold_large_changes(plan, owned, settings, gone_services)
    return plan


def _plan_service(plan: Plan, svc: RenderedService, owned: dict[Key, JSON],
                  foreign: dict[Key, JSON], owned_by_service: dict[tuple[str, str], list[Key]],
                  keep: set[Key], settings: PlanSettings) -> None:
    service = (svc.namespace, svc.name)
    mine = owned_by_service.get(service, [])
    blocked, adopted = _conflict(svc, owned, foreign, settings.adopt)
    if blocked is not None:
        plan.conflicts.append(blocked)
        keep.update(mine)
        return
    # An ExternalName Service has no addresses: its old address objects simply go.
    external = svc.objects[0]["spec"].get("type") == "ExternalName"
    hold_addresses = (not external and svc.address_count == 0
                      and svc.source not in settings.allow_empty_sources
                      and _address_count(owned[k] for k in mine if k[0] in ADDRESS_KINDS) > 0)
    recreated = False
    for obj in svc.objects:
        key = key_of(obj)
        keep.add(key)
        cur = owned.get(key) or adopted.get(key)
        if cur is None or (recreated and key[0] == "Endpoints"):
            # Deleting the Service deletes its same-named Endpoints too: write them again.
            change = Change("create", key, obj, cur, service, svc.source)
        elif key[0] == "Service" and clusterip_switch(cur, obj):
            change = Change("update", key, _recreate_body(cur, obj), cur, service, svc.source,
                            recreate=True)
            if not settings.force or settings.policy != "sync":  # a recreate deletes
                plan.held.append(Held(change, "immutable",
                                      recreate_advice(cur, obj, settings.policy)))
                continue
            recreated = True
        elif needs_update(cur, obj):
            change = Change("update", key, update_body(cur, obj), cur, service, svc.source)
        else:
            plan.unchanged += 1
            continue
        if hold_addresses and key[0] in ADDRESS_KINDS:
            plan.held.append(Held(change, "empty"))
        else:
            plan.changes.append(change)
    if hold_addresses:
        # Stale address objects of an emptied Service stay too: that is the point.
        keep.update(k for k in mine if k[0] in ADDRESS_KINDS)


def _conflict(svc: RenderedService, owned: dict[Key, JSON], foreign: dict[Key, JSON],
              adopt: bool) -> tuple[Conflict | None, dict[Key, JSON]]:
    """The first object in the way of this Service, if any, and the objects to adopt."""
    service = (svc.namespace, svc.name)
    adopted: dict[Key, JSON] = {}
    for obj in svc.objects:
        key = key_of(obj)
        cur = owned.get(key) or foreign.get(key)
        if key[0] == "Service" and cur is not None and (cur.get("spec") or {}).get("selector"):
            return Conflict(key, service, svc.source, "has a selector (its endpoints belong "
                            "to the cluster's controller)"), {}
        if key in foreign:
            other = foreign[key]
            theirs = labels_of(other)
            if adopt and MANAGED_BY not in theirs:
                adopted[key] = other
                continue
            owner = theirs.get(OWNER)
            why = (f"owned by endpoints-sync owner {owner!r}" if theirs.get(MANAGED_BY) == TOOL
                   else f"managed by {theirs[MANAGED_BY]!r}" if MANAGED_BY in theirs
                   else "exists without endpoints-sync's ownership labels (set adopt: true "
                   "to take it over)")
            return Conflict(key, service, svc.source, why), {}
    return None, adopted


def _address_count(objs: Iterable[JSON]) -> int:
    total = 0
    for o in objs:
        if o["kind"] == "EndpointSlice":
            total += len(o.get("endpoints") or [])
        else:
            for s in o.get("subsets") or []:
                total += len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or [])
    return total


def _apply_policy(plan: Plan, settings: PlanSettings,
                  gone_services: set[tuple[str, str]]) -> None:
    blocked: dict[Policy, set[Action]] = {"sync": set(), "upsert-only": {"delete"},
                                          "create-only": {"delete", "update"}}
    kept = []
    for c in plan.changes:
        if c.action in blocked[settings.policy]:
            plan.held.append(Held(c, "policy"))
        else:
            kept.append(c)
    plan.changes = kept
    # The ratio guard weighs Services vanishing from their source, not objects replaced
    # inside a Service that stays (a port change deletes old slices as a matter of course).
    vanishing = [c for c in plan.changes if c.action == "delete" and c.service in gone_services]
    if (not settings.force and vanishing and plan.owned
            and len(vanishing) > settings.max_delete_ratio * plan.owned):
        held = {c.key for c in vanishing}
        plan.held.extend(Held(c, "delete-ratio") for c in vanishing)
        plan.changes = [c for c in plan.changes if c.key not in held]


def _hold_large_changes(plan: Plan, owned: Mapping[Key, JSON], settings: PlanSettings,
                        gone_services: set[tuple[str, str]]) -> None:
    """max_change_ratio, octoDNS-style: a Service whose address writes would add and remove
    more than that share of its current address+port pairs is held whole (its address
    objects; the Service object itself goes on) until --force. Readiness flips do not count
    (damping's kept addresses are not changes until they go); a new Service, or one with no
    current addresses, is never held; vanishing Services are max_delete_ratio's."""
    if settings.force or not settings.max_change_ratios:
        return
    changes: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for c in plan.changes:
        if c.kind in ADDRESS_KINDS and c.service not in gone_services:
            changes[c.service].append(c)
    now: dict[tuple[str, str], dict[Key, JSON]] = defaultdict(dict)
    for key, obj in owned.items():
        if key[0] in ADDRESS_KINDS and (key[1], service_of(obj)) in changes:
            now[(key[1], service_of(obj))][key] = obj
    held: set[int] = set()
    for service, mine in changes.items():
        ratios = [settings.max_change_ratios[c.source] for c in mine
                  if c.source in settings.max_change_ratios]
        before = _address_pairs(now[service].values())
        if not ratios or not before:
            continue
        after_objects = dict(now[service])
        for c in mine:
            if c.body is None:
                after_objects.pop(c.key, None)
            else:
                after_objects[c.key] = c.body
        changed = len(before ^ _address_pairs(after_objects.values()))
        if changed > min(ratios) * len(before):
            detail = f"{changed} of {len(before)} addresses would change"
            plan.held.extend(Held(c, "change-ratio", detail) for c in mine)
            held.update(id(c) for c in mine)
    plan.changes = [c for c in plan.changes if id(c) not in held]


def _address_pairs(objs: Iterable[JSON]) -> set[tuple[str, str, int]]:
    """(address, port name, port) of every kind together: a Service's addresses, once."""
    return {(e.address, name, port) for o in objs for e in address_entries(o)
            for name, port in e.ports}


# --- comparison -------------------------------------------------------------------------

def needs_update(current: JSON, desired: JSON) -> bool:
    return not (_meta_matches(current, desired) and _view(current) == _view(desired))


def _meta_matches(current: JSON, desired: JSON) -> bool:
    for get in (labels_of, annotations_of):
        have, want = get(current), get(desired)
        if any(have.get(k) != v for k, v in want.items()):
            return False
    return all(k in labels_of(desired) for k in labels_of(current) if k in MANAGED_LABELS)


def _view(obj: JSON) -> Any:
    """The part of an object we manage, with the API server's defaults filled in."""
    kind = obj["kind"]
    if kind == "Service":
        spec = obj.get("spec") or {}
        return (spec.get("type", "ClusterIP"), spec.get("clusterIP") == "None",
                spec.get("externalName"), _ports(spec.get("ports"), service=True),
                spec.get("trafficDistribution"))
    if kind == "EndpointSlice":
        endpoints = sorted(
            (tuple(e.get("addresses") or ()), bool((e.get("conditions") or {}).get("ready", True)),
             e.get("hostname"), e.get("zone"),
             tuple(z.get("name") for z in (e.get("hints") or {}).get("forZones") or ()))
            for e in obj.get("endpoints") or [])
        return (obj.get("addressType"), endpoints, _ports(obj.get("ports")))
    subsets = sorted(
        (sorted((a["ip"], a.get("hostname")) for a in s.get("addresses") or []),
         sorted((a["ip"], a.get("hostname")) for a in s.get("notReadyAddresses") or []),
         _ports(s.get("ports")))
        for s in obj.get("subsets") or [])
    return [s for s in subsets if s[0] or s[1]]


def _ports(ports: list[JSON] | None, service: bool = False) -> list[tuple[Any, ...]]:
    out = []
    for p in ports or []:
        entry: tuple[Any, ...] = (p.get("name", ""), p.get("port"), p.get("protocol", "TCP"),
                                  p.get("appProtocol"))
        if service:
            entry += (str(p.get("targetPort", p.get("port"))),)
        out.append(entry)
    return sorted(out)


def update_body(current: JSON, desired: JSON) -> JSON:
    """The object to PUT: ours in full, keeping what others added and what the server owns."""
    body = copy.deepcopy(desired)
    md = body["metadata"]
    cur_md = current.get("metadata", {})
    md["resourceVersion"] = cur_md.get("resourceVersion")
    md["labels"] = {**{k: v for k, v in labels_of(current).items() if k not in MANAGED_LABELS},
                    **md.get("labels", {})}
    md["annotations"] = {**annotations_of(current), **md.get("annotations", {})}
    if desired["kind"] == "Service":
        # clusterIP, ipFamilies, sessionAffinity… are the server's: keep them as they are.
        spec = copy.deepcopy(current.get("spec") or {})
        # ours: gone when the desired has none
        for ours in ("externalName", "ports", "trafficDistribution"):
            spec.pop(ours, None)
        if desired["spec"].get("type") == "ExternalName":
            for server_field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(server_field, None)
        spec.update(desired["spec"])
        body["spec"] = spec
    return body


# --- immutable changes ------------------------------------------------------------------
# Headless <-> ClusterIP changes spec.clusterIP, which the API server refuses to update
# ("field is immutable"; sending the old value keeps the old kind). The only way is to delete
# the Service and create it again: that gives it a new cluster IP, and for a moment it is gone
# (its Endpoints with it), so it is held until a person says --force. Changes to and from
# ExternalName are plain updates (update_body clears the allocation).

def _headless(spec: JSON) -> bool:
    return spec.get("clusterIP") == "None"


def clusterip_switch(current: JSON, desired: JSON) -> bool:
    """Whether turning `current` into `desired` means Headless <-> ClusterIP."""
    have, want = current.get("spec") or {}, desired.get("spec") or {}
    if "ExternalName" in (have.get("type"), want.get("type")):
        return False
    return _headless(have) != _headless(want)


def recreate_advice(current: JSON, desired: JSON, policy: Policy = "sync") -> str:
    md = current["metadata"]
    ns, name = md["namespace"], md["name"]
    kinds = ("Headless", "ClusterIP") if _headless(current.get("spec") or {}) else (
        "ClusterIP", "Headless")
    how = ("run with --force to recreate it, or delete it yourself" if policy == "sync" else
           f"policy {policy} never deletes: delete it yourself")
    return (f"Service {ns}/{name}: switching {kinds[0]} to {kinds[1]} needs the Service "
            "recreated (clusterIP is immutable; it gets a new cluster IP and is briefly gone); "
            f"{how}: kubectl delete service -n {ns} {name}")


def _recreate_body(current: JSON, desired: JSON) -> JSON:
    """The object to create in place of `current`: people's labels and annotations kept,
    nothing the server allocated for the old one."""
    body = update_body(current, desired)
    body["metadata"].pop("resourceVersion", None)
    body["spec"] = copy.deepcopy(desired["spec"])
    return body
