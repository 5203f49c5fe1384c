"""The consul provider through the real py-consul client against the Consul HTTP double."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from providers.consul import ConsulOptions, ConsulProvider, normalise_url
from syncer.options import CONFIG_DIR
from syncer.plugin import (
    ConfigError,
    Discovery,
    PermanentSourceError,
    ServiceSpec,
    SourceContext,
    SourceError,
    TransientSourceError,
    config_error_from,
)
from tests.consul_double import ConsulDouble, matches, running

TOKEN = "5e1f0c2a-7d3b-4c55-9a0e-token-secret"


@pytest.fixture(autouse=True)
def _no_consul_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL",
                 "CONSUL_HTTP_SSL_VERIFY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    """Two nodes in dc1; `web` on both (one with its own service address), `api` on one."""
    double = ConsulDouble(datacenters=("dc1", "dc2"))
    double.add_node("node-a", "192.0.2.10", meta={"zone": "zone-a", "rack": "r1"})
    double.add_node("node-b", "192.0.2.11", meta={"zone": "zone-b"})
    double.register("web", "node-a", port=8080, address="198.51.100.10", tags=["prod", "v2"])
    double.register("web", "node-b", port=8080, tags=["prod"])
    double.register("api", "node-b", port=9000, tags=["internal"], meta={"k8s": "yes"})
    yield from running(double)


def context(tmp_path: Path, source: str = "payments") -> SourceContext:
    return SourceContext(source=source, config_file=str(tmp_path / "config.yaml"),
                         field_path="sources[1]", config_dir=tmp_path)


def load(tmp_path: Path, **options: Any) -> ConsulOptions:
    """Options as the registry loads them: paths resolved against the config's folder."""
    return ConsulOptions.model_validate(options, context={CONFIG_DIR: tmp_path})


def provider(double: ConsulDouble, tmp_path: Path, **options: Any) -> ConsulProvider:
    opts = load(tmp_path, **{"url": double.url, "timeout_seconds": 2, **options})
    return ConsulProvider(opts, context(tmp_path))


def found(double: ConsulDouble, tmp_path: Path, **options: Any) -> Discovery:
    result = provider(double, tmp_path, **options).discover()
    assert isinstance(result, Discovery)
    return result


def discover(double: ConsulDouble, tmp_path: Path, **options: Any) -> dict[str, ServiceSpec]:
    return {s.name: s for s in found(double, tmp_path, **options).services}


def addresses(spec: ServiceSpec) -> list[tuple[str, bool]]:
    return [(b.address, b.ready) for b in spec.backends]


def options_error(**options: Any) -> str:
    """The message the core shows for bad options of `sources[1]`."""
    with pytest.raises(ValidationError) as info:
        ConsulOptions.model_validate(options)
    return str(config_error_from("config.yaml", info.value, prefix="sources[1]"))


# --- which services ------------------------------------------------------------------------


def test_explicit_services_make_one_health_request_each(consul: ConsulDouble,
                                                        tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, services=["web"])

    web = specs["web"]
    assert list(specs) == ["web"]
    assert [(p.name, p.port, p.protocol) for p in web.ports] == [("", 8080, "TCP")]
    assert addresses(web) == [("192.0.2.11", True), ("198.51.100.10", True)]
    assert web.backends[0].ports == {"": 8080}
    assert web.namespace is None and web.source == "" and web.type == "ClusterIP"
    assert web.annotations == {"consul.endpoints-sync.io/service": "web",
                               "consul.endpoints-sync.io/datacenter": "dc1"}
    assert consul.paths() == ["/v1/health/service/web"]
    assert consul.requests[0].query == {"stale": ["1"], "passing": ["1"]}


def test_catalog_mode_syncs_every_service_but_consul(consul: ConsulDouble,
                                                     tmp_path: Path) -> None:
    specs = discover(consul, tmp_path)

    assert sorted(specs) == ["api", "web"]
    assert addresses(specs["api"]) == [("192.0.2.11", True)]
    paths = consul.paths()
    assert paths[0] == "/v1/catalog/services"
    assert sorted(paths[1:]) == ["/v1/health/service/api", "/v1/health/service/web"]


def test_catalog_mode_makes_one_catalog_and_one_health_request_per_service(
        consul: ConsulDouble, tmp_path: Path) -> None:
    for i in range(12):
        consul.register(f"svc-{i:02d}", "node-a", port=7000 + i)
    consul.delay = 0.05

    specs = discover(consul, tmp_path, concurrency=3)

    assert len(specs) == 14
    assert consul.paths().count("/v1/catalog/services") == 1
    assert len([p for p in consul.paths() if p.startswith("/v1/health/service/")]) == 14
    assert 1 < consul.max_in_flight <= 3  # concurrent, and bounded


def test_tags_select_services_and_instances(consul: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, tags=["prod", "v2"])

    assert list(specs) == ["web"]
    assert addresses(specs["web"]) == [("198.51.100.10", True)]
    health = [r for r in consul.requests if r.path == "/v1/health/service/web"]
    assert health[0].query["tag"] == ["prod", "v2"]


def test_exclude_tags_leave_out_whole_services_in_catalog_mode(
        consul: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, exclude_tags=["v2"])

    assert list(specs) == ["api"]
    assert "/v1/health/service/web" not in consul.paths()


def test_exclude_tags_leave_out_instances_of_listed_services(
        consul: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, services=["web"], exclude_tags=["v2"])

    assert addresses(specs["web"]) == [("192.0.2.11", True)]


def test_filter_is_passed_to_the_health_requests(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.register("web", "node-b", port=8080, service_id="web-canary", tags=["canary"],
                    meta={"track": "canary"})

    specs = discover(consul, tmp_path, services=["web"],
                     filter='Service.Meta.track != "canary" and Node.Meta.zone == "zone-b"')

    assert addresses(specs["web"]) == [("192.0.2.11", True)]
    assert consul.requests[0].query["filter"] == [
        'Service.Meta.track != "canary" and Node.Meta.zone == "zone-b"']


def test_catalog_mode_selects_only_services_with_an_instance_matching_the_filter(
        consul: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, filter='Service.Meta.k8s == "yes"')

    assert list(specs) == ["api"]


def test_catalog_filter_narrows_the_catalog_on_the_server(consul: ConsulDouble,
                                                          tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, catalog_filter='"internal" in ServiceTags')

    assert list(specs) == ["api"]
    assert consul.requests[0].query["filter"] == ['"internal" in ServiceTags']
    assert len(consul.requests) == 2


def test_a_filter_consul_rejects_fails_the_source_permanently(consul: ConsulDouble,
                                                              tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match=r"Selector \\?\"Nope\\?\" is not"):
        discover(consul, tmp_path, services=["web"], filter='Nope == "x"')


def test_connect_proxies_are_not_synced_in_catalog_mode(consul: ConsulDouble,
                                                        tmp_path: Path) -> None:
    consul.register("web-sidecar-proxy", "node-a", port=21000, kind="connect-proxy")

    assert sorted(discover(consul, tmp_path)) == ["api", "web"]


def test_consistency_modes(consul: ConsulDouble, tmp_path: Path) -> None:
    discover(consul, tmp_path, services=["web"], consistency="consistent")
    discover(consul, tmp_path, services=["web"], consistency="default")

    assert consul.requests[0].query == {"consistent": ["1"], "passing": ["1"]}
    assert consul.requests[1].query == {"passing": ["1"]}


# --- health --------------------------------------------------------------------------------


@pytest.fixture
def mixed(consul: ConsulDouble) -> ConsulDouble:
    consul.add_node("node-c", "192.0.2.12")
    consul.add_node("node-d", "192.0.2.13")
    consul.register("db", "node-a", port=5432, checks="passing")
    consul.register("db", "node-b", port=5432, checks={"disk": "warning", "tcp": "passing"})
    consul.register("db", "node-c", port=5432, checks="critical")
    consul.register("db", "node-d", port=5432, checks="passing")
    consul.set_node_status("node-d", "critical")  # serfHealth: the whole node is down
    return consul


def test_passing_only_publishes_instances_whose_checks_all_pass(mixed: ConsulDouble,
                                                                tmp_path: Path) -> None:
    specs = discover(mixed, tmp_path, services=["db"])

    assert addresses(specs["db"]) == [("192.0.2.10", True)]


def test_without_passing_only_unhealthy_instances_are_published_not_ready(
        mixed: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(mixed, tmp_path, services=["db"], passing_only=False)

    assert addresses(specs["db"]) == [("192.0.2.10", True), ("192.0.2.11", False),
                                      ("192.0.2.12", False), ("192.0.2.13", False)]
    assert [b.meta.get("consul.health") for b in specs["db"].backends] == [
        None, "warning", "critical", "critical"]
    assert "passing" not in mixed.requests[0].query


def test_no_passing_instance_keeps_the_service_with_the_port_it_had(
        consul: ConsulDouble, tmp_path: Path) -> None:
    consul.register("cache", "node-a", port=6379, checks="critical")

    specs = discover(consul, tmp_path, services=["cache"])

    assert specs["cache"].backends == ()
    assert specs["cache"].ports[0].port == 6379
    assert [r.query.get("passing") for r in consul.requests] == [["1"], None]


def test_catalog_mode_keeps_a_service_whose_instances_all_fail(consul: ConsulDouble,
                                                               tmp_path: Path) -> None:
    consul.register("cache", "node-a", port=6379, checks="critical")

    specs = discover(consul, tmp_path)

    assert specs["cache"].backends == ()
    assert specs["cache"].ports[0].port == 6379


def test_a_listed_service_without_instances_needs_a_port(consul: ConsulDouble,
                                                         tmp_path: Path) -> None:
    result = found(consul, tmp_path, services=["ghost"])
    assert result.services == ()
    ((kept),) = result.kept
    assert kept.name == "ghost" and kept.namespace is None
    assert kept.reason.startswith("consul service 'ghost': nothing matched")
    assert "set `port`" in kept.reason

    specs = discover(consul, tmp_path, services=["ghost"], port=80)
    assert specs["ghost"].backends == () and specs["ghost"].ports[0].port == 80


# --- addresses -----------------------------------------------------------------------------


@pytest.fixture
def tagged(consul: ConsulDouble) -> ConsulDouble:
    consul.add_node("edge-1", "192.0.2.20",
                    tagged={"lan": "192.0.2.20", "wan": "203.0.113.20"})
    consul.add_node("edge-2", "192.0.2.21",
                    tagged={"lan": "192.0.2.21", "wan": "203.0.113.21"})
    consul.register("gw", "edge-1", port=443, address="192.0.2.120",
                    tagged={"lan_ipv4": ("192.0.2.120", 443),
                            "lan_ipv6": ("2001:db8::120", 443),
                            "wan": ("203.0.113.120", 8443)})
    consul.register("gw", "edge-2", port=443)
    return consul


@pytest.mark.parametrize(("source", "expected"), [
    ("service", [("192.0.2.120", 443), ("192.0.2.21", 443)]),
    ("node", [("192.0.2.20", 443), ("192.0.2.21", 443)]),
    ("lan", [("192.0.2.120", 443), ("192.0.2.21", 443), ("2001:db8::120", 443)]),
    ("wan", [("203.0.113.120", 8443), ("203.0.113.21", 443)]),
])
def test_address_source(tagged: ConsulDouble, tmp_path: Path, source: str,
                        expected: list[tuple[str, int]]) -> None:
    specs = discover(tagged, tmp_path, services=["gw"], address_source=source, port=443)

    assert [(b.address, b.ports[""]) for b in specs["gw"].backends] == expected


def test_wan_prefers_the_service_address_to_the_nodes_wan_like_consul(
        consul: ConsulDouble, tmp_path: Path) -> None:
    consul.add_node("edge-3", "192.0.2.30", tagged={"wan": "203.0.113.30"})
    consul.add_node("plain", "192.0.2.31", tagged={})
    consul.register("solo", "edge-3", port=80, address="198.51.100.30")
    consul.register("solo", "plain", port=80)

    specs = discover(consul, tmp_path, services=["solo"], address_source="wan")

    assert addresses(specs["solo"]) == [("192.0.2.31", True), ("198.51.100.30", True)]


def test_dns_names_are_passed_on_for_the_core_to_resolve(consul: ConsulDouble,
                                                         tmp_path: Path) -> None:
    consul.register("legacy", "node-a", port=25, address="mail.example.com")

    specs = discover(consul, tmp_path, services=["legacy"])

    assert addresses(specs["legacy"]) == [("mail.example.com", True)]


def test_zone_hostname_and_meta(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.add_node("Node_Upper.example", "192.0.2.40", meta={"zone": "zone-c"})
    consul.register("web", "Node_Upper.example", port=8080)

    web = discover(consul, tmp_path, services=["web"])["web"]  # zone_node_meta: zone

    by_address = {b.address: b for b in web.backends}
    assert by_address["198.51.100.10"].zone == "zone-a"
    assert by_address["198.51.100.10"].hostname == "node-a"
    assert by_address["192.0.2.40"].hostname is None  # not a DNS-1123 label
    assert by_address["192.0.2.40"].zone == "zone-c"
    assert by_address["198.51.100.10"].meta == {
        "consul.node": "node-a", "consul.service_id": "web-node-a-8080",
        "consul.node_id": "00000000-0000-4000-8000-000000000002"}
    no_zone = discover(consul, tmp_path, services=["web"], zone_node_meta=None)["web"]
    assert {b.zone for b in no_zone.backends} == {None}
    racks = discover(consul, tmp_path, services=["web"], zone_node_meta="rack")["web"]
    assert {b.address: b.zone for b in racks.backends}["198.51.100.10"] == "r1"


def test_the_same_address_registered_twice_is_one_endpoint(consul: ConsulDouble,
                                                           tmp_path: Path) -> None:
    consul.register("web", "node-a", port=8080, address="198.51.100.10", service_id="web-dup")

    specs = discover(consul, tmp_path, services=["web"])

    assert addresses(specs["web"]) == [("192.0.2.11", True), ("198.51.100.10", True)]


# --- names ---------------------------------------------------------------------------------


def test_name_prefix_and_rename(consul: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(consul, tmp_path, name_prefix="consul-", rename={"api": "orders-api"})

    assert sorted(specs) == ["consul-web", "orders-api"]
    assert specs["orders-api"].annotations["consul.endpoints-sync.io/service"] == "api"
    # The namespace is the core's (the source's `namespace` key), not an option of consul.
    assert {s.namespace for s in specs.values()} == {None}
    assert "sources[1].namespace: unknown key" in options_error(namespace="external")


def test_a_catalog_name_kubernetes_cannot_take_is_skipped_with_a_warning(
        consul: ConsulDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    consul.register("Billing_API", "node-a", port=7000)

    with caplog.at_level(logging.WARNING):
        specs = discover(consul, tmp_path)

    assert sorted(specs) == ["api", "web"]
    assert "/v1/health/service/Billing_API" not in consul.paths()
    (warning,) = [r for r in caplog.records if "Billing_API" in r.getMessage()]
    assert "expected a Service name" in warning.getMessage()
    assert "map it with `rename`" in warning.getMessage()
    # The source is a field of the record, which the core shows; the message does not repeat it.
    assert getattr(warning, "source", None) == "payments"
    assert "payments" not in warning.getMessage()


def test_a_renamed_catalog_name_is_synced(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.register("Billing_API", "node-a", port=7000)

    specs = discover(consul, tmp_path, rename={"Billing_API": "billing-api"})

    assert sorted(specs) == ["api", "billing-api", "web"]


def test_two_catalog_services_on_one_name_skip_that_service(consul: ConsulDouble,
                                                            tmp_path: Path) -> None:
    consul.register("orders", "node-a", port=7000)

    result = found(consul, tmp_path, rename={"api": "orders"})

    assert [s.name for s in result.services] == ["web"]
    (kept,) = result.kept
    assert (kept.namespace, kept.name) == (None, "orders")
    assert "'api' and 'orders' both map to Service 'orders'" in kept.reason
    assert not any("/v1/health/service/orders" in p or "/v1/health/service/api" in p
                   for p in consul.paths())


def test_explicit_names_are_checked_when_the_options_load() -> None:
    message = options_error(services=["web", "Billing_API"])
    assert "services[1] 'Billing_API': expected a Service name (a DNS-1035" in message
    assert "map it with `rename`" in message
    assert "'b' and 'a' both map to Service 'x'" in options_error(
        services=["a", "b"], rename={"a": "x", "b": "x"})
    assert "rename names 'other'" in options_error(services=["a"], rename={"other": "x"})
    assert "sources[1].rename.Bad: expected a Service name" in options_error(
        rename={"Bad": "Bad_Target"})


# --- ports ---------------------------------------------------------------------------------


def test_instances_on_different_ports_need_a_service_port(consul: ConsulDouble,
                                                          tmp_path: Path) -> None:
    consul.register("web", "node-a", port=8081, address="198.51.100.11")

    result = found(consul, tmp_path, services=["web"])
    assert result.services == ()
    (kept,) = result.kept
    assert kept.name == "web" and kept.reason.startswith("consul service 'web': ")
    assert "ports 8080, 8081; set `port`" in kept.reason

    web = discover(consul, tmp_path, services=["web"], port=80, port_name="http")["web"]
    assert [(p.name, p.port) for p in web.ports] == [("http", 80)]
    assert [(b.address, dict(b.ports)) for b in web.backends] == [
        ("192.0.2.11", {"http": 8080}), ("198.51.100.10", {"http": 8080}),
        ("198.51.100.11", {"http": 8081})]


def test_unhealthy_instances_that_disagree_on_the_port_keep_the_service(
        consul: ConsulDouble, tmp_path: Path) -> None:
    consul.register("cache", "node-a", port=6379, checks="critical")
    consul.register("cache", "node-b", port=6380, checks="critical")

    result = found(consul, tmp_path, services=["cache"])

    assert result.services == ()
    (kept,) = result.kept
    assert kept.name == "cache" and "ports 6379, 6380; set `port`" in kept.reason
    specs = discover(consul, tmp_path, services=["cache"], port=6379)
    assert specs["cache"].backends == () and specs["cache"].ports[0].port == 6379


def test_a_malformed_instance_takes_no_part_in_the_port(
        consul: ConsulDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    consul.register("web", "node-a", port=9999, address="not an address", service_id="web-bad")

    with caplog.at_level(logging.WARNING):
        web = discover(consul, tmp_path, services=["web"])["web"]

    assert web.ports[0].port == 8080
    assert addresses(web) == [("192.0.2.11", True), ("198.51.100.10", True)]
    (warning,) = [r.getMessage() for r in caplog.records if "'web-bad'" in r.getMessage()]
    assert warning.startswith("consul service 'web': instance 'web-bad' on node 'node-a' left "
                              "out: its address: expected an IP address or a DNS name")


def test_an_instance_without_port_uses_the_service_port_or_is_left_out(
        consul: ConsulDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    consul.register("web", "node-a", port=0, address="198.51.100.12", service_id="web-noport")

    with caplog.at_level(logging.WARNING):
        web = discover(consul, tmp_path, services=["web"])["web"]
    assert "198.51.100.12" not in [b.address for b in web.backends]
    assert any("'web-noport'" in r.getMessage() and "port" in r.getMessage()
               for r in caplog.records)

    web = discover(consul, tmp_path, services=["web"], port=8080)["web"]
    assert ("198.51.100.12", {"": 8080}) in [(b.address, dict(b.ports)) for b in web.backends]


def test_protocol_option(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.register("dns", "node-a", port=53)

    specs = discover(consul, tmp_path, services=["dns"], protocol="UDP", port_name="dns")

    assert specs["dns"].ports[0].protocol == "UDP"


# --- datacenter ----------------------------------------------------------------------------


def test_datacenter_is_asked_for_and_annotated(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.add_node("far-1", "203.0.113.50", datacenter="dc2")
    consul.register("web", "far-1", port=8080)

    specs = discover(consul, tmp_path, datacenter="dc2")

    assert list(specs) == ["web"]
    assert addresses(specs["web"]) == [("203.0.113.50", True)]
    assert specs["web"].annotations["consul.endpoints-sync.io/datacenter"] == "dc2"
    assert all(r.query["dc"] == ["dc2"] for r in consul.requests)


def test_an_unknown_datacenter_fails_permanently(consul: ConsulDouble, tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match="unknown datacenter 'dc9'"):
        discover(consul, tmp_path, datacenter="dc9")


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def acl(consul: ConsulDouble) -> ConsulDouble:
    consul.acl_token = TOKEN
    return consul


def test_the_token_is_sent_as_a_header(acl: ConsulDouble, tmp_path: Path) -> None:
    specs = discover(acl, tmp_path, token=TOKEN)

    assert sorted(specs) == ["api", "web"]
    assert all(r.token_sent and "token" not in r.query for r in acl.requests)


def test_the_token_file_is_read_relative_to_the_config(acl: ConsulDouble,
                                                       tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "consul-token").write_text(f"{TOKEN}\n")

    specs = discover(acl, tmp_path, token_file="secrets/consul-token")

    assert sorted(specs) == ["api", "web"]


def test_the_token_defaults_to_the_environment(acl: ConsulDouble, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", TOKEN)

    assert sorted(discover(acl, tmp_path)) == ["api", "web"]


def test_a_token_file_wins_over_the_environment(acl: ConsulDouble, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "not-the-token")
    (tmp_path / "token").write_text(TOKEN)

    assert sorted(discover(acl, tmp_path, token_file="token")) == ["api", "web"]


def test_no_token_reads_as_anonymous_and_warns(acl: ConsulDouble, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        specs = discover(acl, tmp_path)

    assert specs == {}
    assert any("ACL token may lack" in r.getMessage() for r in caplog.records)


def test_a_wrong_token_is_a_permanent_error(acl: ConsulDouble, tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match=r"access denied \(ACL not found"):
        discover(acl, tmp_path, token="wrong-token")


def test_permission_denied_is_a_permanent_error(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.fail(403, "Permission denied", path_prefix="/v1/health/")

    with pytest.raises(PermanentSourceError, match=r"access denied.*Permission denied"):
        discover(consul, tmp_path, services=["web"])


def test_token_options_that_cannot_work() -> None:
    assert "give token or token_file, not both" in options_error(token="a", token_file="f")
    message = options_error(token="has a space")
    assert "holds spaces" in message and "has a space" not in message


def test_a_missing_or_empty_token_file_names_the_option(consul: ConsulDouble,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.yaml: sources\[1\].token_file: file .* not"):
        provider(consul, tmp_path, token_file="absent").check()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(PermanentSourceError,
                       match=r"^/.*config.yaml: sources\[1\].token_file: .*empty: the token is "):
        discover(consul, tmp_path, token_file="empty")
    assert consul.requests == []


def test_the_token_never_shows(acl: ConsulDouble, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: urllib3, requests, consul, ours
    for name in ("urllib3", "requests", "consul", "endpoints_sync"):
        caplog.set_level(logging.DEBUG, logger=name)  # whatever the core's logging set
    shown: list[str] = []
    opts = ConsulOptions.model_validate({"url": acl.url, "token": TOKEN, "timeout_seconds": 0.5})
    shown += [repr(opts), str(opts), opts.model_dump_json(), str(opts.model_dump())]
    good = ConsulProvider(opts, context(tmp_path))
    shown += [repr(s) for s in good.discover().services]
    faults: list[Callable[[], None]] = [lambda: acl.fail(403, "Permission denied"),
                                        lambda: acl.fail(500, "rpc error"), acl.hang]
    for fault in faults:
        fault()
        with pytest.raises(SourceError) as info:
            good.discover()
        shown += [str(info.value), repr(info.value), str(info.value.__cause__)]
        acl.clear_faults()
    acl.acl_token = "another-token"
    with pytest.raises(PermanentSourceError) as denied:
        good.discover()
    shown.append(str(denied.value))

    assert len(caplog.records) > 10  # the HTTP client's debug lines were captured too
    text = "\n".join(shown + [caplog.text] + [r.getMessage() for r in caplog.records])
    assert TOKEN not in text
    assert any(r.name.startswith("urllib3") for r in caplog.records)


# --- failures ------------------------------------------------------------------------------


def test_a_server_that_never_answers_is_a_fast_transient_error(consul: ConsulDouble,
                                                                tmp_path: Path) -> None:
    consul.hang()
    started = time.monotonic()

    with pytest.raises(TransientSourceError, match=r"no answer within 0.5 s"):
        discover(consul, tmp_path, timeout_seconds=0.5)
    assert time.monotonic() - started < 2


def test_a_slow_server_within_the_timeout_is_fine(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.delay = 0.15

    assert sorted(discover(consul, tmp_path, timeout_seconds=0.5)) == ["api", "web"]


def test_one_failing_service_fails_the_source(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.fail(500, "rpc error making call: EOF", path_prefix="/v1/health/service/web")

    with pytest.raises(TransientSourceError,
                       match=r"GET /v1/health/service/web.*500 rpc error") as info:
        discover(consul, tmp_path)
    # The core names the source; the provider's message starts with what went wrong.
    assert str(info.value).startswith(f"Consul at {consul.url} (GET /v1/health/service/web)")


def test_rate_limiting_is_transient(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.fail(429, "rate limit exceeded")

    with pytest.raises(TransientSourceError, match="rate limited"):
        discover(consul, tmp_path)


def test_consul_down_is_transient(consul: ConsulDouble, tmp_path: Path) -> None:
    url = consul.url
    consul.stop()

    with pytest.raises(TransientSourceError, match=r"unreachable"):
        discover(consul, tmp_path, url=url)


def test_something_else_on_the_port_is_permanent(consul: ConsulDouble, tmp_path: Path) -> None:
    consul.fail(404, "404 page not found")

    with pytest.raises(PermanentSourceError, match="request refused"):
        discover(consul, tmp_path)


def test_no_known_leader_is_a_warning(consul: ConsulDouble, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    consul.known_leader = False

    with caplog.at_level(logging.WARNING):
        assert sorted(discover(consul, tmp_path)) == ["api", "web"]
    assert any("no known leader" in r.getMessage() for r in caplog.records)


# --- url and TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [
    ("127.0.0.1:8500", "http://127.0.0.1:8500"),
    ("consul.example:8500", "http://consul.example:8500"),
    ("https://consul.example", "https://consul.example:443"),
    ("http://consul.example/", "http://consul.example:80"),
    ("[2001:db8::5]:8500", "http://[2001:db8::5]:8500"),
])
def test_urls_are_read_like_consul_reads_them(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


@pytest.mark.parametrize(("given", "problem"), [
    ("unix:///run/consul.sock", "expected an http:// or https:// URL"),
    ("http://user:pw@consul:8500", "credentials in the URL"),
    ("http://consul:8500/v1", "without a path"),
    ("consul:99999", "not a number"),
    ("", "expected a URL"),
])
def test_bad_urls(given: str, problem: str) -> None:
    message = options_error(url=given)
    assert "sources[1].url" in message and problem in message
    assert "pw@" not in message


def test_the_url_defaults_to_the_environment_without_scheme(
        consul: ConsulDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{consul.port}")

    opts = ConsulOptions.model_validate({"services": ["web"]})
    assert opts.url == f"http://127.0.0.1:{consul.port}"
    result = ConsulProvider(opts, context(tmp_path)).discover()
    assert isinstance(result, Discovery) and result.services[0].backends
    monkeypatch.delenv("CONSUL_HTTP_ADDR")
    assert ConsulOptions().url == "http://127.0.0.1:8500"


def test_tls_options_that_cannot_work(tmp_path: Path) -> None:
    https = "https://consul.example:8501"
    assert "key_file needs cert_file" in options_error(url=https, key_file="k.pem")
    assert "ca_file has no use with verify: false" in options_error(
        url=https, ca_file="ca.pem", verify=False)
    assert "cert_file needs an https:// url" in options_error(
        url="http://consul:8500", cert_file="c.pem")


@pytest.mark.parametrize("option", ["ca_file", "cert_file", "key_file"])
def test_missing_tls_files_name_the_option(tmp_path: Path, option: str) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("pem")
    files = {"ca_file": "ca.pem", "cert_file": "cert.pem", "key_file": "key.pem"}
    files[option] = "missing.pem"
    opts = load(tmp_path, url="https://consul.example:8501", **files)

    # Resolved against the configuration's folder when the options were loaded.
    assert getattr(opts, option) == tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=rf"sources\[1\]\.{option}: file .*missing.pem not"):
        ConsulProvider(opts, context(tmp_path)).check()
    with pytest.raises(PermanentSourceError, match=rf"sources\[1\]\.{option}: "):
        ConsulProvider(opts, context(tmp_path)).discover()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
              signer: ec.EllipticCurvePrivateKey, ca: bool,
              usage: list[x509.ObjectIdentifier]) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = issue("test CA", ca_key, ca_name, ca_key, True, [])
    write("ca", ca, ca_key)
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, issue(name, key, ca_name, ca_key, False, [usage]), key)
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture
def tls_consul(pki: dict[str, Path]) -> Iterator[ConsulDouble]:
    context_ = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context_.load_cert_chain(pki["server"], pki["server-key"])
    context_.load_verify_locations(pki["ca"])
    context_.verify_mode = ssl.CERT_REQUIRED  # Consul's verify_incoming
    double = ConsulDouble(ssl_context=context_)
    double.add_node("node-a", "192.0.2.10")
    double.register("web", "node-a", port=8080)
    yield from running(double)


def test_tls_with_ca_and_client_certificate(tls_consul: ConsulDouble, pki: dict[str, Path],
                                            tmp_path: Path) -> None:
    specs = discover(tls_consul, tmp_path, services=["web"], ca_file=str(pki["ca"]),
                     cert_file=str(pki["client"]), key_file=str(pki["client-key"]))

    assert addresses(specs["web"]) == [("192.0.2.10", True)]


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_without_the_ca_fails_permanently(tls_consul: ConsulDouble, pki: dict[str, Path],
                                              tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match=r"TLS failed.*CERTIFICATE_VERIFY"):
        discover(tls_consul, tmp_path, services=["web"], cert_file=str(pki["client"]),
                 key_file=str(pki["client-key"]))
    specs = discover(tls_consul, tmp_path, services=["web"], verify=False,
                     cert_file=str(pki["client"]), key_file=str(pki["client-key"]))
    assert list(specs) == ["web"]


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field", "problem"), [
    ({"timeout_seconds": 0}, "sources[1].timeout_seconds", "greater than 0"),
    ({"concurrency": 0}, "sources[1].concurrency", "greater than or equal to 1"),
    ({"port": 70000}, "sources[1].port", "less than or equal to 65535"),
    ({"port_name": "HTTP"}, "sources[1].port_name", "expected a port name"),
    ({"consistency": "eventual"}, "sources[1].consistency", "'default', 'consistent' or"),
    ({"address_source": "public"}, "sources[1].address_source", "'service', 'node', 'lan'"),
    ({"services": []}, "sources[1].services", "at least one service"),
    ({"name_prefix": "9-"}, "sources[1].name_prefix", "starting with a letter"),
    ({"datacenter": "dc 1"}, "sources[1].datacenter", "should match pattern"),
    ({"services": ["a"], "catalog_filter": "x"}, "sources[1]", "catalog mode only"),
    ({"servers": ["a"]}, "sources[1].servers", "unknown key"),
])
def test_options_errors_name_the_field(options: dict[str, Any], field: str,
                                       problem: str) -> None:
    message = options_error(**options)
    assert message.startswith(f"config.yaml: {field}: ")
    assert problem in message


def test_defaults() -> None:
    opts = ConsulOptions()
    assert (opts.url, opts.timeout_seconds, opts.consistency, opts.concurrency,
            opts.passing_only, opts.verify, opts.port_name, opts.address_source) == (
        "http://127.0.0.1:8500", 10.0, "stale", 8, True, True, "", "service")
    assert opts.token is None and opts.services is None and opts.catalog_mode


def test_the_provider_is_registered_under_the_plugin_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="endpoints_sync.providers") if e.name == "consul"]

    assert ep.load() is ConsulProvider
    assert ConsulProvider.Options is ConsulOptions and ConsulProvider.summary
    # Checked by the registry before a run; imported by discover() only.
    assert ConsulProvider.optional_imports == {"consul": "consul"}


def test_every_option_is_documented() -> None:
    undocumented = [n for n, f in ConsulOptions.model_fields.items() if not f.description]

    assert undocumented == []


def test_the_token_is_a_secret(tmp_path: Path) -> None:
    opts = load(tmp_path, token=f" {TOKEN}\n")

    assert opts.token is not None and opts.token.reveal() == TOKEN
    assert TOKEN not in repr(opts) and TOKEN not in opts.model_dump_json()
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    token = ConsulProvider(load(tmp_path, token_file="token"), context(tmp_path))._token()
    assert token is not None and token.reveal() == TOKEN and TOKEN not in repr(token)


# --- the double itself ---------------------------------------------------------------------


def test_the_doubles_filter_subset() -> None:
    entry = {"Service": {"Tags": ["a"], "Meta": {"x": "1"}}, "Node": {"Meta": {}}}

    assert matches('"a" in Service.Tags and Service.Meta.x == "1"', entry)
    assert matches('"b" in Service.Tags or Node.Meta.k != "v"', entry)
    assert not matches('"a" not in Service.Tags', entry)
    assert not matches('Node.Meta.k == "v"', entry)
