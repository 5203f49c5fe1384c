"""From what the providers discovered to the desired state: names checked, namespaces
defaulted, DNS names resolved, addresses the API server would refuse dropped."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from syncer.model import Backend, ServiceSpec
from syncer.names import canonical_ip, is_port_name, is_service_name
from syncer.resolve import Resolver, resolve_names

log = logging.getLogger("endpoints_sync")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LINK_LOCAL_MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/24")


@dataclass
class Desired:
    specs: list[ServiceSpec] = field(default_factory=list)
    failed_sources: dict[str, str] = field(default_factory=dict)
    """Source name -> why it failed; its Services are left exactly as they are."""
    skipped: set[tuple[str, str]] = field(default_factory=set)
    """(namespace, name) of Services a source wanted but got wrong: left as they are."""


def refused_reason(ip: IPAddress, deny: Sequence[IPNetwork]) -> str | None:
    """Why the API server (or the deny list) would refuse this endpoint address."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if (ip.version == 4 and ip in _LINK_LOCAL_MULTICAST_V4) or (
            ip.version == 6 and ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02):
        return "link-local multicast"
    for net in deny:
        if ip.version == net.version and ip in net:
            return f"in deny_cidrs {net}"
    return None


def normalise_source(source: str, specs: Sequence[ServiceSpec], *, default_namespace: str,
                     scope: Sequence[str] | None, deny: Sequence[IPNetwork],
                     resolver: Resolver) -> tuple[list[ServiceSpec], set[tuple[str, str]]]:
    """Check and complete one source's specs. Returns (specs, skipped services).

    Raises SourceError when names cannot be resolved: then the whole source counts as failed.
    """
    names = [b.address for s in specs for b in s.backends if canonical_ip(b.address) is None]
    resolved = resolve_names(names, resolver, source)
    out: list[ServiceSpec] = []
    skipped: set[tuple[str, str]] = set()
    for spec in specs:
        namespace = spec.namespace or default_namespace
        problem = _spec_problem(spec, namespace, scope)
        if problem:
            log.warning("source %r: service %s/%s skipped: %s", source, namespace, spec.name,
                        problem, extra={"source": source})
            skipped.add((namespace, spec.name))
            continue
        backends = _backends(source, spec, namespace, resolved, deny)
        out.append(dataclasses.replace(spec, namespace=namespace, source=source,
                                       backends=tuple(backends)))
    return out, skipped


def _spec_problem(spec: ServiceSpec, namespace: str, scope: Sequence[str] | None) -> str | None:
    if not is_service_name(spec.name):
        return "the name is not a DNS-1035 label"
    if scope is not None and namespace not in scope:
        return f"namespace {namespace!r} is outside the configured namespaces {list(scope)}"
    if spec.type != "ExternalName" and not spec.ports:
        return "no ports"
    names = [p.name for p in spec.ports]
    if len(set(names)) != len(names) or (len(names) > 1 and not all(names)):
        return "several ports need unique names"
    bad = [n for n in names if n and not is_port_name(n)]
    if bad:
        return f"port name {bad[0]!r} is not valid"
    if any(not 1 <= p.port <= 65535 for p in spec.ports):
        return "a port is outside 1-65535"
    return None


def _backends(source: str, spec: ServiceSpec, namespace: str, resolved: dict[str, list[str]],
              deny: Sequence[IPNetwork]) -> list[Backend]:
    known = {p.name for p in spec.ports}
    out = []
    for b in spec.backends:
        if b.ports and (set(b.ports) - known or
                        any(not 1 <= n <= 65535 for n in b.ports.values())):
            log.warning("source %r: service %s/%s: backend %s dropped: ports %s do not match "
                        "the Service ports %s", source, namespace, spec.name, b.address,
                        dict(b.ports), sorted(known), extra={"source": source})
            continue
        for ip in _ips(b.address, resolved):
            reason = refused_reason(ip, deny)
            if reason:
                log.warning("source %r: service %s/%s: address %s dropped (%s)", source,
                            namespace, spec.name, ip, reason, extra={"source": source})
                continue
            address = ip.compressed
            out.append(b if address == b.address else dataclasses.replace(b, address=address))
    return out


def _ips(address: str, resolved: dict[str, list[str]]) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(address)]
    except ValueError:
        return [ipaddress.ip_address(a) for a in resolved.get(address, [])]


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
        log.warning("source %r lists Service %s/%s %d times: left as it is", source, namespace,
                    name, count[(namespace, name)], extra={"source": source})
    skipped.update(twice)
    return [s for s in specs if (s.namespace or "", s.name) not in twice]

