"""The static provider on its own: YAML and JSON inventories, defaults, relative paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.static import StaticOptions, StaticProvider
from syncer.errors import ConfigError
from syncer.model import Backend, ServicePort
from syncer.plugin import SourceContext


def provider(tmp_path: Path, path: str) -> StaticProvider:
    ctx = SourceContext(source="inv", config_file=str(tmp_path / "config.yaml"),
                        field_path="sources[0]", config_dir=tmp_path)
    return StaticProvider(StaticOptions(path=path), ctx)


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
