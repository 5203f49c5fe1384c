"""Carries out a plan: one task per Service, Services in parallel, each make-before-break.

Within one Service, writes go in the order of `safe_order`, and the first write that fails
(after the client's retries: 503, 422, 403, anything) stops that Service's remaining writes,
so what is left in the cluster still serves at least min(old, new) ready addresses. Other
Services go on. An update that finds its object gone (404: deleted by someone, or with its
Service) creates it; a delete that finds it gone is done; 409 re-reads and decides again.
A recreate (an immutable Service field, asked for with --force) deletes the exact version
the plan read and creates the new one."""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncer.config import WRITE_CONCURRENCY
from syncer.errors import KubeError
from syncer.logs import service_fields
from syncer.output import endpoint_addresses
from syncer.ownership import JSON, is_owned
from syncer.plan import Action, Change, Key, Plan, needs_update, update_body

if TYPE_CHECKING:  # the client is imported only when a cluster is contacted
    from syncer.kube import Kube

log = logging.getLogger("endpoints_sync")
CONFLICT_RETRIES = 3


@dataclass
class ApplyResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)
    done: list[tuple[Change, Action]] = field(default_factory=list)
    """Every change made, with what was done in the end (for the Events about each Service)."""
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, name) of a Service -> the failure that stopped its writes."""
    left: int = 0
    """Writes not started because the run was asked to stop."""
    written: dict[Key, str | None] = field(default_factory=dict)
    """The resourceVersion each create or update left (None: deleted): watch mode tells the
    echoes of its own writes from someone else's edits (syncer.watch)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, action: Action, change: Change | None = None) -> None:
        with self._lock:
            setattr(self, f"{action}d", getattr(self, f"{action}d") + 1)
            if change is not None:
                self.done.append((change, action))

    def wrote(self, key: Key, obj: JSON | None) -> None:
        """`obj`: what the API server answered (None: the object was deleted)."""
        version = None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")
        if obj is not None and version is None:
            return  # no version to recognise the echo by; never taken for a delete
        with self._lock:
            self.written[key] = None if version is None else str(version)

    def leave(self, writes: int) -> None:
        with self._lock:
            self.left += writes

    def fail(self, message: str, service: tuple[str, str] | None = None) -> None:
        with self._lock:
            self.failed.append(message)
            if service is not None:
                self.failures.setdefault(service, message)
        log.error("%s", message)


def safe_order(changes: list[Change]) -> list[Change]:
    """One Service's writes, make-before-break: its ready addresses never drop below
    min(old, new) at any moment, and never include one that is in neither.

    The Service is created or updated first; then new address objects are created; then
    updates, each time the one that leaves the most ready addresses (union by address and
    port, per kind) — growing ones before shrinking ones, and among slices whose contents
    shift, the order that keeps every address published somewhere; then old address objects
    are deleted; the Service last, when it goes."""
    services = [c for c in changes if c.kind == "Service" and c.action != "delete"]
    addresses = [c for c in changes if c.kind != "Service"]
    creates = sorted((c for c in addresses if c.action == "create"), key=_by_name)
    updates = [c for c in addresses if c.action == "update"]
    deletes = sorted((c for c in addresses if c.action == "delete"), key=_by_name)
    gone = [c for c in changes if c.kind == "Service" and c.action == "delete"]
    present: Counter[tuple[str, str]] = Counter()
    for c in creates:
        present.update(_ready(c.body, c.kind))
    for c in updates + deletes:
        present.update(_ready(c.current, c.kind))
    return services + creates + _updates_in_safe_order(updates, present) + deletes + gone


def _by_name(change: Change) -> tuple[str, str]:
    return (change.kind, change.key[2])


def _ready(obj: JSON | None, kind: str) -> set[tuple[str, str]]:
    # Not-ready addresses carry no traffic: only ready ones count for make-before-break.
    return {(kind, a) for a in endpoint_addresses(obj) if not a.endswith("(not ready)")}


def _updates_in_safe_order(updates: list[Change],
                           present: Counter[tuple[str, str]]) -> list[Change]:
    """Greedy: next the update whose write loses the fewest (gains the most) ready addresses
    of the union; `present` counts the objects holding each address right now."""
    pending = sorted(updates, key=_by_name)
    ordered: list[Change] = []

    def gain(c: Change) -> int:
        old, new = _ready(c.current, c.kind), _ready(c.body, c.kind)
        return (sum(1 for a in new - old if present[a] == 0)
                - sum(1 for a in old - new if present[a] == 1))

    while pending:
        best = max(pending, key=gain)  # the first of equals: by name
        pending.remove(best)
        ordered.append(best)
        present.subtract(_ready(best.current, best.kind))
        present.update(_ready(best.body, best.kind))
    return ordered


def apply_plan(plan: Plan, kube: Kube, owner: str, workers: int = WRITE_CONCURRENCY,
               stop: threading.Event | None = None) -> ApplyResult:
    """Make the plan's changes, Service by Service. Once `stop` is set (SIGTERM in loop
    mode), no new write starts: every prefix of a Service's writes is safe (make before
    break), so the rest is simply left for the next run."""
    result = ApplyResult()
    for held in plan.held:
        if held.reason == "immutable":
            log.error("%s", held.detail, extra={"source": held.change.source})
    by_service: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for change in plan.changes:
        by_service[change.service].append(change)
    tasks = [safe_order(changes) for _, changes in sorted(by_service.items())]
    if not tasks:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks)))) as pool:
        list(pool.map(lambda t: _apply_service(t, kube, owner, result, stop), tasks))
    if stop is not None and stop.is_set() and result.left:
        log.warning("stopped: %d writes left for the next run", result.left)
    return result


def _apply_service(changes: list[Change], kube: Kube, owner: str, result: ApplyResult,
                   stop: threading.Event | None = None) -> None:
    for i, change in enumerate(changes):
        if stop is not None and stop.is_set():
            result.leave(len(changes) - i)
            return
        try:
            done = _apply_one(change, kube, owner, result)
        except KubeError as e:
            result.fail(str(e), change.service)  # the message names the verb and the object
            # Any later write could take away what this one was to put in place (the old
            # addresses go only once the new ones are there): leave the rest as it is.
            if i + 1 < len(changes):
                log.warning("Service %s/%s: %d more writes left for the next run",
                            change.service[0], change.service[1], len(changes) - i - 1,
                            extra={"source": change.source})
            return
        if done is not None:
            result.count(done, change)
            verb = "recreated" if change.recreate else f"{done}d"
            log.info("%s %s %s", verb, change.kind, change.name,
                     extra={"source": change.source, **service_fields(change.service, "written")})


def _apply_one(change: Change, kube: Kube, owner: str, result: ApplyResult) -> Action | None:
    """Make one change; returns what was done in the end (None: nothing was needed). What
    each write left is recorded in `result.written`."""
    kind, namespace, name = change.key
    if change.action == "delete" or change.recreate:
        # Delete exactly what the plan saw as ours: if someone changed it since (took it over,
        # say), the server answers 409 and it is reported and left alone.
        version = (change.current or {}).get("metadata", {}).get("resourceVersion")
        try:
            deleted = kube.delete(kind, namespace, name, version)
        except KubeError as e:
            if e.status == 409:
                raise KubeError(f"{kind} {namespace}/{name} changed since it was read; "
                                "not deleted (the next run decides again)", 409,
                                "Conflict") from None
            raise
        if deleted:
            result.wrote(change.key, None)
        if not change.recreate:
            return "delete" if deleted else None
        assert change.body is not None
        result.wrote(change.key, kube.create(change.body))
        return "update"
    assert change.body is not None
    body = change.body
    for _ in range(CONFLICT_RETRIES):
        try:
            written = kube.create(body) if change.action == "create" else kube.replace(body)
            result.wrote(change.key, written)
            return change.action
        except KubeError as e:
            if e.status == 404 and change.action == "update":
                # Deleted since it was read (by someone, or with its Service): create it.
                body = _strip_version(body)
                change = Change("create", change.key, body, None, change.service,
                                change.source)
                continue
            if e.status != 409:
                raise
        # Someone wrote first (AlreadyExists on create, a stale resourceVersion on update):
        # read it again and decide afresh, never touching what is not ours.
        fresh = kube.get(kind, namespace, name)
        if fresh is None:
            change = Change("create", change.key, _strip_version(body), None, change.service,
                            change.source)
            body = change.body or body
            continue
        if not is_owned(fresh, owner):
            raise KubeError(f"{kind} {namespace}/{name} exists without endpoints-sync's "
                            f"ownership labels for owner {owner!r}; left alone", 409, "Conflict")
        if not needs_update(fresh, body):
            return None
        body = update_body(fresh, body)
        change = Change("update", change.key, body, fresh, change.service, change.source)
    raise KubeError(f"{kind} {namespace}/{name}: still conflicting after {CONFLICT_RETRIES} "
                    "attempts", 409, "Conflict")


def _strip_version(body: JSON) -> JSON:
    md = {k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "uid")}
    return {**body, "metadata": md}
