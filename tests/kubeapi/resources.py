"""The resource kinds the test server serves, and the discovery documents describing them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    singular: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """How Status messages name the resource: `services`, `endpointslices.discovery.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """How Invalid messages name the kind: `Service`, `EndpointSlice.discovery.k8s.io`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_resource(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_VERBS),
        }
        if self.short_names:
            doc["shortNames"] = list(self.short_names)
        if self.categories:
            doc["categories"] = list(self.categories)
        return doc


NAMESPACES = Resource("Namespace", "namespaces", "namespace", "", "v1", False, ("ns",))
SERVICES = Resource("Service", "services", "service", "", "v1", True, ("svc",), ("all",))
ENDPOINTS = Resource("Endpoints", "endpoints", "endpoints", "", "v1", True, ("ep",))
ENDPOINT_SLICES = Resource(
    "EndpointSlice", "endpointslices", "endpointslice", "discovery.k8s.io", "v1", True
)
EVENTS = Resource("Event", "events", "event", "events.k8s.io", "v1", True, ("ev",))
ALL: tuple[Resource, ...] = (NAMESPACES, SERVICES, ENDPOINTS, ENDPOINT_SLICES, EVENTS)

DISCOVERY_GROUP = "discovery.k8s.io"
EVENTS_GROUP = "events.k8s.io"
GROUPS = (DISCOVERY_GROUP, EVENTS_GROUP)  # the named API groups served, in discovery order


def by_kind(kind: str) -> Resource:
    """Look a resource up by kind (`Service`) or plural (`services`), case-insensitively."""
    wanted = kind.lower()
    for res in ALL:
        if wanted in (res.kind.lower(), res.plural):
            return res
    raise ValueError(f"unknown kind {kind!r}; known: {[r.kind for r in ALL]}")


def by_path(group: str, version: str, plural: str) -> Resource | None:
    for res in ALL:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str) -> dict[str, Any]:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [version], "preferredVersion": version}


def api_group(name: str) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUPS]}


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            r.api_resource() for r in ALL if (r.group, r.version) == (group, version)
        ],
    }
