"""Kubernetes Events (events.k8s.io/v1) about each Service a run changed, failed or held.

At most one Event per Service per run, regarding the Service: reason `Synced` (Normal),
`Held` or `SyncFailed` (Warning), with a note that says what happened. Services unchanged
this run get none, and only a run that applies writes any (never plan, render or a dry run).

Events are best-effort: one that cannot be written never fails the run nor changes its exit
code. Each gets one attempt; a failure that would fail them all (a missing RBAC rule, an API
server in trouble) skips the rest, and the failures are logged in one line."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from syncer.apply import ApplyResult
from syncer.desired import Desired
from syncer.errors import KubeError
from syncer.ownership import ADDRESS_KINDS, JSON, is_owned, source_of
from syncer.plan import Action, Change, Held, Plan
from syncer.secrets import redact

if TYPE_CHECKING:  # the client is imported only when a cluster is contacted
    from syncer.kube import Kube

log = logging.getLogger("endpoints_sync")

REPORTING_CONTROLLER = "endpoints-sync"
ACTION = "Sync"
NOTE_LIMIT = 1024  # bytes: the API server refuses a longer note
INSTANCE_LIMIT = 128  # ... and a longer reportingInstance
LISTED_ADDRESSES = 10  # addresses a note names; the rest are counted
Reason = Literal["Synced", "Held", "SyncFailed"]
# Refusals of one Event (its namespace is gone, say): the others are still tried. Any other
# failure (403 for want of RBAC, 5xx, no answer) would fail them all: the rest are skipped.
ONE_EVENT_STATUSES = frozenset({404, 409, 422})
_KIND_ORDER = ("Service", "EndpointSlice", "Endpoints")
_PAST = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass(frozen=True)
class ServiceEvent:
    namespace: str
    name: str
    reason: Reason
    note: str
    uid: str = ""

    @property
    def type(self) -> str:
        return "Normal" if self.reason == "Synced" else "Warning"


@dataclass
class _Story:
    """What happened to one Service this run."""

    done: list[tuple[Change, Action]] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # why -> text, once each
    failure: str = ""
    readiness: list[str] = field(default_factory=list)  # health probes' readiness changes


def service_events(plan: Plan, desired: Desired, applied: ApplyResult,
                   current: Iterable[JSON], owner: str) -> list[ServiceEvent]:
    """One Event for each Service whose objects were written, failed or were held."""
    stories: dict[tuple[str, str], _Story] = defaultdict(_Story)
    for change, action in applied.done:
        stories[change.service].done.append((change, action))
    for held in plan.held:
        if held.reason != "policy":  # the configured policy: expected, not news
            stories[held.change.service].held.setdefault(held.reason, _held_note(held))
    for service in desired.skipped:
        stories[service].held["skipped"] = ("left as it is: its source could not build it "
                                            "this run (see endpoints-sync's log)")
    uids: dict[tuple[str, str], str] = {}
    for obj in current:
        if obj["kind"] != "Service":
            continue
        md = obj["metadata"]
        service = (md.get("namespace", ""), md["name"])
        uids[service] = md.get("uid", "")
        source = source_of(obj)
        if is_owned(obj, owner) and source in desired.failed_sources:
            stories[service].failure = (f"source {source!r} failed, so it was left as it is: "
                                        f"{desired.failed_sources[source]}")
    for conflict in plan.conflicts:
        kind, ns, name = conflict.key
        stories[conflict.service].failure = f"not synced: {kind} {ns}/{name} {conflict.reason}"
    for service, failure in applied.failures.items():
        stories[service].failure = failure
    for r in plan.readiness:  # said only where the change was written
        story = stories.get(r.service)
        if story is not None and story.done:
            story.readiness.append(r.text)
    return [_event(service, story, uids.get(service, ""))
            for service, story in sorted(stories.items())]


def _event(service: tuple[str, str], story: _Story, uid: str) -> ServiceEvent:
    parts = [p for p in (_done_note(story.done), _readiness_note(story.readiness),
                         *story.held.values()) if p]
    reason: Reason = "Held" if story.held else "Synced"
    if story.failure:
        reason = "SyncFailed"
        parts.append(story.failure)
    # Notes are stored in the cluster for anyone who may read Events: no secrets, as in logs.
    return ServiceEvent(service[0], service[1], reason, _fit(redact("; ".join(parts))), uid)


def _readiness_note(changes: Sequence[str]) -> str:
    """`readiness: 192.0.2.5:80 ready -> not ready (probe: connection refused)`"""
    if not changes:
        return ""
    more = len(changes) - LISTED_ADDRESSES
    return "readiness: " + ", ".join(changes[:LISTED_ADDRESSES]) + (
        f" (and {more} more)" if more > 0 else "")


def _held_note(held: Held) -> str:
    c = held.change
    return f"held {c.action} {c.kind} {c.name}: {held.why}"


def _done_note(done: Sequence[tuple[Change, Action]]) -> str:
    """`created Service, created 2 EndpointSlices, updated Endpoints: +192.0.2.7 -192.0.2.5`"""
    if not done:
        return ""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for change, action in done:
        verb = "recreated" if change.recreate else _PAST[action]
        counts[(change.kind, verb)] += 1
    order = {k: i for i, k in enumerate(_KIND_ORDER)}
    verbs = ("created", "recreated", "updated", "deleted")
    said = [f"{verb} {kind}" if n == 1 else f"{verb} {n} {kind}{'s' * (kind[-1] != 's')}"
            for (kind, verb), n in sorted(counts.items(),
                                          key=lambda kv: (order[kv[0][0]],
                                                          verbs.index(kv[0][1])))]
    return ", ".join(said) + _address_diff(done)


def _address_diff(done: Sequence[tuple[Change, Action]]) -> str:
    added: set[str] = set()
    removed: set[str] = set()
    for kind in ADDRESS_KINDS:  # per kind: an address moving between slices is no change
        old = {ip for c, _ in done if c.kind == kind for ip in _ips(c.current)}
        new = {ip for c, a in done if c.kind == kind and a != "delete" for ip in _ips(c.body)}
        added |= new - old
        removed |= old - new
    changes = [f"+{ip}" for ip in sorted(added)] + [f"-{ip}" for ip in sorted(removed)]
    if not changes:
        return ""
    more = len(changes) - LISTED_ADDRESSES
    return ": " + " ".join(changes[:LISTED_ADDRESSES]) + (f" (and {more} more)" if more > 0
                                                           else "")


def _ips(obj: JSON | None) -> set[str]:
    if obj is None:
        return set()
    if obj["kind"] == "EndpointSlice":
        return {a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []}
    return {a["ip"] for s in obj.get("subsets") or []
            for key in ("addresses", "notReadyAddresses") for a in s.get(key) or []}


def _fit(note: str, limit: int = NOTE_LIMIT) -> str:
    """At most `limit` bytes of UTF-8, cut on a character boundary."""
    data = note.encode()
    if len(data) <= limit:
        return note
    return data[:limit - len(" ...")].decode(errors="ignore") + " ..."


def reporting_instance(owner: str) -> str:
    """The pod's name ($HOSTNAME) in a cluster, else this owner id."""
    return (os.environ.get("HOSTNAME") or owner)[:INSTANCE_LIMIT]


def event_body(event: ServiceEvent, instance: str, now_ns: int | None = None) -> JSON:
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp = datetime.fromtimestamp(now_ns // 1000 / 1e6, UTC)
    regarding: JSON = {"apiVersion": "v1", "kind": "Service", "namespace": event.namespace,
                       "name": event.name}
    if event.uid:
        regarding["uid"] = event.uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # kubectl's and client-go's naming: unique per object and moment.
        "metadata": {"name": f"{event.name}.{now_ns:x}", "namespace": event.namespace},
        "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": ACTION,
        "reason": event.reason,
        "type": event.type,
        "regarding": regarding,
        "note": event.note,
    }


def emit(kube: Kube, events: Sequence[ServiceEvent], owner: str) -> int:
    """Write the Events; how many were written. Never raises for the API's refusals."""
    instance = reporting_instance(owner)
    written, first_error = 0, ""
    for event in events:
        try:
            kube.create_event(event_body(event, instance))
            written += 1
        except KubeError as e:
            first_error = first_error or str(e)
            if e.status not in ONE_EVENT_STATUSES:
                break
    if first_error:
        log.warning("%d of %d Events not written (Events never fail a run): %s",
                    len(events) - written, len(events), first_error,
                    extra={"event": "events_not_written"})
    elif events:
        log.debug("%d Events written", written)
    return written
