"""meta.k8s.io/v1 Table responses: what `kubectl get` asks for to print its columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.kubeapi.resources import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    EVENTS,
    NAMESPACES,
    SERVICES,
    Resource,
)

Obj = dict[str, Any]

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when "
                       "this object was created."}


def _column(name: str, priority: int = 0) -> Obj:
    return {"name": name, "type": "string", "format": "", "description": name,
            "priority": priority}


COLUMNS: dict[str, list[Obj]] = {
    SERVICES.plural: [_NAME, _column("Type"), _column("Cluster-IP"), _column("External-IP"),
                      _column("Port(s)"), _AGE, _column("Selector", 1)],
    ENDPOINTS.plural: [_NAME, _column("Endpoints"), _AGE],
    ENDPOINT_SLICES.plural: [_NAME, _column("AddressType"), _column("Ports"),
                             _column("Endpoints"), _AGE],
    NAMESPACES.plural: [_NAME, _column("Status"), _AGE],
    EVENTS.plural: [_NAME, _column("Type"), _column("Reason"), _column("Object"),
                    _column("Message")],
}


def age(timestamp: str) -> str:
    """A short duration like kubectl's: 42s, 5m3s, 3h, 2d4h, 400d."""
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _capped(values: list[str], cap: int = 3) -> str:
    if not values:
        return "<none>"
    more = f" + {len(values) - cap} more..." if len(values) > cap else ""
    return ",".join(values[:cap]) + more


def _service_cells(obj: Obj) -> list[Any]:
    spec = obj.get("spec", {})
    svc_type = spec.get("type", "ClusterIP")
    external = "<none>"
    if svc_type == "ExternalName":
        external = spec.get("externalName", "<none>")
    elif svc_type == "LoadBalancer":
        ingress = obj.get("status", {}).get("loadBalancer", {}).get("ingress", [])
        external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or "<pending>"
    ports = [
        f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
        else f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [svc_type, spec.get("clusterIP") or "<none>", external, ",".join(ports) or "<none>",
            age(obj["metadata"].get("creationTimestamp", "")), selector or "<none>"]


def _endpoints_cells(obj: Obj) -> list[Any]:
    pairs = []
    for subset in obj.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]
        for address in subset.get("addresses") or []:
            pairs += [address.get("ip", "") + (f":{p}" if p else "") for p in ports]
    return [_capped(pairs), age(obj["metadata"].get("creationTimestamp", ""))]


def _slice_cells(obj: Obj) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or [] if p.get("port"))
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return [obj.get("addressType", ""), ports or "<unset>",
            _capped(addresses) if addresses else "<unset>",
            age(obj["metadata"].get("creationTimestamp", ""))]


def _namespace_cells(obj: Obj) -> list[Any]:
    return [obj.get("status", {}).get("phase", "Active"),
            age(obj["metadata"].get("creationTimestamp", ""))]


def _event_cells(obj: Obj) -> list[Any]:
    regarding = obj.get("regarding") or {}
    return [obj.get("type", ""), obj.get("reason", ""),
            f"{str(regarding.get('kind', '')).lower()}/{regarding.get('name', '')}",
            obj.get("note", "")]


_CELLS = {
    SERVICES.plural: _service_cells,
    ENDPOINTS.plural: _endpoints_cells,
    ENDPOINT_SLICES.plural: _slice_cells,
    NAMESPACES.plural: _namespace_cells,
    EVENTS.plural: _event_cells,
}


def _row(res: Resource, obj: Obj, include: str) -> Obj:
    row: Obj = {"cells": [obj["metadata"]["name"], *_CELLS[res.plural](obj)]}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": obj["metadata"]}
    return row


def table(res: Resource, items: list[Obj], list_meta: Obj, include: str = "Metadata") -> Obj:
    """`include` is the includeObject parameter: None, Metadata (the default) or Object."""
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": COLUMNS[res.plural],
        "rows": [_row(res, item, include) for item in items],
    }
