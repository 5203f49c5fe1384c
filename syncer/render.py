"""Desired Services, EndpointSlices and Endpoints as plain JSON objects. Pure: no I/O.

Input specs are normalised (namespace set, addresses canonical IPs, special addresses gone):
see `syncer.desired`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from syncer.model import Backend, ServicePort, ServiceSpec
from syncer.ownership import (
    JSON,
    SERVICE_NAME,
    SKIP_MIRROR,
    SLICE_MANAGED_BY,
    SOURCE,
    TOOL,
    ownership_labels,
)

PortSet = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RenderSettings:
    owner: str = "default"
    write_slices: bool = True
    write_endpoints: bool = True
    max_endpoints_per_slice: int = 100


@dataclass(frozen=True)
class RenderedService:
    """One desired Service with every object it needs, in write order (Service first)."""

    namespace: str
    name: str
    source: str
    objects: tuple[JSON, ...]
    address_count: int
    hints_withheld: str | None = None
    """Why a Service that sets traffic_distribution got no zone hints (the run warns);
    None when it got them or does not ask for them."""


def render(spec: ServiceSpec, settings: RenderSettings) -> RenderedService:
    namespace = spec.namespace or "default"
    objects = [_service(spec, namespace, settings)]
    withheld = None
    if spec.type != "ExternalName":
        groups = group_backends(spec)
        withheld = hints_withheld(spec, groups, settings)
        hinted = spec.traffic_distribution is not None and withheld is None
        if settings.write_slices:
            objects.extend(_slices(spec, groups, namespace, settings, hinted))
        if settings.write_endpoints:
            objects.append(_endpoints(spec, groups, namespace, settings))
    count = 0 if spec.type == "ExternalName" else len(spec.backends)
    return RenderedService(namespace, spec.name, spec.source, tuple(objects), count, withheld)


def render_all(specs: Iterable[ServiceSpec], settings: RenderSettings) -> list[RenderedService]:
    return [render(s, settings) for s in specs]


def _metadata(name: str, namespace: str, spec: ServiceSpec, settings: RenderSettings,
              extra_labels: dict[str, str] | None = None, user_meta: bool = False) -> JSON:
    labels = dict(spec.labels) if user_meta else {}
    labels.update(ownership_labels(settings.owner))
    labels.update(extra_labels or {})
    annotations = dict(spec.annotations) if user_meta else {}
    annotations[SOURCE] = spec.source
    return {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}


def _service(spec: ServiceSpec, namespace: str, settings: RenderSettings) -> JSON:
    body: JSON = {}
    if spec.type == "ExternalName":
        body = {"type": "ExternalName", "externalName": spec.external_name}
    else:
        body = {"type": "ClusterIP"}
        if spec.type == "Headless":
            body["clusterIP"] = "None"
        if spec.traffic_distribution:
            # Written even when the hints are withheld: it is the Service's declared intent,
            # and kube-proxy routes by the slices' hints only (none: all zones).
            body["trafficDistribution"] = spec.traffic_distribution
    if spec.ports:
        body["ports"] = [_service_port(p) for p in spec.ports]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec.name, namespace, spec, settings, user_meta=True),
        "spec": body,
    }


def _service_port(p: ServicePort) -> JSON:
    out: JSON = {"name": p.name} if p.name else {}
    out.update(port=p.port, protocol=p.protocol)
    if p.app_protocol:
        out["appProtocol"] = p.app_protocol
    return out


def _endpoint_ports(spec: ServiceSpec, ports: PortSet) -> list[JSON]:
    protocol = {p.name: p for p in spec.ports}
    out = []
    for name, number in ports:
        sp = protocol.get(name)
        entry: JSON = {"name": name} if name else {}
        entry.update(port=number, protocol=sp.protocol if sp else "TCP")
        if sp is not None and sp.app_protocol:
            entry["appProtocol"] = sp.app_protocol
        out.append(entry)
    return out


def port_set(spec: ServiceSpec, backend: Backend) -> PortSet:
    """A backend's ports; an empty mapping means the Service port numbers."""
    ports = backend.ports or {p.name: p.port for p in spec.ports}
    return tuple(sorted(ports.items()))


def _ip_sort_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


def group_backends(spec: ServiceSpec) -> dict[PortSet, dict[str, Backend]]:
    """Backends by port set, one per address (ready wins over not ready), addresses sorted."""
    groups: dict[PortSet, dict[str, Backend]] = defaultdict(dict)
    for b in spec.backends:
        group = groups[port_set(spec, b)]
        seen = group.get(b.address)
        if seen is None or (b.ready and not seen.ready):
            group[b.address] = b
    return {ps: dict(sorted(g.items(), key=lambda kv: _ip_sort_key(kv[0])))
            for ps, g in sorted(groups.items())}


def slice_name(service: str, family: str, ports: PortSet, index: int) -> str:
    """Deterministic: the same Service, family, port set and chunk give the same name."""
    digest = hashlib.sha256(repr(ports).encode()).hexdigest()[:8]
    suffix = f"-{family}-{digest}" + (f"-{index}" if index else "")
    return service[: 253 - len(suffix)] + suffix


def hints_withheld(spec: ServiceSpec, groups: dict[PortSet, dict[str, Backend]],
                   settings: RenderSettings) -> str | None:
    """Why this Service gets no zone hints although it asks for them; None if it gets them.

    All or nothing: kube-proxy ignores a Service's hints unless every ready endpoint carries
    one, and a zone whose backends are all not ready would get hints that lead nowhere."""
    if spec.traffic_distribution is None:
        return None
    if not settings.write_slices:
        return "hints live in EndpointSlices, and `write` leaves them out"
    entries = [b for group in groups.values() for b in group.values()]
    unzoned = list(dict.fromkeys(b.address for b in entries if not b.zone))
    if unzoned:
        more = f" (and {len(unzoned) - 1} more)" if len(unzoned) > 1 else ""
        return f"backend {unzoned[0]}{more} has no zone"
    ready_in: dict[str, bool] = defaultdict(bool)
    for b in entries:
        ready_in[str(b.zone)] |= b.ready
    dark = sorted(zone for zone, ready in ready_in.items() if not ready)
    if dark:
        more = f" (and {len(dark) - 1} more)" if len(dark) > 1 else ""
        return f"zone {dark[0]}{more} has no ready backend"
    return None


def _slices(spec: ServiceSpec, groups: dict[PortSet, dict[str, Backend]], namespace: str,
            settings: RenderSettings, hinted: bool) -> list[JSON]:
    slices = []
    labels = {SERVICE_NAME: spec.name, SLICE_MANAGED_BY: TOOL}
    for ports, backends in groups.items():
        by_family: dict[str, list[Backend]] = {"ipv4": [], "ipv6": []}
        for address, b in backends.items():
            by_family["ipv6" if ":" in address else "ipv4"].append(b)
        for family, members in by_family.items():
            size = settings.max_endpoints_per_slice
            for index, start in enumerate(range(0, len(members), size)):
                chunk = members[start:start + size]
                slices.append({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": _metadata(slice_name(spec.name, family, ports, index), namespace,
                                          spec, settings, labels),
                    "addressType": "IPv6" if family == "ipv6" else "IPv4",
                    "endpoints": [_slice_endpoint(b, hinted) for b in chunk],
                    "ports": _endpoint_ports(spec, ports),
                })
    return slices


def _slice_endpoint(b: Backend, hinted: bool) -> JSON:
    # serving: false too, or a consumer that reads serving (kube-proxy, for terminating
    # pods) would still route to it; a ready endpoint leaves serving to default to ready.
    conditions = {"ready": True} if b.ready else {"ready": False, "serving": False}
    out: JSON = {"addresses": [b.address], "conditions": conditions}
    if b.hostname:
        out["hostname"] = b.hostname
    if b.zone:
        out["zone"] = b.zone
        if hinted:  # PreferClose: each endpoint is for its own zone, as KEP-4444 has it
            out["hints"] = {"forZones": [{"name": b.zone}]}
    return out


def _endpoints(spec: ServiceSpec, groups: dict[PortSet, dict[str, Backend]], namespace: str,
               settings: RenderSettings) -> JSON:
    subsets = []
    for ports, backends in groups.items():
        ready = [_endpoint_address(b) for b in backends.values() if b.ready]
        not_ready = [_endpoint_address(b) for b in backends.values() if not b.ready]
        subset: JSON = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subset["ports"] = _endpoint_ports(spec, ports)
        subsets.append(subset)
    extra = {SKIP_MIRROR: "true"} if settings.write_slices else {}
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _metadata(spec.name, namespace, spec, settings, extra),
        "subsets": subsets,
    }


def _endpoint_address(b: Backend) -> JSON:
    out: JSON = {"ip": b.address}
    if b.hostname:
        out["hostname"] = b.hostname
    return out


@dataclass(frozen=True)
class AddressEntry:
    """One address of a written EndpointSlice or Endpoints, read back: the inverse of the
    writers above, for the steps that compare what is there (guards, damping)."""

    address: str
    ports: PortSet
    ready: bool
    hostname: str | None = None
    zone: str | None = None


def address_entries(obj: JSON) -> list[AddressEntry]:
    def port_set_of(ports: list[JSON] | None) -> PortSet:
        return tuple(sorted((p.get("name") or "", int(p.get("port") or 0)) for p in ports or []))

    out: list[AddressEntry] = []
    if obj.get("kind") == "EndpointSlice":
        ports = port_set_of(obj.get("ports"))
        for e in obj.get("endpoints") or []:
            ready = bool((e.get("conditions") or {}).get("ready", True))
            out.extend(AddressEntry(a, ports, ready, e.get("hostname"), e.get("zone"))
                       for a in e.get("addresses") or [])
    elif obj.get("kind") == "Endpoints":
        for s in obj.get("subsets") or []:
            ports = port_set_of(s.get("ports"))
            for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                out.extend(AddressEntry(a["ip"], ports, ready, a.get("hostname"))
                           for a in s.get(key) or [])
    return out
