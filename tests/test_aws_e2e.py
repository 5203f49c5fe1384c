"""End to end: the CLI in a subprocess, a moto server as AWS, the Kubernetes API test server.

Everything listens on 127.0.0.1: the providers reach moto through `endpoint_url`, RDS
endpoint names resolve through the config's `hosts` map, credentials are fake and instance
metadata is off.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.aws_fakes import (
    boto3_session,
    closed_port,
    fake_aws_environment,
    moto_server,
    reset_moto,
)
from tests.cli import run_sync
from tests.kubeapi import KubeApiServer

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_rds.client import RDSClient

NAMESPACE = "external"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake AWS settings, for this process (moto) and for the CLI's."""
    return fake_aws_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    yield from moto_server()


@pytest.fixture
def moto_url(moto: str, env: dict[str, str]) -> str:
    """The shared moto server, emptied."""
    return reset_moto(moto)


@pytest.fixture
def ec2(moto_url: str) -> EC2Client:
    return boto3_session("us-east-1").client("ec2", endpoint_url=moto_url)


@pytest.fixture
def rds(moto_url: str) -> RDSClient:
    return boto3_session("us-east-1").client("rds", endpoint_url=moto_url)


def write_config(tmp_path: Path, sources: list[dict[str, Any]],
                 hosts: dict[str, list[str]] | None = None) -> Path:
    path = tmp_path / "config.yaml"
    config = {"owner": "e2e", "namespace": NAMESPACE, "sources": sources,
              "hosts": hosts or {}}
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, kubeconfig: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m syncer run`: the shared helper drops the caller's own AWS_* settings."""
    return run_sync(config, kubeconfig, env=env)


def slice_addresses(kube: KubeApiServer, service: str) -> dict[str, bool]:
    """Address → ready, over every EndpointSlice of the Service."""
    found: dict[str, bool] = {}
    for item in kube.list_objects("EndpointSlice", NAMESPACE):
        if item["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service:
            for endpoint in item.get("endpoints") or []:
                found[endpoint["addresses"][0]] = endpoint["conditions"]["ready"]
    return found


def endpoints_addresses(kube: KubeApiServer, service: str) -> dict[str, bool]:
    """Address → ready, from the Endpoints object."""
    obj = kube.get_object("Endpoints", NAMESPACE, service)
    assert obj is not None, f"no Endpoints {service}"
    found: dict[str, bool] = {}
    for subset in obj.get("subsets") or []:
        found.update({a["ip"]: True for a in subset.get("addresses") or []})
        found.update({a["ip"]: False for a in subset.get("notReadyAddresses") or []})
    return found


def snapshot(kube: KubeApiServer) -> list[dict[str, Any]]:
    return [obj for kind in ("Service", "EndpointSlice", "Endpoints")
            for obj in kube.list_objects(kind, NAMESPACE)]


def launch(ec2: EC2Client, count: int) -> dict[str, str]:
    """Instances tagged app=web in a documentation-range subnet: instance id → private IP."""
    vpc = ec2.create_vpc(CidrBlock="192.0.2.0/24")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="192.0.2.0/25")["Subnet"]["SubnetId"]
    created = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "app", "Value": "web"}]}])["Instances"]
    return {i["InstanceId"]: i["PrivateIpAddress"] for i in created}


def ec2_source(endpoint_url: str) -> dict[str, Any]:
    return {"name": "web", "provider": "aws_ec2", "regions": ["us-east-1"],
            "endpoint_url": endpoint_url, "max_attempts": 1, "connect_timeout": 2,
            "tags": {"app": "web"}, "service": "web", "port": 8080}


def test_a_terminated_instance_loses_exactly_its_address(
        kube: KubeApiServer, kubeconfig: Path, env: dict[str, str], tmp_path: Path,
        moto_url: str, ec2: EC2Client) -> None:
    instances = launch(ec2, 3)
    config = write_config(tmp_path, [ec2_source(moto_url)])

    first = run(config, kubeconfig, env)
    assert first.returncode == 0, first.stderr
    service = kube.get_object("Service", NAMESPACE, "web")
    assert service is not None
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    everyone = {ip: True for ip in instances.values()}
    assert slice_addresses(kube, "web") == everyone
    assert endpoints_addresses(kube, "web") == everyone

    gone = sorted(instances)[0]
    ec2.terminate_instances(InstanceIds=[gone])
    kube.reset_requests()
    second = run(config, kubeconfig, env)

    assert second.returncode == 0, second.stderr
    remaining = {ip: True for i, ip in instances.items() if i != gone}
    assert slice_addresses(kube, "web") == remaining
    assert endpoints_addresses(kube, "web") == remaining
    assert all("/services" not in r.path for r in kube.write_requests())


def test_a_failing_source_leaves_the_cluster_as_it_was(
        kube: KubeApiServer, kubeconfig: Path, env: dict[str, str], tmp_path: Path,
        moto_url: str, ec2: EC2Client) -> None:
    launch(ec2, 2)
    config = write_config(tmp_path, [ec2_source(moto_url)])
    assert run(config, kubeconfig, env).returncode == 0
    before = snapshot(kube)
    assert len(slice_addresses(kube, "web")) == 2

    # The same source, but AWS no longer answers (a port on 127.0.0.1 nobody listens on).
    dead = write_config(tmp_path, [ec2_source(f"http://127.0.0.1:{closed_port()}")])
    kube.reset_requests()
    failed = run(dead, kubeconfig, env)

    assert failed.returncode == 1, failed.stderr
    assert "web" in failed.stderr and "ec2:DescribeInstances in us-east-1" in failed.stderr
    assert kube.write_requests() == []
    assert snapshot(kube) == before


def test_rds_writers_resolve_through_hosts_and_show_restarts(
        kube: KubeApiServer, kubeconfig: Path, env: dict[str, str], tmp_path: Path,
        moto_url: str, rds: RDSClient) -> None:
    rds.create_db_instance(DBInstanceIdentifier="billing", Engine="postgres",
                           DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                           MasterUsername="admin", MasterUserPassword="password123",
                           Tags=[{"Key": "app", "Value": "billing"}])
    rds.create_db_cluster(DBClusterIdentifier="orders", Engine="aurora-postgresql",
                          MasterUsername="admin", MasterUserPassword="password123",
                          Tags=[{"Key": "app", "Value": "orders"}])
    for n in (1, 2):
        rds.create_db_instance(DBInstanceIdentifier=f"orders-{n}", Engine="aurora-postgresql",
                               DBClusterIdentifier="orders", DBInstanceClass="db.r5.large")
    names = {i["DBInstanceIdentifier"]: i["Endpoint"]["Address"]
             for i in rds.describe_db_instances()["DBInstances"]}
    cluster = rds.describe_db_clusters(DBClusterIdentifier="orders")["DBClusters"][0]
    hosts = {names["billing"]: ["192.0.2.10"], names["orders-1"]: ["192.0.2.11"],
             names["orders-2"]: ["192.0.2.12"]}
    common = {"provider": "aws_rds", "regions": ["us-east-1"], "endpoint_url": moto_url,
              "max_attempts": 1}
    config = write_config(tmp_path, [
        {"name": "dbs", **common, "role": "writer"},
        {"name": "orders-dns", **common, "tags": {"app": "orders"}, "service": "orders-rw",
         "mode": "externalname"},
    ], hosts)

    first = run(config, kubeconfig, env)

    assert first.returncode == 0, first.stderr
    assert slice_addresses(kube, "billing") == {"192.0.2.10": True}
    assert endpoints_addresses(kube, "orders") == {"192.0.2.11": True}  # the writer only
    billing = kube.get_object("Service", NAMESPACE, "billing")
    assert billing is not None
    assert billing["metadata"]["annotations"]["endpoints-sync.io/hostname"] == names["billing"]
    assert billing["spec"]["ports"][0]["port"] == 5432
    external = kube.get_object("Service", NAMESPACE, "orders-rw")
    assert external is not None
    assert (external["spec"]["type"], external["spec"]["externalName"]) == (
        "ExternalName", cluster["Endpoint"])

    rds.stop_db_instance(DBInstanceIdentifier="billing")
    second = run(config, kubeconfig, env)

    assert second.returncode == 0, second.stderr
    assert slice_addresses(kube, "billing") == {"192.0.2.10": False}
    assert endpoints_addresses(kube, "billing") == {"192.0.2.10": False}


def test_port_tag_alone_sets_each_service_port_and_keeps_a_disagreeing_one(
        kube: KubeApiServer, kubeconfig: Path, env: dict[str, str], tmp_path: Path,
        moto_url: str, ec2: EC2Client) -> None:
    vpc = ec2.create_vpc(CidrBlock="192.0.2.0/24")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="192.0.2.0/25")["Subnet"]["SubnetId"]

    def tagged(svc: str, port: str) -> None:
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [
                              {"Key": "svc", "Value": svc}, {"Key": "port", "Value": port}]}])

    tagged("web", "8080")
    tagged("api", "9090")
    source = {"name": "apps", "provider": "aws_ec2", "regions": ["us-east-1"],
              "endpoint_url": moto_url, "max_attempts": 1, "service_tag": "svc",
              "port_tag": "port"}
    config = write_config(tmp_path, [source])

    first = run(config, kubeconfig, env)

    assert first.returncode == 0, first.stderr
    for name, port in (("web", 8080), ("api", 9090)):
        service = kube.get_object("Service", NAMESPACE, name)
        assert service is not None
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
    web_before = [obj for obj in snapshot(kube)
                  if obj["metadata"]["name"].startswith("web")]

    tagged("web", "8443")  # now the web instances disagree
    tagged("api", "9090")
    second = run(config, kubeconfig, env)

    assert second.returncode == 1, second.stderr
    assert "source 'apps': Service external/web left as it is" in second.stderr
    assert "ports 8080, 8443" in second.stderr
    assert [obj for obj in snapshot(kube) if obj["metadata"]["name"].startswith("web")] \
        == web_before
    assert len(slice_addresses(kube, "api")) == 2  # the source's other Service is synced
