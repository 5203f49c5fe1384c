"""`plan` never says "No changes" about what it could not compare, and a Service listed twice
(once with the default namespace spelled out) is caught instead of flipping on every run."""

from __future__ import annotations

from pathlib import Path

import yaml

from syncer.desired import Desired, merge_sources
from tests.cli import cli
from tests.kubeapi import KubeApiServer
from tests.specs import simple_spec

CONFIG = ("owner: cluster-a\nnamespace: external\n"
          "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")


def write(tmp: Path, services: list[dict[str, object]]) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(CONFIG)
    return config


def service(namespace: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"name": "db", "ports": [{"name": "pg", "port": 5432}],
                                "endpoints": [{"address": "192.0.2.10"}]}
    if namespace:
        entry["namespace"] = namespace
    return entry


def test_plan_names_the_failed_source_and_exits_1(kube: KubeApiServer, kubeconfig: Path,
                                                  tmp_path: Path) -> None:
    config = write(tmp_path, [service()])
    assert cli("run", "-c", config, "--kubeconfig", kubeconfig).returncode == 0
    # A Consul source that cannot be reached is now the only other source.
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      "  - {name: reg, provider: consul, url: 'http://127.0.0.1:9', "
                      "services: [db], timeout_seconds: 1}\n")
    result = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No changes: the cluster matches" not in result.stdout
    assert "source reg failed" in result.stdout
    assert "not compared" in result.stdout


def test_plan_says_no_changes_only_when_everything_was_compared(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service()])
    assert cli("run", "-c", config, "--kubeconfig", kubeconfig).returncode == 0
    result = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    assert result.returncode == 0
    assert result.stdout == "No changes: the cluster matches the sources.\n"


def test_static_service_listed_with_and_without_default_namespace_is_a_config_error(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [service(), service("external")])
    for args in (("validate",), ("run", "--kubeconfig", str(kubeconfig))):
        result = cli(*args, "-c", config)
        assert result.returncode == 2, result.stderr
        assert "inventory.yaml: services[1].name:" in result.stderr
        assert "listed twice" in result.stderr
    assert kube.requests == []


def test_a_provider_listing_a_service_twice_leaves_it_as_it_is() -> None:
    desired = Desired()
    twice = [simple_spec("db", ["192.0.2.1"]), simple_spec("db", ["192.0.2.2"]),
             simple_spec("web", ["192.0.2.3"])]
    merge_sources({"src": twice}, desired)
    assert [s.name for s in desired.specs] == ["web"]
    assert desired.skipped == {("external", "db")}
    assert desired.failed_sources == {}
