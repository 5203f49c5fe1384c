"""The API server's validation rules, checked on the rendered objects before any request.

The static inventory and the core's checks of provider data already apply these rules with
the file and entry named (`syncer.names` holds each rule once). This is the last check over
exactly what would be sent: a render bug or data that slipped through shows here, with the
source, the Service and the object, instead of as a 422 in the middle of a run. A Service
with any violation is left as it is in the cluster (none of its objects is written).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from syncer.names import (
    annotations_problem,
    app_protocol_problem,
    external_name_problem,
    hostname_problem,
    labels_problem,
    namespace_problem,
    parse_ip,
    port_names_problem,
    service_name_problem,
    service_ports_problem,
    special_ip_reason,
    subdomain_problem,
    zone_problem,
)
from syncer.ownership import JSON
from syncer.render import RenderedService

log = logging.getLogger("endpoints_sync")

MAX_SLICE_ENDPOINTS = 1000  # discovery validation's maxEndpoints
MAX_SLICE_PORTS = 100
PROTOCOLS = ("TCP", "UDP", "SCTP")

Problems = Iterator[str]


def object_problems(obj: JSON) -> list[str]:
    """Every rule `obj` breaks, as `field: message`."""
    check = _KINDS.get(str(obj.get("kind")))
    if check is None:
        return [f"kind: {obj.get('kind')!r} is not a kind endpoints-sync writes"]
    return [*_metadata(obj), *check(obj)]


def keep_valid(rendered: list[RenderedService],
               skipped: set[tuple[str, str]]) -> list[RenderedService]:
    """The rendered Services that break no rule. Each other one is reported and added to
    `skipped`, so the run leaves it exactly as it is and exits 1."""
    out = []
    for svc in rendered:
        found = [(obj, p) for obj in svc.objects for p in object_problems(obj)]
        if not found:
            out.append(svc)
            continue
        for obj, problem in found:
            log.error("Service %s/%s left as it is: the API server would refuse "
                      "%s %s: %s", svc.namespace, svc.name, obj.get("kind"),
                      obj.get("metadata", {}).get("name"), problem,
                      extra={"source": svc.source})
        skipped.add((svc.namespace, svc.name))
    return out


def _found(field: str, problem: str | None) -> Problems:
    if problem:
        yield f"{field}: {problem}"


def _metadata(obj: JSON) -> Problems:
    meta: dict[str, Any] = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    name_rule = service_name_problem if obj.get("kind") == "Service" else subdomain_problem
    yield from _found("metadata.name", name_rule(name))
    yield from _found("metadata.namespace", namespace_problem(str(meta.get("namespace", ""))))
    yield from _found("metadata.labels", labels_problem(meta.get("labels") or {}))
    yield from _found("metadata.annotations", annotations_problem(meta.get("annotations") or {}))


def _ports(ports: list[JSON], path: str, *, lowest: int) -> Problems:
    for i, p in enumerate(ports):
        if p.get("protocol") not in PROTOCOLS:
            yield f"{path}[{i}].protocol: expected one of {', '.join(PROTOCOLS)}"
        if "appProtocol" in p:
            yield from _found(f"{path}[{i}].appProtocol", app_protocol_problem(p["appProtocol"]))
        number = p.get("port")
        if not isinstance(number, int) or not lowest <= number <= 65535:
            yield f"{path}[{i}].port: {number!r} is not a port number ({lowest}-65535)"


def _port_names(ports: list[JSON], path: str) -> Problems:
    yield from _found(path, port_names_problem([str(p.get("name", "")) for p in ports]))


def _service(obj: JSON) -> Problems:
    spec: JSON = obj.get("spec") or {}
    ports: list[JSON] = spec.get("ports") or []
    if spec.get("type") == "ExternalName":
        yield from _found("spec.externalName",
                          external_name_problem(str(spec.get("externalName") or "")))
    elif not ports:
        yield "spec.ports: required"
    yield from _ports(ports, "spec.ports", lowest=1)
    yield from _found("spec.ports", service_ports_problem(
        (str(p.get("name", "")), p["port"], str(p.get("protocol")))
        for p in ports if isinstance(p.get("port"), int)))


def _address(address: Any, path: str, family: int | None) -> Problems:
    try:
        ip = parse_ip(str(address))
    except ValueError as e:
        yield f"{path}: {e}"
        return
    if family is not None and ip.version != family:
        yield f"{path}: {address!r} is not an IPv{family} address"
    elif ip.compressed != address:
        yield f"{path}: {address!r} is not in canonical form ({ip.compressed})"
    reason = special_ip_reason(ip)
    if reason:
        yield f"{path}: {address!r} is {reason}"


def _host_fields(item: JSON, path: str) -> Problems:
    if "hostname" in item:
        yield from _found(f"{path}.hostname", hostname_problem(str(item["hostname"])))
    if "zone" in item:
        yield from _found(f"{path}.zone", zone_problem(str(item["zone"])))


def _endpoint_slice(obj: JSON) -> Problems:
    family = {"IPv4": 4, "IPv6": 6}.get(str(obj.get("addressType")))
    if family is None:
        yield f"addressType: {obj.get('addressType')!r} is not IPv4 or IPv6"
    endpoints: list[JSON] = obj.get("endpoints") or []
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        yield f"endpoints: {len(endpoints)} endpoints, more than {MAX_SLICE_ENDPOINTS}"
    for i, e in enumerate(endpoints):
        addresses = e.get("addresses") or []
        if len(addresses) != 1:  # the API allows 1-100; consumers read only the first
            yield f"endpoints[{i}].addresses: expected exactly one address"
        for j, address in enumerate(addresses):
            yield from _address(address, f"endpoints[{i}].addresses[{j}]", family)
        yield from _host_fields(e, f"endpoints[{i}]")
    ports: list[JSON] = obj.get("ports") or []
    if len(ports) > MAX_SLICE_PORTS:
        yield f"ports: {len(ports)} ports, more than {MAX_SLICE_PORTS}"
    yield from _ports(ports, "ports", lowest=0)
    yield from _port_names(ports, "ports")


def _endpoints(obj: JSON) -> Problems:
    for i, subset in enumerate(obj.get("subsets") or []):
        path = f"subsets[{i}]"
        ready, not_ready = subset.get("addresses") or [], subset.get("notReadyAddresses") or []
        if not ready and not not_ready:
            yield f"{path}: needs addresses or notReadyAddresses"
        for key, items in (("addresses", ready), ("notReadyAddresses", not_ready)):
            for j, item in enumerate(items):
                yield from _address(item.get("ip"), f"{path}.{key}[{j}].ip", None)
                yield from _host_fields(item, f"{path}.{key}[{j}]")
        ports = subset.get("ports") or []
        yield from _ports(ports, f"{path}.ports", lowest=1)
        yield from _port_names(ports, f"{path}.ports")


_KINDS: dict[str, Callable[[JSON], Problems]] = {
    "Service": _service,
    "EndpointSlice": _endpoint_slice,
    "Endpoints": _endpoints,
}
