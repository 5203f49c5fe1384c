"""The `static` provider: Services and their addresses listed in a YAML or JSON file."""

from __future__ import annotations

import os
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

# The Kubernetes rules, each with its one message (the core applies the same ones).
from syncer.plugin import (
    Backend,
    ConfigError,
    Provider,
    ProviderOptions,
    ServicePort,
    ServiceSpec,
    address_problem,
    annotations_problem,
    app_protocol_problem,
    canonical_ip,
    config_error_from,
    external_name_problem,
    hostname_problem,
    labels_problem,
    load_document,
    namespace_problem,
    port_name_problem,
    service_name_problem,
    service_ports_problem,
    zone_problem,
)

T = TypeVar("T")


def _checked(value: T, problem: str | None) -> T:
    if problem:
        raise ValueError(problem)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PortEntry(_Strict):
    name: str = ""
    port: int = Field(ge=1, le=65535, strict=True)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None

    @field_validator("name")
    @classmethod
    def _port_name(cls, v: str) -> str:
        return _checked(v, (v and port_name_problem(v)) or None)

    @field_validator("app_protocol")
    @classmethod
    def _app_protocol(cls, v: str | None) -> str | None:
        return _checked(v, (v is not None and app_protocol_problem(v)) or None)


class EndpointEntry(_Strict):
    address: str
    port: int | None = Field(default=None, ge=1, le=65535, strict=True)
    ports: dict[str, StrictInt] | None = None
    ready: bool = Field(default=True, strict=True)
    zone: str | None = None
    hostname: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        _checked(v, address_problem(v))
        return canonical_ip(v) or v.rstrip(".").lower()

    @field_validator("ports")
    @classmethod
    def _port_numbers(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for name, number in (v or {}).items():
            if not 1 <= number <= 65535:
                raise ValueError(f"port {name!r}: expected a number from 1 to 65535, got {number}")
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return _checked(v, (v is not None and hostname_problem(v)) or None)

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return _checked(v, (v is not None and zone_problem(v)) or None)

    @model_validator(mode="after")
    def _one_port_form(self) -> EndpointEntry:
        if self.port is not None and self.ports is not None:
            raise ValueError("give either 'port' or 'ports', not both")
        return self


class ServiceEntry(_Strict):
    name: str
    namespace: str | None = None
    type: Literal["ClusterIP", "Headless", "ExternalName"] = "ClusterIP"
    external_name: str | None = None
    ports: list[PortEntry] = Field(default_factory=list)
    endpoints: list[EndpointEntry] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _service_name(cls, v: str) -> str:
        return _checked(v, service_name_problem(v))

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return _checked(v, (v is not None and namespace_problem(v)) or None)

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[PortEntry]) -> list[PortEntry]:
        return _checked(v, service_ports_problem((p.name, p.port, p.protocol) for p in v))

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _checked(v, labels_problem(v))

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        return _checked(v, annotations_problem(v))

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntry:
        if self.type == "ExternalName":
            if not self.external_name:
                raise ValueError("type ExternalName needs 'external_name', a DNS name")
            _checked(self, external_name_problem(self.external_name))
            if self.endpoints:
                raise ValueError("an ExternalName Service has no endpoints")
            return self
        if self.external_name is not None:
            raise ValueError("'external_name' goes only with type ExternalName")
        if not self.ports:
            raise ValueError("'ports' needs at least one Service port")
        return self


class Inventory(_Strict):
    services: list[ServiceEntry]


class StaticOptions(ProviderOptions):
    path: str = Field(min_length=1, description="inventory file (YAML or JSON), relative to "
                      "the configuration file")


class StaticProvider(Provider[StaticOptions]):
    """Services and addresses read from a YAML or JSON inventory file."""

    Options = StaticOptions
    summary = "Services and addresses listed in a YAML or JSON inventory file"

    def check(self) -> None:
        self._read()

    def discover(self) -> list[ServiceSpec]:
        return self._read()

    def _read(self) -> list[ServiceSpec]:
        path = self.context.resolve_path(self.options.path)
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
        seen: dict[tuple[str | None, str], int] = {}
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


def _to_spec(entry: ServiceEntry, file: str, where: str) -> ServiceSpec:
    ports = tuple(ServicePort(p.name, p.port, p.protocol, p.app_protocol) for p in entry.ports)
    names = {p.name for p in ports}
    backends = []
    for j, ep in enumerate(entry.endpoints):
        field = f"{where}.endpoints[{j}]"
        if ep.ports is not None:
            unknown = sorted(set(ep.ports) - names)
            if unknown:
                raise ConfigError(file, f"{field}.ports", f"no Service port named {unknown[0]!r}"
                                  f"; the Service's ports are {sorted(names)}")
            mapping = dict(ep.ports)
        elif ep.port is not None:
            if len(ports) != 1:
                raise ConfigError(file, f"{field}.port", "the Service has several ports: give "
                                  "'ports: {name: number}' instead of 'port'")
            mapping = {ports[0].name: ep.port}
        else:
            mapping = {p.name: p.port for p in ports}
        backends.append(Backend(address=ep.address, ports=mapping, ready=ep.ready,
                                zone=ep.zone, hostname=ep.hostname))
    return ServiceSpec(name=entry.name, namespace=entry.namespace, ports=ports,
                       backends=tuple(backends), type=entry.type,
                       external_name=entry.external_name, labels=entry.labels,
                       annotations=entry.annotations)
