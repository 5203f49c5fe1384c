"""A failed source freezes its Services: no update, no delete, no prune.

One world for the whole module: a Kubernetes API test server, a Consul double, two AWS
query-API doubles (EC2, RDS), a static inventory, a third-party provider installed through
an entry point, and a healthy static source. It is synced once; then each case breaks one
source in one way and runs the CLI again. Every case proves: exit 1 (2 for a broken
inventory, which stops the whole run), the log names the source and the kind of failure,
the broken source's objects are byte-identical (resourceVersions included), and the healthy
source's change is still written (except when the run stops) and nothing else is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.aws_fakes import (
    DESCRIBE_DB_INSTANCES,
    DESCRIBE_INSTANCES,
    EMPTY_DESCRIBE_DB_CLUSTERS,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    RDS_HOST,
    AwsDouble,
    Reply,
    closed_port,
    ec2_error,
    query_error,
)
from tests.cli import run_sync
from tests.consul_double import ConsulDouble
from tests.kubeapi import KubeApiServer

NAMESPACE = "external"
TOKEN = "consul-acl-token-for-failures"
JSON = dict[str, Any]


PLUGIN = '''
from pathlib import Path

from syncer.plugin import Backend, Provider, ProviderOptions, ServicePort, ServiceSpec


class BuggyOptions(ProviderOptions):
    flag: str


class BuggyProvider(Provider[BuggyOptions]):
    """Works until the flag file exists, then fails as a buggy plugin would."""

    Options = BuggyOptions
    summary = "fails on demand"

    def discover(self) -> list[ServiceSpec]:
        if Path(self.options.flag).exists():
            raise RuntimeError("plugin bug: kaboom")
        return [ServiceSpec(name="bugged", ports=(ServicePort("", 80),),
                            backends=(Backend("192.0.2.77"),))]
'''


def install_plugin(folder: Path) -> None:
    """A third-party provider, found through its entry point like any installed package."""
    (folder / "buggy_plugin.py").write_text(PLUGIN)
    info = folder / "buggy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[endpoints_sync.providers]\nbuggy = buggy_plugin:BuggyProvider\n")


def inventory(name: str, addresses: list[str]) -> str:
    return yaml.safe_dump({"services": [{
        "name": name, "ports": [{"port": 80}],
        "endpoints": [{"address": a, "port": 8080} for a in addresses]}]})


@dataclass
class World:
    kube: KubeApiServer
    kubeconfig: Path
    folder: Path
    consul: ConsulDouble
    ec2: AwsDouble
    rds: AwsDouble
    env: dict[str, str]
    sources: dict[str, JSON] = field(default_factory=dict)
    healthy_addresses: int = 1

    def write_config(self) -> Path:
        config = self.folder / "config.yaml"
        config.write_text(yaml.safe_dump({
            "owner": "failures", "namespace": NAMESPACE,
            "hosts": {RDS_HOST: ["198.51.100.20"]},
            "sources": list(self.sources.values())}))
        return config

    def change_healthy(self) -> None:
        """The healthy source gains or loses an address: a change each run must write."""
        self.healthy_addresses = 3 - self.healthy_addresses
        addresses = ["192.0.2.1", "192.0.2.2"][: self.healthy_addresses]
        (self.folder / "healthy.yaml").write_text(inventory("healthy", addresses))

    def run(self) -> subprocess.CompletedProcess[str]:
        return run_sync(self.write_config(), self.kubeconfig, env=self.env)

    def snapshot(self) -> dict[str, JSON]:
        return {f"{o['kind']}/{o['metadata']['name']}": o
                for kind in ("Service", "EndpointSlice", "Endpoints")
                for o in self.kube.list_objects(kind, NAMESPACE)}


def aws_source(name: str, provider: str, url: str, **options: Any) -> JSON:
    return {"name": name, "provider": provider, "regions": ["us-east-1"],
            "endpoint_url": url, "max_attempts": 2, "connect_timeout": 1,
            "read_timeout": 0.5, **options}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("failures")
    install_plugin(folder)
    (folder / "rgw.yaml").write_text(inventory("rgw", ["192.0.2.50", "192.0.2.51"]))
    consul = ConsulDouble(acl_token=TOKEN)
    consul.add_node("node-1", "203.0.113.1")
    consul.add_node("node-2", "203.0.113.2")
    consul.register("payments", "node-1", port=8443)
    consul.register("payments", "node-2", port=8443)
    ec2 = AwsDouble({"DescribeInstances": Reply(200, DESCRIBE_INSTANCES)})
    rds = AwsDouble({"DescribeDBInstances": Reply(200, DESCRIBE_DB_INSTANCES),
                     "DescribeDBClusters": Reply(200, EMPTY_DESCRIBE_DB_CLUSTERS)})
    with KubeApiServer([NAMESPACE]) as kube:
        consul.start()
        ec2.start()
        rds.start()
        env = {
            "PYTHONPATH": str(folder),
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
            "AWS_SESSION_TOKEN": FAKE_SESSION_TOKEN, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(folder / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "aws-credentials"),
        }
        w = World(kube, kube.write_kubeconfig(folder / "kubeconfig"), folder, consul, ec2,
                  rds, env)
        w.sources = {
            "healthy": {"name": "healthy", "provider": "static", "path": "healthy.yaml"},
            "rgw": {"name": "rgw", "provider": "static", "path": "rgw.yaml"},
            "consul-pay": {"name": "consul-pay", "provider": "consul", "url": consul.url,
                           "token": TOKEN, "services": ["payments"], "timeout_seconds": 0.5},
            "ec2-web": aws_source("ec2-web", "aws_ec2", ec2.url, service="web", port=8080),
            "rds-db": aws_source("rds-db", "aws_rds", rds.url),
            "plugin": {"name": "plugin", "provider": "buggy", "flag": str(folder / "broken")},
        }
        w.change_healthy()
        first = w.run()
        assert first.returncode == 0, first.stderr
        try:
            yield w
        finally:
            for double in (consul, ec2, rds):
                double.stop()


# --- the ways a source breaks: each returns how to heal it ------------------------------

Heal = Callable[[], object]


def consul_down(w: World) -> Heal:
    w.consul.stop()
    return w.consul.start


def consul_slow(w: World) -> Heal:
    w.consul.delay = 2.0  # timeout_seconds is 0.5
    return w.consul.clear_faults


def consul_wrong_token(w: World) -> Heal:
    w.consul.acl_token = "a-token-rotated-away"
    return lambda: setattr(w.consul, "acl_token", TOKEN)


def consul_fault(status: int, body: str) -> Callable[[World], Heal]:
    def broken(w: World) -> Heal:
        w.consul.fail(status, body)
        return w.consul.clear_faults
    return broken


def aws_reply(double: str, action: str, reply: Reply) -> Callable[[World], Heal]:
    def broken(w: World) -> Heal:
        replies: dict[str, Reply] = getattr(w, double).replies
        good = replies[action]
        replies[action] = reply
        return lambda: replies.__setitem__(action, good)
    return broken


def aws_unreachable(source: str) -> Callable[[World], Heal]:
    def broken(w: World) -> Heal:
        url = w.sources[source]["endpoint_url"]
        w.sources[source]["endpoint_url"] = f"http://127.0.0.1:{closed_port()}"
        return lambda: w.sources[source].__setitem__("endpoint_url", url)
    return broken


def inventory_text(text: str) -> Callable[[World], Heal]:
    def broken(w: World) -> Heal:
        path = w.folder / "rgw.yaml"
        good = path.read_text()
        path.write_text(text)
        return lambda: path.write_text(good)
    return broken


def inventory_gone(w: World) -> Heal:
    path = w.folder / "rgw.yaml"
    moved = path.rename(w.folder / "rgw.yaml.away")
    return lambda: moved.rename(path)


def plugin_bug(w: World) -> Heal:
    flag = w.folder / "broken"
    flag.touch()
    return flag.unlink


GARBAGE_XML = Reply(200, "<<<this is not XML&&")
CASES: dict[str, tuple[str, Callable[[World], Heal], str]] = {
    # case: (source, how it breaks, what the log must say)
    "consul-unreachable": ("consul-pay", consul_down, "unreachable"),
    "consul-timeout": ("consul-pay", consul_slow, "no answer within 0.5 s"),
    "consul-acl-not-found": ("consul-pay", consul_wrong_token, "access denied"),
    "consul-throttled": ("consul-pay", consul_fault(429, "rate limit exceeded"),
                         "rate limited"),
    "consul-not-json": ("consul-pay", consul_fault(200, "<html>proxy error</html>"),
                        "malformed answer, not JSON"),
    "consul-wrong-shape": ("consul-pay", consul_fault(200, '{"payments": []}'),
                           "malformed answer, expected a list of health entries"),
    "ec2-unreachable": ("ec2-web", aws_unreachable("ec2-web"), "EndpointConnectionError"),
    "ec2-timeout": ("ec2-web", aws_reply("ec2", "DescribeInstances", Reply(
        200, DESCRIBE_INSTANCES, delay=1.5)), "ReadTimeoutError"),
    "ec2-auth-failure": ("ec2-web", aws_reply("ec2", "DescribeInstances", Reply(
        401, ec2_error("AuthFailure", "AWS was not able to validate the credentials"))),
        "the credentials were rejected"),
    "ec2-unauthorized": ("ec2-web", aws_reply("ec2", "DescribeInstances", Reply(
        403, ec2_error("UnauthorizedOperation", "You are not authorized"))), "access denied"),
    "ec2-throttled": ("ec2-web", aws_reply("ec2", "DescribeInstances", Reply(
        503, ec2_error("RequestLimitExceeded", "Request limit exceeded."))),
        "throttled by AWS, retries used up"),
    "ec2-garbage-xml": ("ec2-web", aws_reply("ec2", "DescribeInstances", GARBAGE_XML),
                        "not a valid response"),
    "rds-unreachable": ("rds-db", aws_unreachable("rds-db"), "EndpointConnectionError"),
    "rds-timeout": ("rds-db", aws_reply("rds", "DescribeDBInstances", Reply(
        200, DESCRIBE_DB_INSTANCES, delay=1.5)), "ReadTimeoutError"),
    "rds-expired-token": ("rds-db", aws_reply("rds", "DescribeDBInstances", Reply(
        403, query_error("ExpiredToken", "The security token is expired"))), "ExpiredToken"),
    "rds-throttled": ("rds-db", aws_reply("rds", "DescribeDBClusters", Reply(
        400, query_error("Throttling", "Rate exceeded"))), "throttled by AWS, retries used up"),
    "rds-garbage-xml": ("rds-db", aws_reply("rds", "DescribeDBInstances", GARBAGE_XML),
                        "not a valid response"),
    "plugin-raises": ("plugin", plugin_bug, "RuntimeError: plugin bug: kaboom"),
}
# A broken inventory is a configuration error: the whole run stops before any write.
INVENTORY_CASES: dict[str, Callable[[World], Heal]] = {
    "static-inventory-gone": inventory_gone,
    "static-inventory-not-yaml": inventory_text("services: [ {name: rgw, ports: [\n"),
}
SERVICE_OF = {"rgw": "rgw", "consul-pay": "payments", "ec2-web": "web", "rds-db": "billing",
              "plugin": "bugged"}


def objects_of(snapshot: dict[str, JSON], service: str) -> dict[str, JSON]:
    return {k: o for k, o in snapshot.items()
            if o["metadata"]["name"] == service
            or o["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service}


def test_the_first_sync_published_every_source(world: World) -> None:
    names = {o["metadata"]["name"] for o in world.kube.list_objects("Service", NAMESPACE)}
    assert names == {"healthy", *SERVICE_OF.values()}


def rounds() -> list[list[str]]:
    """The cases grouped so that each run breaks every provider at once, each in its own
    way: the sources are independent, so one run proves several cases."""
    by_source: dict[str, list[str]] = {}
    for case, (source, _, _) in CASES.items():
        by_source.setdefault(source, []).append(case)
    longest = max(len(cases) for cases in by_source.values())
    return [[cases[i] for cases in by_source.values() if i < len(cases)]
            for i in range(longest)]


@pytest.mark.parametrize("cases", rounds(), ids="+".join)
def test_a_failed_source_is_frozen_and_the_others_sync(world: World, cases: list[str]) -> None:
    before = world.snapshot()
    world.change_healthy()
    world.kube.reset_requests()
    heals = [CASES[case][1](world) for case in cases]
    try:
        result = world.run()
    finally:
        for heal in heals:
            heal()

    assert result.returncode == 1, result.stderr
    after = world.snapshot()
    for case in cases:
        source, _, kind = CASES[case]
        failure = [line for line in result.stderr.splitlines()
                   if f"source {source!r}: failed" in line]
        assert failure and kind in failure[0], (case, result.stderr)
        frozen = objects_of(before, SERVICE_OF[source])
        assert frozen and objects_of(after, SERVICE_OF[source]) == frozen, case
    # Only the healthy source's objects were written, and its change was.
    writes = world.kube.write_requests()
    assert writes and all(r.path.endswith("/healthy") or "/healthy-" in r.path
                          for r in writes), writes
    assert {k: o for k, o in after.items() if "healthy" not in k} == \
        {k: o for k, o in before.items() if "healthy" not in k}
    assert after["Endpoints/healthy"] != before["Endpoints/healthy"]


@pytest.mark.parametrize("case", list(INVENTORY_CASES))
def test_a_broken_inventory_stops_the_run_before_any_write(world: World, case: str) -> None:
    before = world.snapshot()
    world.change_healthy()
    world.kube.reset_requests()
    heal = INVENTORY_CASES[case](world)
    try:
        result = world.run()
    finally:
        heal()
        world.change_healthy()  # back to what the cluster has

    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr and "rgw.yaml" in result.stderr
    assert world.kube.write_requests() == []
    assert world.snapshot() == before


def test_healed_sources_find_nothing_to_change(world: World) -> None:
    """After all those failures the cluster is exactly what the healed sources want."""
    world.kube.reset_requests()
    healed = world.run()
    assert healed.returncode == 0, healed.stderr
    assert world.kube.write_requests() == []


def inner(body: str, tag: str) -> str:
    """What the (first) element `tag` of an XML answer holds."""
    return body.partition(f"<{tag}>")[2].partition(f"</{tag}>")[0]


def test_one_malformed_item_drops_only_that_item(world: World) -> None:
    """A malformed Consul instance, EC2 instance or RDS instance is dropped with a warning
    naming the source, the Service and the item; the rest of its source syncs (exit 0).
    Runs last: it leaves the sources changed."""
    world.consul.add_node("node-bad", "203.0.113.9")
    world.consul.register("payments", "node-bad", port=8443, address="not an address!",
                          service_id="payments-bad-address")
    world.consul.register("payments", "node-2", port=70000, service_id="payments-bad-port")
    world.consul.register("payments", "node-1", port=8443, address="203.0.113.5",
                          service_id="payments-good")
    world.consul.raw_entries["payments"] = [
        "not an entry", None, {"Node": [], "Service": "x"},
        {"Node": {"Node": "node-odd"}, "Service": {"ID": "payments-odd", "Port": True,
                                                   "Address": 42, "Tags": "a,b"}}]
    instance = inner(DESCRIBE_INSTANCES, "instancesSet")
    world.ec2.replies["DescribeInstances"] = Reply(200, DESCRIBE_INSTANCES.replace(
        "</instancesSet>", instance.replace("i-0000000000000001", "i-00000000000000bad")
        .replace("198.51.100.10", "999.1.2.3") + "</instancesSet>"))
    db = inner(DESCRIBE_DB_INSTANCES, "DBInstances")
    world.rds.replies["DescribeDBInstances"] = Reply(200, DESCRIBE_DB_INSTANCES.replace(
        "</DBInstances>", db.replace(RDS_HOST, "bad host name!").replace("billing", "ledger")
        + "</DBInstances>"))

    result = world.run()

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " warning " in line]

    def warned(*parts: str) -> bool:
        return any(all(p in w for p in parts) for w in warnings)

    assert warned("'consul-pay'", "'payments'", "'payments-bad-address'",
                  "expected an IP address or a DNS name"), warnings
    assert warned("'consul-pay'", "'payments'", "'payments-bad-port'", "70000"), warnings
    assert warned("'consul-pay'", "'payments-odd'", "no address"), warnings
    assert warned("'ec2-web'", "'web'", "i-00000000000000bad", "not an IP address"), warnings
    assert warned("'rds-db'", "DB instance ledger",
                  "expected an IP address or a DNS name"), warnings

    def ready_ips(service: str) -> list[str]:
        ep = world.kube.get_object("Endpoints", NAMESPACE, service)
        assert ep is not None
        return sorted(a["ip"] for s in ep["subsets"] for a in s["addresses"])

    assert ready_ips("payments") == ["203.0.113.1", "203.0.113.2", "203.0.113.5"]
    assert ready_ips("web") == ["198.51.100.10"]
    assert ready_ips("billing") == ["198.51.100.20"]
    assert world.kube.get_object("Service", NAMESPACE, "ledger") is None
