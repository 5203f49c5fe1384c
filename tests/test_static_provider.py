"""The static provider on its own: YAML and JSON inventories, defaults, relative paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.static import StaticOptions, StaticProvider
from syncer.errors import ConfigError
from syncer.model import Backend, ServicePort
from syncer.options import CONFIG_DIR
from syncer.plugin import SourceContext, service_name_problem


def provider(tmp_path: Path, path: str) -> StaticProvider:
    ctx = SourceContext(source="inv", config_file=str(tmp_path / "config.yaml"),
                        field_path="sources[0]", config_dir=tmp_path)
    # As the registry builds it: a relative path is resolved against the config's folder.
    options = StaticOptions.model_validate({"path": path}, context={CONFIG_DIR: tmp_path})
    return StaticProvider(options, ctx)


def test_json_inventory_is_read_like_yaml(tmp_path: Path) -> None:
    inventory = {"services": [{"name": "db", "namespace": "external",
                               "ports": [{"name": "pg", "port": 5432}],
                               "endpoints": [{"address": "2001:DB8:0::1"},
                                             {"address": "db-2.example.com", "ready": False}]}]}
    (tmp_path / "inv.json").write_text(json.dumps(inventory))
    (spec,) = provider(tmp_path, "inv.json").discover()
    assert spec.name == "db" and spec.namespace == "external"
    assert spec.ports == (ServicePort("pg", 5432),)
    assert spec.backends == (Backend("2001:db8::1", {"pg": 5432}),
                             Backend("db-2.example.com", {"pg": 5432}, ready=False))


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "inv.json").write_text('{"services": [\n  {"name": "db",}\n]}')
    with pytest.raises(ConfigError) as e:
        provider(tmp_path, "inv.json").discover()
    assert str(e.value).startswith(f"{tmp_path / 'inv.json'}: line 2")
    assert "invalid JSON" in str(e.value)


def test_multi_port_service_with_named_backend_ports(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text(
        "services:\n  - name: rgw\n    ports: [{name: http, port: 80}, {name: s3, port: 443,"
        " protocol: TCP, app_protocol: https}]\n    endpoints:\n"
        "      - {address: 192.0.2.1, ports: {http: 8080, s3: 8443}, zone: z1, "
        "hostname: rgw-1}\n")
    (spec,) = provider(tmp_path, "inv.yaml").discover()
    assert spec.ports[1] == ServicePort("s3", 443, "TCP", "https")
    assert spec.backends == (Backend("192.0.2.1", {"http": 8080, "s3": 8443}, zone="z1",
                                     hostname="rgw-1"),)


def test_empty_service_list_is_valid(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text("services: []\n")
    assert provider(tmp_path, "inv.yaml").discover() == []


def test_check_reads_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        provider(tmp_path, "missing.yaml").check()
    assert e.value.field == "sources[0].path"


def test_the_path_is_resolved_against_the_config_folder_when_loaded(tmp_path: Path) -> None:
    p = provider(tmp_path, "sub/inv.yaml")
    assert p.options.path == tmp_path / "sub" / "inv.yaml"


def test_names_and_ports_are_refused_with_the_shared_messages(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text(
        "services:\n  - name: Web\n    ports: [{name: http, port: 80}]\n")
    with pytest.raises(ConfigError) as e:
        provider(tmp_path, "inv.yaml").discover()
    assert e.value.field == "services[0].name"
    assert e.value.message == service_name_problem("Web")
    (tmp_path / "inv.yaml").write_text(
        "services:\n  - name: web\n    ports: [{name: http, port: 80}]\n"
        "    endpoints: [{address: 192.0.2.1, ports: {http: 0}}]\n")
    with pytest.raises(ConfigError) as e:
        provider(tmp_path, "inv.yaml").discover()
    assert e.value.field == "services[0].endpoints[0].ports.http"
    assert "greater than or equal to 1" in e.value.message
