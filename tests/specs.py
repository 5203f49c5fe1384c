"""Small builders for desired-state test data (documentation address ranges only)."""

from __future__ import annotations

from typing import Any

from syncer.model import Backend, ServicePort, ServiceSpec

HTTP = (ServicePort("http", 80),)


def rgw_spec(addresses: int = 6, ports: tuple[int, ...] = (8080, 8081),
             namespace: str = "storage", source: str = "rgw") -> ServiceSpec:
    """The article's example: gateways 192.0.2.50.. on each of `ports`, behind port 80."""
    backends = tuple(Backend(f"192.0.2.{50 + i}", {"http": p})
                     for i in range(addresses) for p in ports)
    return ServiceSpec(name="ocs-external-rgw-lb", namespace=namespace, ports=HTTP,
                       backends=backends, source=source)


def simple_spec(name: str, addresses: list[str], namespace: str = "external",
                source: str = "src", port: int = 5432) -> ServiceSpec:
    return ServiceSpec(name=name, namespace=namespace, ports=(ServicePort("db", port),),
                       backends=tuple(Backend(a) for a in addresses), source=source)


def rgw_entry(addresses: range | list[int] = range(50, 56), *,
              ports: tuple[int, ...] = (8080, 8081),
              name: str = "ocs-external-rgw-lb") -> dict[str, Any]:
    """The article's example as a static inventory entry: gateways 192.0.2.<addresses>."""
    return {"name": name, "namespace": "storage", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": f"192.0.2.{i}", "port": p}
                          for i in addresses for p in ports]}


def dual_stack_entries() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Inventory entries: a dual-stack Service (non-canonical IPv6 on purpose), an IPv6-only
    UDP one, and one with 250 backends (more than two slices of 100)."""
    dual = {"name": "dual", "ports": [{"port": 443, "name": "https"}],
            "endpoints": [{"address": "2001:db8:0:0::10"}, {"address": "192.0.2.10"},
                          {"address": "2001:DB8::11"}]}
    v6 = {"name": "v6only", "ports": [{"port": 53, "name": "dns", "protocol": "UDP"}],
          "endpoints": [{"address": "2001:db8::53"}]}
    big = {"name": "big", "ports": [{"port": 80}],
           "endpoints": [{"address": f"198.51.100.{i}"} for i in range(1, 251)]}
    return dual, v6, big


def slice_endpoints(slices: list[dict[str, Any]], service: str) -> set[str]:
    """`address:port` of every endpoint in a Service's EndpointSlices."""
    return {f"{e['addresses'][0]}:{s['ports'][0]['port']}" for s in slices
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s["endpoints"]}
