"""The keys every source has, handled by the core for every provider: `namespace`, `labels`,
`annotations` (and the address policy and guards, tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli import cli

INVENTORY = {"services": [
    {"name": "web", "ports": [{"port": 80}], "labels": {"team": "web", "tier": "front"},
     "endpoints": [{"address": "192.0.2.10"}]},
    {"name": "db", "namespace": "data", "ports": [{"port": 5432}],
     "endpoints": [{"address": "192.0.2.20"}]},
]}


def _config(tmp_path: Path, **source: Any) -> Path:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(INVENTORY), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"namespace": "external", "sources": [
        {"name": "inv", "provider": "static", "path": "inventory.yaml", **source}]}),
        encoding="utf-8")
    return config


def _services(config: Path) -> dict[str, dict[str, Any]]:
    result = cli("render", "-c", config, "-o", "json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    return {o["metadata"]["name"]: o["metadata"] for o in items if o["kind"] == "Service"}


def test_the_source_namespace_labels_and_annotations_apply_to_its_services(
        tmp_path: Path) -> None:
    services = _services(_config(tmp_path, namespace="shared", labels={"tier": "backend"},
                                 annotations={"example.com/owner": "ops"}))
    web, db = services["web"], services["db"]
    assert web["namespace"] == "shared"  # the source's namespace over the config's
    assert db["namespace"] == "data"  # a Service that names its own keeps it
    assert web["labels"]["team"] == "web"
    assert web["labels"]["tier"] == "backend"  # the configured label wins over the provider's
    assert db["labels"]["tier"] == "backend"
    assert web["annotations"]["example.com/owner"] == "ops"
    assert web["annotations"]["endpoints-sync.io/source"] == "inv"


def test_without_source_keys_the_config_namespace_applies(tmp_path: Path) -> None:
    services = _services(_config(tmp_path))
    assert services["web"]["namespace"] == "external"
    assert services["web"]["labels"]["tier"] == "front"


@pytest.mark.parametrize(("source", "field", "expected"), [
    ({"namespace": "Shared"}, "sources[0].namespace", "expected a namespace name"),
    ({"labels": {"bad key!": "x"}}, "sources[0].labels", "label"),
    ({"labels": {"tier": "x" * 64}}, "sources[0].labels", "label value"),
    ({"annotations": {"bad key!": "x"}}, "sources[0].annotations", "annotation"),
    ({"labels": ["tier"]}, "sources[0].labels", "dictionary"),
])
def test_bad_source_keys_are_configuration_errors(tmp_path: Path, source: dict[str, Any],
                                                  field: str, expected: str) -> None:
    config = _config(tmp_path, **source)
    result = cli("validate", "-c", config)
    assert result.returncode == 2
    assert f"{config}: {field}" in result.stderr
    assert expected in result.stderr
