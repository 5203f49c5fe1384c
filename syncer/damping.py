"""Flap damping (`remove_after_misses: N`): an address that vanished from its source is kept,
marked not ready, for N-1 further runs, and removed on the Nth run it is missing. Pure: the
desired objects and the current ones in, the desired objects with the kept addresses out, so
the plan stays a plain diff.

The state lives on the owned objects: each EndpointSlice / Endpoints that keeps a missing
address carries the annotation `endpoints-sync.io/misses`, compact JSON with sorted keys
(`{"192.0.2.5:8080":2}`: the address, then the port numbers of its port set), so a run that
changes nothing writes nothing. It is bounded: at most N-1 runs per address and MAX_KEPT
addresses per Service. A count is believed only for an address the object holds as not ready,
so a stale or edited annotation cannot shorten the life of a ready address. An address the
source lists again is ready again and forgotten; once an object keeps nothing its annotation
reads `{}` (updates keep annotations they are not told about, so it is emptied, not removed).
With N=1 (the default) nothing is kept and no annotation is ever written.

What it does not touch:
- A Service that vanished from its source entirely is pruned as before, under
  max_delete_ratio; a failed source freezes its Services before any of this matters.
- The empty guard: `address_count` stays what the source listed, so a Service whose source
  lists nothing is still held (unless allow_empty; then its addresses go after N runs).
- An address the address policy now refuses is never kept; ExternalName has no addresses.
- An address still listed, on other ports, has not vanished: its old port set just goes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from syncer.desired import AddressPolicy
from syncer.model import Backend, ServiceSpec
from syncer.ownership import (
    ADDRESS_KINDS,
    JSON,
    MISSES,
    annotations_of,
    key_of,
    owned_address_objects,
    state_annotation,
    with_state_annotation,
)
from syncer.render import (
    AddressEntry,
    PortSet,
    RenderedService,
    RenderSettings,
    address_entries,
    render,
)

MAX_KEPT = 1000
"""Missing addresses kept per Service; beyond that the oldest misses go at once (bounded
annotations: an Endpoints object lists every kept address of its Service)."""

Ident = tuple[str, PortSet]
ServiceKey = tuple[str, str]


@dataclass(frozen=True)
class DampingSettings:
    owner: str
    render: RenderSettings
    remove_after_misses: Mapping[str, int] = field(default_factory=dict)
    """Per source name; a source not named has 1 (off)."""
    policies: Mapping[str, AddressPolicy] = field(default_factory=dict)
    """Per source name: an address the policy refuses now is not kept."""


@dataclass
class Damped:
    rendered: list[RenderedService]
    kept: dict[ServiceKey, int] = field(default_factory=dict)
    """Service -> how many missing addresses it keeps (not ready) this run."""
    trimmed: dict[ServiceKey, int] = field(default_factory=dict)
    """Service -> missing addresses removed early because more than MAX_KEPT were missing."""


def misses_key(address: str, ports: PortSet) -> str:
    host = f"[{address}]" if ":" in address else address
    numbers = ",".join(str(n) for _, n in ports)
    return f"{host}:{numbers}" if numbers else host


def damp(specs: Sequence[ServiceSpec], rendered: Sequence[RenderedService],
         current: Iterable[JSON], settings: DampingSettings) -> Damped:
    """`rendered` may be a subset of `specs` (services dropped before); matched by name."""
    by_service = owned_address_objects(current, settings.owner)
    spec_of = {(s.namespace or "default", s.name): s for s in specs}
    out = Damped(list(rendered))
    for i, listed in enumerate(rendered):
        key = (listed.namespace, listed.name)
        mine, spec = by_service.get(key), spec_of.get(key)
        if not mine or spec is None or spec.type == "ExternalName":
            continue
        limit = settings.remove_after_misses.get(spec.source, 1)
        annotated = any(MISSES in annotations_of(o) for o in mine)
        if limit <= 1 and not annotated:
            continue  # off, and nothing to clear: exactly as without damping
        policy = settings.policies.get(spec.source, AddressPolicy())
        kept = _kept(spec, mine, limit, policy)
        svc = listed
        if len(kept) > MAX_KEPT:
            out.trimmed[key] = len(kept) - MAX_KEPT
            kept = dict(sorted(kept.items(), key=lambda kv: (kv[1][0], kv[0]))[:MAX_KEPT])
        if kept:
            out.kept[key] = len(kept)
            extra = tuple(Backend(e.address, dict(e.ports), ready=False, zone=e.zone,
                                  hostname=e.hostname) for _, e in kept.values())
            fresh = render(dataclasses.replace(spec, backends=spec.backends + extra),
                           settings.render)
            # The empty guard weighs what the source listed, not what damping keeps.
            svc = dataclasses.replace(fresh, address_count=listed.address_count)
        counts = {ident: n for ident, (n, _) in kept.items()}
        out.rendered[i] = _annotate(svc, counts, {key_of(o): o for o in mine})
    return out


def _kept(spec: ServiceSpec, mine: list[JSON], limit: int,
          policy: AddressPolicy) -> dict[Ident, tuple[int, AddressEntry]]:
    """The missing addresses to keep, with their new miss counts."""
    listed = {b.address for b in spec.backends}
    port_names = {p.name for p in spec.ports}
    seen = _recorded_misses(mine)
    missing: dict[Ident, AddressEntry] = {}
    for obj in mine:
        for e in address_entries(obj):
            ident = (e.address, e.ports)
            if e.address in listed or not all(name in port_names for name, _ in e.ports):
                continue  # still listed (perhaps on other ports), or of a port now gone
            prior = missing.get(ident)
            missing[ident] = e if prior is None else dataclasses.replace(
                prior, hostname=prior.hostname or e.hostname, zone=prior.zone or e.zone)
    kept = {}
    for ident, e in missing.items():
        count = seen.get(ident, 0) + 1
        if count < limit and _allowed(e.address, policy):
            kept[ident] = (count, e)
    return kept


def _allowed(address: str, policy: AddressPolicy) -> bool:
    try:
        return policy.refused(ipaddress.ip_address(address)) is None
    except ValueError:
        return False


def _recorded_misses(objs: Iterable[JSON]) -> dict[Ident, int]:
    """Counts from the annotations, for the addresses each object holds as not ready."""
    seen: dict[Ident, int] = {}
    for obj in objs:
        recorded = _counts(state_annotation(obj, MISSES))
        for e in address_entries(obj):
            n = recorded.get(misses_key(e.address, e.ports))
            if not e.ready and n is not None:
                ident = (e.address, e.ports)
                seen[ident] = max(seen.get(ident, 0), n)
    return seen


def _counts(data: dict[str, object]) -> dict[str, int]:
    """Only positive whole counts are believed."""
    return {k: v for k, v in data.items()
            if isinstance(v, int) and not isinstance(v, bool) and v >= 1}


def _annotate(svc: RenderedService, counts: Mapping[Ident, int],
              current: Mapping[tuple[str, str, str], JSON]) -> RenderedService:
    objects = tuple(_annotated(obj, counts, current.get(key_of(obj))) for obj in svc.objects)
    return dataclasses.replace(svc, objects=objects)


def _annotated(obj: JSON, counts: Mapping[Ident, int], current: JSON | None) -> JSON:
    """The object with the misses of the addresses it keeps; `{}` where a count is cleared."""
    if obj["kind"] not in ADDRESS_KINDS:
        return obj
    held = {misses_key(e.address, e.ports): counts[(e.address, e.ports)]
            for e in address_entries(obj) if (e.address, e.ports) in counts}
    return with_state_annotation(obj, MISSES, held, current)
