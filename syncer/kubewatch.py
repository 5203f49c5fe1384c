"""Watch the objects we own, so an edit or a delete by someone else is seen within seconds.

One LIST+WATCH per kind (Service, EndpointSlice, Endpoints) and per namespace of the config's
`namespaces:` (else cluster-wide), each in a thread of its own, filtered by the owner's label
selector:

- The LIST reads one item only: all a watch needs from it is the resourceVersion to start
  from (the consumer has just read the objects itself). The start emits nothing.
- Each watch asks for bookmarks and a server-side timeout of a few minutes (jittered, so the
  streams do not all reconnect at once); when the server ends it, the next watch starts from
  the last resourceVersion seen, bookmarks included. A stream idle for longer than a bookmark
  period (the server may be gone without a word) is re-opened the same way.
- 410 Gone (an ERROR event with code 410, or the HTTP status) means events were lost: that
  kind is listed again and one RELISTED event tells the consumer to treat every Service as
  possibly changed. Any other ERROR event does the same after a backoff.
- Transport failures and 429/5xx back off (1 s doubling to 30 s) and resume from the last
  resourceVersion; nothing is lost while the server keeps the history.
- Anything else (401, 403: a missing `watch` verb in the RBAC, 404) is raised as the
  KubeError, naming the RBAC rule, once every stream is closed: retrying will not help.

`on_event` is called from the watch threads, one call at a time, never after watch_owned
has returned. If it raises, watch_owned raises that error.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import urllib3

from syncer.errors import KubeError
from syncer.kube import TRANSIENT_STATUSES, Kube
from syncer.ownership import JSON

_RANDOM = random.Random()  # own generator: jitter never moves the global random state

log = logging.getLogger("endpoints_sync")

KINDS = ("Service", "EndpointSlice", "Endpoints")
WATCH_TIMEOUT = 300  # seconds: the server ends each watch after this (plus jitter) ...
WATCH_JITTER = 60  # ... plus up to this, at random
IDLE_TIMEOUT = 90.0  # no byte (bookmarks come ~every minute) for this long: re-open
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
JOIN_TIMEOUT = 0.5  # seconds to wait for the threads at the end (daemons: never longer)
POLL = 0.5  # how often the caller's thread looks for a failed stream while waiting for stop
EXPIRED = 410

EventType = Literal["ADDED", "MODIFIED", "DELETED", "RELISTED"]


@dataclass(frozen=True)
class WatchEvent:
    """A change to one owned object, as the API server sent it; RELISTED (obj None): events
    may have been lost, so treat every Service as possibly changed."""

    type: EventType
    obj: JSON | None


def watch_owned(kube: Kube, selector: str, namespaces: Sequence[str] | None,
                on_event: Callable[[WatchEvent], None], stop: threading.Event) -> None:
    """Call `on_event` for every change to the objects matching `selector`, until `stop` is
    set (returns within about JOIN_TIMEOUT); raises a KubeError no retry can fix."""
    feed = _Feed(on_event)
    scopes: Sequence[str | None] = namespaces or [None]  # None: all namespaces
    streams = [_Stream(kube, kind, selector, namespace, feed)
               for kind in KINDS for namespace in scopes]
    threads = [threading.Thread(target=s.run, name=f"kubewatch {s.name}", daemon=True)
               for s in streams]
    for thread in threads:
        thread.start()
    try:
        while not feed.halted.is_set() and not stop.wait(POLL):
            pass
    finally:
        feed.halt()
        for s in streams:
            s.close()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    if feed.error is not None:
        raise feed.error


class _Feed:
    """The consumer's side: one event at a time, nothing once halted, the first failure."""

    def __init__(self, on_event: Callable[[WatchEvent], None]) -> None:
        self._on_event = on_event
        self._lock = threading.Lock()
        self.halted = threading.Event()
        self.error: BaseException | None = None

    def emit(self, event: WatchEvent) -> None:
        with self._lock:
            if self.halted.is_set():
                return
            try:
                self._on_event(event)
            except BaseException as e:  # the consumer's bug: stop everything and say so
                self._fail(e)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if not self.halted.is_set():
            self.error = error
            self.halted.set()

    def halt(self) -> None:
        self.halted.set()


class _Expired(Exception):
    """The resourceVersion is older than the server keeps: list again."""


class _Broken(Exception):
    """The watch failed in a way a relist after a backoff repairs (an ERROR event)."""


class _Dropped(Exception):
    """The stream broke off (the server went away): watch again after a backoff."""


class _Stream:
    """LIST+WATCH of one kind in one namespace (or all), resumed until the feed halts."""

    def __init__(self, kube: Kube, kind: str, selector: str, namespace: str | None,
                 feed: _Feed) -> None:
        self.kube, self.kind, self.selector, self.namespace = kube, kind, selector, namespace
        self.feed = feed
        self.name = f"{kind} in namespace {namespace}" if namespace else f"{kind} (all namespaces)"
        self._response: Any = None
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # a bug here must not die silently in a thread
            self.feed.fail(e)

    def _run(self) -> None:
        version: str | None = None
        relisted = False
        delay, listed = BACKOFF_FIRST, 0.0
        while not self.feed.halted.is_set():
            try:
                if version is None:
                    version = self.kube.list_version(self.kind, self.selector, self.namespace)
                    listed = time.monotonic()
                    if relisted:
                        self.feed.emit(WatchEvent("RELISTED", None))
                    relisted = True  # from now on a new LIST means events were missed
                version = self._watch(version)
                delay = BACKOFF_FIRST
                continue
            except _Dropped as e:
                version = e.args[0]
                self._say(logging.WARNING, "watch %s: the stream broke (%s); watching again "
                          "in %.0f s", self.name, e.args[1], delay, extra={"event": "watch_error"})
            except _Expired:
                self._say(logging.INFO, "watch %s: resourceVersion %s expired; listing again",
                          self.name, version, extra={"event": "watch_relist"})
                version = None
                if time.monotonic() - listed >= BACKOFF_FIRST:
                    continue  # at once, unless the last LIST just expired too
            except _Broken as e:
                self._say(logging.WARNING, "watch %s: %s; listing again in %.0f s", self.name, e,
                          delay, extra={"event": "watch_error"})
                version = None
            except KubeError as e:
                if e.status not in TRANSIENT_STATUSES:
                    self.feed.fail(e)
                    return
                self._say(logging.WARNING, "%s; watching again in %.0f s", e, delay,
                          extra={"event": "watch_error"})
            if self.feed.halted.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX)

    def _say(self, level: int, msg: str, *args: object, **kwargs: Any) -> None:
        """Log, unless the watch was stopped meanwhile (a stopped watch's last failed
        request is not news)."""
        if not self.feed.halted.is_set():
            log.log(level, msg, *args, **kwargs)

    def _watch(self, version: str) -> str:
        """One watch from `version` until the server ends it: the last resourceVersion seen.
        _Dropped (with that version) when the stream broke off."""
        if self.feed.halted.is_set():  # stopped while the LIST was out: no new request
            return version
        timeout = WATCH_TIMEOUT + _RANDOM.randint(0, WATCH_JITTER)
        try:
            response = self.kube.open_watch(self.kind, self.selector, self.namespace, version,
                                            timeout, IDLE_TIMEOUT)
        except KubeError as e:
            if e.status == EXPIRED:  # the HTTP status rather than the ERROR event
                raise _Expired() from None
            raise
        with self._lock:
            if self.feed.halted.is_set():
                _close(response)
                return version
            self._response = response
        started, seen = time.monotonic(), False
        try:
            for event in _events(response):
                seen = True
                version = self._handle(event, version)
        except urllib3.exceptions.ReadTimeoutError:
            log.debug("watch %s: idle for %.0f s; watching again", self.name, IDLE_TIMEOUT)
            return version
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            if self.feed.halted.is_set():
                return version  # closed by us
            raise _Dropped(version, f"{type(e).__name__}: {e}") from None
        finally:
            with self._lock:
                self._response = None
            _close(response)
        if not seen:  # a server that ends every watch at once must not make us spin
            self.feed.halted.wait(BACKOFF_FIRST - (time.monotonic() - started))
        return version

    def _handle(self, event: JSON, version: str) -> str:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"a watch event without an object: {event!r}")
        if kind == "ERROR":
            if obj.get("code") == EXPIRED:
                raise _Expired()
            raise _Broken(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("kind", self.kind)
            self.feed.emit(WatchEvent(kind, obj))
        return version  # BOOKMARK: only the resourceVersion moves

    def close(self) -> None:
        """Interrupt a read blocked in another thread: shut the socket down, then close."""
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            with suppress(Exception):
                response.shutdown()
            _close(response)


def _close(response: Any) -> None:
    with suppress(Exception):
        response.close()


def _events(response: Any) -> Iterator[JSON]:
    """The JSON objects of a watch stream, one a line, however the chunks split them."""
    pending = b""
    for chunk in response.stream(None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)
