"""One run: discover every source, build the desired objects, read the cluster, plan, apply."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncer import events
from syncer.apirules import keep_valid
from syncer.apply import ApplyResult, apply_plan
from syncer.config import Config, SourceConfig, load_config
from syncer.damping import MAX_KEPT, Damped, DampingSettings, damp
from syncer.desired import AddressPolicy, Desired, merge_sources, normalise_source
from syncer.discovery import Discovery, Kept
from syncer.errors import ConfigError, SourceError
from syncer.logs import service_fields
from syncer.model import ServiceSpec
from syncer.ownership import JSON, owner_selector
from syncer.plan import Plan, PlanSettings, make_plan
from syncer.probe import Connector, probe_specs
from syncer.readiness import MAX_TRACKED, Readiness, decide, service_key
from syncer.registry import Source, build_sources
from syncer.render import RenderedService, RenderSettings, render_all
from syncer.resolve import Resolver, SystemResolver

if TYPE_CHECKING:  # the client is imported only when a cluster is contacted
    from syncer.kube import Kube

log = logging.getLogger("endpoints_sync")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
KINDS = ("Service", "EndpointSlice", "Endpoints")


@dataclass(frozen=True)
class Loaded:
    path: str
    config: Config
    sources: list[Source]


def load(path: str) -> Loaded:
    """Read and check the configuration and every source's options. Contacts nothing."""
    config = load_config(path)
    return Loaded(path, config, build_sources(config, path))


def check_sources(loaded: Loaded) -> None:
    """The providers' local checks (inventory files); contacts nothing."""
    for source in loaded.sources:
        source.provider.check()


def resolver_of(config: Config) -> Resolver:
    """The DNS resolver of a run: the system's, with the config's `hosts:` first."""
    return SystemResolver({k: [str(ip) for ip in v] for k, v in config.hosts.items()})


@dataclass(frozen=True)
class SourceResult:
    """One source's answer after the core's normalisation, or why it failed."""

    source: str
    specs: list[ServiceSpec] = field(default_factory=list)
    held: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of Services to leave as they are (kept by the provider, or bad)."""
    error: Exception | None = None


def discover(loaded: Loaded, resolver: Resolver | None = None) -> Desired:
    """Ask every source, concurrently. A ConfigError (a bad inventory) stops everything; any
    other failure marks that source failed, and its Services are left alone."""
    return desired_of(discover_all(loaded, resolver))


def discover_all(loaded: Loaded, resolver: Resolver | None = None) -> list[SourceResult]:
    """Every source's result (`discover`), each logged."""
    resolver = resolver or resolver_of(loaded.config)
    with ThreadPoolExecutor(max_workers=min(8, len(loaded.sources))) as pool:
        results = list(pool.map(lambda s: discover_source(loaded, s, resolver), loaded.sources))
    for result in results:
        log_result(result)
    return results


def discover_source(loaded: Loaded, source: Source, resolver: Resolver,
                    found: Callable[[], Discovery | Sequence[ServiceSpec]] | None = None
                    ) -> SourceResult:
    """One source's `discover()` (or the state `found` returns: what its watch emitted),
    normalised: namespaces, source labels and settings, DNS names, the address policy. A
    ConfigError is raised; any other failure is the result's `error`."""
    config = loaded.config
    namespace = source.config.namespace or config.namespace
    try:
        answer = Discovery.of((found or source.provider.discover)())
        held = _kept_by_provider(source.name, answer.kept, namespace)
        specs = [_with_source_metadata(s, source.config) for s in answer.services
                 if (s.namespace or namespace, s.name) not in held]
        normal, skipped = normalise_source(
            source.name, specs, default_namespace=namespace,
            scope=config.namespaces, policy=address_policy(config, source),
            resolver=resolver)
        return SourceResult(source.name, normal, frozenset(skipped | held))
    except ConfigError:
        raise
    except SourceError as e:
        return SourceResult(source.name, error=e)
    except Exception as e:  # a third-party provider's bug must not stop the others
        log.debug("provider raised", exc_info=True, extra={"source": source.name})
        return SourceResult(source.name, error=e)


def failure_of(result: SourceResult) -> str:
    """Why a source failed, as the log and the plan say it."""
    error = result.error
    kind = "" if isinstance(error, SourceError) else f"{type(error).__name__}: "
    # Providers written before API v1 name their source in their messages.
    return kind + str(error).removeprefix(f"source {result.source!r}: ")


def log_result(result: SourceResult) -> None:
    """The line about one source's discovery: what it found, or why it failed."""
    if result.error is not None:
        log.error("failed, its Services are left as they are: %s", failure_of(result),
                  extra={"source": result.source, "event": "source_failed"})
        return
    addresses = sum(len(s.backends) for s in result.specs)
    log.info("%d services, %d addresses", len(result.specs), addresses, extra={
        "source": result.source, "event": "source_discovered",
        "counts": {"services": len(result.specs), "addresses": addresses}})


def desired_of(results: Iterable[SourceResult]) -> Desired:
    """The desired state from every source's result: failed sources are frozen."""
    desired = Desired()
    per_source: dict[str, list[ServiceSpec]] = {}
    for result in results:
        desired.skipped.update(result.held)
        if result.error is not None:
            desired.failed_sources[result.source] = failure_of(result)
            transient = isinstance(result.error, SourceError) and result.error.transient
            desired.failed_kinds[result.source] = "transient" if transient else "permanent"
        else:
            per_source[result.source] = result.specs
    merge_sources(per_source, desired)
    return desired


def _kept_by_provider(source: str, kept: Iterable[Kept],
                      default_namespace: str) -> set[tuple[str, str]]:
    held = set()
    for k in kept:
        ns = k.namespace or default_namespace
        log.warning("Service %s/%s left as it is: %s", ns, k.name,
                    k.reason.removeprefix(f"source {source!r}: "),
                    extra={"source": source, **service_fields((ns, k.name), "service_kept")})
        held.add((ns, k.name))
    return held


def _with_source_metadata(spec: ServiceSpec, source: SourceConfig) -> ServiceSpec:
    """The source's configured labels and annotations go over the provider's own; its probe
    and traffic_distribution apply where the provider set none."""
    if not (source.labels or source.annotations or (source.probe and spec.probe is None)
            or (source.traffic_distribution and spec.traffic_distribution is None)):
        return spec
    return dataclasses.replace(
        spec, labels={**spec.labels, **source.labels},
        annotations={**spec.annotations, **source.annotations},
        probe=spec.probe or source.probe,
        traffic_distribution=spec.traffic_distribution or source.traffic_distribution)


def address_policy(config: Config, source: Source) -> AddressPolicy:
    return AddressPolicy.of(deny=[config.deny_cidrs, source.config.deny_cidrs],
                            allow=[config.allow_cidrs, source.config.allow_cidrs])


def render_settings(config: Config) -> RenderSettings:
    return RenderSettings(owner=config.owner, write_slices=config.write_slices,
                          write_endpoints=config.write_endpoints,
                          max_endpoints_per_slice=config.max_endpoints_per_slice)


def list_owned(kube: Kube, config: Config) -> list[JSON]:
    """Everything this owner manages."""
    selector = owner_selector(config.owner)
    current: list[JSON] = []
    for kind in KINDS:
        current.extend(kube.list(kind, selector, config.namespaces))
    return current


def read_cluster(kube: Kube, rendered: list[RenderedService], listed: list[JSON]) -> list[JSON]:
    """What this owner manages (`listed`), plus any same-named object in the way of a new
    one."""
    current = listed
    owned = {("Service", o["metadata"]["namespace"], o["metadata"]["name"])
             for o in current if o["kind"] == "Service"}
    for svc in rendered:
        if ("Service", svc.namespace, svc.name) in owned:
            continue
        for obj in svc.objects:
            if obj["kind"] in ("Service", "Endpoints"):
                found = kube.get(obj["kind"], svc.namespace, svc.name)
                if found is not None:
                    current.append(found)
    return current


@dataclass
class Outcome:
    plan: Plan
    desired: Desired
    applied: ApplyResult | None = None
    errors: list[str] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)

    @property
    def exit_code(self) -> int:
        failed = (self.desired.failed_sources or self.desired.skipped or self.plan.conflicts
                  or any(h.reason != "policy" for h in self.plan.held) or self.errors
                  or (self.applied is not None and self.applied.failed))
        return EXIT_FAILED if failed else EXIT_OK

    def counts(self) -> dict[str, int]:
        """The summary's numbers: the log's last line, `plan -o json`'s summary, metrics."""
        a = self.applied
        held = len(self.plan.held) + len(self.desired.skipped)
        return {
            "created": a.created if a else len(self.plan.of("create")),
            "updated": a.updated if a else len(self.plan.of("update")),
            "deleted": a.deleted if a else len(self.plan.of("delete")),
            "unchanged": self.plan.unchanged,
            "skipped": held,
            "conflicts": len(self.plan.conflicts),
            "failed_sources": len(self.desired.failed_sources),
            "failed_writes": len(a.failed) if a else 0,
            "probe_failed": self.readiness.probe_failed,
            "readiness_changed": len(self.readiness.changes),
        }

    def summary(self) -> str:
        verb = "summary" if self.applied is not None else "plan summary"
        return verb + " " + " ".join(f"{k}={v}" for k, v in self.counts().items())

    def log_summary(self, duration: float) -> None:
        """A run's last log line: the summary and how long the run took."""
        log.info("%s duration=%.2fs", self.summary(), duration, extra={
            "event": "summary" if self.applied is not None else "plan_summary",
            "counts": self.counts(), "duration_seconds": round(duration, 3)})


def sync(loaded: Loaded, connect: Callable[[], Kube], *, apply: bool, force: bool = False,
         stop: threading.Event | None = None, resolver: Resolver | None = None,
         connector: Connector | None = None, desired: Desired | None = None,
         read_owned: Callable[[Kube], list[JSON]] | None = None) -> Outcome:
    """One run. With apply=False it stops after the plan (plan, run --dry-run), having
    probed all the same: the plan shows readiness changes.

    Watch mode's incremental sync (syncer.watch) passes the `desired` state of a few Services
    (instead of discovering every source) and `read_owned`, which reads only their objects,
    same-named ones in the way included (instead of everything this owner manages)."""
    config = loaded.config
    desired = discover(loaded, resolver) if desired is None else desired
    read = read_owned or (lambda kube: list_owned(kube, config))
    kube = connect()  # here: not before a bad inventory is refused, nor in the thread below
    # (its import would compete with the render for the interpreter)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the LISTs wait on the API server
        listing = pool.submit(read, kube)            # while the objects are rendered
        rendered = keep_valid(render_all(desired.specs, render_settings(config)),
                              desired.skipped)
        listed = listing.result()
    # read_owned reads same-named objects in the way already (syncer.watch.read_services).
    current = listed if read_owned is not None else read_cluster(kube, rendered, listed)
    # Probe outcomes set Backend.ready before the final render and damping (both read it).
    readiness = _probed(desired, rendered, current, config.owner, connector)
    rendered = readiness.rerendered(rendered, render_settings(config))
    _warn_readiness(readiness)
    damped = damp(desired.specs, rendered, current, DampingSettings(
        config.owner, render_settings(config), config.misses(),
        {s.name: address_policy(config, s) for s in loaded.sources}))
    _warn_damped(damped)
    warn_hints_withheld(damped.rendered)
    settings = PlanSettings(
        owner=config.owner, policy=config.policy, max_delete_ratio=config.max_delete_ratio,
        force=force, adopt=config.adopt, frozen_sources=frozenset(desired.failed_sources),
        allow_empty_sources=frozenset(s.name for s in config.sources if s.allow_empty),
        kept_services=frozenset(desired.skipped), max_change_ratios=config.change_ratios())
    plan = make_plan(readiness.annotated(damped.rendered, current, config.owner), current,
                     settings)
    plan.readiness = readiness.changes
    _warn_held(plan)
    outcome = Outcome(plan, desired, readiness=readiness)
    if apply:
        outcome.applied = apply_plan(plan, kube, config.owner,
                                     workers=config.write_concurrency, stop=stop)
        events.emit(kube, events.service_events(plan, desired, outcome.applied, current,
                                                config.owner), config.owner)
    return outcome


def _probed(desired: Desired, rendered: list[RenderedService], current: list[JSON], owner: str,
            connector: Connector | None) -> Readiness:
    """Probe the Services that will be written (syncer.probe), decide their readiness
    (syncer.readiness); desired.specs gets the published readiness."""
    written = {(r.namespace, r.name) for r in rendered}
    specs = [s for s in desired.specs if service_key(s) in written]
    readiness = decide(specs, probe_specs(specs, connector), current, owner)
    published = {service_key(s): s for s in readiness.specs}
    desired.specs = [published.get(service_key(s), s) for s in desired.specs]
    return readiness


def _warn_readiness(readiness: Readiness) -> None:
    for c in readiness.changes:
        log.log(logging.INFO if c.ready else logging.WARNING, "Service %s/%s: %s",
                *c.service, c.text,
                extra={"source": c.source, **service_fields(c.service, "readiness_changed")})
    for service, why in sorted(readiness.fail_open.items()):
        log.warning("Service %s/%s: probes fail open (min_ready_ratio): %s", *service, why,
                    extra=service_fields(service, "probe_fail_open"))
    for (ns, name), n in sorted(readiness.trimmed.items()):
        log.warning("Service %s/%s: probe state of %d addresses not kept: over %d per Service",
                    ns, name, n, MAX_TRACKED)


def warn_hints_withheld(rendered: Iterable[RenderedService]) -> None:
    """Once per run (render, plan, run): the Services that ask for zone hints and get none."""
    for svc in rendered:
        if svc.hints_withheld:
            log.warning("Service %s/%s: no zone hints written (traffic_distribution: "
                        "PreferClose): %s; kube-proxy uses hints only when every endpoint has "
                        "one, so traffic goes to all zones", svc.namespace, svc.name,
                        svc.hints_withheld, extra={"source": svc.source, **service_fields(
                            (svc.namespace, svc.name), "hints_withheld")})


def _warn_damped(damped: Damped) -> None:
    for (ns, name), n in sorted(damped.kept.items()):
        log.info("Service %s/%s: %d addresses missing from the source kept not ready "
                 "(remove_after_misses)", ns, name, n)
    for (ns, name), n in sorted(damped.trimmed.items()):
        log.warning("Service %s/%s: %d missing addresses removed at once: more than %d were "
                    "missing", ns, name, n, MAX_KEPT)


def _warn_held(plan: Plan) -> None:
    for c in plan.conflicts:
        log.error("Service %s/%s not synced: %s %s/%s %s", c.service[0], c.service[1], c.key[0],
                  c.key[1], c.key[2], c.reason,
                  extra={"source": c.source, **service_fields(c.service, "conflict")})
    ratio = [h for h in plan.held if h.reason == "delete-ratio"]
    if ratio:
        log.error("%d deletes held back: they exceed max_delete_ratio of the %d objects this "
                  "owner manages; check the sources, then run with --force to delete them",
                  len(ratio), plan.owned)
    changing = {h.change.service: h.detail for h in plan.held if h.reason == "change-ratio"}
    for (ns, name), detail in sorted(changing.items()):
        log.warning("Service %s/%s: address writes held: over max_change_ratio (%s); check the "
                    "source, then run with --force", ns, name, detail,
                    extra=service_fields((ns, name), "held"))
    emptied = sorted({h.change.service for h in plan.held if h.reason == "empty"})
    for ns, name in emptied:
        log.warning("Service %s/%s: its source now lists no address; the cluster's addresses "
                    "are kept (set allow_empty: true on the source to allow emptying)", ns, name,
                    extra=service_fields((ns, name), "held"))
