"""Carries out a plan: one task per Service, Services in parallel, each in a safe order."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncer.errors import KubeError
from syncer.ownership import JSON, is_owned
from syncer.plan import Action, Change, Plan, needs_update, update_body

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, action: Action) -> None:
        with self._lock:
            setattr(self, f"{action}d", getattr(self, f"{action}d") + 1)

    def fail(self, message: str) -> None:
        with self._lock:
            self.failed.append(message)
        log.error("%s", message)


def _order(change: Change) -> tuple[int, str, str]:
    # The Service before its addresses; new addresses before old ones go; the Service last
    # when it goes, so a Service never points at nothing while it stays.
    ranks = {("create", True): 0, ("update", True): 0, ("create", False): 1,
             ("update", False): 1, ("delete", False): 2, ("delete", True): 3}
    return (ranks[change.action, change.kind == "Service"], change.kind, change.key[2])


def apply_plan(plan: Plan, kube: Kube, owner: str, workers: int = 8) -> ApplyResult:
    result = ApplyResult()
    by_service: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for change in plan.changes:
        by_service[change.service].append(change)
    tasks = [sorted(changes, key=_order) for _, changes in sorted(by_service.items())]
    if not tasks:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks)))) as pool:
        list(pool.map(lambda t: _apply_service(t, kube, owner, result), tasks))
    return result


def _apply_service(changes: list[Change], kube: Kube, owner: str, result: ApplyResult) -> None:
    for change in changes:
        try:
            done = _apply_one(change, kube, owner)
        except KubeError as e:
            result.fail(f"{change.action} {change.kind} {change.name}: {e}")
            if change.kind == "Service" and change.action != "delete":
                # Without its Service, the addresses would belong to nothing: stop here.
                return
            continue
        if done is not None:
            result.count(done)
            log.info("%sd %s %s", done, change.kind, change.name,
                     extra={"source": change.source})


def _apply_one(change: Change, kube: Kube, owner: str) -> Action | None:
    """Make one change; returns what was done in the end (None: nothing was needed)."""
    kind, namespace, name = change.key
    if change.action == "delete":
        # Delete exactly what the plan saw as ours: if someone changed it since (took it over,
        # say), the server answers 409 and it is reported and left alone.
        version = (change.current or {}).get("metadata", {}).get("resourceVersion")
        try:
            return "delete" if kube.delete(kind, namespace, name, version) else None
        except KubeError as e:
            if e.status == 409:
                raise KubeError(f"{kind} {namespace}/{name} changed since it was read; "
                                "not deleted (the next run decides again)", 409,
                                "Conflict") from None
            raise
    assert change.body is not None
    body = change.body
    for _ in range(CONFLICT_RETRIES):
        try:
            if change.action == "create":
                kube.create(body)
            else:
                kube.replace(body)
            return change.action
        except KubeError as e:
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
