"""What providers return: backends grouped into desired Services. No Kubernetes objects here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pydantic stays out of the light modules (tests/test_startup.py)
    from syncer.probeoptions import ProbeOptions

ServiceType = Literal["ClusterIP", "Headless", "ExternalName"]
Protocol = Literal["TCP", "UDP", "SCTP"]


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of the Service. Backends map this port's `name` to their own port number."""

    name: str
    port: int
    protocol: Protocol = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Backend:
    """One backend address.

    `address` is an IP address or a DNS name (the core resolves names). `ports` maps a
    Service port name to the port this backend listens on; an empty mapping means "the
    Service port numbers". `ready=False` publishes the address as not ready instead of
    dropping it.
    """

    address: str
    ports: Mapping[str, int] = field(default_factory=dict)
    ready: bool = True
    zone: str | None = None
    hostname: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """The desired state of one Service and its addresses.

    `namespace=None` means the configuration's default namespace. `source` is filled in by
    the core with the source name; providers leave it empty. `probe` and
    `traffic_distribution` left None take the source's settings.
    """

    name: str
    ports: tuple[ServicePort, ...]
    backends: tuple[Backend, ...] = ()
    namespace: str | None = None
    type: ServiceType = "ClusterIP"
    external_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    probe: ProbeOptions | None = None
    traffic_distribution: Literal["PreferClose"] | None = None
