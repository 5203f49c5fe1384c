"""Health-probe readiness: from this run's probe results and the state kept on the owned
objects to each backend's published readiness. Pure: results, specs and the current objects
in; the specs with `Backend.ready` set, the new state and what changed out. syncer.probe runs
the probes; this module never connects to anything.

Rules (issue 11, README "Health probes"):
- The outcome never removes an address: a backend that fails is published not ready.
- A backend its source reports not ready stays not ready whatever the probe says; it is not
  probed and no state is kept for it.
- Thresholds count consecutive runs: `failure_threshold` failures turn a ready backend not
  ready, `success_threshold` passes turn it ready again. A fresh address (no state) starts
  from its source's readiness, i.e. ready.
- Fail-open (`min_ready_ratio`): when fewer than that share of a Service's probed backends
  would be ready, all are published as the source says, and the run warns.

The state lives on the owned EndpointSlices / Endpoints, in the annotation
`endpoints-sync.io/probe`: compact JSON with sorted keys, one entry per address and port set
that is not plainly ready (`{"192.0.2.5:8080":"down","192.0.2.6:8080":"up-1"}`):
`down` is published not ready, `down+N` not ready with N passes in a row toward
success_threshold, `up-N` ready with N failures in a row toward failure_threshold. A healthy
Service keeps `{}` (or no annotation at all if it never had one), so a run that changes
nothing writes nothing; the counts never exceed the thresholds, and at most MAX_TRACKED
entries are kept per Service. An entry that does not parse counts as nothing (a fresh
address). Once a Service's probe is removed, its annotation is emptied to `{}` and its
backends are published as the source says.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncer.damping import misses_key as endpoint_key  # one spelling of address+ports
from syncer.model import Backend, ServiceSpec
from syncer.ownership import (
    ADDRESS_KINDS,
    JSON,
    PROBE_STATE,
    annotations_of,
    is_owned,
    key_of,
    owned_address_objects,
    state_annotation,
    with_state_annotation,
)
from syncer.render import (
    PortSet,
    RenderedService,
    RenderSettings,
    address_entries,
    group_backends,
    port_set,
    render,
)

if TYPE_CHECKING:
    from syncer.probeoptions import ProbeOptions

MAX_TRACKED = 2000
"""State entries kept per Service (the Endpoints object holds every address of its Service:
its annotation must stay well under the API's 256 KiB). Beyond that, entries of addresses
still counting toward a flip go first; such an address starts fresh next run."""

ServiceKey = tuple[str, str]
Ident = tuple[str, PortSet]
"""One backend of a Service: its address and port set (a slice endpoint)."""
_STATE = re.compile(r"(up)-([1-9][0-9]{0,2})|(down)(?:\+([1-9][0-9]{0,2}))?")


@dataclass(frozen=True)
class ProbeResult:
    """One probe's answer: passed or not, and what was seen (`HTTP 503`, `connection
    refused`), for plan, logs and Events."""

    ok: bool
    detail: str


def backend_ident(spec: ServiceSpec, backend: Backend) -> Ident:
    return (backend.address, port_set(spec, backend))


def service_key(spec: ServiceSpec) -> ServiceKey:
    return (spec.namespace or "default", spec.name)


@dataclass(frozen=True)
class ReadinessChange:
    """A backend whose published readiness this run changes, and why."""

    service: ServiceKey
    source: str
    address: str
    ports: PortSet
    ready: bool
    """The readiness it gets now (it had the other)."""
    why: str

    @property
    def endpoint(self) -> str:
        return endpoint_key(self.address, self.ports)

    @property
    def text(self) -> str:
        """`192.0.2.5:80 ready -> not ready (probe: connection refused)`"""
        before, after = ("not ready", "ready") if self.ready else ("ready", "not ready")
        return f"{self.endpoint} {before} -> {after} ({self.why})"


@dataclass
class Readiness:
    """What the probes decided this run."""

    specs: list[ServiceSpec] = field(default_factory=list)
    """The specs with the published readiness set."""
    states: dict[ServiceKey, dict[str, str]] = field(default_factory=dict)
    """The state to write, per Service that is probed or has state to clear."""
    changes: list[ReadinessChange] = field(default_factory=list)
    fail_open: dict[ServiceKey, str] = field(default_factory=dict)
    """Service -> why its backends are published as the source says despite the probes."""
    trimmed: dict[ServiceKey, int] = field(default_factory=dict)
    """Service -> state entries dropped over MAX_TRACKED."""
    passed: Counter[str] = field(default_factory=Counter)
    """Per source: backends whose probe passed this run."""
    failed: Counter[str] = field(default_factory=Counter)
    """Per source: backends whose probe failed this run."""
    held_down: Counter[str] = field(default_factory=Counter)
    """Per source: backends published not ready because of their probe."""
    changed_specs: set[ServiceKey] = field(default_factory=set)
    """Services whose published readiness differs from their source's."""

    @property
    def probe_failed(self) -> int:
        return sum(self.failed.values())

    def rerendered(self, rendered: Sequence[RenderedService],
                   settings: RenderSettings) -> list[RenderedService]:
        """`rendered` with the Services whose readiness the probes changed rendered again
        (a subset of the specs: those the API rules let through)."""
        if not self.changed_specs:
            return list(rendered)
        spec_of = {service_key(s): s for s in self.specs}
        return [render(spec_of[(r.namespace, r.name)], settings)
                if (r.namespace, r.name) in self.changed_specs else r for r in rendered]

    def annotated(self, rendered: Sequence[RenderedService], current: Iterable[JSON],
                  owner: str) -> list[RenderedService]:
        """The final objects with the probe state on their address objects."""
        if not self.states:
            return list(rendered)
        now = {key_of(o): o for o in current if is_owned(o, owner)}
        out = []
        for svc in rendered:
            states = self.states.get((svc.namespace, svc.name))
            out.append(svc if states is None else dataclasses.replace(svc, objects=tuple(
                _annotated(o, states, now.get(key_of(o))) for o in svc.objects)))
        return out


@dataclass(frozen=True)
class _State:
    up: bool
    streak: int = 0
    """Failures in a row while up, passes in a row while down."""

    def step(self, ok: bool, probe: ProbeOptions) -> _State:
        if ok == self.up:
            return _State(self.up)
        limit = probe.failure_threshold if self.up else probe.success_threshold
        return _State(not self.up) if self.streak + 1 >= limit else _State(self.up,
                                                                           self.streak + 1)

    @property
    def encoded(self) -> str | None:
        if self.up:
            return f"up-{self.streak}" if self.streak else None
        return f"down+{self.streak}" if self.streak else "down"


def _states(data: dict[str, object]) -> dict[str, _State]:
    """Only entries in the state grammar are believed."""
    found = {}
    for key, text in data.items():
        m = _STATE.fullmatch(text) if isinstance(text, str) else None
        if m is not None:
            found[key] = (_State(True, int(m[2])) if m[1] else
                          _State(False, int(m[4] or 0)))
    return found


def decide(specs: Sequence[ServiceSpec], results: Mapping[tuple[ServiceKey, Ident], ProbeResult],
           current: Iterable[JSON], owner: str) -> Readiness:
    """Each probed backend's readiness from its result (none: not probed, as the source
    says) and its recorded state."""
    mine = owned_address_objects(current, owner)
    out = Readiness()
    for spec in specs:
        key = service_key(spec)
        objs = mine.get(key, [])
        if spec.probe is None or spec.type == "ExternalName":
            if any(PROBE_STATE in annotations_of(o) for o in objs):
                out.states[key] = {}  # the probe was removed: clear its state
                _note_changes(out, spec, {}, _published_now(objs),
                              "no probe: as the source reports")
            out.specs.append(spec)
            continue
        out.specs.append(_decide_service(out, spec, spec.probe, results, objs))
    return out


def _decide_service(out: Readiness, spec: ServiceSpec, probe: ProbeOptions,
                    results: Mapping[tuple[ServiceKey, Ident], ProbeResult],
                    objs: list[JSON]) -> ServiceSpec:
    key = service_key(spec)
    recorded: dict[str, _State] = {}
    for obj in objs:
        recorded.update(_states(state_annotation(obj, PROBE_STATE)))
    states: dict[Ident, _State] = {}
    seen: dict[Ident, ProbeResult] = {}
    for ports, backends in group_backends(spec).items():
        for address, b in backends.items():
            ident = (address, ports)
            result = results.get((key, ident))
            if not b.ready or result is None:
                continue  # the source's word stands: not ready, or not probed
            seen[ident] = result
            (out.passed if result.ok else out.failed)[spec.source] += 1
            prior = recorded.get(endpoint_key(*ident), _State(True))
            states[ident] = prior.step(result.ok, probe)
    up = sum(1 for s in states.values() if s.up)
    open_ = bool(probe.min_ready_ratio and states and up < probe.min_ready_ratio * len(states))
    if open_:
        out.fail_open[key] = (f"only {up} of {len(states)} probed backends would be ready, "
                              f"under min_ready_ratio {probe.min_ready_ratio:g}; all are "
                              "published as the source reports")
    ready = {ident: open_ or s.up for ident, s in states.items()}
    out.held_down[spec.source] += sum(1 for r in ready.values() if not r)
    out.states[key] = _bounded(out, key, states)
    why = {ident: _why(seen[ident], s, probe, open_) for ident, s in states.items()}
    _note_changes(out, spec, ready, _published_now(objs), "not probed: as the source reports",
                  why)
    published = tuple(dataclasses.replace(b, ready=False)
                      if b.ready and not ready.get(backend_ident(spec, b), True) else b
                      for b in spec.backends)
    if published != spec.backends:
        out.changed_specs.add(key)
        return dataclasses.replace(spec, backends=published)
    return spec


def _why(result: ProbeResult, state: _State, probe: ProbeOptions, open_: bool) -> str:
    if open_ and not state.up:
        return f"fail-open: probe {result.detail}, min_ready_ratio {probe.min_ready_ratio:g}"
    runs = probe.failure_threshold if not state.up else probe.success_threshold
    return f"probe: {result.detail}" + (f", {runs} runs in a row" if runs > 1 else "")


def _bounded(out: Readiness, key: ServiceKey, states: Mapping[Ident, _State]) -> dict[str, str]:
    encoded = {endpoint_key(*ident): text for ident, s in states.items()
               if (text := s.encoded) is not None}
    if len(encoded) <= MAX_TRACKED:
        return encoded
    out.trimmed[key] = len(encoded) - MAX_TRACKED
    # Published-down entries first: dropping one would publish a failing backend ready.
    kept = sorted(encoded.items(), key=lambda kv: (not kv[1].startswith("down"), kv[0]))
    return dict(kept[:MAX_TRACKED])


def _note_changes(out: Readiness, spec: ServiceSpec, ready: Mapping[Ident, bool],
                  now: Mapping[Ident, bool], unprobed: str,
                  why: Mapping[Ident, str] | None = None) -> None:
    """A change for each backend the objects hold with the other readiness; `unprobed` is
    why a backend without a verdict is ready again."""
    for ports, backends in group_backends(spec).items():
        for address, b in backends.items():
            ident = (address, ports)
            was = now.get(ident)
            will = ready.get(ident, b.ready) if b.ready else False
            if was is None or was == will:
                continue
            reason = (why or {}).get(ident) or (unprobed if will else
                                                "its source reports it not ready")
            out.changes.append(ReadinessChange(service_key(spec), spec.source, address, ports,
                                               will, reason))


def _published_now(objs: Iterable[JSON]) -> dict[Ident, bool]:
    now: dict[Ident, bool] = {}
    for obj in objs:
        for e in address_entries(obj):
            ident = (e.address, e.ports)
            now[ident] = now.get(ident, False) or e.ready
    return now


def _annotated(obj: JSON, states: Mapping[str, str], current: JSON | None) -> JSON:
    """The object with the state of the addresses it holds; `{}` where state is cleared
    (updates keep annotations they are not told about); none where there never was any."""
    if obj["kind"] not in ADDRESS_KINDS:
        return obj
    held = {k: states[k] for k in (endpoint_key(e.address, e.ports) for e in address_entries(obj))
            if k in states}
    return with_state_annotation(obj, PROBE_STATE, held, current)
