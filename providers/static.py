"""The `static` provider: Services and their addresses listed in a YAML or JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncer.plugin import (
    Backend,
    ConfigError,
    Provider,
    ProviderOptions,
    ServicePort,
    ServiceSpec,
    canonical_ip,
    config_error_from,
    is_dns_label,
    is_dns_name,
    is_port_name,
    is_service_name,
    load_document,
)

PortNumber = int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PortEntry(_Strict):
    name: str = ""
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None

    @field_validator("name")
    @classmethod
    def _port_name(cls, v: str) -> str:
        if v and not is_port_name(v):
            raise ValueError(f"expected a port name (lowercase letters, digits and '-', at most "
                             f"15, at least one letter), got {v!r}")
        return v


class EndpointEntry(_Strict):
    address: str
    port: int | None = Field(default=None, ge=1, le=65535)
    ports: dict[str, int] | None = None
    ready: bool = True
    zone: str | None = None
    hostname: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        ip = canonical_ip(v)
        if ip is not None:
            return ip
        if is_dns_name(v):
            return v.rstrip(".").lower()
        raise ValueError(f"expected an IP address or a DNS name, got {v!r}")

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
        if v is not None and not is_dns_label(v):
            raise ValueError(f"expected a DNS label (lowercase letters, digits, '-'), got {v!r}")
        return v

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
        if not is_service_name(v):
            raise ValueError("expected a Service name (a DNS-1035 label: lowercase letters, "
                             f"digits and '-', starting with a letter, at most 63), got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntry:
        if self.type == "ExternalName":
            if not self.external_name or not is_dns_name(self.external_name):
                raise ValueError("type ExternalName needs 'external_name', a DNS name")
            if self.endpoints:
                raise ValueError("an ExternalName Service has no endpoints")
            return self
        if self.external_name is not None:
            raise ValueError("'external_name' goes only with type ExternalName")
        if not self.ports:
            raise ValueError("'ports' needs at least one Service port")
        names = [p.name for p in self.ports]
        if len(names) > 1 and (not all(names) or len(set(names)) != len(names)):
            raise ValueError("a Service with several ports needs a unique 'name' on each")
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
        if not path.exists():
            raise self.context.config_error("path", f"inventory file {shown} not found")
        data = _load(path)
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


def _load(path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(str(path), f"line {e.lineno}, column {e.colno}",
                              f"invalid JSON: {e.msg}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(str(path), "", f"cannot read the file: {e}") from None
    return load_document(path)


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
