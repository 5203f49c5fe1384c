"""Watch streams, as kube-apiserver serves them from its watch cache (storage/cacher).

- resourceVersion unset or "0": synthetic ADDED events for every object that matches now,
  then the changes after now ("Get State and Start at Most Recent" / "at Any").
- resourceVersion N: every change after N. N older than the history the store keeps: one
  ERROR event (a Status, code 410, reason Expired, "too old resource version: N (floor)")
  and the stream ends: with a 200, as the real server answers it. N newer than the store:
  an ERROR 504 "Too large resource version" (the real one waits 3 s for its cache first).
- Label and field selectors filter each change by the object before and after it, as the
  cacher does: a change that makes an object match is ADDED, one that makes it stop matching
  is DELETED (carrying the previous content, with the change's resourceVersion).
- allowWatchBookmarks: a BOOKMARK (kind, apiVersion, metadata.resourceVersion only) every
  `bookmark_interval` seconds (about a minute on the real server) and 2 s before the
  timeout when there is time for one.
- timeoutSeconds ends the stream (default `default_timeout`; the real one picks 30-60 min);
  close_all() ends every stream at once (the server is stopping).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from tests.kubeapi import errors
from tests.kubeapi.errors import ApiError
from tests.kubeapi.resources import Resource
from tests.kubeapi.selectors import FieldSelector, LabelSelector
from tests.kubeapi.store import Change, Expired, Obj, Store

BOOKMARK_INTERVAL = 60.0
DEFAULT_TIMEOUT = 1800.0
PRE_TIMEOUT = 2.0  # the last bookmark goes out this long before the timeout


@dataclass(frozen=True)
class WatchRequest:
    res: Resource
    namespace: str | None  # None: all namespaces
    labels: LabelSelector
    fields: FieldSelector
    resource_version: str
    timeout: float | None  # seconds; None: the server's default
    bookmarks: bool


class Watches:
    """Opens watch streams over the store; ends them all at close_all()."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.bookmark_interval = BOOKMARK_INTERVAL
        self.default_timeout = DEFAULT_TIMEOUT
        self._epoch = 0  # moved by close_all(): every stream opened before it ends

    def close_all(self) -> None:
        with self.store.changed:
            self._epoch += 1
            self.store.changed.notify_all()

    def open(self, req: WatchRequest) -> Iterator[Obj]:
        """Check the request (errors here are answered as HTTP errors) and return its events."""
        rv_text = req.resource_version
        if rv_text not in ("", "0") and not rv_text.isdigit():
            raise errors.bad_request(f"invalid resource version: {rv_text!r}")
        with self.store.changed:
            epoch = self._epoch
            current = self.store.current_version()
            if rv_text in ("", "0"):
                initial = [o for o in self.store.list(req.res, req.namespace, req.labels,
                                                      req.fields).items]
                start = current
            else:
                initial, start = [], int(rv_text)
                try:
                    self.store.check_start(start)
                except Expired as exc:
                    return iter([_error(ApiError(410, str(exc), "Expired"))])
        if start > current:
            return iter([_error(ApiError(504, f"Too large resource version: {start}, current: "
                                              f"{current}", "Timeout",
                                         {"causes": [{"reason": "ResourceVersionTooLarge",
                                                      "message": "Too large resource version"}],
                                          "retryAfterSeconds": 1}))])
        timeout = self.default_timeout if req.timeout is None else req.timeout
        return self._events(req, initial, start, time.monotonic() + timeout, epoch)

    def _events(self, req: WatchRequest, initial: list[Obj], cursor: int, deadline: float,
                epoch: int) -> Iterator[Obj]:
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        next_bookmark = self._next_bookmark(time.monotonic(), deadline, req.bookmarks)
        ended = False
        while not ended:
            batch: list[Obj] = []
            with self.store.changed:
                while not batch and not ended:
                    if self._epoch != epoch:
                        return
                    try:
                        changes = self.store.changes_after(cursor)
                    except Expired as exc:
                        batch, ended = [_error(ApiError(410, str(exc), "Expired"))], True
                        break
                    now = time.monotonic()
                    if now >= deadline:  # first: a stream of changes must not outlive it
                        return
                    if changes:
                        cursor = changes[-1].rv
                        batch = [e for e in (_event(c, req) for c in changes) if e is not None]
                    elif next_bookmark is not None and now >= next_bookmark:
                        cursor = self.store.current_version()
                        batch = [_bookmark(req.res, cursor)]
                        next_bookmark = self._next_bookmark(now, deadline, True)
                    else:
                        self.store.changed.wait(min(deadline, next_bookmark or deadline) - now)
            yield from batch  # not under the lock: a slow client must not stall writes

    def _next_bookmark(self, now: float, deadline: float, wanted: bool) -> float | None:
        """As the cacher schedules them (cacheWatcher.nextBookmarkTime): about every interval,
        the last one PRE_TIMEOUT before the timeout; none once that moment has passed."""
        if not wanted:
            return None
        due = min(now + self.bookmark_interval, deadline - PRE_TIMEOUT)
        return due if due > now else None


def _event(change: Change, req: WatchRequest) -> Obj | None:
    """The event this watch sees for a change, if any (cacheWatcher.convertToWatchEvent)."""
    if change.res is not req.res:
        return None
    if req.namespace is not None and change.obj["metadata"].get("namespace") != req.namespace:
        return None
    now_passes = change.type != "DELETED" and _passes(change.obj, req)
    before_passes = change.prev is not None and _passes(change.prev, req)
    if now_passes:
        return {"type": "MODIFIED" if before_passes else "ADDED", "object": change.obj}
    if before_passes and change.prev is not None:
        gone = {**change.prev, "metadata": {**change.prev["metadata"],
                                            "resourceVersion": str(change.rv)}}
        return {"type": "DELETED", "object": gone}
    return None


def _passes(obj: Obj, req: WatchRequest) -> bool:
    return (req.labels.matches(obj["metadata"].get("labels") or {})
            and req.fields.matches(obj))


def _bookmark(res: Resource, rv: int) -> Obj:
    return {"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                                           "metadata": {"resourceVersion": str(rv)}}}


def _error(exc: ApiError) -> Obj:
    return {"type": "ERROR", "object": exc.status_body()}
