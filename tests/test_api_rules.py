"""The API server's rules, refused before any request: each rule in-process (syncer.names,
syncer.apirules, the static inventory's loader), then end to end through the CLI."""

from __future__ import annotations

import copy
import ipaddress
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.apirules import keep_valid, object_problems
from syncer.errors import ConfigError
from syncer.model import Backend, ServicePort, ServiceSpec
from syncer.names import (
    MAX_ANNOTATIONS_BYTES,
    annotations_problem,
    app_protocol_problem,
    canonical_ip,
    external_name_problem,
    hostname_problem,
    label_value_problem,
    namespace_problem,
    port_name_problem,
    qualified_name_problem,
    service_name_problem,
    service_ports_problem,
    special_ip_reason,
    zone_problem,
)
from syncer.render import RenderSettings, render
from syncer.run import check_sources, load
from tests.cli import cli, run_sync
from tests.kubeapi import KubeApiServer

JSON = dict[str, Any]
Rule = Callable[[str], str | None]

# (rule, accepted, refused): the values at each rule's edges.
RULES: list[tuple[Rule, list[str], list[str]]] = [
    (service_name_problem, ["a", "web-1", "a" * 63], ["1web", "Web", "a_b", "a" * 64, "-a", ""]),
    (namespace_problem, ["default", "1ns", "a" * 63], ["Ns", "a.b", "a" * 64, "", "ns-"]),
    (hostname_problem, ["rgw-1", "0"], ["rgw.1", "RGW", "a" * 64, ""]),
    (external_name_problem, ["db.example.com", "db.example.com.", "localhost"],
     ["DB.example.com", "db..example.com", "db_1.example.com", "a" * 254, ""]),
    (port_name_problem, ["http", "h2", "a" * 15], ["a" * 16, "80", "my--port", "-http", ""]),
    (qualified_name_problem, ["app", "example.com/App_1.x", "a" * 63, "a/" + "b" * 63],
     ["a/b/c", "/a", "a/", "Example.com/a", "a" * 64, "a b", "-a", "_a"]),
    (label_value_problem, ["", "v1", "A.b_c-d", "a" * 63], ["a" * 64, "a b", "-a", "a/"]),
    (zone_problem, ["eu-west-1a", "zone_1"], ["zone 1", "a" * 64, "-z"]),
    (app_protocol_problem, ["http", "kubernetes.io/h2c", "example.com/my-proto"],
     ["HTTP 1.1", "a/b/c", "kubernetes.io/"]),
]


@pytest.mark.parametrize(("rule", "good", "bad"), RULES,
                         ids=[r[0].__name__ for r in RULES])
def test_each_name_rule_accepts_and_refuses_what_the_api_does(
        rule: Rule, good: list[str], bad: list[str]) -> None:
    assert [v for v in good if rule(v) is not None] == []
    refused = {v: rule(v) for v in bad}
    assert [v for v, msg in refused.items() if msg is None] == []
    for v, msg in refused.items():  # the message shows the value, cut short
        assert msg is not None and repr(v[:80])[:-1] in msg


def test_annotation_keys_and_total_size() -> None:
    assert annotations_problem({"Example.com/Key": "x"}) is None  # keys are lowercased first
    assert annotations_problem({"a/b/c": "x"}) is not None
    exact = {"k": "v" * (MAX_ANNOTATIONS_BYTES - 1)}
    assert annotations_problem(exact) is None
    over = {"k": "v" * MAX_ANNOTATIONS_BYTES}
    assert "256 KiB" in (annotations_problem(over) or "")
    # The limit is in bytes, as the API counts it: a two-byte character counts twice.
    assert annotations_problem({"k": "é" * (MAX_ANNOTATIONS_BYTES // 2)}) is not None


@pytest.mark.parametrize(("ports", "expected"), [
    ([("http", 80, "TCP"), ("https", 443, "TCP")], None),
    ([("dns", 53, "TCP"), ("dns-udp", 53, "UDP")], None),  # same number, other protocol
    ([("a", 80, "TCP"), ("b", 80, "TCP")], "port 80/TCP is listed twice"),
    ([("a", 80, "TCP"), ("a", 81, "TCP")], "port name 'a' is used twice"),
    ([("", 80, "TCP"), ("b", 81, "TCP")], "need a unique 'name' on each"),
    ([("", 0, "TCP")], "port 0 is not a port number"),
    ([("Http", 80, "TCP")], "expected a port name"),
])
def test_service_ports(ports: list[tuple[str, int, str]], expected: str | None) -> None:
    problem = service_ports_problem(ports)
    assert problem is None if expected is None else expected in (problem or "")


@pytest.mark.parametrize(("text", "canonical"), [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("192.0.2.01", None),          # leading zeros: octal to some parsers
    ("010.0.0.1", None),
    ("::ffff:192.0.2.1", None),    # IPv4-mapped
    ("::ffff:c000:201", None),     # the same, written in hex
    ("fe80::1%eth0", None),        # zone-suffixed: Python's ipaddress accepts it
    ("2001:db8::1%1", None),
    (" 192.0.2.1", None),
    ("192.0.2", None),
])
def test_canonical_ip_is_strict(text: str, canonical: str | None) -> None:
    assert canonical_ip(text) == canonical


def test_ipv4_mapped_loopback_counts_as_loopback() -> None:
    # Python 3.11 says ::ffff:127.0.0.1 is not loopback; the API server (Go) says it is.
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert not mapped.is_loopback
    assert special_ip_reason(mapped) == "loopback"
    assert special_ip_reason(ipaddress.ip_address("::ffff:169.254.0.1")) == "link-local"
    assert special_ip_reason(ipaddress.ip_address("192.0.2.1")) is None


# --- the rendered-object check ---------------------------------------------------------

def rendered_web() -> list[JSON]:
    spec = ServiceSpec(
        name="web", namespace="external", source="inv",
        ports=(ServicePort("http", 80, app_protocol="http"), ServicePort("dns", 53, "UDP")),
        backends=(Backend("192.0.2.1", {"http": 8080, "dns": 53}, zone="z1", hostname="h1"),
                  Backend("2001:db8::1", {"http": 8080, "dns": 53})),
        labels={"team": "a"}, annotations={"example.com/note": "x"})
    return list(render(spec, RenderSettings(owner="o")).objects)


def test_what_render_writes_breaks_no_rule() -> None:
    objects = rendered_web()
    assert {o["kind"] for o in objects} == {"Service", "EndpointSlice", "Endpoints"}
    assert [(o["kind"], object_problems(o)) for o in objects if object_problems(o)] == []


def _set(path: list[str | int], value: Any) -> Callable[[JSON], None]:
    def apply(obj: JSON) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


# (kind, mutation, the field the problem names): what a render bug or slipped data would send.
BREAKS: list[tuple[str, Callable[[JSON], None], str]] = [
    ("Service", _set(["metadata", "labels", "bad key!"], "v"), "metadata.labels"),
    ("Service", _set(["metadata", "labels", "team"], "v" * 64), "metadata.labels"),
    ("Service", _set(["metadata", "annotations", "big"], "x" * MAX_ANNOTATIONS_BYTES),
     "metadata.annotations"),
    ("Service", _set(["metadata", "namespace"], "Bad_NS"), "metadata.namespace"),
    ("Service", _set(["metadata", "name"], "9web"), "metadata.name"),
    ("Service", _set(["spec", "ports", 0, "appProtocol"], "a/b/c"), "spec.ports[0].appProtocol"),
    ("Service", _set(["spec", "ports", 1], {"name": "dns", "port": 80, "protocol": "TCP"}),
     "spec.ports"),
    ("Service", _set(["spec", "ports", 1, "protocol"], "HTTP"), "spec.ports[1].protocol"),
    ("Service", _set(["spec", "ports", 1, "name"], "http"), "spec.ports"),
    ("Service", _set(["spec"], {"type": "ExternalName", "externalName": "DB.Example.com"}),
     "spec.externalName"),
    ("EndpointSlice", _set(["endpoints", 0, "addresses", 0], "::ffff:127.0.0.1"),
     "endpoints[0].addresses[0]"),
    ("EndpointSlice", _set(["endpoints", 0, "addresses", 0], "127.0.0.1"),
     "endpoints[0].addresses[0]"),
    ("EndpointSlice", _set(["endpoints", 0, "addresses", 0], "2001:db8::2"),
     "endpoints[0].addresses[0]"),  # the wrong family for an IPv4 slice
    ("EndpointSlice", _set(["endpoints", 0, "hostname"], "h.1"), "endpoints[0].hostname"),
    ("EndpointSlice", _set(["endpoints", 0, "zone"], "zone 1"), "endpoints[0].zone"),
    ("EndpointSlice", _set(["endpoints"], [{"addresses": ["192.0.2.1"]}] * 1001), "endpoints"),
    ("EndpointSlice", _set(["ports"], [{"port": 1, "protocol": "TCP", "name": f"p{i}"}
                                       for i in range(101)]), "ports"),
    ("Endpoints", _set(["subsets", 0, "addresses", 0, "ip"], "fe80::1%eth0"),
     "subsets[0].addresses[0].ip"),
    ("Endpoints", _set(["subsets", 0, "addresses", 0, "ip"], "2001:DB8::1"),
     "subsets[0].addresses[0].ip"),  # not canonical
    ("Endpoints", _set(["subsets", 0, "ports", 0, "name"], ""), "subsets[0].ports"),
]


@pytest.mark.parametrize(("kind", "mutate", "field"), BREAKS,
                         ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(BREAKS)])
def test_each_api_rule_is_checked_on_the_rendered_object(
        kind: str, mutate: Callable[[JSON], None], field: str) -> None:
    obj = copy.deepcopy(next(o for o in rendered_web() if o["kind"] == kind))
    mutate(obj)
    problems = object_problems(obj)
    assert [p for p in problems if p.startswith(field + ":")], problems


def test_keep_valid_leaves_a_broken_service_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    good = render(ServiceSpec(name="good", namespace="ns", source="inv",
                              ports=(ServicePort("", 80),),
                              backends=(Backend("192.0.2.1"),)), RenderSettings())
    bad = render(ServiceSpec(name="bad", namespace="ns", source="inv",
                             ports=(ServicePort("", 80),),
                             labels={"x": "not a label value"}), RenderSettings())
    skipped: set[tuple[str, str]] = set()
    assert keep_valid([good, bad], skipped) == [good]
    assert skipped == {("ns", "bad")}
    assert "source 'inv': Service ns/bad left as it is" in caplog.text
    assert "Service bad: metadata.labels" in caplog.text


# --- the static inventory: every rule is a config error naming file and entry -------------

def web(**extra: Any) -> JSON:
    return {"name": "web", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": "192.0.2.10"}], **extra}


def endpoint(**extra: Any) -> JSON:
    return web(endpoints=[{"address": "192.0.2.10"}, {"address": "192.0.2.11"},
                          {"address": "192.0.2.12", **extra}])


# (service entry, the field the error names, a piece of the message)
BAD_ENTRIES: list[tuple[JSON, str, str]] = [
    (web(labels={"bad key!": "v"}), "services[0].labels", "label key"),
    (web(labels={"team": "a b"}), "services[0].labels", "label value"),
    (web(annotations={"a/b/c": "v"}), "services[0].annotations", "annotation key"),
    (web(annotations={"k": "v" * MAX_ANNOTATIONS_BYTES}), "services[0].annotations", "256 KiB"),
    (web(ports=[{"name": "http", "port": 80, "app_protocol": "HTTP 1.1"}]),
     "services[0].ports[0].app_protocol", "appProtocol"),
    (web(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]), "services[0].ports",
     "port 80/TCP is listed twice"),
    (web(ports=[{"name": "a-very-long-port-name", "port": 80}]), "services[0].ports[0].name",
     "port name"),
    (web(namespace="Storage"), "services[0].namespace", "namespace name"),
    (web(name="Web"), "services[0].name", "Service name"),
    ({"name": "db", "type": "ExternalName", "external_name": "DB.example.com"},
     "services[0].external_name", "DNS-1123 subdomain"),
    (endpoint(address="192.0.2.013"), "services[0].endpoints[2].address", "leading zeros"),
    (endpoint(address="::ffff:127.0.0.1"), "services[0].endpoints[2].address", "IPv4-mapped"),
    (endpoint(address="fe80::1%eth0"), "services[0].endpoints[2].address", "zone-suffixed"),
    (endpoint(address="not an address"), "services[0].endpoints[2].address",
     "an IP address or a DNS name"),
    (endpoint(hostname="rgw.1"), "services[0].endpoints[2].hostname", "hostname"),
    (endpoint(zone="zone 1"), "services[0].endpoints[2].zone", "zone"),
]


def write(tmp: Path, services: list[JSON], extra: str = "") -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: cluster-a\nnamespace: external\n{extra}"
                      "sources:\n  - {name: inv, provider: static, path: inventory.yaml}\n")
    return config


@pytest.mark.parametrize(("entry", "field", "message"), BAD_ENTRIES,
                         ids=[f"{f}-{m}" for _, f, m in BAD_ENTRIES])
def test_static_inventory_names_file_and_entry(tmp_path: Path, entry: JSON, field: str,
                                               message: str) -> None:
    # In-process, as `validate` runs it: the loader and the static provider's check.
    config = write(tmp_path, [entry])
    with pytest.raises(ConfigError) as raised:
        check_sources(load(str(config)))
    error = raised.value
    assert error.file.endswith("inventory.yaml") and error.field == field
    assert message in error.message


def ok(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("index", [0, 5, 12])  # a label, a duplicate port, an IPv4-mapped IP
def test_cli_refuses_a_bad_inventory_before_any_request(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, index: int) -> None:
    entry, field, message = BAD_ENTRIES[index]
    config = write(tmp_path, [entry])
    for result in (run_sync(config, kubeconfig), cli("validate", "-c", config)):
        err = ok(result, 2)
        assert f"inventory.yaml: {field}: " in err and message in err
    assert kube.requests == []


def test_a_service_the_api_would_refuse_after_render_is_left_alone(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    # The inventory's annotations fit the limit on their own; the source annotation
    # endpoints-sync adds pushes the rendered Service over it. Only the rendered check sees it.
    full = web(name="full", annotations={"k": "v" * (MAX_ANNOTATIONS_BYTES - 1)})
    config = write(tmp_path, [full, web()])
    rendered = cli("render", "-c", config, "-o", "json")
    err = ok(rendered, 1)
    assert "source 'inv': Service external/full left as it is" in err
    assert "metadata.annotations" in err and "256 KiB" in err
    assert '"full"' not in rendered.stdout and '"web"' in rendered.stdout

    err = ok(run_sync(config, kubeconfig), 1)
    assert "Service external/full left as it is" in err
    assert kube.get_object("Service", "external", "full") is None
    assert kube.get_object("Service", "external", "web") is not None
    assert all("/full" not in r.path for r in kube.write_requests())
