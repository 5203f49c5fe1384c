"""One run: discover every source, build the desired objects, read the cluster, plan, apply."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
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


def discover(loaded: Loaded, resolver: Resolver | None = None) -> Desired:
    """Ask every source, concurrently. A ConfigError (a bad inventory) stops everything; any
    other failure marks that source failed, and its Services are left alone."""
    config = loaded.config
    resolver = resolver or SystemResolver({k: [str(ip) for ip in v]
                                           for k, v in config.hosts.items()})
    desired = Desired()

    Held = set[tuple[str, str]]

    def one(source: Source) -> tuple[str, list[ServiceSpec] | Exception, Held]:
        namespace = source.config.namespace or config.namespace
        try:
            found = Discovery.of(source.provider.discover())
            held = _kept_by_provider(source.name, found.kept, namespace)
            specs = [_with_source_metadata(s, source.config) for s in found.services
                     if (s.namespace or namespace, s.name) not in held]
            normal, skipped = normalise_source(
                source.name, specs, default_namespace=namespace,
                scope=config.namespaces, policy=address_policy(config, source),
                resolver=resolver)
            return source.name, normal, skipped | held
        except ConfigError:
            raise
        except SourceError as e:
            return source.name, e, set()
        except Exception as e:  # a third-party provider's bug must not stop the others
            log.debug("provider raised", exc_info=True, extra={"source": source.name})
            return source.name, e, set()

    with ThreadPoolExecutor(max_workers=min(8, len(loaded.sources))) as pool:
        results = list(pool.map(one, loaded.sources))
    per_source: dict[str, list[ServiceSpec]] = {}
    for name, outcome, kept in results:
        desired.skipped.update(kept)
        if isinstance(outcome, Exception):
            kind = "" if isinstance(outcome, SourceError) else f"{type(outcome).__name__}: "
            # Providers written before API v1 name their source in their messages.
            cause = str(outcome).removeprefix(f"source {name!r}: ")
            desired.failed_sources[name] = f"{kind}{cause}"
            transient = isinstance(outcome, SourceError) and outcome.transient
            desired.failed_kinds[name] = "transient" if transient else "permanent"
            log.error("failed, its Services are left as they are: %s%s", kind, cause,
                      extra={"source": name, "event": "source_failed"})
        else:
            addresses = sum(len(s.backends) for s in outcome)
            log.info("%d services, %d addresses", len(outcome), addresses, extra={
                "source": name, "event": "source_discovered",
                "counts": {"services": len(outcome), "addresses": addresses}})
            per_source[name] = outcome
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


def read_cluster(kube: Kube, config: Config, rendered: list[RenderedService]) -> list[JSON]:
    """Everything this owner manages, plus any same-named object in the way of a new one."""
    selector = owner_selector(config.owner)
    current: list[JSON] = []
    for kind in KINDS:
        current.extend(kube.list(kind, selector, config.namespaces))
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
        }

    def summary(self) -> str:
        verb = "summary" if self.applied is not None else "plan summary"
        return verb + " " + " ".join(f"{k}={v}" for k, v in self.counts().items())


def sync(loaded: Loaded, connect: Callable[[], Kube], *, apply: bool, force: bool = False,
         stop: threading.Event | None = None,
         resolver: Resolver | None = None) -> Outcome:
    """One run. With apply=False it stops after the plan (plan, run --dry-run)."""
    config = loaded.config
    desired = discover(loaded, resolver)
    rendered = keep_valid(render_all(desired.specs, render_settings(config)), desired.skipped)
    kube = connect()
    current = read_cluster(kube, config, rendered)
    damped = damp(desired.specs, rendered, current, DampingSettings(
        config.owner, render_settings(config), config.misses(),
        {s.name: address_policy(config, s) for s in loaded.sources}))
    _warn_damped(damped)
    settings = PlanSettings(
        owner=config.owner, policy=config.policy, max_delete_ratio=config.max_delete_ratio,
        force=force, adopt=config.adopt, frozen_sources=frozenset(desired.failed_sources),
        allow_empty_sources=frozenset(s.name for s in config.sources if s.allow_empty),
        kept_services=frozenset(desired.skipped), max_change_ratios=config.change_ratios())
    plan = make_plan(damped.rendered, current, settings)
    _warn_held(plan)
    outcome = Outcome(plan, desired)
    if apply:
        outcome.applied = apply_plan(plan, kube, config.owner, stop=stop)
        events.emit(kube, events.service_events(plan, desired, outcome.applied, current,
                                                config.owner), config.owner)
    return outcome


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
