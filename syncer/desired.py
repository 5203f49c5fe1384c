"""From what the providers discovered to the desired state: names checked, namespaces
defaulted, DNS names resolved, addresses the API server would refuse or the address policy
denies dropped.

Provider data is untrusted. What cannot become an object (a bad Service name or namespace)
is dropped with a warning; a Service whose own fields are bad (labels, annotations, ports,
appProtocol, externalName) is left exactly as it is in the cluster (`Desired.skipped`); a bad
backend (address, hostname, zone, port) is dropped with a warning, and the rest is synced.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from syncer.model import Backend, ServiceSpec
from syncer.names import (
    IPAddress,
    address_problem,
    annotations_problem,
    app_protocol_problem,
    external_name_problem,
    hostname_problem,
    is_dns_name,
    labels_problem,
    namespace_problem,
    service_name_problem,
    service_ports_problem,
    special_ip_reason,
    strict_ip,
    zone_problem,
)
from syncer.resolve import Resolver, resolve_names

log = logging.getLogger("endpoints_sync")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FailureKind = Literal["transient", "permanent"]


@dataclass
class Desired:
    specs: list[ServiceSpec] = field(default_factory=list)
    failed_sources: dict[str, str] = field(default_factory=dict)
    """Source name -> why it failed; its Services are left exactly as they are."""
    failed_kinds: dict[str, FailureKind] = field(default_factory=dict)
    """Source name -> whether its failure was transient (loop mode retries it sooner)."""
    skipped: set[tuple[str, str]] = field(default_factory=set)
    """(namespace, name) of Services a source wanted but got wrong: left as they are."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which endpoint addresses a source may publish, besides the API server's own refusals.

    Whoever writes Endpoints or EndpointSlices decides where a Service's traffic goes, and can
    point it at addresses the writer could not reach itself, e.g. the cluster's own control
    plane or pod network (CVE-2021-25740). `deny_cidrs` (the config's and the source's lists
    add up) refuses such ranges; `allow_cidrs` (the config's and the source's lists together)
    turns the policy around: when any allow list applies, an address must be in one of the
    allowed networks. Addresses outside the policy are dropped with a warning naming the
    source (providers return them, so they are not configuration errors).
    """

    deny: tuple[IPNetwork, ...] = ()
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, deny: Sequence[Sequence[IPNetwork]],
           allow: Sequence[Sequence[IPNetwork]]) -> AddressPolicy:
        """The policy of one source from the lists that apply to it (config, source)."""
        return cls(tuple(n for lst in deny for n in lst), tuple(n for lst in allow for n in lst))

    def refused(self, ip: IPAddress) -> str | None:
        """Why this address may not be published, if it may not."""
        reason = special_ip_reason(ip)
        if reason:
            return reason
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"in deny_cidrs {net}"
        if self.allow and not any(ip.version == n.version and ip in n for n in self.allow):
            return "outside allow_cidrs " + ", ".join(str(n) for n in self.allow)
        return None


def normalise_source(source: str, specs: Sequence[ServiceSpec], *, default_namespace: str,
                     scope: Sequence[str] | None, policy: AddressPolicy,
                     resolver: Resolver) -> tuple[list[ServiceSpec], set[tuple[str, str]]]:
    """Check and complete one source's specs. Returns (specs, skipped services).

    Raises SourceError when a DNS name cannot be resolved: then the whole source counts as
    failed. Malformed addresses never reach the resolver: only their backend is dropped.
    """
    names = [b.address for s in specs for b in s.backends if is_dns_name(b.address)]
    resolved = resolve_names(names, resolver, source)
    out: list[ServiceSpec] = []
    skipped: set[tuple[str, str]] = set()
    for spec in specs:
        namespace = spec.namespace or default_namespace
        unbuildable = service_name_problem(spec.name) or namespace_problem(namespace)
        if unbuildable:
            log.warning("service %s/%s dropped: %s", namespace[:80],
                        spec.name[:80], unbuildable, extra={"source": source})
            continue
        problem = _spec_problem(spec, namespace, scope)
        if problem:
            log.warning("service %s/%s left as it is: %s", namespace,
                        spec.name, problem, extra={"source": source})
            skipped.add((namespace, spec.name))
            continue
        backends = _backends(source, spec, namespace, resolved, policy)
        out.append(dataclasses.replace(spec, namespace=namespace, source=source,
                                       backends=tuple(backends)))
    return out, skipped


def _spec_problem(spec: ServiceSpec, namespace: str, scope: Sequence[str] | None) -> str | None:
    if scope is not None and namespace not in scope:
        return f"namespace {namespace!r} is outside the configured namespaces {list(scope)}"
    if spec.type == "ExternalName":
        problem = external_name_problem(spec.external_name or "")
        if problem:
            return f"externalName: {problem}"
    elif not spec.ports:
        return "no ports"
    checks = [("ports", service_ports_problem((p.name, p.port, p.protocol) for p in spec.ports)),
              ("labels", labels_problem(spec.labels)),
              ("annotations", annotations_problem(spec.annotations))]
    checks += [("appProtocol", app_protocol_problem(p.app_protocol)) for p in spec.ports
               if p.app_protocol is not None]
    for where, problem in checks:
        if problem:
            return f"{where}: {problem}"
    return None


def _backend_problem(b: Backend, known: set[str], ip: IPAddress | None) -> str | None:
    """`ip`: the address parsed, if it is an IP address (then it is a valid one)."""
    problem = None if ip is not None else address_problem(b.address)
    if problem:
        return problem
    if b.hostname is not None and (problem := hostname_problem(b.hostname)):
        return problem
    if b.zone is not None and (problem := zone_problem(b.zone)):
        return problem
    if b.ports and (set(b.ports) - known or
                    any(not 1 <= n <= 65535 for n in b.ports.values())):
        return f"ports {dict(b.ports)} do not match the Service ports {sorted(known)}"
    return None


def _backends(source: str, spec: ServiceSpec, namespace: str, resolved: dict[str, list[str]],
              policy: AddressPolicy) -> list[Backend]:
    known = {p.name for p in spec.ports}
    out = []
    for b in spec.backends:
        ip = strict_ip(b.address)  # parsed once: this loop runs for every backend
        problem = _backend_problem(b, known, ip)
        if problem:
            log.warning("service %s/%s: backend %s dropped: %s", namespace,
                        spec.name, repr(b.address[:80]), problem, extra={"source": source})
            continue
        for one in [ip] if ip is not None else _resolved_ips(b.address, resolved):
            reason = policy.refused(one)
            if reason:
                log.warning("service %s/%s: address %s dropped (%s)",
                            namespace, spec.name, one, reason, extra={"source": source})
                continue
            address = one.compressed
            out.append(b if address == b.address else dataclasses.replace(b, address=address))
    return out


def _resolved_ips(name: str, resolved: dict[str, list[str]]) -> list[IPAddress]:
    return [ipaddress.ip_address(a) for a in resolved.get(name, [])]


def merge_sources(per_source: dict[str, list[ServiceSpec]], desired: Desired) -> None:
    """Two sources that want the same Service: neither gets it, and both count as failed so
    the Service is left as it is."""
    owners: dict[tuple[str | None, str], str] = {}
    clashes: set[str] = set()
    for source, specs in per_source.items():
        for s in specs:
            key = (s.namespace, s.name)
            other = owners.setdefault(key, source)
            if other != source:
                log.error("service %s/%s is wanted by sources %r and %r: neither is applied",
                          s.namespace, s.name, other, source)
                clashes.update({other, source})
    for source in clashes:
        desired.failed_sources[source] = "another source wants the same Service"
        desired.failed_kinds[source] = "permanent"
    for source, specs in per_source.items():
        if source not in clashes:
            desired.specs.extend(_without_duplicates(source, specs, desired.skipped))


def _without_duplicates(source: str, specs: list[ServiceSpec],
                        skipped: set[tuple[str, str]]) -> list[ServiceSpec]:
    """One source listing a Service twice (often once with the default namespace spelled out
    and once without) contradicts itself: the Service is left as it is, or it would flip
    between the two versions on every run."""
    count: dict[tuple[str, str], int] = {}
    for s in specs:
        key = (s.namespace or "", s.name)
        count[key] = count.get(key, 0) + 1
    twice = {k for k, n in count.items() if n > 1}
    for namespace, name in sorted(twice):
        log.warning("lists Service %s/%s %d times: left as it is", namespace,
                    name, count[(namespace, name)], extra={"source": source})
    skipped.update(twice)
    return [s for s in specs if (s.namespace or "", s.name) not in twice]

