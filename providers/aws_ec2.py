"""The aws_ec2 provider: EC2 instances selected by tags and filters become Service backends.

Selection happens on the server (DescribeInstances filters), every page is read, regions are
queried concurrently. Each instance contributes one address of its primary network interface
(DeviceIndex 0); instances are grouped into Services by a fixed name or by a tag's value, and
the Service port follows the API's one port rule (`group_services`): `port`/`ports` win,
otherwise the instances' port tag, and a Service whose instances disagree is left as it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from providers.aws_session import (
    AwsAccess,
    AwsOptions,
    TagKey,
    TagValues,
    tag_map,
    tag_values,
)
from syncer.plugin import (
    Backend,
    Discovery,
    PortName,
    PortNumber,
    Provider,
    ServiceName,
    ServicePort,
    canonical_ip,
    group_services,
    service_name_problem,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        InstanceNetworkInterfaceTypeDef,
        InstanceTypeDef,
    )

InstanceState = Literal["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]
AddressKind = Literal["private", "public", "ipv6"]


class Ec2Filter(BaseModel):
    """One raw DescribeInstances filter, spelled as in the EC2 API."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              hide_input_in_errors=True)

    Name: Annotated[str, StringConstraints(min_length=1)]
    """The filter name, e.g. `vpc-id` or `instance-type`."""
    Values: Annotated[list[str], Field(min_length=1)]
    """Values to match, any of them."""


class Ec2Options(AwsOptions):
    """Options of the aws_ec2 provider."""

    tags: dict[TagKey, TagValues] = Field(default_factory=dict)
    """Tag key → value or values (any of them; `*`, `?` wildcards); sent as filters."""
    filters: list[Ec2Filter] = Field(default_factory=list)
    """Raw DescribeInstances filters, ANDed with `tags` and `states`."""
    states: Annotated[list[InstanceState], Field(min_length=1)] = Field(
        default_factory=lambda: list[InstanceState](["running"]))
    """Instance states to select; instances in a listed state other than `running` are
    published not ready."""
    address: AddressKind = "private"
    """Which address of the primary network interface a backend gets."""
    service: ServiceName | None = None
    """All matched instances back this one Service."""
    service_tag: TagKey | None = None
    """One Service per value of this tag; instances without it are not selected."""
    port: PortNumber | None = None
    """The Service port (unnamed); also the backends' port unless `port_tag` is set."""
    ports: Annotated[dict[PortName, PortNumber], Field(min_length=1)] | None = None
    """Named Service ports, e.g. {http: 80, admin: 9000}; the backends listen on them."""
    port_tag: TagKey | None = None
    """Each instance's port comes from this tag; without `port`, also the Service port, which
    all instances of a Service must then agree on."""
    page_size: Annotated[int, Field(ge=5, le=1000, strict=True)] = 1000
    """Instances per DescribeInstances page (the API's limits)."""

    @model_validator(mode="after")
    def _one_service_naming(self) -> Ec2Options:
        if (self.service is None) == (self.service_tag is None):
            raise ValueError("set exactly one of `service` (one Service for all instances) "
                             "or `service_tag` (one Service per value of that tag)")
        return self

    @model_validator(mode="after")
    def _ports_given_once(self) -> Ec2Options:
        if self.ports is not None and (self.port is not None or self.port_tag is not None):
            raise ValueError("`ports` cannot be combined with `port` or `port_tag`")
        if self.ports is None and self.port is None and self.port_tag is None:
            raise ValueError("set `port`, `ports` or `port_tag` (the instances' port from a "
                             "tag)")
        return self


@dataclass(frozen=True)
class Instance:
    """One described instance and the region it was found in."""

    region: str
    data: InstanceTypeDef

    @property
    def id(self) -> str:
        return self.data.get("InstanceId", "?")

    @property
    def tags(self) -> dict[str, str]:
        return tag_map(self.data.get("Tags"))

    @property
    def state(self) -> str:
        return self.data.get("State", {}).get("Name", "")

    def describe(self) -> str:
        return f"instance {self.id} ({self.region})"


def primary_interface(data: InstanceTypeDef) -> InstanceNetworkInterfaceTypeDef | None:
    for eni in data.get("NetworkInterfaces", []):
        if eni.get("Attachment", {}).get("DeviceIndex") == 0:
            return eni
    return None


def instance_address(data: InstanceTypeDef, kind: AddressKind) -> str | None:
    """The chosen address of the primary network interface, None when it has none.

    The instance-level fields describe the same interface; they are used only when the
    interface list is absent.
    """
    eni = primary_interface(data)
    if eni is None:
        field = {"private": "PrivateIpAddress", "public": "PublicIpAddress",
                 "ipv6": "Ipv6Address"}[kind]
        value = data.get(field)
        return str(value) if value else None
    if kind == "private":
        return eni.get("PrivateIpAddress") or None
    if kind == "public":
        return eni.get("Association", {}).get("PublicIp") or None
    ipv6 = sorted(eni.get("Ipv6Addresses", []), key=lambda a: not a.get("IsPrimaryIpv6"))
    return ipv6[0].get("Ipv6Address") if ipv6 else None


def parse_port(value: str | None) -> int | None:
    # isascii: str.isdigit() also accepts digits int() refuses, such as '²'.
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    port = int(value.strip())
    return port if 1 <= port <= 65535 else None


class Ec2Provider(Provider[Ec2Options]):
    """EC2 instances (by tags and filters, in one or more regions) as Service backends."""

    Options = Ec2Options
    summary = "EC2 instances selected by tags/filters; one address per instance"
    optional_imports: ClassVar[Mapping[str, str]] = {"boto3": "aws"}  # botocore comes along

    def check(self) -> None:
        AwsAccess(self.options, self.context, "ec2", "aws_ec2").check_locally()

    def discover(self) -> Discovery:
        aws = AwsAccess(self.options, self.context, "ec2", "aws_ec2")
        instances = aws.each_region(lambda region: self._describe(aws, region))
        groups: dict[str, list[Instance]] = defaultdict(list)
        if self.options.service is not None:
            groups[self.options.service] = []  # an empty Service still counts
        for instance in sorted(instances, key=lambda i: (i.id, i.region)):
            groups[self._service_name(instance)].append(instance)
        valid = {name: found for name, found in sorted(groups.items())
                 if self._valid_name(name, found)}
        members = [(name, backend) for name, found in valid.items()
                   for backend in self._backends(name, found)]
        # Every valid name is a Service, even when none of its instances is usable: leaving
        # it out would prune it.
        return group_services(members, ports=self._service_ports(), always=valid,
                              log=self.context.log)

    # --- reading EC2 ---

    def _describe(self, aws: AwsAccess, region: str) -> list[Instance]:
        with aws.translating(region, "ec2:DescribeInstances"):
            client = cast("EC2Client", aws.client(region))
            pages = client.get_paginator("describe_instances").paginate(
                Filters=self._filters(),
                PaginationConfig={"PageSize": self.options.page_size},
            )
            return [Instance(region, data)
                    for page in pages
                    for reservation in page.get("Reservations", [])
                    for data in reservation.get("Instances", [])]

    def _filters(self) -> list[FilterTypeDef]:
        """Everything that selects instances goes to the server: nothing is read only to be
        thrown away, and the IAM policy can be scoped the same way."""
        o = self.options
        filters: list[FilterTypeDef] = [{"Name": "instance-state-name", "Values": list(o.states)}]
        filters += [{"Name": f"tag:{key}", "Values": tag_values(values)}
                    for key, values in o.tags.items()]
        if o.service_tag is not None:
            # Instances without the grouping tag belong to no Service.
            filters.append({"Name": "tag-key", "Values": [o.service_tag]})
        filters += [{"Name": f.Name, "Values": list(f.Values)} for f in o.filters]
        return filters

    # --- mapping instances to Services ---

    def _service_name(self, instance: Instance) -> str:
        if self.options.service is not None:
            return self.options.service
        assert self.options.service_tag is not None  # the options allow only these two
        return instance.tags.get(self.options.service_tag, "")

    def _valid_name(self, name: str, instances: list[Instance]) -> bool:
        """A tag value that is no Service name: its instances are dropped, named."""
        problem = service_name_problem(name)
        if problem:
            self.context.log.warning("tag %r: %s; dropped %s", self.options.service_tag,
                                     problem, ", ".join(i.describe() for i in instances))
        return problem is None

    def _backends(self, service: str, instances: Iterable[Instance]) -> tuple[Backend, ...]:
        return self._unique(b for i in instances if (b := self._backend(service, i)) is not None)

    def _backend(self, service: str, instance: Instance) -> Backend | None:
        """The instance's backend; None (with a warning) when its data is unusable: one
        malformed instance must not fail the source."""
        address = instance_address(instance.data, self.options.address)
        if address is None:
            self.context.log.warning(
                "Service %r: %s has no %s address on its primary network interface; dropped",
                service, instance.describe(), self.options.address)
            return None
        if canonical_ip(address) is None:
            self.context.log.warning(
                "Service %r: %s: %s address %r is not an IP address; dropped",
                service, instance.describe(), self.options.address, address[:80])
            return None
        ports: dict[str, int] = {}
        if self.options.port_tag is not None:
            port = parse_port(instance.tags.get(self.options.port_tag))
            if port is None:
                self.context.log.warning(
                    "Service %r: %s: tag %r is missing or not a port number (%r); dropped",
                    service, instance.describe(), self.options.port_tag,
                    instance.tags.get(self.options.port_tag, "")[:80])
                return None
            ports = {"": port}
        return Backend(
            address=address,
            ports=ports,
            # Other states are only listed when `states` asks for them: show them, not ready.
            ready=instance.state == "running",
            zone=instance.data.get("Placement", {}).get("AvailabilityZone"),
            meta={"instance-id": instance.id, "region": instance.region},
        )

    def _unique(self, backends: Iterable[Backend]) -> tuple[Backend, ...]:
        """One backend per address (overlapping VPC ranges across regions can repeat one)."""
        by_address: dict[str, Backend] = {}
        for backend in backends:
            kept = by_address.setdefault(backend.address, backend)
            if kept is not backend:
                self.context.log.warning(
                    "address %s of instance %s is also instance %s's; kept only the latter",
                    backend.address, backend.meta.get("instance-id"),
                    kept.meta.get("instance-id"))
        return tuple(sorted(by_address.values(), key=lambda b: b.address))

    def _service_ports(self) -> tuple[ServicePort, ...] | None:
        """The configured Service ports; None: each Service's from its instances' port tag."""
        if self.options.ports is not None:
            return tuple(ServicePort(name=n, port=p) for n, p in sorted(self.options.ports.items()))
        if self.options.port is not None:
            return (ServicePort(name="", port=self.options.port),)
        return None
