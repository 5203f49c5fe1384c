"""The aws_ec2 and aws_rds providers against the plugin API's contract kit, with a moto
server on 127.0.0.1 as AWS.

Neither provider has a Secret option: credentials come only from the standard chain (here
fake ones in the environment), so `secret_options` is empty; tests/test_aws_ec2.py proves
that credentials never reach an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from providers.aws_ec2 import Ec2Provider
from providers.aws_rds import RdsProvider
from syncer.testing import ProviderContract
from tests.aws_fakes import (
    boto3_session,
    closed_port,
    fake_aws_environment,
    moto_server,
    reset_moto,
)

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    yield from moto_server()


@pytest.fixture
def moto_url(moto: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The shared moto server, emptied, with fake credentials in the environment."""
    fake_aws_environment(monkeypatch, tmp_path, REGION)
    return reset_moto(moto)


def unreachable() -> dict[str, object]:
    """Valid options of a source whose AWS endpoint refuses connections, failing fast."""
    return {"regions": [REGION], "endpoint_url": f"http://127.0.0.1:{closed_port()}",
            "max_attempts": 1, "connect_timeout": 1.0, "read_timeout": 1.0}


SHARED_BAD_VALUES: dict[str, object] = {
    "regions": ["nowhere"],
    "role_arn": "arn:aws:iam::123:role/x",
    "endpoint_url": "localhost:4566",
    "max_attempts": 0,
    "connect_timeout": 0,
    "port": 0,
}


class TestEc2Contract(ProviderContract):
    provider_name = "aws_ec2"
    provider_class = Ec2Provider
    secret_options = ()
    bad_values: ClassVar[dict[str, object]] = {
        **SHARED_BAD_VALUES,
        "ports": {"HTTP": 80},
        "service": "Web",
        "states": ["runing"],
        "address": "elastic",
        "filters": [{"Name": "vpc-id"}],
        "page_size": 2,
    }

    @pytest.fixture
    def options(self, moto_url: str) -> dict[str, object]:
        """Two Services by tag, each with its instances' port from a tag."""
        ec2 = boto3_session(REGION).client("ec2", endpoint_url=moto_url)
        vpc = ec2.create_vpc(CidrBlock="192.0.2.0/24")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="192.0.2.0/25")["Subnet"]["SubnetId"]
        for svc, port in (("web", "8080"), ("web", "8080"), ("api", "9090")):
            ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "svc", "Value": svc},
                                  {"Key": "port", "Value": port}]}])
        return {"regions": [REGION], "endpoint_url": moto_url, "max_attempts": 1,
                "service_tag": "svc", "port_tag": "port"}

    @pytest.fixture
    def broken_options(self, moto_url: str) -> dict[str, object]:
        return {**unreachable(), "service": "web", "port": 80}


class TestRdsContract(ProviderContract):
    provider_name = "aws_rds"
    provider_class = RdsProvider
    secret_options = ()
    bad_values: ClassVar[dict[str, object]] = {
        **SHARED_BAD_VALUES,
        "mode": "cname",
        "role": "primary",
        "engines": [],
        "service": "orders_db",
        "ready_statuses": [],
        "page_size": 10,
    }

    @pytest.fixture
    def options(self, moto_url: str) -> dict[str, object]:
        """A standalone instance and an Aurora cluster with a writer and a reader."""
        rds = boto3_session(REGION).client("rds", endpoint_url=moto_url)
        rds.create_db_instance(DBInstanceIdentifier="billing", Engine="postgres",
                               DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                               MasterUsername="admin", MasterUserPassword="password123")
        rds.create_db_cluster(DBClusterIdentifier="orders", Engine="aurora-postgresql",
                              MasterUsername="admin", MasterUserPassword="password123")
        for n in (1, 2):
            rds.create_db_instance(DBInstanceIdentifier=f"orders-{n}",
                                   Engine="aurora-postgresql", DBClusterIdentifier="orders",
                                   DBInstanceClass="db.r5.large")
        return {"regions": [REGION], "endpoint_url": moto_url, "max_attempts": 1,
                "role": "any"}

    @pytest.fixture
    def broken_options(self, moto_url: str) -> dict[str, object]:
        return unreachable()
