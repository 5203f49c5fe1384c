"""The example third-party plugin (examples/plugins/endpoints-sync-csv), installed like any
other distribution, end to end through the CLI: a plugin needs no change to the core. And a
provider written to the original README example (a plain list of ServiceSpec) still works."""

from __future__ import annotations

import ast
import json
import subprocess
import textwrap
from pathlib import Path

from tests.cli import ROOT, cli, run_sync
from tests.kubeapi import KubeApiServer

EXAMPLE = ROOT / "examples" / "csv" / "config.yaml"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def slice_pairs(kube: KubeApiServer, service: str, ns: str = "external") -> set[str]:
    return {f"{a}:{s['ports'][0]['port']}" for s in kube.list_objects("EndpointSlice", ns)
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s["endpoints"] for a in e["addresses"]}


def test_providers_lists_the_plugin_with_its_distribution() -> None:
    out = ok(cli("providers", "csv")).stdout
    assert "csv" in out
    assert "endpoints-sync-csv" in out
    assert "path" in out


def test_validate_and_render_the_example_config() -> None:
    assert "inventory (csv)" in ok(cli("validate", "-c", EXAMPLE)).stdout
    rendered = ok(cli("render", "-c", EXAMPLE)).stdout
    for address in ("192.0.2.10", "192.0.2.11", "198.51.100.20", "198.51.100.21",
                    "2001:db8::21"):
        assert f"- {address}\n" in rendered


def test_run_syncs_the_csv_inventory_and_a_second_run_writes_nothing(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    ok(run_sync(EXAMPLE, kubeconfig))
    db = kube.get_object("Service", "external", "inventory-db")
    assert db is not None
    assert [p["port"] for p in db["spec"]["ports"]] == [5432]
    assert db["metadata"]["annotations"]["endpoints-sync.io/source"] == "inventory"
    assert slice_pairs(kube, "inventory-db") == {"192.0.2.10:5432", "192.0.2.11:5432"}
    assert slice_pairs(kube, "search") == {"198.51.100.20:9200", "198.51.100.21:9200",
                                           "2001:db8::21:9200"}
    zones = {e["addresses"][0]: e.get("zone") for s in kube.list_objects("EndpointSlice",
                                                                          "external")
             for e in s["endpoints"]}
    assert zones["192.0.2.11"] == "zone-b"

    kube.reset_requests()
    err = ok(run_sync(EXAMPLE, kubeconfig)).stderr
    assert kube.write_requests() == []
    assert "summary created=0 updated=0 deleted=0" in err


# The README's example provider before API v1, as a third party would have shipped it: its
# own module and distribution metadata on PYTHONPATH, nothing installed into the core.
README_ERA_PROVIDER = '''
import json
import urllib.request
from types import SimpleNamespace

from syncer.plugin import (Backend, Provider, ProviderOptions, ServicePort, ServiceSpec,
                           TransientSourceError)


def fetch(url, tag):
    with urllib.request.urlopen(url) as answer:
        return [SimpleNamespace(**d) for d in json.load(answer) if tag in d["tags"]]


class NetboxOptions(ProviderOptions):      # pydantic; unknown keys are errors
    url: str
    tag: str = "k8s"

class NetboxProvider(Provider[NetboxOptions]):
    Options = NetboxOptions
    summary = "Devices tagged in NetBox"

    def discover(self) -> list[ServiceSpec]:
        try:
            devices = fetch(self.options.url, self.options.tag)
        except OSError as e:
            raise TransientSourceError(f"netbox {self.options.url}: {e}") from e
        return [ServiceSpec(name="netbox-devices", ports=(ServicePort("ssh", 22),),
                            backends=tuple(Backend(d.ip) for d in devices))]
'''


def test_a_provider_written_to_the_original_readme_example_still_works(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "endpoints_sync_netbox-0.1.dist-info").mkdir(parents=True)
    (site / "endpoints_sync_netbox.py").write_text(README_ERA_PROVIDER)
    (site / "endpoints_sync_netbox-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: endpoints-sync-netbox\nVersion: 0.1\n")
    (site / "endpoints_sync_netbox-0.1.dist-info" / "entry_points.txt").write_text(
        "[endpoints_sync.providers]\nnetbox = endpoints_sync_netbox:NetboxProvider\n")
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps([{"ip": "203.0.113.7", "tags": ["k8s"]},
                                   {"ip": "203.0.113.8", "tags": ["k8s", "db"]},
                                   {"ip": "203.0.113.9", "tags": ["lab"]}]))
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        owner: cluster-a
        namespace: external
        sources:
          - {{name: netbox, provider: netbox, url: "{devices.as_uri()}"}}
        """))
    env = {"PYTHONPATH": str(site)}

    assert "endpoints-sync-netbox" in ok(cli("providers", "netbox", env=env)).stdout
    ok(run_sync(config, kubeconfig, env=env))
    svc = kube.get_object("Service", "external", "netbox-devices")
    assert svc is not None
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("ssh", 22)]
    assert slice_pairs(kube, "netbox-devices") == {"203.0.113.7:22", "203.0.113.8:22"}


def test_the_guide_shows_the_example_plugin_in_full() -> None:
    guide = (ROOT / "docs" / "writing-a-provider.md").read_text(encoding="utf-8")
    plugin = ROOT / "examples" / "plugins" / "endpoints-sync-csv"
    for part in ("endpoints_sync_csv.py", "pyproject.toml", "tests/test_csv_contract.py"):
        assert (plugin / part).read_text(encoding="utf-8") in guide, f"{part} changed"


def test_the_plugin_is_under_40_lines_and_imports_only_the_plugin_api() -> None:
    """Lines of code: every line but blank ones, comments and docstrings."""
    source = (ROOT / "examples/plugins/endpoints-sync-csv/endpoints_sync_csv.py").read_text()
    tree = ast.parse(source)
    bodies = [b for node in ast.walk(tree) if isinstance(b := getattr(node, "body", None), list)]
    docstrings = {n for body in bodies for stmt in body
                  if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                  and isinstance(stmt.value.value, str)
                  for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)}
    code = [line for n, line in enumerate(source.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#") and n not in docstrings]
    assert len(code) < 40
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"csv", "syncer.plugin"}
