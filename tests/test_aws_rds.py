"""The aws_rds provider against moto (in process) and, for failures, an HTTP double of RDS."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from moto import mock_aws
from pydantic import ValidationError

from providers.aws_rds import HOSTNAME_ANNOTATION, RdsProvider
from syncer.plugin import (
    Discovery,
    Kept,
    PermanentSourceError,
    ServicePort,
    ServiceSpec,
    SourceError,
    TransientSourceError,
)
from tests.aws_fakes import (
    EMPTY_DESCRIBE_DB_CLUSTERS,
    EMPTY_DESCRIBE_DB_INSTANCES,
    AwsDouble,
    Reply,
    boto3_session,
    build,
    fake_aws_environment,
    query_error,
)

if TYPE_CHECKING:
    from mypy_boto3_rds.client import RDSClient

ROLE_ARN = "arn:aws:iam::111111111111:role/endpoints-sync"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    return fake_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
def rds(aws_env: dict[str, str]) -> Iterator[RDSClient]:
    with mock_aws():
        yield boto3_session("us-east-1").client("rds")


def tag_list(tags: Mapping[str, str] | None) -> list[Any]:
    return [{"Key": k, "Value": v} for k, v in (tags or {}).items()]


def create_instance(rds: RDSClient, identifier: str, engine: str = "postgres",
                    tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    created = rds.create_db_instance(
        DBInstanceIdentifier=identifier, Engine=engine, DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="password123",
        Tags=tag_list(tags))["DBInstance"]
    return dict(created)


def create_cluster(rds: RDSClient, identifier: str, members: int = 3,
                   tags: Mapping[str, str] | None = None,
                   engine: str = "aurora-postgresql") -> dict[str, Any]:
    """An Aurora cluster; moto makes its first member the writer."""
    rds.create_db_cluster(DBClusterIdentifier=identifier, Engine=engine,
                          MasterUsername="admin", MasterUserPassword="password123",
                          Tags=tag_list(tags))
    for n in range(1, members + 1):
        rds.create_db_instance(DBInstanceIdentifier=f"{identifier}-{n}", Engine=engine,
                               DBClusterIdentifier=identifier, DBInstanceClass="db.r5.large")
    cluster = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
    return dict(cluster)


def endpoint(rds: RDSClient, instance: str) -> str:
    described = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
    return described["Endpoint"]["Address"]


def discovery(options: Mapping[str, Any]) -> Discovery:
    return build(RdsProvider, {"regions": ["us-east-1"], **options}).discover()


def discover(options: Mapping[str, Any]) -> list[ServiceSpec]:
    """The Services of a discovery that keeps none as it is."""
    found = discovery(options)
    assert found.kept == (), found.kept
    return list(found.services)


def by_name(services: list[ServiceSpec]) -> dict[str, ServiceSpec]:
    return {s.name: s for s in services}


def members(spec: ServiceSpec) -> dict[str, bool]:
    """Backing instance → ready."""
    return {b.meta["db-instance"]: b.ready for b in spec.backends}


# --- DB instances, resolve mode ----------------------------------------------------------


def test_an_instance_backs_a_service_named_after_it(rds: RDSClient) -> None:
    created = create_instance(rds, "billing")

    spec = by_name(discover({}))["billing"]

    address = endpoint(rds, "billing")
    assert spec.type == "ClusterIP"
    assert spec.ports == (ServicePort(name="", port=created["Endpoint"]["Port"]),)
    assert [(b.address, dict(b.ports), b.ready, b.zone) for b in spec.backends] == [
        (address, {"": 5432}, True, created["AvailabilityZone"])]
    assert spec.annotations == {HOSTNAME_ANNOTATION: address}
    assert spec.namespace is None


def test_port_option_remaps_the_service_port(rds: RDSClient) -> None:
    create_instance(rds, "billing")

    spec = only(discover({"port": 15432}))

    assert spec.ports == (ServicePort(name="", port=15432),)
    assert spec.backends[0].ports == {"": 5432}
    assert spec.namespace is None  # the core fills in the source's namespace


def test_instances_not_available_are_published_not_ready(rds: RDSClient) -> None:
    create_instance(rds, "billing")
    create_instance(rds, "ledger")
    rds.stop_db_instance(DBInstanceIdentifier="ledger")

    services = by_name(discover({}))

    assert members(services["billing"]) == {"billing": True}
    assert members(services["ledger"]) == {"ledger": False}
    assert services["ledger"].backends[0].meta["status"] == "stopped"


def test_ready_statuses_can_be_widened(rds: RDSClient) -> None:
    create_instance(rds, "ledger")
    rds.stop_db_instance(DBInstanceIdentifier="ledger")

    spec = only(discover({"ready_statuses": ["available", "stopped"]}))

    assert members(spec) == {"ledger": True}


def test_tags_match_several_values_and_wildcards_on_each_resource(rds: RDSClient) -> None:
    create_instance(rds, "a", tags={"env": "prod", "team": "pay-eu"})
    create_instance(rds, "b", tags={"env": "staging", "team": "pay-us"})
    create_instance(rds, "c", tags={"env": "dev", "team": "pay-eu"})
    create_instance(rds, "d", tags={"env": "prod"})
    create_cluster(rds, "orders", members=1, tags={"env": "prod", "team": "pay-core"})
    create_cluster(rds, "search", members=1, tags={"env": "prod", "team": "search"})

    services = discover({"tags": {"env": ["prod", "staging"], "team": "pay-*"}})

    assert [s.name for s in services] == ["a", "b", "orders"]


def test_engines_filter(rds: RDSClient) -> None:
    create_instance(rds, "pg", engine="postgres")
    create_instance(rds, "my", engine="mysql")
    create_cluster(rds, "aurora", members=1, engine="aurora-postgresql")

    services = discover({"engines": ["postgres", "aurora-postgresql"]})

    assert [s.name for s in services] == ["aurora", "pg"]


def test_engines_are_sent_to_the_server(aws_env: dict[str, str]) -> None:
    double = AwsDouble({"DescribeDBInstances": Reply(200, EMPTY_DESCRIBE_DB_INSTANCES),
                        "DescribeDBClusters": Reply(200, EMPTY_DESCRIBE_DB_CLUSTERS)}).start()
    try:
        services = build(RdsProvider, {"regions": ["us-east-1"], "endpoint_url": double.url,
                                       "engines": ["postgres"], "page_size": 20}).discover()
    finally:
        double.stop()

    assert services == Discovery()
    assert double.actions() == ["DescribeDBInstances", "DescribeDBClusters"]
    for request in double.requests:
        assert request.params["Filters.Filter.1.Name"] == ["engine"]
        assert request.params["Filters.Filter.1.Values.Value.1"] == ["postgres"]
        assert request.params["MaxRecords"] == ["20"]


def test_every_page_is_read(rds: RDSClient) -> None:
    for n in range(23):
        create_instance(rds, f"db{n:02}")

    services = discover({"page_size": 20})

    assert len(services) == 23


# --- clusters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "expected"), [
    ("writer", {"orders-1"}),
    ("reader", {"orders-2", "orders-3"}),
    ("any", {"orders-1", "orders-2", "orders-3"}),
])
def test_cluster_role_chooses_the_members(rds: RDSClient, role: str,
                                          expected: set[str]) -> None:
    cluster = create_cluster(rds, "orders")

    spec = only(discover({"role": role}))

    assert spec.name == "orders"
    assert set(members(spec)) == expected
    assert {b.address for b in spec.backends} == {endpoint(rds, m) for m in expected}
    assert spec.ports == (ServicePort(name="", port=cluster["Port"]),)
    name = cluster["ReaderEndpoint"] if role == "reader" else cluster["Endpoint"]
    assert spec.annotations == {HOSTNAME_ANNOTATION: name}
    writers = {b.meta["db-instance"] for b in spec.backends if b.meta["role"] == "writer"}
    assert writers == ({"orders-1"} & expected)


def test_cluster_members_not_available_are_not_ready(rds: RDSClient) -> None:
    create_cluster(rds, "orders")
    rds.stop_db_instance(DBInstanceIdentifier="orders-3")

    spec = only(discover({"role": "reader"}))

    assert members(spec) == {"orders-2": True, "orders-3": False}


def test_cluster_members_are_not_also_published_as_instances(rds: RDSClient) -> None:
    create_cluster(rds, "orders")
    create_instance(rds, "legacy")

    assert [s.name for s in discover({"role": "any"})] == ["legacy", "orders"]


# --- externalname mode -------------------------------------------------------------------


def test_externalname_mode_points_at_the_endpoint(rds: RDSClient) -> None:
    create_instance(rds, "billing")
    cluster = create_cluster(rds, "orders")

    services = by_name(discover({"mode": "externalname"}))

    assert services["billing"].type == "ExternalName"
    assert services["billing"].external_name == endpoint(rds, "billing")
    assert services["billing"].backends == ()
    assert services["billing"].ports == (ServicePort(name="", port=5432),)
    assert services["orders"].external_name == cluster["Endpoint"]


def test_externalname_mode_for_readers_uses_the_reader_endpoint(rds: RDSClient) -> None:
    cluster = create_cluster(rds, "orders")

    spec = only(discover({"mode": "externalname", "role": "reader", "service": "orders-ro"}))

    assert (spec.name, spec.external_name) == ("orders-ro", cluster["ReaderEndpoint"])


def test_externalname_mode_refuses_two_databases_for_one_service(rds: RDSClient) -> None:
    create_instance(rds, "a")
    create_instance(rds, "b")

    found = discovery({"mode": "externalname", "service": "shared"})

    assert found.services == ()
    (kept,) = found.kept
    assert kept.name == "shared"
    assert "'shared' matched DB instance a (us-east-1), DB instance b" in kept.reason


def test_externalname_mode_keeps_a_named_service_that_matches_nothing(rds: RDSClient) -> None:
    create_instance(rds, "billing", tags={"env": "dev"})

    found = discovery({"mode": "externalname", "service": "billing", "tags": {"env": "prod"}})

    assert found == Discovery(kept=(Kept("billing", "matched no DB instance or cluster"),))


# --- Service names -----------------------------------------------------------------------


def test_service_option_puts_every_match_in_one_service(rds: RDSClient) -> None:
    create_instance(rds, "replica-a")
    create_instance(rds, "replica-b")

    spec = only(discover({"service": "reports"}))

    assert set(members(spec)) == {"replica-a", "replica-b"}
    assert spec.annotations == {HOSTNAME_ANNOTATION: ",".join(
        sorted([endpoint(rds, "replica-a"), endpoint(rds, "replica-b")]))}


def test_databases_of_one_service_on_different_ports_are_kept(rds: RDSClient) -> None:
    create_instance(rds, "pg", engine="postgres", tags={"svc": "shared"})
    create_instance(rds, "my", engine="mysql", tags={"svc": "shared"})
    create_instance(rds, "solo", tags={"svc": "solo"})

    found = discovery({"service_tag": "svc"})

    assert [s.name for s in found.services] == ["solo"]
    (kept,) = found.kept
    assert kept.name == "shared"
    assert "ports 3306, 5432" in kept.reason and "set `port`" in kept.reason


def test_an_explicit_port_wins_over_databases_on_different_ports(rds: RDSClient) -> None:
    create_instance(rds, "pg", engine="postgres")
    create_instance(rds, "my", engine="mysql")

    spec = only(discover({"service": "shared", "port": 6000}))

    assert spec.ports == (ServicePort(name="", port=6000),)
    assert {b.meta["db-instance"]: b.ports[""] for b in spec.backends} == {
        "my": 3306, "pg": 5432}


def test_a_cluster_without_the_chosen_members_is_published_empty(rds: RDSClient) -> None:
    cluster = create_cluster(rds, "orders", members=1)  # a writer only

    spec = only(discover({"role": "reader"}))

    assert (spec.name, spec.backends) == ("orders", ())
    assert spec.ports == (ServicePort(name="", port=cluster["Port"]),)


def test_service_tag_names_services_and_skips_invalid_names(
        rds: RDSClient, caplog: pytest.LogCaptureFixture) -> None:
    create_instance(rds, "a", tags={"k8s-service": "billing-db"})
    create_cluster(rds, "orders", members=1, tags={"k8s-service": "orders-db"})
    create_instance(rds, "bad", tags={"k8s-service": "Billing_DB"})
    create_instance(rds, "untagged")

    services = discover({"service_tag": "k8s-service"})

    assert [s.name for s in services] == ["billing-db", "orders-db"]
    assert "source 'db': tag 'k8s-service': expected a Service name" in caplog.text
    assert "got 'Billing_DB'; dropped DB instance bad (us-east-1)" in caplog.text


def test_a_named_service_that_matches_nothing(rds: RDSClient) -> None:
    create_instance(rds, "billing", tags={"env": "dev"})
    selection = {"service": "billing", "tags": {"env": "prod"}}

    assert discovery(selection) == Discovery(kept=(Kept(
        "billing", "nothing matched, so its port is unknown; set `port` to publish it empty"),))
    empty = only(discover({**selection, "port": 5432}))

    assert (empty.name, empty.backends, empty.ports) == (
        "billing", (), (ServicePort(name="", port=5432),))


# --- regions and credentials -------------------------------------------------------------


def test_several_regions_and_an_assumed_role(rds: RDSClient) -> None:
    create_instance(rds, "own-account")  # must not be seen through the role
    sts = boto3_session("us-east-1").client("sts")
    creds = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="setup")["Credentials"]
    as_role = {"aws_access_key_id": creds["AccessKeyId"],
               "aws_secret_access_key": creds["SecretAccessKey"],
               "aws_session_token": creds["SessionToken"]}
    create_instance(boto3_session("us-east-1", **as_role).client("rds"), "east")
    create_instance(boto3_session("eu-west-1", **as_role).client("rds"), "west")

    services = list(build(RdsProvider, {"regions": ["us-east-1", "eu-west-1"],
                                        "role_arn": ROLE_ARN}).discover().services)

    assert {s.name: s.backends[0].meta["region"] for s in services} == {
        "east": "us-east-1", "west": "eu-west-1"}
    assert ".eu-west-1." in by_name(services)["west"].backends[0].address


# --- failures ----------------------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(("reply", "expected", "words"), [
    (Reply(403, query_error("AccessDenied", "User: arn:aws:iam::123456789012:user/x is not "
                            "authorized to perform: rds:DescribeDBInstances")),
     PermanentSourceError, "access denied; the credentials need rds:DescribeDBInstances"),
    (Reply(403, query_error("InvalidClientTokenId", "The security token is invalid.")),
     PermanentSourceError, "credentials were rejected"),
    (Reply(400, query_error("Throttling", "Rate exceeded")), TransientSourceError,
     "throttled"),
    (Reply(503, query_error("ServiceUnavailable", "Service unavailable")),
     TransientSourceError, "HTTP 503"),
])
def test_failures_name_source_region_and_action(reply: Reply, expected: type[SourceError],
                                                words: str) -> None:
    double = AwsDouble({"DescribeDBInstances": reply}).start()
    try:
        with pytest.raises(SourceError) as failure:
            build(RdsProvider, {"regions": ["eu-west-1"], "endpoint_url": double.url,
                                "max_attempts": 1}).discover()
    finally:
        double.stop()

    assert type(failure.value) is expected
    # The core names the source: the message starts with the action and the region.
    assert str(failure.value).startswith("rds:DescribeDBInstances in eu-west-1: ")
    assert words in str(failure.value)


@pytest.mark.usefixtures("aws_env")
def test_a_failure_in_one_region_fails_the_whole_source() -> None:
    double = AwsDouble(
        {"DescribeDBInstances": Reply(200, EMPTY_DESCRIBE_DB_INSTANCES),
         "DescribeDBClusters": Reply(200, EMPTY_DESCRIBE_DB_CLUSTERS)},
        in_region={"eu-west-1": {"DescribeDBClusters": Reply(403, query_error(
            "AccessDenied", "denied"))}}).start()
    try:
        with pytest.raises(PermanentSourceError) as failure:
            build(RdsProvider, {"regions": ["us-east-1", "eu-west-1"],
                                "endpoint_url": double.url, "max_attempts": 1}).discover()
    finally:
        double.stop()

    assert "rds:DescribeDBClusters in eu-west-1: access denied" in str(failure.value)
    assert "us-east-1" not in str(failure.value)
    assert sorted(r.region for r in double.requests) == ["eu-west-1"] * 2 + ["us-east-1"] * 2


# --- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "location"), [
    ({"service": "a", "service_tag": "svc"}, ()),
    ({"mode": "externalname", "port": 5432}, ()),
    ({"mode": "cname"}, ("mode",)),
    ({"role": "primary"}, ("role",)),
    ({"engines": []}, ("engines",)),
    ({"port": 70000}, ("port",)),
    ({"page_size": 10}, ("page_size",)),
    ({"service": "orders_db"}, ("service",)),
    ({"regions": ["EU-WEST-1"]}, ("regions", 0)),
    ({"ready_statuses": []}, ("ready_statuses",)),
    ({"filters": [{"Name": "engine", "Values": ["x"]}]}, ("filters",)),
    ({"namespace": "databases"}, ("namespace",)),  # core-owned: not a provider option
])
def test_invalid_options_are_reported_with_their_path(options: dict[str, Any],
                                                      location: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as failure:
        RdsProvider.Options.model_validate(options)

    assert location in [e["loc"] for e in failure.value.errors()]


def test_option_defaults() -> None:
    options = RdsProvider.Options.model_validate({})

    assert options.model_dump() == {
        "regions": None, "profile": None, "role_arn": None, "external_id": None,
        "endpoint_url": None, "max_attempts": 5, "connect_timeout": 5.0,
        "read_timeout": 20.0, "tags": {}, "engines": None, "role": "writer",
        "mode": "resolve", "port": None, "service": None, "service_tag": None,
        "ready_statuses": ["available"], "page_size": 100,
    }


def test_every_option_is_documented() -> None:
    assert [n for n, f in RdsProvider.Options.model_fields.items() if not f.description] == []


def only(services: list[ServiceSpec]) -> ServiceSpec:
    assert len(services) == 1, services
    return services[0]
