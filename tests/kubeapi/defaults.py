"""Server-side defaulting, as the real API server applies it before validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.kubeapi import shape
from tests.kubeapi.resources import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    EVENTS,
    NAMESPACES,
    SERVICES,
    Resource,
)


def apply_defaults(res: Resource, obj: dict[str, Any]) -> None:
    if res is SERVICES:
        _service(obj)
    elif res is ENDPOINTS:
        for i, subset in enumerate(shape.objs(obj, "subsets", "subsets")):
            for port in shape.objs(subset, "ports", f"subsets[{i}].ports"):
                port.setdefault("protocol", "TCP")
    elif res is ENDPOINT_SLICES:
        for port in shape.objs(obj, "ports", "ports"):
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")
        for i, endpoint in enumerate(shape.objs(obj, "endpoints", "endpoints")):
            hints = shape.obj(endpoint, "hints", f"endpoints[{i}].hints")
            for zone in shape.objs(hints, "forZones", f"endpoints[{i}].hints.forZones"):
                zone.setdefault("name", "")  # ForZone.name is no omitempty: read back as ""
    elif res is EVENTS:
        _micro_times(obj)
    elif res is NAMESPACES:
        name = obj["metadata"].get("name", "")
        labels = obj["metadata"]["labels"] = shape.string_map(obj["metadata"], "labels",
                                                              "metadata.labels")
        labels["kubernetes.io/metadata.name"] = name
        obj["spec"] = shape.obj(obj, "spec", "spec")
        obj["spec"].setdefault("finalizers", ["kubernetes"])
        obj["status"] = shape.obj(obj, "status", "status")
        obj["status"].setdefault("phase", "Active")


def _service(obj: dict[str, Any]) -> None:
    spec = obj["spec"] = shape.obj(obj, "spec", "spec")
    spec_type = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in shape.objs(spec, "ports", "spec.ports"):
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") is None and port.get("port") is not None:
            port["targetPort"] = port["port"]
    if spec_type != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec_type in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    status = obj.get("status")
    if not isinstance(status, dict) or "loadBalancer" not in status:
        obj["status"] = {"loadBalancer": {}}


def _micro_times(obj: dict[str, Any]) -> None:
    """metav1.MicroTime is decoded and encoded again: UTC, six digits, `Z` (what the client
    sent as `+00:00` comes back so). A value that does not parse is left for validation."""
    series = obj.get("series")
    for parent, key in ((obj, "eventTime"), (series, "lastObservedTime")):
        value = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(value, str) or not value:
            continue
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
        if isinstance(parent, dict):
            parent[key] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
