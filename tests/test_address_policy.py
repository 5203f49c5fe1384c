"""Address policy (deny_cidrs/allow_cidrs at config and source level) and untrusted provider
data: what is dropped, what is left as it is, and that the rest still syncs."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.desired import AddressPolicy, normalise_source
from syncer.model import Backend, ServicePort, ServiceSpec
from tests.cli import cli, run_sync
from tests.consul_double import ConsulDouble, running
from tests.kubeapi import KubeApiServer

JSON = dict[str, Any]


def nets(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


@pytest.mark.parametrize(("policy", "address", "reason"), [
    (AddressPolicy(), "192.0.2.1", None),
    (AddressPolicy(), "::ffff:127.0.0.1", "loopback"),  # mapped: judged as its IPv4 address
    (AddressPolicy(), "169.254.169.254", "link-local"),  # the cloud metadata service
    (AddressPolicy(), "ff02::1", "link-local multicast"),
    (AddressPolicy.of(deny=[nets("10.0.0.0/8"), nets("192.0.2.0/28")], allow=[]), "192.0.2.3",
     "in deny_cidrs 192.0.2.0/28"),  # the source's list adds to the config's
    (AddressPolicy.of(deny=[nets("10.0.0.0/8"), nets("192.0.2.0/28")], allow=[]), "10.1.2.3",
     "in deny_cidrs 10.0.0.0/8"),
    (AddressPolicy.of(deny=[nets("10.0.0.0/8")], allow=[]), "2001:db8::1", None),
    (AddressPolicy.of(deny=[], allow=[nets("192.0.2.0/24")]), "198.51.100.1",
     "outside allow_cidrs 192.0.2.0/24"),
    (AddressPolicy.of(deny=[], allow=[nets("192.0.2.0/24")]), "2001:db8::1",
     "outside allow_cidrs"),  # an allow list of one family refuses the other
    (AddressPolicy.of(deny=[], allow=[nets("192.0.2.0/24"), nets("2001:db8::/64")]),
     "2001:db8::1", None),  # config and source allow lists together
    (AddressPolicy.of(deny=[nets("192.0.2.128/25")], allow=[nets("192.0.2.0/24")]),
     "192.0.2.200", "in deny_cidrs"),  # deny wins inside an allowed range
])
def test_address_policy(policy: AddressPolicy, address: str, reason: str | None) -> None:
    found = policy.refused(ipaddress.ip_address(address))
    assert found is None if reason is None else reason in (found or "")


class RecordingResolver:
    """Answers every name with one documentation address and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, name: str) -> list[str]:
        self.asked.append(name)
        return ["203.0.113.7"]


def spec(name: str = "web", **extra: Any) -> ServiceSpec:
    return ServiceSpec(name=name, ports=(ServicePort("http", 80),), **extra)


def test_bad_provider_items_are_dropped_and_only_dns_names_are_resolved(
        caplog: pytest.LogCaptureFixture) -> None:
    backends = (Backend("192.0.2.1"), Backend("db.example.com"),
                Backend("not an address!"), Backend("192.0.2.013"), Backend("fe80::1%eth0"),
                Backend("::ffff:192.0.2.9"), Backend("192.0.2.2", hostname="Bad.Host"),
                Backend("192.0.2.3", zone="zone 1"), Backend("192.0.2.4", {"http": 0}),
                Backend("192.0.2.5", zone="eu-1a", hostname="rgw-5"))
    specs = [spec(backends=backends),
             spec("Bad_Name", backends=(Backend("192.0.2.1"),)),        # cannot be an object
             spec("elsewhere", namespace="Bad_NS"),                      # nor this one
             spec("labelled", labels={"x": "not a label value"}),        # left as it is
             spec("annotated", annotations={"a/b/c": "v"}),
             ServiceSpec(name="proto", ports=(ServicePort("http", 80, app_protocol="a b"),)),
             ServiceSpec(name="twice", ports=(ServicePort("a", 80), ServicePort("b", 80)))]
    resolver = RecordingResolver()
    with caplog.at_level(logging.WARNING, "endpoints_sync"):
        out, skipped = normalise_source("consul-x", specs, default_namespace="external",
                                        scope=None, policy=AddressPolicy(), resolver=resolver)
    assert resolver.asked == ["db.example.com"]  # a malformed address never fails the source
    (web,) = out
    assert [(b.address, b.zone, b.hostname) for b in web.backends] == [
        ("192.0.2.1", None, None), ("203.0.113.7", None, None), ("192.0.2.5", "eu-1a", "rgw-5")]
    assert skipped == {("external", n) for n in ("labelled", "annotated", "proto", "twice")}
    text = caplog.text
    for item in ("'not an address!'", "'192.0.2.013'", "'fe80::1%eth0'", "'::ffff:192.0.2.9'",
                 "'Bad.Host'", "'zone 1'", "{'http': 0}"):
        (record,) = [r for r in caplog.records if item in r.getMessage()]
        line = record.getMessage()
        assert getattr(record, "source", None) == "consul-x"
        assert line.startswith("service external/web: backend ")
        assert "dropped" in line
    assert "service external/Bad_Name dropped" in text
    assert "service Bad_NS/elsewhere dropped" in text


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    return result.stderr


def addresses(kube: KubeApiServer, service: str) -> set[str]:
    return {e["addresses"][0] for s in kube.list_objects("EndpointSlice", "external")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s["endpoints"]}


def test_deny_and_allow_cidrs_at_config_and_source_level(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    def inventory(name: str, ips: list[str]) -> None:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"services": [
            {"name": name, "ports": [{"port": 80}],
             "endpoints": [{"address": a} for a in ips]}]}))
    inventory("a", ["192.0.2.1", "192.0.2.200", "2001:db8::1", "203.0.113.1"])
    inventory("b", ["192.0.2.1", "192.0.2.20", "198.51.100.1", "192.0.2.130"])
    config = tmp_path / "config.yaml"
    config.write_text(
        "owner: cluster-a\nnamespace: external\n"
        "deny_cidrs: [192.0.2.128/25]\nallow_cidrs: [192.0.2.0/24]\nsources:\n"
        "  - {name: a, provider: static, path: a.yaml, allow_cidrs: ['2001:db8::/64']}\n"
        "  - {name: b, provider: static, path: b.yaml, deny_cidrs: [192.0.2.0/28]}\n")
    err = ok(run_sync(config, kubeconfig))
    assert addresses(kube, "a") == {"192.0.2.1", "2001:db8::1"}
    assert addresses(kube, "b") == {"192.0.2.20"}
    for line in ("source 'a': service external/a: address 192.0.2.200 dropped (in deny_cidrs "
                 "192.0.2.128/25)",
                 "source 'a': service external/a: address 203.0.113.1 dropped (outside "
                 "allow_cidrs",
                 "source 'b': service external/b: address 192.0.2.1 dropped (in deny_cidrs "
                 "192.0.2.0/28)",
                 "source 'b': service external/b: address 198.51.100.1 dropped (outside "
                 "allow_cidrs 192.0.2.0/24)"):
        assert line in err


def test_a_bad_source_cidr_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("sources:\n  - {name: a, provider: static, path: a.yaml, "
                      "allow_cidrs: [192.0.2.0/33]}\n")
    err = ok(cli("validate", "-c", config), 2)
    assert "config.yaml: sources[0].allow_cidrs[0]: " in err


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    double = ConsulDouble()
    double.add_node("good-1", "192.0.2.21", meta={"zone": "zone-a"})
    double.add_node("good-2", "192.0.2.22", meta={"zone": "zone-b"})
    double.add_node("bad-zone", "192.0.2.23", meta={"zone": "zone a!"})
    double.add_node("mapped", "::ffff:127.0.0.1")
    double.add_node("scoped", "fe80::1%eth0")
    double.add_node("zeros", "192.0.2.024")
    double.add_node("metadata", "169.254.169.254")
    for node in ("good-1", "good-2", "bad-zone", "mapped", "scoped", "zeros", "metadata"):
        double.register("payments", node, port=8443)
    yield from running(double)


def test_consul_items_the_api_would_refuse_are_dropped_and_the_rest_syncs(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "owner: cluster-a\nnamespace: external\nsources:\n"
        f"  - {{name: consul-pay, provider: consul, url: '{consul.url}', timeout_seconds: 1, "
        "services: [payments], port: 443, port_name: https, zone_node_meta: zone}\n")
    err = ok(run_sync(config, kubeconfig))
    slices = [s for s in kube.list_objects("EndpointSlice", "external")
              if s["metadata"]["labels"].get("kubernetes.io/service-name") == "payments"]
    assert {(e["addresses"][0], e.get("zone")) for s in slices for e in s["endpoints"]} == {
        ("192.0.2.21", "zone-a"), ("192.0.2.22", "zone-b")}
    for item in ("'zone a!'", "::ffff:127.0.0.1", "fe80::1%eth0", "192.0.2.024",
                 "169.254.169.254"):
        lines = [line for line in err.splitlines() if item in line]
        assert lines and all("consul-pay" in line and "payments" in line for line in lines), err
