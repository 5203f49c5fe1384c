"""The `static` provider: Services and their addresses listed in a YAML or JSON file.

The inventory belongs to the configuration: anything wrong in it (a bad name, a port out of
range, a Service listed twice) is a ConfigError naming the file and the field, and stops the
run before anything is written (exit 2), rather than data to drop or a Service to keep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

# The Kubernetes rules, each with its one message (the core applies the same ones).
from syncer.plugin import (
    Backend,
    ConfigError,
    ConfigPath,
    DnsName,
    Namespace,
    PortNumber,
    ProbeOptions,
    Provider,
    ProviderOptions,
    ServiceName,
    ServicePort,
    ServiceSpec,
    TrafficDistribution,
    address_problem,
    annotations_problem,
    app_protocol_problem,
    canonical_ip,
    config_error_from,
    hostname_problem,
    labels_problem,
    load_document,
    port_name_problem,
    service_ports_problem,
    zone_problem,
)

T = TypeVar("T")


def _rule(problem_of: Callable[[T], str | None]) -> AfterValidator:
    """A pydantic check raising the rule's own message."""
    def check(value: T) -> T:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _canonical_address(value: str) -> str:
    problem = address_problem(value)
    if problem:
        raise ValueError(problem)
    return canonical_ip(value) or value.rstrip(".").lower()


# Rules syncer.plugin has no option type for: inventory fields only.
_OptionalPortName = Annotated[str, _rule(lambda v: (v and port_name_problem(v)) or None)]
_AppProtocol = Annotated[str, _rule(app_protocol_problem)]
_Hostname = Annotated[str, _rule(hostname_problem)]
_Zone = Annotated[str, _rule(zone_problem)]
_Address = Annotated[str, AfterValidator(_canonical_address)]
_Labels = Annotated[dict[str, str], _rule(labels_problem)]
_Annotations = Annotated[dict[str, str], _rule(annotations_problem)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PortEntry(_Strict):
    name: _OptionalPortName = ""
    port: PortNumber
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: _AppProtocol | None = None


class EndpointEntry(_Strict):
    address: _Address
    port: PortNumber | None = None
    ports: dict[str, PortNumber] | None = None
    ready: bool = Field(default=True, strict=True)
    zone: _Zone | None = None
    hostname: _Hostname | None = None

    @model_validator(mode="after")
    def _one_port_form(self) -> EndpointEntry:
        if self.port is not None and self.ports is not None:
            raise ValueError("give either 'port' or 'ports', not both")
        return self


def _service_ports(ports: list[PortEntry]) -> str | None:
    return service_ports_problem((p.name, p.port, p.protocol) for p in ports)


class ServiceEntry(_Strict):
    name: ServiceName
    namespace: Namespace | None = None
    type: Literal["ClusterIP", "Headless", "ExternalName"] = "ClusterIP"
    external_name: DnsName | None = None
    ports: Annotated[list[PortEntry], _rule(_service_ports)] = Field(default_factory=list)
    endpoints: list[EndpointEntry] = Field(default_factory=list)
    labels: _Labels = Field(default_factory=dict)
    annotations: _Annotations = Field(default_factory=dict)
    probe: ProbeOptions | None = None
    traffic_distribution: TrafficDistribution | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntry:
        if self.type == "ExternalName":
            if not self.external_name:
                raise ValueError("type ExternalName needs 'external_name', a DNS name")
            extra = [k for k in ("endpoints", "probe", "traffic_distribution")
                     if getattr(self, k)]
            if extra:
                raise ValueError(f"an ExternalName Service has no endpoints: "
                                 f"{extra[0]!r} does not apply")
            return self
        if self.external_name is not None:
            raise ValueError("'external_name' goes only with type ExternalName")
        if not self.ports:
            raise ValueError("'ports' needs at least one Service port")
        return self


class Inventory(_Strict):
    services: list[ServiceEntry]


class StaticOptions(ProviderOptions):
    path: ConfigPath
    """The inventory file (YAML, or JSON when the name ends in .json), relative to the
    configuration file's folder. Read on every run."""


class StaticProvider(Provider[StaticOptions]):
    """Services and addresses read from a YAML or JSON inventory file."""

    Options = StaticOptions
    summary = "Services and addresses listed in a YAML or JSON inventory file"

    def check(self) -> None:
        self._read()

    def discover(self) -> list[ServiceSpec]:
        return self._read()

    def _read(self) -> list[ServiceSpec]:
        path = self.options.path
        shown = str(path)
        if not os.path.lexists(path):  # a symlink loop is reported as one, not as missing
            raise self.context.config_error("path", f"inventory file {shown} not found")
        data = load_document(path)
        if not isinstance(data, dict):
            raise ConfigError(shown, "", "expected a mapping with a 'services' list")
        try:
            inventory = Inventory.model_validate(data)
        except ValidationError as e:
            raise config_error_from(shown, e) from None
        specs: list[ServiceSpec] = []
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(inventory.services):
            # The same Service with and without the default namespace spelled out is one.
            key = (entry.namespace or self.context.default_namespace, entry.name)
            if key in seen:
                raise ConfigError(shown, f"services[{i}].name",
                                  f"service {entry.name!r} is listed twice "
                                  f"(first at services[{seen[key]}])")
            seen[key] = i
            specs.append(_to_spec(entry, shown, f"services[{i}]"))
        return specs


def _backend_ports(entry: ServiceEntry, ep: EndpointEntry, file: str,
                   field: str) -> Mapping[str, int]:
    """An endpoint's `ports` (by Service port name), its one `port`, else the Service's."""
    names = {p.name for p in entry.ports}
    if ep.ports is not None:
        unknown = sorted(set(ep.ports) - names)
        if unknown:
            raise ConfigError(file, f"{field}.ports", f"no Service port named {unknown[0]!r}"
                              f"; the Service's ports are {sorted(names)}")
        return dict(ep.ports)
    if ep.port is not None:
        if len(entry.ports) != 1:
            raise ConfigError(file, f"{field}.port", "the Service has several ports: give "
                              "'ports: {name: number}' instead of 'port'")
        return {entry.ports[0].name: ep.port}
    return {p.name: p.port for p in entry.ports}


def _to_spec(entry: ServiceEntry, file: str, where: str) -> ServiceSpec:
    ports = tuple(ServicePort(p.name, p.port, p.protocol, p.app_protocol) for p in entry.ports)
    backends = tuple(
        Backend(address=ep.address, ready=ep.ready, zone=ep.zone, hostname=ep.hostname,
                ports=_backend_ports(entry, ep, file, f"{where}.endpoints[{j}]"))
        for j, ep in enumerate(entry.endpoints))
    return ServiceSpec(name=entry.name, namespace=entry.namespace, ports=ports,
                       backends=backends, type=entry.type,
                       external_name=entry.external_name, labels=entry.labels,
                       annotations=entry.annotations, probe=entry.probe,
                       traffic_distribution=entry.traffic_distribution)
