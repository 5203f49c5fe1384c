"""`endpoints-sync schema`: a draft 2020-12 JSON Schema that accepts the configurations
`validate` accepts (the examples, the README's, the ones the tests use) and refuses the
mistakes it refuses, per provider.

The schema is printed by the real CLI once; configurations are then checked in-process with
`jsonschema` (as yaml-language-server would) and against the real loader (syncer.run.load).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from syncer.errors import ConfigError
from syncer.plugin import Provider, ProviderOptions, ServiceSpec
from syncer.registry import PluginError, installed
from syncer.run import load
from syncer.schema import config_schema
from tests.cli import ROOT, cli
from tests.test_registry_errors import GOOD_PLUGIN, fake_dist

JSON = dict[str, Any]


@pytest.fixture(scope="module")
def schema() -> JSON:
    result = cli("schema")
    assert result.returncode == 0, result.stderr
    document: JSON = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    return document


def errors(schema: JSON, config: JSON) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(config)]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def source_config(*sources: JSON) -> JSON:
    return {"owner": "schema-test", "namespace": "external", "sources": list(sources)}


AWS_COMMON = {"regions": ["us-east-1"], "endpoint_url": "http://127.0.0.1:1", "max_attempts": 1}
ACCEPTED: dict[str, Any] = {
    "ceph-rgw example": (ROOT / "examples/ceph-rgw/config.yaml").read_text,
    "csv plugin example": (ROOT / "examples/csv/config.yaml").read_text,
    "vms example (probes, zone hints)": (ROOT / "examples/vms/config.yaml").read_text,
    "README example": readme_example,
    # The shapes tests/test_e2e_static.py, test_secrets.py and test_aws_e2e.py write.
    "static": lambda: source_config({"name": "rgw", "provider": "static",
                                     "path": "inventory.yaml"}),
    "consul": lambda: source_config(
        {"name": "consul-ok", "provider": "consul", "url": "http://127.0.0.1:1",
         "token": "t0ken-value", "services": ["payments"], "timeout_seconds": 2},
        {"name": "consul-down", "provider": "consul", "url": "http://127.0.0.1:1",
         "token_file": "consul-token", "services": ["payments"], "name_prefix": "down-",
         "port": 443, "port_name": "https", "zone_node_meta": "zone"}),
    "aws": lambda: source_config(
        {"name": "web", "provider": "aws_ec2", **AWS_COMMON, "tags": {"app": "web"},
         "service": "web", "port": 8080},
        {"name": "dbs", "provider": "aws_rds", **AWS_COMMON, "role": "writer"}),
    "core keys": lambda: source_config(
        {"name": "rgw", "provider": "static", "path": "i.yaml", "namespace": "storage",
         "labels": {"team": "storage"}, "annotations": {}, "allow_empty": True,
         "deny_cidrs": ["203.0.113.0/24"], "allow_cidrs": ["2001:db8::/32"],
         "max_change_ratio": 0.9, "remove_after_misses": 3}),
}


def as_document(config: Any) -> JSON:
    document: JSON = yaml.safe_load(config) if isinstance(config, str) else config
    return document


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_the_schema_accepts_what_validate_accepts(case: str, schema: JSON,
                                                  tmp_path: Path) -> None:
    document = as_document(ACCEPTED[case]())
    assert errors(schema, document) == []
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    assert len(load(str(config)).sources) == len(document["sources"])  # the loader agrees


STATIC = {"name": "rgw", "provider": "static", "path": "inventory.yaml"}
REFUSED: dict[str, tuple[JSON, str]] = {
    "unknown provider option": (
        source_config(STATIC | {"bogus": 1}), "'bogus' was unexpected"),
    "another provider's option": (
        source_config(STATIC | {"services": ["payments"]}), "'services' was unexpected"),
    "option of the wrong type": (source_config(STATIC | {"path": 5}), "5 is not of type"),
    "core key of the wrong type": (
        source_config(STATIC | {"allow_empty": "yes"}), "'yes' is not of type 'boolean'"),
    "port as text": (
        source_config({"name": "c", "provider": "consul", "port": "80"}), "'80' is not valid"),
    "port out of range": (
        source_config({"name": "c", "provider": "consul", "port": 0}), "0 is not valid"),
    "missing required option": (
        source_config({"name": "rgw", "provider": "static"}), "'path' is a required property"),
    "unknown provider": (source_config({"name": "x", "provider": "nope"}), "'nope' is not one"),
    "no provider": (source_config({"name": "x", "path": "i.yaml"}), "'provider' is a required"),
    "unknown top-level key": (source_config(STATIC) | {"ownr": "x"}, "'ownr' was unexpected"),
    "no sources": ({"owner": "x", "sources": []}, "should be non-empty"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_schema_refuses_what_validate_refuses(case: str, schema: JSON,
                                                  tmp_path: Path) -> None:
    document, expected = REFUSED[case]
    found = errors(schema, document)
    assert any(expected in message for message in found), found
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError):
        load(str(config))


def loadable() -> list[str]:
    names = []
    for name, plugin in installed().items():
        try:
            plugin.load()
        except PluginError:
            continue
        names.append(name)
    return names


def refs_in(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if "$ref" in node else set()
        return own.union(*map(refs_in, node.values()))
    return set().union(*map(refs_in, node)) if isinstance(node, list) else set()


def assert_defs_are_all_used(schema: JSON) -> None:
    """Every $ref points at a definition and every definition is referred to."""
    assert refs_in(schema) == {f"#/$defs/{key}" for key in schema["$defs"]}


def test_the_schema_names_every_installed_provider(schema: JSON) -> None:
    assert_defs_are_all_used(schema)
    items = schema["properties"]["sources"]["items"]
    assert items["properties"]["provider"]["enum"] == loadable()
    assert {"static", "consul", "aws_ec2", "aws_rds"} <= set(loadable())
    chosen = [b["if"]["properties"]["provider"]["const"] for b in items["allOf"]]
    assert chosen == loadable()
    static = schema["$defs"]["source:static"]
    assert static["additionalProperties"] is False
    assert static["description"] == "Services and addresses listed in a YAML or JSON inventory file"
    assert "relative to the" in static["properties"]["path"]["description"]  # the docstring


def test_a_broken_plugin_is_left_out_with_a_warning(tmp_path: Path) -> None:
    env = fake_dist(tmp_path / "site", "mixed-plugins",
                    {"fake": "fake_plugin:FakeProvider", "shiny": "shiny_plugin:Shiny"},
                    {"fake_plugin": GOOD_PLUGIN,
                     "shiny_plugin": "raise RuntimeError('boom at import')\n"})
    result = cli("schema", env=env)
    assert result.returncode == 0, result.stderr
    assert "warning left out of the schema: provider 'shiny' (shiny_plugin:Shiny, from " \
           "mixed-plugins) failed to import: RuntimeError: boom at import" in result.stderr
    schema = json.loads(result.stdout)
    names = schema["properties"]["sources"]["items"]["properties"]["provider"]["enum"]
    assert "fake" in names and "shiny" not in names
    fake = {"name": "f", "provider": "fake"}
    assert errors(schema, source_config(fake | {"port": 80, "labels_from": ["a"]})) == []
    assert errors(schema, source_config(fake | {"port": 0}))
    assert errors(schema, source_config(fake | {"token": 5}))
    assert errors(schema, source_config({"name": "s", "provider": "shiny"}))


def two_providers_with_clashing_model_names() -> dict[str, Any]:
    """Two plugins whose option models (and a nested model) have the same class names."""
    from pydantic import BaseModel

    def make(field: str) -> type[Provider[Any]]:
        inner = type("Inner", (BaseModel,), {"__annotations__": {field: int}})
        options = type("Options", (ProviderOptions,), {"__annotations__": {"inner": inner},
                                                       "__module__": f"plugin_{field}"})

        class Made(Provider[options]):  # type: ignore[valid-type]
            Options = options
            summary = f"the {field} one"

            def discover(self) -> list[ServiceSpec]:
                return []

        return Made

    return {"first": make("alpha"), "second": make("beta")}


def test_model_names_of_different_plugins_do_not_clash() -> None:
    schema = config_schema(two_providers_with_clashing_model_names())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert_defs_are_all_used(schema)
    first = {"name": "a", "provider": "first"}
    second = {"name": "b", "provider": "second"}
    assert errors(schema, source_config(first | {"inner": {"alpha": 1}})) == []
    assert errors(schema, source_config(second | {"inner": {"beta": 1}})) == []
    assert errors(schema, source_config(first | {"inner": {"alpha": "x"}}))
    assert errors(schema, source_config(second | {"inner": {"beta": "x"}}))
    assert errors(schema, source_config(first | {"inner": {}}))  # alpha is required
