"""The aws_ec2 provider against moto (in process) and, for failures, an HTTP double of EC2."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from moto import mock_aws
from pydantic import ValidationError

from providers.aws_ec2 import Ec2Filter, Ec2Provider
from syncer.plugin import (
    ConfigError,
    Discovery,
    Kept,
    PermanentSourceError,
    ServicePort,
    ServiceSpec,
    SourceError,
    TransientSourceError,
)
from tests.aws_fakes import (
    EMPTY_DESCRIBE_INSTANCES,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    AwsDouble,
    Reply,
    boto3_session,
    build,
    closed_port,
    ec2_error,
    fake_aws_environment,
    query_error,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client

AMI = "ami-12c6146b"  # one of moto's built-in images
ROLE_ACCOUNT = "111111111111"
ROLE_ARN = f"arn:aws:iam::{ROLE_ACCOUNT}:role/endpoints-sync"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    return fake_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
def aws(aws_env: dict[str, str]) -> Iterator[None]:
    with mock_aws():
        yield


class Region:
    """One region of the fake account: a VPC and subnet in documentation ranges."""

    def __init__(self, name: str = "us-east-1", cidr: str = "192.0.2.0/24",
                 subnet: str = "192.0.2.0/25", credentials: Mapping[str, str] | None = None):
        self.name = name
        self.ec2: EC2Client = boto3_session(name, **(credentials or {})).client("ec2")
        vpc = self.ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock=subnet, Ipv6CidrBlock="2001:db8::/64")["Subnet"]["SubnetId"]

    def launch(self, tags: Mapping[str, str] | None = None, *, public: bool = False,
               ipv6: bool = False) -> dict[str, Any]:
        """One instance in its own reservation (moto pages by reservation)."""
        placement: dict[str, Any] = (
            {"SubnetId": self.subnet, "Ipv6AddressCount": 1} if ipv6 else
            {"NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": self.subnet,
                                    "AssociatePublicIpAddress": public}]})
        tag_spec: Any = [{"ResourceType": "instance",
                          "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}]
        instance_id = self.ec2.run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=tag_spec if tags else [],
            **placement)["Instances"][0]["InstanceId"]
        described = self.ec2.describe_instances(InstanceIds=[instance_id])
        instance: dict[str, Any] = dict(described["Reservations"][0]["Instances"][0])
        return instance


def discovery(options: Mapping[str, Any]) -> Discovery:
    return build(Ec2Provider, {"regions": ["us-east-1"], **options}, source="web").discover()


def discover(options: Mapping[str, Any]) -> list[ServiceSpec]:
    """The Services of a discovery that keeps none as it is."""
    found = discovery(options)
    assert found.kept == (), found.kept
    return list(found.services)


def only(found: list[ServiceSpec] | Discovery) -> ServiceSpec:
    services = list(found.services) if isinstance(found, Discovery) else found
    assert len(services) == 1, services
    return services[0]


def addresses(spec: ServiceSpec) -> list[str]:
    return [b.address for b in spec.backends]


def ids(spec: ServiceSpec) -> set[str]:
    return {b.meta["instance-id"] for b in spec.backends}


# --- selection ---------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_tags_with_several_values_and_wildcards_select_instances() -> None:
    region = Region()
    prod = region.launch({"env": "prod", "team": "payments-eu"})
    staging = region.launch({"env": "staging", "team": "payments-us"})
    region.launch({"env": "dev", "team": "payments-eu"})
    region.launch({"env": "prod", "team": "search"})
    region.launch()

    spec = only(discover({"service": "web", "port": 443,
                          "tags": {"env": ["prod", "staging"], "team": "payments-*"}}))

    assert spec.name == "web"
    assert spec.ports == (ServicePort(name="", port=443),)
    assert ids(spec) == {prod["InstanceId"], staging["InstanceId"]}
    assert sorted(addresses(spec)) == addresses(spec)
    assert all(a.startswith("192.0.2.") for a in addresses(spec))


def test_tags_states_and_raw_filters_are_sent_to_the_server(aws_env: dict[str, str]) -> None:
    double = AwsDouble({"DescribeInstances": Reply(200, EMPTY_DESCRIBE_INSTANCES)}).start()
    try:
        build(Ec2Provider, {
            "regions": ["us-east-1"], "endpoint_url": double.url, "service_tag": "svc",
            "port": 80, "tags": {"env": ["prod", "stag*"]}, "states": ["running", "stopped"],
            "filters": [{"Name": "vpc-id", "Values": ["vpc-1"]}],
        }).discover()
    finally:
        double.stop()

    sent = double.requests[0].params
    filters = {sent[f"Filter.{n}.Name"][0]: [v for k, v in sorted(sent.items())
                                             if k.startswith(f"Filter.{n}.Value.")]
               for n in range(1, 5)}
    assert filters == {
        "instance-state-name": [["running"], ["stopped"]],
        "tag:env": [["prod"], ["stag*"]],
        "tag-key": [["svc"]],
        "vpc-id": [["vpc-1"]],
    }


@pytest.mark.usefixtures("aws")
def test_raw_filters_narrow_the_selection() -> None:
    region = Region()
    wanted = region.launch({"role": "rgw"})
    region.ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="m5.large",
                             SubnetId=region.subnet)

    spec = only(discover({"service": "web", "port": 80, "filters": [
        {"Name": "instance-type", "Values": [wanted["InstanceType"]]}]}))

    assert ids(spec) == {wanted["InstanceId"]}


@pytest.mark.usefixtures("aws")
def test_only_running_instances_by_default_others_when_asked_and_not_ready() -> None:
    region = Region()
    running = region.launch({"app": "web"})
    stopped = region.launch({"app": "web"})
    region.ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])

    default = only(discover({"service": "web", "port": 80}))
    both = only(discover({"service": "web", "port": 80, "states": ["running", "stopped"]}))

    assert ids(default) == {running["InstanceId"]}
    assert {b.meta["instance-id"]: b.ready for b in both.backends} == {
        running["InstanceId"]: True, stopped["InstanceId"]: False}


@pytest.mark.usefixtures("aws")
def test_matching_nothing_still_returns_the_named_service_empty() -> None:
    Region().launch({"env": "dev"})

    spec = only(discover({"service": "web", "port": 80, "tags": {"env": "prod"}}))

    assert (spec.name, spec.backends) == ("web", ())


# --- addresses ---------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_private_address_zone_and_instance_id() -> None:
    instance = Region().launch()

    backend = only(discover({"service": "web", "port": 80})).backends[0]

    assert backend.address == instance["PrivateIpAddress"]
    assert backend.address.startswith("192.0.2.")
    assert backend.zone == instance["Placement"]["AvailabilityZone"]
    assert backend.meta == {"instance-id": instance["InstanceId"], "region": "us-east-1"}
    assert backend.ready


@pytest.mark.usefixtures("aws")
def test_public_address_skips_instances_without_one_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    region = Region()
    public = region.launch(public=True)
    private_only = region.launch()

    spec = only(discover({"service": "web", "port": 80, "address": "public"}))

    assert addresses(spec) == [public["PublicIpAddress"]]
    assert f"instance {private_only['InstanceId']} (us-east-1) has no public address" \
        in caplog.text


@pytest.mark.usefixtures("aws")
def test_ipv6_address_of_the_primary_interface(caplog: pytest.LogCaptureFixture) -> None:
    region = Region()
    dual = region.launch(ipv6=True)
    v4_only = region.launch()

    spec = only(discover({"service": "web", "port": 80, "address": "ipv6"}))

    primary = dual["NetworkInterfaces"][0]["Ipv6Addresses"][0]["Ipv6Address"]
    assert addresses(spec) == [primary]
    assert primary.startswith("2001:db8:")
    assert f"instance {v4_only['InstanceId']} (us-east-1) has no ipv6 address" in caplog.text


# --- Services and ports ------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_service_tag_groups_instances_and_skips_invalid_names(
        caplog: pytest.LogCaptureFixture) -> None:
    region = Region()
    web = [region.launch({"svc": "web"}) for _ in range(2)]
    api = region.launch({"svc": "api"})
    bad = region.launch({"svc": "Web_1"})
    region.launch({"other": "x"})

    services = discover({"service_tag": "svc", "port": 8080})

    assert [s.name for s in services] == ["api", "web"]
    assert ids(services[0]) == {api["InstanceId"]}
    assert ids(services[1]) == {i["InstanceId"] for i in web}
    assert "source 'web': tag 'svc': expected a Service name" in caplog.text
    assert "got 'Web_1'; dropped instance " + bad["InstanceId"] in caplog.text


@pytest.mark.usefixtures("aws")
def test_port_tag_sets_each_backend_port_and_skips_missing_or_malformed(
        caplog: pytest.LogCaptureFixture) -> None:
    region = Region()
    a = region.launch({"port": "8080"})
    b = region.launch({"port": " 9090 "})
    missing = region.launch({"other": "1"})
    words = region.launch({"port": "http"})
    too_big = region.launch({"port": "70000"})

    spec = only(discover({"service": "web", "port": 80, "port_tag": "port"}))

    assert spec.ports == (ServicePort(name="", port=80),)
    assert {b.meta["instance-id"]: dict(b.ports) for b in spec.backends} == {
        a["InstanceId"]: {"": 8080}, b["InstanceId"]: {"": 9090}}
    for skipped in (missing, words, too_big):
        assert f"source 'web': Service 'web': instance {skipped['InstanceId']} (us-east-1): " \
               "tag 'port' is missing or not a port number" in caplog.text
    # The record carries the source; the message does not repeat it.
    assert {r.source for r in caplog.records} == {"web"}  # type: ignore[attr-defined]
    assert not any(r.getMessage().startswith("source") for r in caplog.records)


@pytest.mark.usefixtures("aws")
def test_port_tag_alone_gives_each_service_its_instances_port(
        caplog: pytest.LogCaptureFixture) -> None:
    region = Region()
    web = [region.launch({"svc": "web", "port": "8080"}) for _ in range(2)]
    api = region.launch({"svc": "api", "port": "9090"})
    untagged = region.launch({"svc": "api"})

    services = discover({"service_tag": "svc", "port_tag": "port"})

    assert [(s.name, s.ports) for s in services] == [
        ("api", (ServicePort(name="", port=9090),)), ("web", (ServicePort(name="", port=8080),))]
    assert ids(services[0]) == {api["InstanceId"]}
    assert ids(services[1]) == {i["InstanceId"] for i in web}
    assert {p for s in services for b in s.backends for p in b.ports.values()} == {8080, 9090}
    assert f"instance {untagged['InstanceId']} (us-east-1): tag 'port' is missing" in caplog.text


@pytest.mark.usefixtures("aws")
def test_port_tag_alone_keeps_a_service_whose_instances_disagree() -> None:
    region = Region()
    region.launch({"svc": "web", "port": "8080"})
    region.launch({"svc": "web", "port": "8443"})
    api = region.launch({"svc": "api", "port": "9090"})

    found = discovery({"service_tag": "svc", "port_tag": "port"})

    assert [(s.name, ids(s)) for s in found.services] == [("api", {api["InstanceId"]})]
    (kept,) = found.kept
    assert kept.name == "web" and kept.namespace is None
    assert "ports 8080, 8443" in kept.reason and "set `port`" in kept.reason


@pytest.mark.usefixtures("aws")
def test_port_beside_port_tag_wins_over_disagreeing_instances() -> None:
    region = Region()
    region.launch({"svc": "web", "port": "8080"})
    region.launch({"svc": "web", "port": "8443"})

    spec = only(discover({"service_tag": "svc", "port_tag": "port", "port": 443}))

    assert spec.ports == (ServicePort(name="", port=443),)
    assert sorted(b.ports[""] for b in spec.backends) == [8080, 8443]


@pytest.mark.usefixtures("aws")
def test_a_fixed_service_matching_nothing_with_port_tag_alone_is_kept() -> None:
    Region().launch({"env": "dev", "port": "80"})

    found = discovery({"service": "web", "port_tag": "port", "tags": {"env": "prod"}})

    assert found.services == ()
    assert found.kept == (Kept("web", "nothing matched, so its port is unknown; set `port` "
                               "to publish it empty"),)


@pytest.mark.usefixtures("aws")
def test_named_ports_and_the_sources_namespace() -> None:
    Region().launch()

    spec = only(discover({"service": "rgw", "ports": {"http": 80, "admin": 9000}}))

    assert spec.namespace is None  # the core fills in the source's namespace
    assert spec.ports == (ServicePort(name="admin", port=9000), ServicePort(name="http", port=80))
    assert spec.backends[0].ports == {}


# --- regions, credentials, paging --------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_several_regions_are_merged() -> None:
    east = Region("us-east-1").launch()
    west = Region("eu-west-1", "198.51.100.0/24", "198.51.100.0/25").launch()

    spec = only(build(Ec2Provider, {"regions": ["us-east-1", "eu-west-1"], "service": "web",
                                    "port": 80}).discover())

    assert {(b.address, b.meta["region"], b.zone) for b in spec.backends} == {
        (east["PrivateIpAddress"], "us-east-1", east["Placement"]["AvailabilityZone"]),
        (west["PrivateIpAddress"], "eu-west-1", west["Placement"]["AvailabilityZone"]),
    }
    assert west["Placement"]["AvailabilityZone"].startswith("eu-west-1")


def test_regions_are_queried_concurrently(aws_env: dict[str, str]) -> None:
    double = AwsDouble({"DescribeInstances": Reply(200, EMPTY_DESCRIBE_INSTANCES, delay=0.5)})
    regions = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"]
    double.start()
    try:
        build(Ec2Provider, {"regions": regions, "endpoint_url": double.url, "service": "web",
                            "port": 80}).discover()
    finally:
        double.stop()

    assert len(double.requests) == 4
    # Overlap, not wall time (a loaded machine makes timings lie): one region after the
    # other would never have two half-second answers in flight at once.
    assert double.peak_in_flight >= 2


@pytest.mark.usefixtures("aws")
def test_the_region_comes_from_the_environment_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    instance = Region("eu-west-1", "198.51.100.0/24", "198.51.100.0/25").launch()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    spec = only(build(Ec2Provider, {"service": "web", "port": 80}).discover())

    assert addresses(spec) == [instance["PrivateIpAddress"]]


@pytest.mark.usefixtures("aws")
def test_a_profile_gives_credentials_and_the_default_region(
        aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # it would win over the profile's region
    Path(aws_env["AWS_CONFIG_FILE"]).write_text("[profile lab]\nregion = eu-west-1\n")
    Path(aws_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[lab]\naws_access_key_id = AKIAI44QH8DHBEXAMPLE\n"
        "aws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY\n")
    instance = Region("eu-west-1", "198.51.100.0/24", "198.51.100.0/25").launch()

    provider = build(Ec2Provider, {"profile": "lab", "service": "web", "port": 80})
    provider.check()
    spec = only(provider.discover())

    assert addresses(spec) == [instance["PrivateIpAddress"]]


@pytest.mark.usefixtures("aws")
def test_role_arn_is_assumed_in_every_region() -> None:
    Region().launch()  # in the caller's own account: must not be seen
    sts = boto3_session("us-east-1").client("sts")
    role = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="test-setup")
    creds = role["Credentials"]
    in_role_account = {"aws_access_key_id": creds["AccessKeyId"],
                       "aws_secret_access_key": creds["SecretAccessKey"],
                       "aws_session_token": creds["SessionToken"]}
    east = Region("us-east-1", credentials=in_role_account).launch()
    west = Region("eu-west-1", "198.51.100.0/24", "198.51.100.0/25",
                  credentials=in_role_account).launch()

    spec = only(build(Ec2Provider, {"regions": ["us-east-1", "eu-west-1"], "service": "web",
                                    "port": 80, "role_arn": ROLE_ARN,
                                    "external_id": "cluster-a"}).discover())

    assert ids(spec) == {east["InstanceId"], west["InstanceId"]}


@pytest.mark.usefixtures("aws")
def test_every_page_is_read() -> None:
    region = Region()
    launched = {region.launch()["InstanceId"] for _ in range(12)}

    spec = only(discover({"service": "web", "port": 80, "page_size": 5}))

    assert ids(spec) == launched


def test_the_paginator_asks_for_pages_of_page_size(aws_env: dict[str, str]) -> None:
    double = AwsDouble({"DescribeInstances": Reply(200, EMPTY_DESCRIBE_INSTANCES)}).start()
    try:
        build(Ec2Provider, {"regions": ["us-east-1"], "endpoint_url": double.url,
                            "service": "web", "port": 80, "page_size": 5}).discover()
    finally:
        double.stop()

    assert double.requests[0].params["MaxResults"] == ["5"]


# --- failures ----------------------------------------------------------------------------


def fail_with(reply: Reply, options: Mapping[str, Any] | None = None,
              echo_headers: bool = False) -> tuple[SourceError, AwsDouble]:
    """Discover against a double that answers every EC2 and STS request with `reply`."""
    double = AwsDouble({"DescribeInstances": reply, "AssumeRole": reply},
                       echo_headers=echo_headers).start()
    try:
        with pytest.raises(SourceError) as failure:
            build(Ec2Provider, {"regions": ["eu-west-1"], "endpoint_url": double.url,
                                "service": "web", "port": 80, "max_attempts": 1,
                                **(options or {})}, source="web").discover()
    finally:
        double.stop()
    return failure.value, double


@pytest.mark.usefixtures("aws_env")
def test_access_denied_is_permanent_and_names_source_region_and_action() -> None:
    error, _ = fail_with(Reply(403, ec2_error(
        "UnauthorizedOperation", "You are not authorized to perform this operation.")))

    assert isinstance(error, PermanentSourceError)
    # The core names the source: the message starts with the action and the region.
    assert str(error).startswith("ec2:DescribeInstances in eu-west-1: access denied")


@pytest.mark.usefixtures("aws_env")
def test_rejected_credentials_are_permanent() -> None:
    error, _ = fail_with(Reply(401, ec2_error(
        "AuthFailure", "AWS was not able to validate the provided access credentials")))

    assert isinstance(error, PermanentSourceError)
    assert "credentials were rejected" in str(error)


@pytest.mark.usefixtures("aws_env")
def test_denied_role_assumption_names_sts() -> None:
    error, double = fail_with(
        Reply(403, query_error("AccessDenied", "not authorized to perform sts:AssumeRole")),
        {"role_arn": ROLE_ARN})

    assert isinstance(error, PermanentSourceError)
    assert "sts:AssumeRole in eu-west-1" in str(error)
    assert double.actions() == ["AssumeRole"]


@pytest.mark.usefixtures("aws_env")
def test_throttling_is_retried_then_transient() -> None:
    error, double = fail_with(Reply(503, ec2_error("RequestLimitExceeded", "Request limit "
                                                   "exceeded.")), {"max_attempts": 2})

    assert isinstance(error, TransientSourceError)
    assert "throttled" in str(error)
    assert double.actions() == ["DescribeInstances", "DescribeInstances"]


@pytest.mark.usefixtures("aws_env")
def test_failed_regions_are_reported_together() -> None:
    double = AwsDouble({}, in_region={
        "us-east-1": {"DescribeInstances": Reply(503, ec2_error("RequestLimitExceeded", "slow"))},
        "eu-west-1": {"DescribeInstances": Reply(403, ec2_error("UnauthorizedOperation", "no"))},
    }).start()
    try:
        with pytest.raises(SourceError) as failure:
            build(Ec2Provider, {"regions": ["us-east-1", "eu-west-1"], "service": "web",
                                "port": 80, "endpoint_url": double.url,
                                "max_attempts": 1}, source="web").discover()
    finally:
        double.stop()

    # Permanent wins: retrying cannot mend the denied region.
    assert type(failure.value) is PermanentSourceError
    assert "source" not in str(failure.value)  # the core names the source
    assert "DescribeInstances in us-east-1: throttled" in str(failure.value)
    assert "DescribeInstances in eu-west-1: access denied" in str(failure.value)


@pytest.mark.usefixtures("aws_env")
def test_server_errors_are_transient() -> None:
    error, _ = fail_with(Reply(500, ec2_error("InternalError", "An internal error occurred.")))

    assert isinstance(error, TransientSourceError)
    assert "HTTP 500" in str(error)


@pytest.mark.usefixtures("aws_env")
def test_a_slow_answer_times_out_transiently() -> None:
    error, _ = fail_with(Reply(200, EMPTY_DESCRIBE_INSTANCES, delay=1.0),
                         {"read_timeout": 0.2})

    assert isinstance(error, TransientSourceError)
    assert "ReadTimeoutError" in str(error)


@pytest.mark.usefixtures("aws_env")
def test_credentials_never_appear_in_errors() -> None:
    error, _ = fail_with(Reply(403, ec2_error("UnauthorizedOperation", "denied for")),
                         echo_headers=True)

    assert "Credential=[redacted]/" in str(error)  # the double did echo the headers
    for secret in (FAKE_ACCESS_KEY, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN):
        assert secret not in str(error)


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(("region", "expected"), [
    ("eu-west-1", TransientSourceError),    # a known region that does not answer: may pass
    ("xx-nowhere-1", PermanentSourceError),  # a region no partition knows: will not
])
def test_an_unreachable_endpoint(region: str, expected: type[SourceError]) -> None:
    provider = build(Ec2Provider, {"regions": [region], "service": "web", "port": 80,
                                   "max_attempts": 1,
                                   "endpoint_url": f"http://127.0.0.1:{closed_port()}"})

    with pytest.raises(SourceError) as failure:
        provider.discover()

    assert type(failure.value) is expected
    assert region in str(failure.value)


def test_missing_credentials_are_permanent(aws_env: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    provider = build(Ec2Provider, {"regions": ["eu-west-1"], "service": "web", "port": 80,
                                   "endpoint_url": f"http://127.0.0.1:{closed_port()}"})

    with pytest.raises(PermanentSourceError, match="no usable AWS credentials"):
        provider.discover()


def test_no_region_anywhere(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    provider = build(Ec2Provider, {"service": "web", "port": 80})

    with pytest.raises(ConfigError) as checked:
        provider.check()
    with pytest.raises(PermanentSourceError, match="no region"):
        provider.discover()

    assert checked.value.field == "sources[0].regions"


@pytest.mark.usefixtures("aws_env")
def test_an_unknown_profile() -> None:
    provider = build(Ec2Provider, {"profile": "nope", "regions": ["eu-west-1"],
                                   "service": "web", "port": 80})

    with pytest.raises(ConfigError) as checked:
        provider.check()
    with pytest.raises(PermanentSourceError, match="nope"):
        provider.discover()

    assert checked.value.field == "sources[0].profile"


# --- options -----------------------------------------------------------------------------

VALID = {"service": "web", "port": 80}


@pytest.mark.parametrize(("options", "location"), [
    ({"port": 80}, ()),
    ({"service": "web", "service_tag": "svc", "port": 80}, ()),
    ({"service": "web"}, ()),
    ({**VALID, "ports": {"http": 80}}, ()),
    ({"service": "web", "port": None}, ()),
    ({**VALID, "regions": ["us_east_1"]}, ("regions", 0)),
    ({**VALID, "regions": []}, ("regions",)),
    ({**VALID, "regions": ["eu-west-1", "eu-west-1"]}, ("regions",)),
    ({**VALID, "external_id": "abc"}, ()),
    ({**VALID, "role_arn": "arn:aws:iam::123:role/x"}, ("role_arn",)),
    ({**VALID, "endpoint_url": "localhost:4566"}, ("endpoint_url",)),
    ({**VALID, "states": ["runing"]}, ("states", 0)),
    ({**VALID, "states": []}, ("states",)),
    ({**VALID, "address": "elastic"}, ("address",)),
    ({**VALID, "port": 0}, ("port",)),
    ({"service": "web", "ports": {"HTTP": 80}}, ("ports", "HTTP", "[key]")),
    ({**VALID, "service": "Web"}, ("service",)),
    ({**VALID, "namespace": "ext"}, ("namespace",)),  # core-owned: not a provider option
    ({**VALID, "tags": {"env": []}}, ("tags", "env", "list[str]")),
    ({**VALID, "filters": [{"Name": "vpc-id"}]}, ("filters", 0, "Values")),
    ({**VALID, "filters": [{"name": "vpc-id", "Values": ["v"]}]}, ("filters", 0, "Name")),
    ({**VALID, "page_size": 2}, ("page_size",)),
    ({**VALID, "max_attempts": 0}, ("max_attempts",)),
    ({**VALID, "regoins": ["eu-west-1"]}, ("regoins",)),
])
def test_invalid_options_are_reported_with_their_path(options: dict[str, Any],
                                                      location: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as failure:
        Ec2Provider.Options.model_validate(options)

    assert location in [e["loc"] for e in failure.value.errors()]


def test_port_tag_alone_is_enough() -> None:
    options = Ec2Provider.Options.model_validate({"service_tag": "svc", "port_tag": "port"})

    assert (options.port, options.ports, options.port_tag) == (None, None, "port")


def test_every_option_is_documented() -> None:
    undocumented = [name for model in (Ec2Provider.Options, Ec2Filter)
                    for name, f in model.model_fields.items() if not f.description]

    assert undocumented == []


def test_option_defaults() -> None:
    options = Ec2Provider.Options.model_validate(VALID)

    assert options.model_dump(exclude={"service", "port"}) == {
        "regions": None, "profile": None, "role_arn": None, "external_id": None,
        "endpoint_url": None, "max_attempts": 5, "connect_timeout": 5.0,
        "read_timeout": 20.0, "tags": {}, "filters": [], "states": ["running"],
        "address": "private", "service_tag": None, "ports": None, "port_tag": None,
        "page_size": 1000,
    }


@pytest.mark.slow  # 200 reservations launched in moto: a few seconds
@pytest.mark.usefixtures("aws")
def test_2000_instances_over_many_pages_each_page_read_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DescribeInstances call and NextToken, seen by botocore event hooks on every
    client (as moto's own stubber is installed), not by anything of ours."""
    import botocore.handlers

    sent: list[str | None] = []  # the NextToken of each call, None for the first page
    answered: list[str | None] = []  # the NextToken each answer carried

    def before(params: dict[str, Any], **_: Any) -> None:
        sent.append(params.get("NextToken"))

    def after(parsed: dict[str, Any], **_: Any) -> None:
        answered.append(parsed.get("NextToken"))

    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", [
        *botocore.handlers.BUILTIN_HANDLERS,
        ("before-parameter-build.ec2.DescribeInstances", before),
        ("after-call.ec2.DescribeInstances", after)])
    region = Region(cidr="198.18.0.0/16", subnet="198.18.0.0/20")  # room for 2,000
    for _ in range(200):  # moto pages by reservation: 200 of 10 instances
        region.ec2.run_instances(ImageId=AMI, MinCount=10, MaxCount=10,
                                 SubnetId=region.subnet)
    sent.clear()
    answered.clear()

    spec = only(discover({"service": "web", "port": 80, "page_size": 5}))

    assert len(spec.backends) == len(ids(spec)) == 2000
    assert len(sent) == 40  # 200 reservations, 5 a page
    assert sent == [None, *answered[:-1]] and answered[-1] is None
    assert len(set(sent)) == len(sent)  # no page asked for twice
