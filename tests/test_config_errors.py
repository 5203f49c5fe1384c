"""Malformed configurations and inventories: exit 2, the file and field named, no API call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncer.cli import main
from tests.kubeapi import KubeApiServer

GOOD_INVENTORY = """
services:
  - name: web
    ports: [{name: http, port: 80}]
    endpoints:
      - {address: 192.0.2.10, port: 8080}
"""
STATIC = "sources:\n  - {name: inv, provider: static, path: inventory.yaml}\n"

# (config text, inventory text, file the message names, field the message names)
CONFIG_CASES = {
    "unknown top-level key": ("bogus: 1\n" + STATIC, GOOD_INVENTORY, "config", "bogus"),
    "bad policy": ("policy: maybe\n" + STATIC, GOOD_INVENTORY, "config", "policy"),
    "no sources": ("owner: a\n", GOOD_INVENTORY, "config", "sources"),
    "empty sources": ("sources: []\n", GOOD_INVENTORY, "config", "sources"),
    "source without provider": ("sources: [{name: a, path: x}]\n", "", "config",
                                "sources[0].provider"),
    "unknown provider": ("sources: [{name: a, provider: nope}]\n", "", "config",
                         "sources[0].provider"),
    "unknown provider option": ("sources: [{name: a, provider: static, path: i.yaml, "
                                "pathh: 1}]\n", "", "config", "sources[0].pathh"),
    "missing provider option": ("sources: [{name: a, provider: static}]\n", "", "config",
                                "sources[0].path"),
    "duplicate source names": (STATIC + "  - {name: inv, provider: static, path: x.yaml}\n",
                               GOOD_INVENTORY, "config", "sources"),
    "bad deny_cidrs": ("deny_cidrs: [192.0.2.0/33]\n" + STATIC, GOOD_INVENTORY, "config",
                       "deny_cidrs[0]"),
    "bad owner": ("owner: 'a b'\n" + STATIC, GOOD_INVENTORY, "config", "owner"),
    "ratio above 1": ("max_delete_ratio: 2\n" + STATIC, GOOD_INVENTORY, "config",
                      "max_delete_ratio"),
    "bad write kind": ("write: [services]\n" + STATIC, GOOD_INVENTORY, "config", "write[0]"),
    "bad namespace": ("namespace: Bad_NS\n" + STATIC, GOOD_INVENTORY, "config", "namespace"),
    "slice size over the hard limit": ("max_endpoints_per_slice: 1001\n" + STATIC,
                                       GOOD_INVENTORY, "config", "max_endpoints_per_slice"),
    "bad hosts entry": ("hosts: {db.example.com: [not-an-ip]}\n" + STATIC, GOOD_INVENTORY,
                        "config", "hosts.db.example.com[0]"),
    "invalid YAML": ("sources: [\n", "", "config", "line 2"),
    "not a mapping": ("- a\n- b\n", "", "config", ""),
    "allow_empty not a bool": ("sources: [{name: a, provider: static, path: i.yaml, "
                               "allow_empty: maybe}]\n", "", "config", "sources[0].allow_empty"),
}


def _endpoint(text: str) -> str:
    return ("services:\n  - name: web\n    ports: [{name: http, port: 80}]\n"
            f"    endpoints:\n      - {text}\n")


INVENTORY_CASES = {
    "bad IP": (_endpoint("{address: 192.0.2.300, port: 8080}"),
               "services[0].endpoints[0].address"),
    "endpoint port out of range": (_endpoint("{address: 192.0.2.1, port: 70000}"),
                                   "services[0].endpoints[0].port"),
    "service port zero": ("services:\n  - name: web\n    ports: [{name: http, port: 0}]\n",
                          "services[0].ports[0].port"),
    "missing address": (_endpoint("{port: 8080}"), "services[0].endpoints[0].address"),
    "unknown endpoint key": (_endpoint("{adress: 192.0.2.1}"),
                             "services[0].endpoints[0].adress"),
    "missing service name": ("services:\n  - ports: [{port: 80}]\n", "services[0].name"),
    "invalid service name": ("services:\n  - name: Web_1\n    ports: [{port: 80}]\n",
                             "services[0].name"),
    "duplicate service": (GOOD_INVENTORY + "  - name: web\n    ports: [{port: 81}]\n",
                          "services[1].name"),
    "port with several service ports": (
        "services:\n  - name: web\n    ports: [{name: a, port: 80}, {name: b, port: 81}]\n"
        "    endpoints:\n      - {address: 192.0.2.1, port: 8080}\n",
        "services[0].endpoints[0].port"),
    "unknown port name": (_endpoint("{address: 192.0.2.1, ports: {https: 8443}}"),
                          "services[0].endpoints[0].ports"),
    "no services key": ("servcies: []\n", "services"),
    "services not a list": ("services: {web: 1}\n", "services"),
}


RunCli = Callable[[str, str], tuple[int, str, Path]]


@pytest.fixture
def run_cli(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> RunCli:
    def run(config: str, inventory: str) -> tuple[int, str, Path]:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config)
        (tmp_path / "inventory.yaml").write_text(inventory)
        kube.reset_requests()
        code = main(["run", "-c", str(cfg), "--kubeconfig", str(kubeconfig)])
        return code, capsys.readouterr().err, cfg
    return run


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(case: str, run_cli: RunCli, kube: KubeApiServer) -> None:
    config, inventory, _, field = CONFIG_CASES[case]
    code, err, cfg = run_cli(config, inventory)
    assert code == 2, err
    assert f"{cfg}: {field}" in err, err
    assert kube.requests == []


@pytest.mark.parametrize("case", sorted(INVENTORY_CASES))
def test_bad_inventory(case: str, run_cli: RunCli, kube: KubeApiServer,
                       tmp_path: Path) -> None:
    inventory, field = INVENTORY_CASES[case]
    code, err, _ = run_cli(STATIC, inventory)
    assert code == 2, err
    assert f"{tmp_path / 'inventory.yaml'}: {field}" in err, err
    assert kube.requests == []


def test_missing_inventory_file_names_the_config_field(run_cli: RunCli,
                                                       kube: KubeApiServer) -> None:
    config = "sources: [{name: a, provider: static, path: missing.yaml}]\n"
    code, err, cfg = run_cli(config, "")
    assert code == 2
    assert f"{cfg}: sources[0].path: inventory file" in err
    assert "missing.yaml" in err and "not found" in err
    assert kube.requests == []


def test_unknown_provider_lists_the_installed_ones(run_cli: RunCli) -> None:
    _, err, _ = run_cli("sources: [{name: a, provider: nope}]\n", "")
    assert "installed providers:" in err
    for name in ("static", "consul", "aws_ec2", "aws_rds"):
        assert name in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "-c", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_validate_reports_bad_inventory_without_a_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text(STATIC)
    (tmp_path / "inventory.yaml").write_text(INVENTORY_CASES["bad IP"][0])
    assert main(["validate", "-c", str(tmp_path / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert "services[0].endpoints[0].address" in err and "192.0.2.300" in err


def test_a_secret_option_is_never_echoed(run_cli: RunCli, kube: KubeApiServer) -> None:
    config = ("sources: [{name: c, provider: consul, url: 'http://127.0.0.1:1', "
              "token: [s3cr3t-t0ken]}]\n")
    code, err, cfg = run_cli(config, "")
    assert code == 2
    assert f"{cfg}: sources[0].token" in err
    assert "s3cr3t-t0ken" not in err
    assert kube.requests == []
