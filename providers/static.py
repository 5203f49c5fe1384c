"""The `static` provider: Services and their addresses listed in a YAML or JSON file.

The inventory belongs to the configuration: anything wrong in it (a bad name, a port out of
range, a Service listed twice) is a ConfigError naming the file and the field, and stops the
run before anything is written (exit 2), rather than data to drop or a Service to keep.
In `run --watch` the file is polled (syncer.plugin.watch_files): an edit is synced within
seconds; a broken edit is logged naming the file and the cluster keeps the last good state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

# The Kubernetes rules, each with its one message (the core applies the same ones).
from syncer.plugin import (
    CONFIG_DIR,
    Backend,
    ConfigError,
    ConfigPath,
    DnsName,
    Emit,
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
    probe_port_problem,
    service_ports_problem,
    watch_files,
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
    ip = canonical_ip(value)  # first: one parse for the common case, a valid IP address
    if ip is not None:
        return ip
    problem = address_problem(value)
    if problem:
        raise ValueError(problem)
    return value.rstrip(".").lower()


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
    """The file: `services`, each a ServiceEntry, validated one by one (StaticProvider)."""

    services: list[Any]


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

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        watch_files(lambda: [self.options.path], self._read, emit, stop, self.context.log)

    def _read(self) -> list[ServiceSpec]:
        path = self.options.path
        shown = str(path)
        if not os.path.lexists(path):  # a symlink loop is reported as one, not as missing
            raise self.context.config_error("path", f"inventory file {shown} not found")
        data = load_document(path)
        if not isinstance(data, dict):
            raise ConfigError(shown, "", "expected a mapping with a 'services' list")
        try:
            services = Inventory.model_validate(data).services
        except ValidationError as e:
            raise config_error_from(shown, e) from None
        del data
        # Service by Service, each one's raw data dropped once it is a spec: a whole
        # inventory's models beside its raw data took 1.7 GB for a million endpoints. As
        # before: every validation problem in the file first, as one error; then the first
        # other problem (a Service listed twice, a port name that is not the Service's).
        context = {CONFIG_DIR: path.parent}  # a Service's probe.ca_file: next to the file
        invalid: list[ConfigError] = []
        other: ConfigError | None = None
        specs: list[ServiceSpec] = []
        seen: dict[tuple[str, str], int] = {}
        for i, raw in enumerate(services):
            services[i] = None
            try:
                entry = ServiceEntry.model_validate(raw, context=context)
            except ValidationError as e:
                invalid.append(config_error_from(shown, e, f"services[{i}]"))
                continue
            if invalid or other:
                continue
            # The same Service with and without the default namespace spelled out is one.
            key = (entry.namespace or self.context.default_namespace, entry.name)
            if key in seen:
                other = ConfigError(shown, f"services[{i}].name",
                                    f"service {entry.name!r} is listed twice "
                                    f"(first at services[{seen[key]}])")
                continue
            seen[key] = i
            try:
                specs.append(_to_spec(entry, shown, f"services[{i}]"))
            except ConfigError as e:
                other = e
        if invalid:
            raise _together(invalid)
        if other:
            raise other
        return specs


def _together(errors: list[ConfigError]) -> ConfigError:
    """One error for all: the first, and every other's lines after it (as config_error_from
    reports several problems of one validation)."""
    first = errors[0]
    first.args = ("\n".join(str(e) for e in errors),)
    return first


def _backend_ports(entry: ServiceEntry, ep: EndpointEntry, file: str, field: str,
                   shared: dict[Any, Mapping[str, int]]) -> Mapping[str, int]:
    """An endpoint's `ports` (by Service port name), its one `port`, else the Service's.
    Equal mappings of one Service are one object (`shared`): read-only, and a million
    endpoints' own copies took 200 MB."""
    names = {p.name for p in entry.ports}
    if ep.ports is not None:
        unknown = sorted(set(ep.ports) - names)
        if unknown:
            raise ConfigError(file, f"{field}.ports", f"no Service port named {unknown[0]!r}"
                              f"; the Service's ports are {sorted(names)}")
        ports = ep.ports
    elif ep.port is not None:
        if len(entry.ports) != 1:
            raise ConfigError(file, f"{field}.port", "the Service has several ports: give "
                              "'ports: {name: number}' instead of 'port'")
        ports = {entry.ports[0].name: ep.port}
    else:
        ports = {p.name: p.port for p in entry.ports}
    return shared.setdefault(tuple(ports.items()), dict(ports))


_NO_META: Mapping[str, str] = {}  # read-only; one for every static Backend


def _to_spec(entry: ServiceEntry, file: str, where: str) -> ServiceSpec:
    problem = entry.probe and probe_port_problem({p.name: p.protocol for p in entry.ports},
                                                 entry.probe)
    if problem:
        raise ConfigError(file, f"{where}.probe.port", problem)
    ports = tuple(ServicePort(p.name, p.port, p.protocol, p.app_protocol) for p in entry.ports)
    shared: dict[Any, Mapping[str, int]] = {}
    backends = tuple(
        Backend(address=ep.address, ready=ep.ready, zone=ep.zone, hostname=ep.hostname,
                ports=_backend_ports(entry, ep, file, f"{where}.endpoints[{j}]", shared),
                meta=_NO_META)
        for j, ep in enumerate(entry.endpoints))
    return ServiceSpec(name=entry.name, namespace=entry.namespace, ports=ports,
                       backends=backends, type=entry.type,
                       external_name=entry.external_name, labels=entry.labels,
                       annotations=entry.annotations, probe=entry.probe,
                       traffic_distribution=entry.traffic_distribution)
