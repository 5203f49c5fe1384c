"""`endpoints-sync providers [NAME] [-o text|json]`, and the redaction of what the CLI prints.

Through the CLI in a subprocess, with fake third-party distributions on its PYTHONPATH
(tests/test_registry_errors.fake_dist); the readable type names in-process, as a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from syncer.catalog import type_name
from syncer.plugin import (
    Cidr,
    ConfigPath,
    DnsName,
    IpAddress,
    Namespace,
    PortName,
    PortNumber,
    ProviderOptions,
    Secret,
    ServiceName,
)
from tests.cli import cli
from tests.test_registry_errors import GOOD_PLUGIN, fake_dist

FAKE = {"fake": "fake_plugin:FakeProvider"}
DEFAULT_SECRET = "default-token-3c1f9a"
SECRET_DEFAULT_PLUGIN = GOOD_PLUGIN.replace(
    "token: Secret | None = None", f"token: Secret = Secret({DEFAULT_SECRET!r})")
JSON_KEYS = ["name", "distribution", "version", "entry_point", "summary", "options", "error"]
OPTION_KEYS = ["name", "type", "required", "default", "secret", "description"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fake distribution `fake-plugin` 1.0 with the provider `fake` (a default secret)."""
    return fake_dist(tmp_path / "site", "fake-plugin", FAKE,
                     {"fake_plugin": SECRET_DEFAULT_PLUGIN})


def test_providers_lists_every_installed_one_with_its_options(env: dict[str, str]) -> None:
    result = cli("providers", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("aws_ec2", "aws_rds", "consul", "static", "fake"):
        assert f"\n{name}  (" in f"\n{out}"
    fake = out.split("\nfake  (", 1)[1].split("\n\n", 1)[0]
    assert fake == (
        "fake-plugin 1.0, fake_plugin:FakeProvider)\n"
        "    Nothing at all, for tests\n"
        "    port: PortNumber = 8080\n"
        "        The port every Service gets.\n"
        "    token: Secret (optional; the default is not shown)\n"
        "        An API token (never shown).\n"
        "    labels_from: list[str] | None (default: none)")
    assert DEFAULT_SECRET not in out + result.stderr
    assert "static  (endpoints-sync " in out
    assert "    path: ConfigPath (required)\n" in out


def test_providers_name_shows_one(env: dict[str, str]) -> None:
    result = cli("providers", "static", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("static  (endpoints-sync ")
    assert "providers.static:StaticProvider" in result.stdout
    assert "fake" not in result.stdout and "consul" not in result.stdout
    assert "path: ConfigPath (required)" in result.stdout


def test_providers_json_is_the_documented_shape(env: dict[str, str]) -> None:
    result = cli("providers", "-o", "json", env=env)
    listed = json.loads(result.stdout)
    assert isinstance(listed, list)
    assert all(list(p) == JSON_KEYS for p in listed)
    assert all(list(o) == OPTION_KEYS for p in listed for o in p["options"])
    assert [p["name"] for p in listed] == sorted(p["name"] for p in listed)
    (fake,) = [p for p in listed if p["name"] == "fake"]
    assert fake == {
        "name": "fake", "distribution": "fake-plugin", "version": "1.0",
        "entry_point": "fake_plugin:FakeProvider", "summary": "Nothing at all, for tests",
        "options": [
            {"name": "port", "type": "PortNumber", "required": False, "default": 8080,
             "secret": False, "description": "The port every Service gets."},
            {"name": "token", "type": "Secret", "required": False, "default": None,
             "secret": True, "description": "An API token (never shown)."},
            {"name": "labels_from", "type": "list[str] | None", "required": False,
             "default": None, "secret": False, "description": ""},
        ],
        "error": None,
    }
    (static,) = [p for p in listed if p["name"] == "static"]
    assert static["distribution"] == "endpoints-sync" and static["error"] is None
    assert {"name": "path", "type": "ConfigPath", "required": True, "default": None,
            "secret": False} .items() <= static["options"][0].items()
    assert DEFAULT_SECRET not in result.stdout
    one = cli("providers", "fake", "-o", "json", env=env)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == fake  # NAME: the object itself


def test_unknown_name_exits_2_listing_the_installed_ones(env: dict[str, str]) -> None:
    result = cli("providers", "nope", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown provider 'nope'; installed providers: aws_ec2, aws_rds, " in result.stderr
    assert "fake" in result.stderr and "static" in result.stderr


def test_a_broken_plugin_is_shown_with_its_error_after_the_others(tmp_path: Path) -> None:
    env = fake_dist(tmp_path / "site", "mixed-plugins",
                    {"fake": "fake_plugin:FakeProvider", "shiny": "shiny_plugin:Shiny"},
                    {"fake_plugin": GOOD_PLUGIN,
                     "shiny_plugin": "raise RuntimeError('boom at import')\n"})
    result = cli("providers", env=env)
    assert result.returncode == 2
    assert "fake  (mixed-plugins 1.0, fake_plugin:FakeProvider)\n    Nothing at all" \
           in result.stdout
    assert "static  (endpoints-sync" in result.stdout
    assert "shiny  (mixed-plugins 1.0, shiny_plugin:Shiny)\n    unavailable: provider " \
           "'shiny' (shiny_plugin:Shiny, from mixed-plugins) failed to import: " \
           "RuntimeError: boom at import" in result.stdout
    assert "error   provider 'shiny' (shiny_plugin:Shiny" in result.stderr
    assert "Traceback" not in result.stderr

    as_json = cli("providers", "-o", "json", env=env)
    assert as_json.returncode == 2
    (shiny,) = [p for p in json.loads(as_json.stdout) if p["name"] == "shiny"]
    assert shiny["options"] == [] and shiny["summary"] == ""
    assert shiny["error"].endswith("failed to import: RuntimeError: boom at import")
    # Only what is shown decides: the others alone are fine.
    assert cli("providers", "fake", env=env).returncode == 0
    assert cli("providers", "shiny", env=env).returncode == 2


LEAKY_PLUGIN = '''
from syncer.plugin import (Backend, Provider, ProviderOptions, Secret, ServicePort,
                           ServiceSpec)


class LeakyOptions(ProviderOptions):
    token: Secret
    """The API token."""


class LeakyProvider(Provider[LeakyOptions]):
    Options = LeakyOptions
    summary = "Puts its token where it should not"

    def discover(self) -> list[ServiceSpec]:
        token = self.options.token.reveal()
        return [ServiceSpec(name="leaky", ports=(ServicePort("", 80),),
                            backends=(Backend("192.0.2.10"),),
                            annotations={"example.com/oops": token})]
'''


def test_what_the_cli_prints_on_stdout_is_redacted(tmp_path: Path) -> None:
    # A provider that copies its secret into an annotation: render shows it cut out.
    token = "tok-9f8e7d6c5b4a"
    env = fake_dist(tmp_path / "site", "leaky-plugin", {"leaky": "leaky_plugin:LeakyProvider"},
                    {"leaky_plugin": LEAKY_PLUGIN})
    config = tmp_path / "config.yaml"
    config.write_text(f"sources:\n  - {{name: leaky, provider: leaky, token: {token}}}\n")
    for output in ("yaml", "json"):
        result = cli("render", "-c", config, "-o", output, env=env)
        assert result.returncode == 0, result.stderr
        assert "example.com/oops" in result.stdout and "[redacted]" in result.stdout
        assert token not in result.stdout + result.stderr
    validated = cli("validate", "-c", config, env=env)
    assert validated.returncode == 0, validated.stderr
    assert token not in validated.stdout + validated.stderr


class Sample(ProviderOptions):
    name: ServiceName
    maybe_name: ServiceName | None = None
    namespaces: tuple[Namespace, ...] = ()
    port: PortNumber = 80
    maybe_port: PortNumber | None = None
    port_name: PortName | None = None
    host: DnsName | None = None
    networks: tuple[Cidr, ...] = ()
    address: IpAddress | None = None
    ca: ConfigPath | None = None
    token: Secret | None = None
    mode: Literal["sync", "upsert-only"] = "sync"
    tags: list[str] | None = None
    meta: dict[str, int] = Field(default_factory=dict)
    ratio: float = 0.5


TYPE_NAMES = {
    "name": "ServiceName", "maybe_name": "ServiceName | None",
    "namespaces": "tuple[Namespace, ...]", "port": "PortNumber",
    "maybe_port": "PortNumber | None", "port_name": "PortName | None",
    "host": "DnsName | None", "networks": "tuple[Cidr, ...]", "address": "IpAddress | None",
    "ca": "ConfigPath | None", "token": "Secret | None", "mode": "'sync' | 'upsert-only'",
    "tags": "list[str] | None", "meta": "dict[str, int]", "ratio": "float",
}


@pytest.mark.parametrize("field", sorted(TYPE_NAMES))
def test_readable_type_names(field: str) -> None:
    info: Any = Sample.model_fields[field]
    assert type_name(info.annotation, info.metadata) == TYPE_NAMES[field]


def test_a_constrained_plain_type_is_not_taken_for_a_shared_one() -> None:
    class Other(ProviderOptions):
        count: int = Field(default=1, ge=1, le=65535)

    info = Other.model_fields["count"]
    assert type_name(info.annotation, info.metadata) == "int"  # not strict: not PortNumber
