"""The aws_rds provider: RDS DB instances and Aurora (or Multi-AZ) DB clusters as Services.

A standalone DB instance backs a Service with its own endpoint; a DB cluster backs one with
the endpoints of its writer, its readers, or both (`role`). Two ways to publish:

- `resolve` (default): each instance's endpoint name becomes a backend address, which the
  core resolves to IPs; not-available instances are published not ready. The Service port
  follows the API's one port rule: `port` wins, else the databases' port, and a Service
  whose databases listen on different ports is left as it is.
- `externalname`: an ExternalName Service pointing at the instance or cluster endpoint; DNS
  follows failovers by itself, but nothing can be remapped or marked not ready.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, cast

from pydantic import Field, model_validator

from providers.aws_session import (
    AwsAccess,
    AwsOptions,
    TagKey,
    TagValues,
    tag_map,
    tags_match,
)
from syncer.plugin import (
    Backend,
    Discovery,
    Kept,
    PortNumber,
    Provider,
    ServiceName,
    ServicePort,
    ServiceSpec,
    address_problem,
    group_services,
    service_name_problem,
)

if TYPE_CHECKING:
    from mypy_boto3_rds.client import RDSClient
    from mypy_boto3_rds.type_defs import DBClusterTypeDef, DBInstanceTypeDef, FilterTypeDef

HOSTNAME_ANNOTATION = "endpoints-sync.io/hostname"
Role = Literal["writer", "reader", "any"]


class RdsOptions(AwsOptions):
    """Options of the aws_rds provider."""

    tags: dict[TagKey, TagValues] = Field(default_factory=dict)
    """Tag key → value or values; matched on each instance's and cluster's own tags."""
    engines: Annotated[list[str], Field(min_length=1)] | None = None
    """Only these engines (aurora-postgresql, mysql, ...); a server-side filter."""
    role: Role = "writer"
    """Which members of a DB cluster back its Service."""
    mode: Literal["resolve", "externalname"] = "resolve"
    """`resolve`: the instance endpoints are backends, resolved to IPs by the core;
    `externalname`: an ExternalName Service pointing at the database endpoint."""
    port: PortNumber | None = None
    """The Service port in mode resolve; default: the databases' port (all databases of a
    Service must then agree on it)."""
    service: ServiceName | None = None
    """Every matched database backs this one Service; default: one Service per database,
    named after its identifier."""
    service_tag: TagKey | None = None
    """The Service name is the value of this tag; databases without it are not published."""
    ready_statuses: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["available"])
    """Instance statuses published as ready; every other status is published not ready."""
    page_size: Annotated[int, Field(ge=20, le=100, strict=True)] = 100
    """Records per Describe page (the API's limits)."""

    @model_validator(mode="after")
    def _one_service_naming(self) -> RdsOptions:
        if self.service is not None and self.service_tag is not None:
            raise ValueError("set at most one of `service` and `service_tag` (default: the "
                             "instance or cluster identifier)")
        return self

    @model_validator(mode="after")
    def _externalname_has_no_port_mapping(self) -> RdsOptions:
        if self.mode == "externalname" and self.port is not None:
            raise ValueError("`port` cannot be used with mode externalname: an ExternalName "
                             "Service has no port mapping, clients use the database port")
        return self


@dataclass(frozen=True)
class Database:
    """One matched DB instance or cluster: what a Service is built from."""

    identifier: str
    kind: Literal["DB instance", "DB cluster"]
    region: str
    tags: dict[str, str]
    endpoint: str
    """The DNS name clients use: the instance endpoint, or the cluster (reader) endpoint."""
    port: int
    backends: tuple[Backend, ...]

    def describe(self) -> str:
        return f"{self.kind} {self.identifier} ({self.region})"


def _endpoint_problem(address: str, port: int) -> str | None:
    """What is wrong with an endpoint RDS returned, if anything."""
    if (problem := address_problem(address)) is not None:
        return f"address: {problem}"
    if not 1 <= port <= 65535:
        return f"port {port} is not a port number (1-65535)"
    return None


class RdsProvider(Provider[RdsOptions]):
    """RDS DB instances and DB clusters as Services."""

    Options = RdsOptions
    summary = "RDS DB instances and Aurora clusters; endpoint names or ExternalName Services"
    optional_imports: ClassVar[Mapping[str, str]] = {"boto3": "aws"}  # botocore comes along

    def check(self) -> None:
        AwsAccess(self.options, self.context, "rds", "aws_rds").check_locally()

    def discover(self) -> Discovery:
        aws = AwsAccess(self.options, self.context, "rds", "aws_rds")
        databases = aws.each_region(lambda region: self._describe(aws, region))
        groups: dict[str, list[Database]] = defaultdict(list)
        if self.options.service is not None:
            groups[self.options.service] = []  # an empty Service still counts
        for db in sorted(databases, key=lambda d: (d.identifier, d.kind, d.region)):
            name = self._service_name(db)
            if name is not None:
                groups[name].append(db)
        valid = {name: dbs for name, dbs in sorted(groups.items()) if self._valid_name(name, dbs)}
        if self.options.mode == "externalname":
            return sum((self._external_name(name, dbs) for name, dbs in valid.items()),
                       Discovery())
        return self._resolved(valid)

    # --- reading RDS ---

    def _describe(self, aws: AwsAccess, region: str) -> list[Database]:
        with aws.translating(region, "rds:DescribeDBInstances"):
            client = cast("RDSClient", aws.client(region))
            instances = self._instances(client)
        with aws.translating(region, "rds:DescribeDBClusters"):
            clusters = self._clusters(client)
        by_id = {i.get("DBInstanceIdentifier", ""): i for i in instances}
        found = [self._standalone(region, i) for i in instances
                 if not i.get("DBClusterIdentifier") and self._selected(i.get("TagList"))]
        found += [self._cluster(region, c, by_id) for c in clusters
                  if self._selected(c.get("TagList"))]
        return [db for db in found if db is not None]

    def _instances(self, client: RDSClient) -> list[DBInstanceTypeDef]:
        pages = client.get_paginator("describe_db_instances").paginate(
            Filters=self._filters(), PaginationConfig={"PageSize": self.options.page_size})
        return [i for page in pages for i in page.get("DBInstances", [])]

    def _clusters(self, client: RDSClient) -> list[DBClusterTypeDef]:
        pages = client.get_paginator("describe_db_clusters").paginate(
            Filters=self._filters(), PaginationConfig={"PageSize": self.options.page_size})
        return [c for page in pages for c in page.get("DBClusters", [])]

    def _filters(self) -> list[FilterTypeDef]:
        # RDS filters by engine on the server but has no tag filter: tags are matched here.
        if self.options.engines is None:
            return []
        return [{"Name": "engine", "Values": list(self.options.engines)}]

    def _selected(self, tag_list: Iterable[Mapping[str, object]] | None) -> bool:
        return tags_match(tag_map(tag_list), self.options.tags)

    # --- instances and clusters as Databases ---

    def _standalone(self, region: str, data: DBInstanceTypeDef) -> Database | None:
        identifier = data.get("DBInstanceIdentifier", "")
        endpoint = data.get("Endpoint", {})
        backend = self._backend(region, data, {"db-instance": identifier})
        if backend is None or "Port" not in endpoint:
            return None
        return Database(identifier, "DB instance", region, tag_map(data.get("TagList")),
                        backend.address, endpoint["Port"], (backend,))

    def _cluster(self, region: str, data: DBClusterTypeDef,
                 instances: dict[str, DBInstanceTypeDef]) -> Database | None:
        identifier = data.get("DBClusterIdentifier", "")
        # The reader endpoint spreads connections over the readers: the name for `reader`.
        key = "ReaderEndpoint" if self.options.role == "reader" else "Endpoint"
        endpoint = data.get("ReaderEndpoint") if key == "ReaderEndpoint" else data.get("Endpoint")
        port = data.get("Port")
        if not endpoint or not port:
            self.context.log.warning("DB cluster %s (%s) has no %s yet; dropped", identifier,
                                     region, key)
            return None
        problem = _endpoint_problem(endpoint, port)
        if problem:
            self.context.log.warning("DB cluster %s (%s): %s %s; dropped", identifier, region,
                                     key, problem)
            return None
        backends: list[Backend] = []
        for member in data.get("DBClusterMembers", []):
            role = "writer" if member.get("IsClusterWriter") else "reader"
            if self.options.role not in ("any", role):
                continue
            member_id = member.get("DBInstanceIdentifier", "")
            if member_id not in instances:
                # Created or deleted between the two Describe calls: next run sees it.
                self.context.log.warning("DB cluster %s (%s): member %s not listed; dropped",
                                         identifier, region, member_id)
                continue
            meta = {"db-instance": member_id, "db-cluster": identifier, "role": role}
            if (backend := self._backend(region, instances[member_id], meta)) is not None:
                backends.append(backend)
        return Database(identifier, "DB cluster", region, tag_map(data.get("TagList")),
                        endpoint, port, tuple(backends))

    def _backend(self, region: str, data: DBInstanceTypeDef,
                 meta: dict[str, str]) -> Backend | None:
        """An instance's endpoint as a backend; not ready unless its status says it serves."""
        endpoint = data.get("Endpoint", {})
        status = data.get("DBInstanceStatus", "")
        if not endpoint.get("Address") or not endpoint.get("Port"):
            self.context.log.warning(
                "DB instance %s (%s) has no endpoint yet (status %s); dropped",
                data.get("DBInstanceIdentifier"), region, status)
            return None
        problem = _endpoint_problem(endpoint["Address"], endpoint["Port"])
        if problem:
            # One malformed instance must not fail the source: leave it out.
            self.context.log.warning("DB instance %s (%s): endpoint %s; dropped",
                                     data.get("DBInstanceIdentifier"), region, problem)
            return None
        return Backend(
            address=endpoint["Address"],
            ports={"": endpoint["Port"]},
            ready=status in self.options.ready_statuses,
            zone=data.get("AvailabilityZone"),
            meta={**meta, "region": region, "status": status},
        )

    # --- Databases as Services ---

    def _service_name(self, db: Database) -> str | None:
        if self.options.service is not None:
            return self.options.service
        if self.options.service_tag is None:
            return db.identifier
        name = db.tags.get(self.options.service_tag)
        if name is None:
            self.context.log.debug("%s has no tag %r; not published", db.describe(),
                                   self.options.service_tag)
        return name

    def _valid_name(self, name: str, dbs: Sequence[Database]) -> bool:
        """A tag value that is no Service name: its databases are dropped, named."""
        problem = service_name_problem(name)
        if problem:
            self.context.log.warning("tag %r: %s; dropped %s", self.options.service_tag,
                                     problem, ", ".join(db.describe() for db in dbs))
        return problem is None

    def _resolved(self, groups: Mapping[str, Sequence[Database]]) -> Discovery:
        """The one port rule decides on the databases (each told as one backend with its
        port); the Services then get the members' endpoints as their backends."""
        explicit = (None if self.options.port is None
                    else (ServicePort(name="", port=self.options.port),))
        decided = group_services(
            ((name, Backend(address=db.endpoint, ports={"": db.port}))
             for name, dbs in groups.items() for db in dbs),
            ports=explicit, always=groups, log=self.context.log)
        return Discovery(tuple(self._with_backends(spec, groups[spec.name])
                               for spec in decided.services), decided.kept)

    def _with_backends(self, spec: ServiceSpec, dbs: Sequence[Database]) -> ServiceSpec:
        backends = sorted((b for db in dbs for b in db.backends), key=lambda b: b.address)
        annotations = ({HOSTNAME_ANNOTATION: ",".join(sorted({db.endpoint for db in dbs}))}
                       if dbs else {})
        return replace(spec, backends=tuple(backends), annotations=annotations)

    def _external_name(self, name: str, dbs: Sequence[Database]) -> Discovery:
        # An ExternalName Service points at one name: none or several would be a guess.
        if not dbs:
            return Discovery(kept=(Kept(name, "matched no DB instance or cluster"),))
        if len(dbs) > 1:
            return Discovery(kept=(Kept(name, "mode externalname needs one database per "
                                        f"Service, but {name!r} matched "
                                        + ", ".join(db.describe() for db in dbs)),))
        db = dbs[0]
        return Discovery((ServiceSpec(name=name, type="ExternalName", external_name=db.endpoint,
                                      ports=(ServicePort(name="", port=db.port),)),))
