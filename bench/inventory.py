"""Static inventories of N Services x M addresses, and their 10 % churn.

Bulk IPv4 from 198.18.0.0/15 (the benchmarking range); every tenth Service is dual-stack,
with half its addresses in 2001:db8::/32. Three port sets, and some single-port Services have
their backends on two target ports (two EndpointSlices per family), so slices vary."""

from __future__ import annotations

import ipaddress
from typing import Any

IPV4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
IPV4_SIZE = 2 ** 17  # a /15
IPV6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
PORT_SETS: list[list[dict[str, Any]]] = [
    [{"name": "http", "port": 80}],
    [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
    [{"name": "grpc", "port": 9090, "app_protocol": "kubernetes.io/h2c"}],
]


def inventory(services: int, addresses: int, churned: bool = False) -> dict[str, Any]:
    """The inventory; `churned`: every address of a tenth of the Services replaced by fresh
    ones (going from one to the other, either way, is the 10 % churn sync)."""
    changed = set(range(0, services, 10)) if churned else set()
    out = []
    for s in range(services):
        generation = 1 if s in changed else 0
        out.append({"name": f"svc-{s:05d}", "ports": PORT_SETS[s % len(PORT_SETS)],
                    "endpoints": _endpoints(services, addresses, s, generation)})
    return {"services": out}


def _endpoints(services: int, addresses: int, s: int, generation: int) -> list[dict[str, Any]]:
    # Generation 1 (every tenth Service) takes blocks after all of generation 0's.
    slot = (services + s // 10 if generation else s) * addresses
    if slot + addresses > IPV4_SIZE:
        raise ValueError(f"{services} x {addresses} addresses do not fit in 198.18.0.0/15")
    dual = s % 10 == 5
    eps: list[dict[str, Any]] = []
    for a in range(addresses):
        if dual and a % 2:
            address = str(ipaddress.IPv6Address(IPV6_BASE + slot + a))
        else:
            address = str(ipaddress.IPv4Address(IPV4_BASE + slot + a))
        entry: dict[str, Any] = {"address": address}
        if s % 7 == 3 and s % len(PORT_SETS) != 1:  # two target ports, as ceph-rgw's
            entry["port"] = 8080 + a % 2
        eps.append(entry)
    return eps
