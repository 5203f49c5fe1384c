"""End to end through the CLI: the Consul double into the Kubernetes API test server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cli, run_sync
from tests.consul_double import ConsulDouble, running
from tests.kubeapi import KubeApiServer

JSON = dict[str, Any]
TOKEN = "0b6c9e55-2f7a-4d0e-8c1b-e2e-secret"
SOURCE = "consul-payments"


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    """`payments` on three nodes (one critical), `ledger` on one; ACLs on."""
    double = ConsulDouble(acl_token=TOKEN)
    for i in (21, 22, 23):
        double.add_node(f"node-{i}", f"192.0.2.{i}", meta={"zone": f"zone-{i % 2}"})
    double.register("payments", "node-21", port=8443)
    double.register("payments", "node-22", port=8443)
    double.register("payments", "node-23", port=8443, checks="critical")
    double.register("ledger", "node-21", port=5432, address="198.51.100.21")
    yield from running(double)


def write_config(tmp_path: Path, consul: ConsulDouble, options: str,
                 namespace: str = "external") -> Path:
    (tmp_path / "consul-token").write_text(TOKEN + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"owner: cluster-a\nnamespace: {namespace}\nsources:\n"
        f"  - {{name: {SOURCE}, provider: consul, url: '{consul.url}', "
        f"token_file: consul-token, timeout_seconds: 1, {options}}}\n")
    return config


def slice_addresses(kube: KubeApiServer, service: str) -> dict[str, bool]:
    """address -> ready, over every EndpointSlice of the Service."""
    return {e["addresses"][0]: e["conditions"]["ready"]
            for s in kube.list_objects("EndpointSlice", "external")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s["endpoints"]}


def endpoints_addresses(kube: KubeApiServer, service: str) -> tuple[set[str], set[str]]:
    """(ready, not ready) addresses of the Endpoints object."""
    ep = kube.get_object("Endpoints", "external", service)
    assert ep is not None
    subsets = ep.get("subsets") or []
    return ({a["ip"] for s in subsets for a in s.get("addresses", [])},
            {a["ip"] for s in subsets for a in s.get("notReadyAddresses", [])})


def snapshot(kube: KubeApiServer) -> list[JSON]:
    return [o for kind in ("Service", "EndpointSlice", "Endpoints")
            for o in kube.list_objects(kind, "external")]


def exit_code(result: subprocess.CompletedProcess[str], expected: int) -> str:
    assert result.returncode == expected, result.stdout + result.stderr
    return result.stderr


def test_passing_instances_synced_then_deregistration_then_consul_down(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, consul,
                          "services: [payments, ledger], port: 443, port_name: https")

    exit_code(run_sync(config, kubeconfig), 0)
    svc = kube.get_object("Service", "external", "payments")
    assert svc is not None and "selector" not in svc["spec"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("https", 443)]
    assert svc["metadata"]["annotations"]["endpoints-sync.io/source"] == SOURCE
    assert svc["metadata"]["annotations"]["consul.endpoints-sync.io/service"] == "payments"
    assert slice_addresses(kube, "payments") == {"192.0.2.21": True, "192.0.2.22": True}
    assert endpoints_addresses(kube, "payments") == ({"192.0.2.21", "192.0.2.22"}, set())
    assert slice_addresses(kube, "ledger") == {"198.51.100.21": True}
    assert all(r.token_sent for r in consul.requests)

    # An instance deregistered: exactly its address goes, from slices and Endpoints.
    consul.deregister("payments-node-22-8443")
    kube.reset_requests()
    exit_code(run_sync(config, kubeconfig), 0)
    assert {r.method for r in kube.write_requests()} == {"PUT"}
    assert slice_addresses(kube, "payments") == {"192.0.2.21": True}
    assert endpoints_addresses(kube, "payments") == ({"192.0.2.21"}, set())
    assert slice_addresses(kube, "ledger") == {"198.51.100.21": True}

    # Consul down, then answering 500: the cluster is left exactly as it is.
    before = snapshot(kube)
    consul.stop()
    kube.reset_requests()
    err = exit_code(run_sync(config, kubeconfig), 1)
    (line,) = [x for x in err.splitlines() if "unreachable" in x]
    # The core names the source once; the provider's message does not repeat it.
    assert line.count(SOURCE) == 1 and f"source '{SOURCE}': " in line
    consul.start()
    consul.fail(500, "rpc error making call: No cluster leader")
    err = exit_code(run_sync(config, kubeconfig), 1)
    assert SOURCE in err and "No cluster leader" in err
    assert kube.write_requests() == []
    assert snapshot(kube) == before
    assert TOKEN not in err


def test_unhealthy_instances_are_published_not_ready_without_passing_only(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    # `namespace` of the source is the core's key: it works for consul as for any provider.
    config = write_config(tmp_path, consul,
                          "services: [payments], passing_only: false, namespace: external",
                          namespace="default")

    exit_code(run_sync(config, kubeconfig), 0)

    assert slice_addresses(kube, "payments") == {
        "192.0.2.21": True, "192.0.2.22": True, "192.0.2.23": False}
    assert endpoints_addresses(kube, "payments") == (
        {"192.0.2.21", "192.0.2.22"}, {"192.0.2.23"})
    svc = kube.get_object("Service", "external", "payments")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 8443


def test_catalog_mode_and_a_name_collision_leave_that_service_alone(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, consul, "name_prefix: dc1-")

    exit_code(run_sync(config, kubeconfig), 0)
    names = sorted(s["metadata"]["name"] for s in kube.list_objects("Service", "external"))
    assert names == ["dc1-ledger", "dc1-payments"]

    # A new Consul service that maps onto an existing name: that Service is skipped and left
    # exactly as it is (leaving both out would have deleted dc1-payments); exit 1.
    consul.register("dc1_payments", "node-21", port=8443)
    before = snapshot(kube)
    kube.reset_requests()
    broken = write_config(tmp_path, consul,
                          "name_prefix: dc1-, rename: {dc1_payments: dc1-payments}")
    err = exit_code(run_sync(broken, kubeconfig), 1)
    (line,) = [x for x in err.splitlines() if "both map to" in x]
    assert line.endswith(f"warning source '{SOURCE}': Service external/dc1-payments left as it "
                         "is: consul services 'dc1_payments' and 'payments' both map to Service "
                         "'dc1-payments'; tell them apart with `rename`")
    assert kube.write_requests() == [] and snapshot(kube) == before
    # The source's other Services are still synced meanwhile.
    consul.register("ledger", "node-22", port=5432, address="198.51.100.22")
    exit_code(run_sync(broken, kubeconfig), 1)
    assert set(slice_addresses(kube, "dc1-ledger")) == {"198.51.100.21", "198.51.100.22"}
    payments = [o for o in before if o["metadata"]["name"].startswith("dc1-payments")]
    assert all(o in snapshot(kube) for o in payments)

    # validate reads the options and the token file but contacts nothing.
    consul.stop()
    assert "OK" in cli("validate", "-c", config).stdout
