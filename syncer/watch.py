"""Watch mode (`run --watch`): each change synced within seconds, a full resync every interval.

syncer.loop runs it (SIGTERM/SIGINT, /metrics, /healthz, /readyz, the retry backoff): each of
its runs is a full resync, as in loop mode, which also refreshes every source's state and
repairs any drift. Between two, the feeds report changes:

- each source whose provider implements `watch` (syncer.plugin) runs it in a daemon thread of
  its own, started after the first full sync. Every state it emits is normalised as
  `discover()`'s is (syncer.run.discover_source) and compared Service by Service with that
  source's last state: the Services that differ are touched. A watch that fails is logged
  (a ConfigError names its file), its last state is kept (nothing is deleted) and it is
  called again after a backoff (RETRY_ENV seconds, doubling, at most WATCH_BACKOFF_MAX or
  the interval).
- the Kubernetes watch on the objects we own (syncer.kubewatch), started before the first
  full sync so that no edit falls between its read and the watch: an edit or delete by
  someone else touches its Service; the echoes of our own writes (the resourceVersion a
  write returned, or a delete we made) do not; RELISTED (events were lost) starts a full
  resync at once.

Touched Services are gathered until DEBOUNCE_SECONDS pass without another (at most
DEBOUNCE_MAX_SECONDS), then synced incrementally: only their objects are read (GET Service
and Endpoints, LIST EndpointSlices by their service-name label within the owner selector)
and written, through the same plan, guards, probes, Events and writes as a full run
(syncer.run.sync). A touched Service that is gone from its source is left to the next full
resync: pruning needs the full view (max_delete_ratio weighs the Services vanishing against
everything this owner manages). A source that failed at the last full resync is frozen until
it answers again. Reads that fail are retried after a backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncer.desired import Desired
from syncer.discovery import Discovery
from syncer.errors import ConfigError, KubeError, SourceError
from syncer.loop import Backoff, retry_first, run_loop
from syncer.metrics import Telemetry
from syncer.model import ServiceSpec
from syncer.ownership import JSON, SERVICE_NAME, key_of, owner_selector, service_of
from syncer.plugin import Emit, Provider, watches
from syncer.readiness import service_key
from syncer.run import (
    Loaded,
    Outcome,
    SourceResult,
    desired_of,
    discover_all,
    discover_source,
    load,
    log_result,
    resolver_of,
    sync,
)

if TYPE_CHECKING:  # the client is imported only when a cluster is contacted
    from syncer.kube import Kube
    from syncer.kubewatch import WatchEvent
    from syncer.plan import Key
    from syncer.resolve import Resolver

log = logging.getLogger("endpoints_sync")

ServiceKey = tuple[str, str]
State = Discovery | Sequence[ServiceSpec]

DEBOUNCE_SECONDS = 0.2
"""Touched Services wait this long for more: a burst of changes is one sync."""
DEBOUNCE_MAX_SECONDS = 2.0
"""... but never longer than this after the first: a steady stream still gets synced."""
WAKE_SECONDS = 0.5
"""The longest the main thread sleeps without looking whether it was asked to stop."""
WATCH_BACKOFF_MAX = 60.0
JOIN_SECONDS = 1.0
"""At shutdown, how long the feeds' threads get to end (they are daemons)."""
READ_WORKERS = 8


def run_watch(config_path: str, connect: Callable[[], Kube], interval: float,
              telemetry: Telemetry, *, force: bool = False, address: str = "0.0.0.0",
              port: int | None = None) -> int:
    """`run --watch` until SIGTERM/SIGINT; returns 0 (a bad configuration at the first run
    raises ConfigError, as loop mode does)."""
    watcher = Watcher(config_path, connect, interval, telemetry, force)
    try:
        return run_loop(watcher.full_sync, interval, telemetry, address=address, port=port,
                        idle=watcher.idle)
    finally:
        watcher.close()


@dataclass
class Batch:
    """What the feeds reported since the main thread last looked."""

    states: dict[str, tuple[float, State]] = field(default_factory=dict)
    """Source -> (when, the latest state its watch emitted)."""
    events: list[WatchEvent] = field(default_factory=list)
    relisted: bool = False


class Inbox:
    """Hands the feeds' reports (from their threads) to the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._batch = Batch()
        self.arrivals = 0
        """How many reports came so far (the debounce looks whether it moved)."""

    def emitted(self, source: str, state: State) -> None:
        with self._lock:
            # A complete state: the latest replaces any not yet taken.
            self._batch.states[source] = (time.monotonic(), state)
            self._arrived()

    def observed(self, event: WatchEvent) -> None:
        with self._lock:
            if event.type == "RELISTED":
                self._batch.relisted = True
            else:
                self._batch.events.append(event)
            self._arrived()

    def _arrived(self) -> None:
        self.arrivals += 1
        self._ready.set()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for a report; False when none came (or `stop` was set)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._ready.wait(min(left, WAKE_SECONDS)):
                return True
        return False

    def take(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
            self._ready.clear()
        return batch

    def forget_states_before(self, moment: float) -> None:
        """A full resync asked every source at `moment`: states emitted before are older."""
        with self._lock:
            self._batch.states = {s: v for s, v in self._batch.states.items() if v[0] >= moment}


class Feeds:
    """A group of watches, each in a daemon thread that calls it again after it fails."""

    def __init__(self, backoff_max: float) -> None:
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backoff_max = backoff_max

    def start(self, name: str, watch: Callable[[threading.Event], None],
              source: str | None = None) -> None:
        thread = threading.Thread(target=self._keep_watching, args=(watch, source),
                                  name=f"watch-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self, deadline: float | None = None) -> None:
        self.stop.set()
        deadline = deadline or time.monotonic() + JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _keep_watching(self, watch: Callable[[threading.Event], None],
                       source: str | None) -> None:
        backoff = Backoff(retry_first(), self._backoff_max)
        extra = {"event": "watch_failed", **({"source": source} if source else {})}
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                watch(self.stop)
                if self.stop.is_set():
                    return
                problem = "the watch ended by itself"
            except (ConfigError, SourceError) as e:  # a ConfigError names the file
                problem = str(e)
            except KubeError as e:
                problem = f"Kubernetes API: {e}"
            except Exception as e:  # a provider's bug must not end watch mode
                log.debug("watch raised", exc_info=True, extra=extra)
                problem = f"{type(e).__name__}: {e}"
            if self.stop.is_set():
                return  # interrupted by the shutdown: not a failure
            if time.monotonic() - started > self._backoff_max:
                backoff.after(False)  # it had been running well: a new failure starts afresh
            delay = backoff.after(True)
            what = "the last state is kept" if source else "repairs wait for the full resync"
            log.error("watch failed (%s); watching again in %gs: %s", what, delay, problem,
                      extra=extra)
            if self.stop.wait(delay):
                return


class Watcher:
    """The main thread's side: full resyncs (`full_sync`) and incremental syncs (`idle`)."""

    def __init__(self, config_path: str, connect: Callable[[], Kube], interval: float,
                 telemetry: Telemetry, force: bool) -> None:
        self.config_path, self.connect, self.telemetry = config_path, connect, telemetry
        self.force = force
        self.backoff_max = min(WATCH_BACKOFF_MAX, interval)
        self.inbox = Inbox()
        self.loaded: Loaded | None = None
        self.resolver: Resolver | None = None
        self.results: dict[str, SourceResult] = {}
        """Each source's last state: from the last full resync, or its watch since."""
        self._desired: Desired | None = None
        """desired_of(results), made when first needed after `results` changed."""
        self.written: dict[Key, str | None] = {}
        """What our writes left (resourceVersion, None: deleted): their echoes are not news."""
        self.kube: Kube | None = None
        self.source_feeds: Feeds | None = None
        self.kube_feed: Feeds | None = None
        self.kube_scope: tuple[str, tuple[str, ...] | None] | None = None
        self.retry: set[ServiceKey] = set()
        self.retry_backoff = Backoff(retry_first(), interval)
        self.retry_at: float | None = None

    # --- full resync: run_loop's run --------------------------------------------------

    def full_sync(self, stop: threading.Event) -> int:
        loaded = load(self.config_path)  # a ConfigError: run_loop logs it (or, at first, exits)
        config_changed = self.loaded is None or loaded.config != self.loaded.config
        if config_changed:
            self._stop_source_feeds()
            self.loaded, self.resolver = loaded, resolver_of(loaded.config)
            self.results = {}
        assert self.loaded is not None and self.resolver is not None
        loaded, resolver = self.loaded, self.resolver
        self._watch_cluster(loaded)
        started = time.monotonic()

        def run() -> Outcome:
            results = discover_all(loaded, resolver)
            self.results = {r.source: r for r in results}
            self._desired = None
            self.inbox.forget_states_before(started)
            return sync(loaded, self._connect, apply=True, force=self.force, stop=stop,
                        desired=desired_of(results))

        try:
            outcome = self.telemetry.measure(loaded.config, run)
        finally:  # a broken inventory too: its watch sees it fixed within a second
            if self.source_feeds is None:
                self._watch_sources(loaded)
        outcome.log_summary(time.monotonic() - started)
        self._remember(outcome)
        self.retry, self.retry_at = set(), None  # the full resync covered them
        return outcome.exit_code

    def _connect(self) -> Kube:
        """A fresh client each full resync (API warnings once each); incremental syncs
        until the next reuse it."""
        self.kube = self.connect()
        return self.kube

    # --- between full resyncs: run_loop's idle ----------------------------------------

    def idle(self, stop: threading.Event, seconds: float) -> None:
        """Sync what the feeds report until `seconds` pass, `stop` is set, or a relist asks
        for a full resync."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            now = time.monotonic()
            wake = deadline if self.retry_at is None else min(deadline, self.retry_at)
            if now >= deadline:
                return
            if self.inbox.wait(stop, wake - now):
                self._settle(stop)
            if stop.is_set():
                return
            batch = self.inbox.take()
            if batch.relisted:  # the resync reads every source again: states taken included
                log.info("the Kubernetes watch lost events: full resync now",
                         extra={"event": "watch_relisted"})
                return
            touched = self._touched(batch)
            if self.retry_at is not None and time.monotonic() >= self.retry_at:
                touched |= self.retry
                self.retry, self.retry_at = set(), None
            if touched:
                self._sync_services(touched, stop)

    def _settle(self, stop: threading.Event) -> None:
        """Wait until the feeds have been quiet for DEBOUNCE_SECONDS (at most
        DEBOUNCE_MAX_SECONDS in all): a burst of changes becomes one sync."""
        end = time.monotonic() + DEBOUNCE_MAX_SECONDS
        while not stop.is_set():
            seen = self.inbox.arrivals
            wait = min(DEBOUNCE_SECONDS, end - time.monotonic())
            if wait <= 0:
                return
            time.sleep(wait)
            if self.inbox.arrivals == seen:
                return

    def _touched(self, batch: Batch) -> set[ServiceKey]:
        """The Services a batch of reports may have changed."""
        touched: set[ServiceKey] = set()
        if self.loaded is not None and self.resolver is not None:
            sources = {s.name: s for s in self.loaded.sources}
            for name, (_, state) in sorted(batch.states.items()):
                source = sources.get(name)
                if source is None:
                    continue
                result = discover_source(self.loaded, source, self.resolver,
                                         found=_constant(state))
                if result.error is not None:
                    log_result(result)  # e.g. a DNS name that does not resolve: keep the last
                    continue
                changed = changed_services(self.results.get(name), result)
                self.results[name] = result
                self._desired = None
                if changed:
                    log.info("%d services changed", len(changed),
                             extra={"source": name, "event": "watch_changed",
                                    "counts": {"services": len(changed)}})
                touched |= changed
        for event in batch.events:
            if event.obj is not None and not self._echo(event.type, event.obj):
                touched.add((event.obj["metadata"].get("namespace", ""), service_of(event.obj)))
        return touched

    def _echo(self, kind: str, obj: JSON) -> bool:
        """Whether an event is only our own write coming back."""
        key = key_of(obj)
        if key not in self.written:
            return False
        wrote = self.written[key]
        if kind == "DELETED":
            if wrote is None:
                del self.written[key]
                return True
            return False
        return wrote is not None and wrote == str(obj["metadata"].get("resourceVersion"))

    def _sync_services(self, touched: set[ServiceKey], stop: threading.Event) -> None:
        """The incremental sync: only the touched Services' objects are read and written."""
        assert self.loaded is not None
        loaded = self.loaded
        if self._desired is None:  # merging logs its clashes: once per change of state
            self._desired = desired_of(self.results.values())
        desired = self._desired
        specs = [s for s in desired.specs if service_key(s) in touched]
        if not specs:
            log.debug("%d touched Services, none to sync (gone from their source, kept, or "
                      "their source failed): left for the full resync", len(touched))
            return
        part = Desired(specs=specs, failed_sources=desired.failed_sources,
                       failed_kinds=desired.failed_kinds, skipped=desired.skipped & touched)
        services = [service_key(s) for s in specs]
        started = time.monotonic()
        try:
            outcome = sync(loaded, self._client, apply=True, force=self.force, stop=stop,
                           desired=part,
                           read_owned=lambda kube: read_services(kube, loaded, services))
        except KubeError as e:
            self._retry_later(services, f"Kubernetes API: {e}")
            return
        self._remember(outcome)
        self.telemetry.metrics.count(outcome)
        counts = outcome.counts()
        shown = {k: counts[k] for k in ("created", "updated", "deleted", "unchanged")}
        log.info("watch: synced %d services: %s duration=%.2fs", len(specs),
                 " ".join(f"{k}={v}" for k, v in shown.items()), time.monotonic() - started,
                 extra={"event": "watch_sync", "counts": shown})
        failed = set(outcome.applied.failures) if outcome.applied is not None else set()
        if failed:
            self._retry_later(sorted(failed), "writes failed")

    def _client(self) -> Kube:
        return self.kube if self.kube is not None else self._connect()

    def _retry_later(self, services: Iterable[ServiceKey], why: str) -> None:
        wait = self.retry_backoff.after(True)
        self.retry.update(services)
        self.retry_at = time.monotonic() + wait
        log.error("watch: %d services not synced (%s); trying again in %gs (at the latest "
                  "at the full resync)", len(self.retry), why, wait,
                  extra={"event": "watch_sync_failed"})

    def _remember(self, outcome: Outcome) -> None:
        if outcome.applied is not None:
            self.written.update(outcome.applied.written)
            if not outcome.applied.failures:
                self.retry_backoff.after(False)

    # --- feeds ------------------------------------------------------------------------

    def _watch_sources(self, loaded: Loaded) -> None:
        feeds = self.source_feeds = Feeds(self.backoff_max)
        for source in loaded.sources:
            if not watches(source.provider):
                continue

            def emit(state: State, name: str = source.name) -> None:
                if not feeds.stop.is_set():  # a watch of an older configuration: not news
                    self.inbox.emitted(name, state)

            feeds.start(source.name, _watching(source.provider, emit), source.name)
            log.debug("watching the source", extra={"source": source.name})

    def _stop_source_feeds(self) -> None:
        if self.source_feeds is not None:
            self.source_feeds.close()
            self.source_feeds = None

    def _watch_cluster(self, loaded: Loaded) -> None:
        """The Kubernetes watch on our objects; started again when the owner or the
        namespaces change."""
        config = loaded.config
        namespaces = tuple(config.namespaces) if config.namespaces is not None else None
        scope = (owner_selector(config.owner), namespaces)
        if scope == self.kube_scope:
            return
        if self.kube_feed is not None:
            self.kube_feed.close()
        self.kube_scope = scope
        feed = self.kube_feed = Feeds(self.backoff_max)

        def watch(stop: threading.Event) -> None:
            from syncer.kubewatch import watch_owned

            watch_owned(self.connect(), scope[0], scope[1], self.inbox.observed, stop)

        feed.start("kubernetes", watch)

    def close(self) -> None:
        """Stop every feed, waiting about JOIN_SECONDS in all."""
        deadline = time.monotonic() + JOIN_SECONDS
        for feeds in (self.source_feeds, self.kube_feed):
            if feeds is not None:
                feeds.close(deadline)


def _constant(state: State) -> Callable[[], State]:
    return lambda: state


def _watching(provider: Provider[Any], emit: Emit) -> Callable[[threading.Event], None]:
    return lambda stop: provider.watch(emit, stop)


def changed_services(old: SourceResult | None, new: SourceResult) -> set[ServiceKey]:
    """The Services whose desired state differs between two results of one source."""
    before: dict[ServiceKey, ServiceSpec] = {}
    held: Collection[ServiceKey] = frozenset()
    if old is not None and old.error is None:
        before = {service_key(s): s for s in old.specs}
        held = old.held
    after = {service_key(s): s for s in new.specs}
    return ({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
            | (set(held) ^ set(new.held)))


def read_services(kube: Kube, loaded: Loaded, services: Iterable[ServiceKey]) -> list[JSON]:
    """The objects of these Services only: the Service and the Endpoints by name (whoever
    owns them: one in the way is a conflict), our EndpointSlices by their service-name."""
    selector = owner_selector(loaded.config.owner)

    def one(service: ServiceKey) -> list[JSON]:
        namespace, name = service
        found = [kube.get(kind, namespace, name) for kind in ("Service", "Endpoints")]
        slices = kube.list("EndpointSlice", f"{selector},{SERVICE_NAME}={name}", [namespace])
        return [o for o in found if o is not None] + slices

    keys = sorted(set(services))
    with ThreadPoolExecutor(max_workers=max(1, min(READ_WORKERS, len(keys)))) as pool:
        return [obj for objs in pool.map(one, keys) for obj in objs]
