"""The aws_ec2 provider: EC2 instances selected by tags and filters become Service backends.

Selection happens on the server (DescribeInstances filters), every page is read, regions are
queried concurrently. Each instance contributes one address of its primary network interface
(DeviceIndex 0); instances are grouped into Services by a fixed name or by a tag's value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from providers.aws_session import (
    AwsAccess,
    AwsOptions,
    Port,
    PortName,
    ServiceName,
    TagKey,
    TagValues,
    tag_map,
    tag_values,
    warn,
)
from syncer.plugin import (
    Backend,
    Provider,
    ServicePort,
    ServiceSpec,
    canonical_ip,
    is_service_name,
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

    model_config = ConfigDict(extra="forbid", frozen=True)

    Name: Annotated[str, StringConstraints(min_length=1)]
    Values: Annotated[list[str], Field(min_length=1)]


class Ec2Options(AwsOptions):
    """Options of the aws_ec2 provider."""

    tags: dict[TagKey, TagValues] = Field(default_factory=dict)
    """Tag key → value or values (any of them; `*`, `?` wildcards); sent as filters."""
    filters: list[Ec2Filter] = Field(default_factory=list)
    """Raw DescribeInstances filters, ANDed with `tags` and `states`."""
    states: Annotated[list[InstanceState], Field(min_length=1)] = Field(
        default_factory=lambda: list[InstanceState](["running"]))
    address: AddressKind = "private"
    service: ServiceName | None = None
    service_tag: TagKey | None = None
    port: Port | None = None
    ports: Annotated[dict[PortName, Port], Field(min_length=1)] | None = None
    port_tag: TagKey | None = None
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
        if self.ports is None and self.port is None:
            # The Service port is what clients are configured with: it must not follow
            # whichever instances happen to exist, so `port_tag` needs `port` beside it.
            raise ValueError("set `port` (with `port_tag` for per-instance target ports) "
                             "or `ports`")
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

    def check(self) -> None:
        AwsAccess(self.options, self.context, "ec2", "aws_ec2").check_locally()

    def discover(self) -> list[ServiceSpec]:
        aws = AwsAccess(self.options, self.context, "ec2", "aws_ec2")
        instances = aws.each_region(lambda region: self._describe(aws, region))
        groups: dict[str, list[Instance]] = defaultdict(list)
        for instance in sorted(instances, key=lambda i: (i.id, i.region)):
            groups[self._service_name(instance)].append(instance)
        if self.options.service is not None:
            groups.setdefault(self.options.service, [])  # an empty Service still counts
        return [spec for name, members in sorted(groups.items())
                if (spec := self._service(name, members)) is not None]

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

    def _service(self, name: str, instances: Sequence[Instance]) -> ServiceSpec | None:
        if not is_service_name(name):
            warn(self.context,
                 "tag %r value %r is not a valid Service name (RFC 1035 label); skipped %s",
                 self.options.service_tag, name, ", ".join(i.describe() for i in instances))
            return None
        backends = self._unique(b for i in instances
                                if (b := self._backend(name, i)) is not None)
        return ServiceSpec(name=name, namespace=self.options.namespace,
                           ports=self._service_ports(), backends=backends)

    def _backend(self, service: str, instance: Instance) -> Backend | None:
        """The instance's backend; None (with a warning) when its data is unusable: one
        malformed instance must not fail the source."""
        address = instance_address(instance.data, self.options.address)
        if address is None:
            warn(self.context, "Service %r: %s has no %s address on its primary network "
                 "interface; skipped", service, instance.describe(), self.options.address)
            return None
        if canonical_ip(address) is None:
            warn(self.context, "Service %r: %s: %s address %r is not an IP address; skipped",
                 service, instance.describe(), self.options.address, address[:80])
            return None
        ports: dict[str, int] = {}
        if self.options.port_tag is not None:
            port = parse_port(instance.tags.get(self.options.port_tag))
            if port is None:
                warn(self.context, "Service %r: %s: tag %r is missing or not a port number "
                     "(%r); skipped", service, instance.describe(), self.options.port_tag,
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
                warn(self.context, "address %s of instance %s is also instance %s's; kept "
                     "only the latter", backend.address, backend.meta.get("instance-id"),
                     kept.meta.get("instance-id"))
        return tuple(sorted(by_address.values(), key=lambda b: b.address))

    def _service_ports(self) -> tuple[ServicePort, ...]:
        if self.options.ports is not None:
            return tuple(ServicePort(name=n, port=p) for n, p in sorted(self.options.ports.items()))
        assert self.options.port is not None  # the options require `port` or `ports`
        return (ServicePort(name="", port=self.options.port),)
