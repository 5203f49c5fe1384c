"""The plugin API v1 itself: class checks at definition, the discover() result, the shared
option types, the core-owned source keys, secrets, and the import boundary of providers."""

from __future__ import annotations

import ast
import logging
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from syncer import plugin
from syncer.config import SourceConfig
from syncer.plugin import (
    Backend,
    ConfigPath,
    Discovery,
    Kept,
    PortNumber,
    Provider,
    ProviderOptions,
    Secret,
    ServiceName,
    ServicePort,
    ServiceSpec,
    group_services,
    redact,
)

ROOT = Path(__file__).resolve().parent.parent


class _Options(ProviderOptions):
    path: str = "x"


class _OtherOptions(ProviderOptions):
    pass


def test_a_well_formed_provider_class_is_accepted() -> None:
    class Fine(Provider[_Options]):
        Options = _Options
        summary = "fine"

        def discover(self) -> list[ServiceSpec]:
            return []

    assert Fine.Options is _Options


@pytest.mark.parametrize(("body", "problem"), [
    ({"summary": "s", "discover": lambda self: []}, "set `Options`"),
    ({"Options": _OtherOptions, "summary": "s", "discover": lambda self: []},
     "declared as Provider[_Options]"),
    ({"Options": _Options, "discover": lambda self: []}, "set `summary`"),
    ({"Options": _Options, "summary": "  ", "discover": lambda self: []}, "set `summary`"),
    ({"Options": _Options, "summary": "s"}, "implement discover()"),
    ({"Options": _Options, "summary": "s", "discover": lambda self: [],
      "optional_imports": {"consul": 1}}, "optional_imports"),
])
def test_a_provider_class_breaking_the_contract_fails_when_it_is_defined(
        body: dict[str, object], problem: str) -> None:
    with pytest.raises(TypeError, match=r"provider class .*Broken: ") as info:
        types.new_class("Broken", (Provider[_Options],), exec_body=lambda ns: ns.update(body))
    assert problem in str(info.value)


def test_options_may_not_declare_a_key_the_core_owns() -> None:
    class Namespaced(ProviderOptions):
        namespace: str | None = None

    with pytest.raises(TypeError, match="declares 'namespace', which the core handles"):
        class P(Provider[Namespaced]):
            Options = Namespaced
            summary = "s"

            def discover(self) -> list[ServiceSpec]:
                return []


def test_an_intermediate_base_class_can_leave_the_contract_to_its_subclasses() -> None:
    class Base(Provider[_Options], abstract=True):
        def helper(self) -> str:
            return "shared"

    class Concrete(Base):
        Options = _Options
        summary = "s"

        def discover(self) -> list[ServiceSpec]:
            return []

    assert Concrete.Options is _Options
    with pytest.raises(TypeError, match="set `Options`"):
        class Forgot(Base):
            summary = "s"

            def discover(self) -> list[ServiceSpec]:
                return []


def test_the_core_owned_keys_are_exactly_the_keys_of_a_source() -> None:
    assert set(SourceConfig.model_fields) == plugin.CORE_SOURCE_KEYS


def test_discover_may_return_a_plain_list_or_a_discovery() -> None:
    spec = ServiceSpec(name="db", ports=(ServicePort("", 5432),))
    assert Discovery.of([spec]) == Discovery((spec,))
    found = Discovery((spec,), (Kept("web", "ports disagree"),))
    assert Discovery.of(found) is found
    with pytest.raises(TypeError, match="holding a dict"):
        Discovery.of([{"name": "db"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got NoneType"):
        Discovery.of(None)  # type: ignore[arg-type]


def test_the_port_rule_explicit_port_wins_else_the_backends_must_agree() -> None:
    a = Backend("192.0.2.1", ports={"": 8080})
    b = Backend("192.0.2.2", ports={"": 8081})
    c = Backend("192.0.2.3")
    agreed = group_services([("web", a), ("web", Backend("192.0.2.4", ports={"": 8080}))])
    assert [(s.name, s.ports) for s in agreed.services] == [("web", (ServicePort("", 8080),))]
    disagree = group_services([("web", a), ("web", b), ("db", a)])
    assert [s.name for s in disagree.services] == ["db"]
    assert [k.name for k in disagree.kept] == ["web"]
    assert "8080, 8081; set `port`" in disagree.kept[0].reason
    explicit = group_services([("web", a), ("web", b), ("web", c)],
                              ports=(ServicePort("", 80),))
    (web,) = explicit.services
    assert web.ports == (ServicePort("", 80),)
    assert [dict(x.ports) for x in web.backends] == [{"": 8080}, {"": 8081}, {}]
    untold = group_services([("web", c)])
    assert untold.kept == (Kept("web", "no backend tells its port; set `port`"),)
    empty = group_services([], always=["web"], ports=(ServicePort("", 80),))
    assert [(s.name, s.backends) for s in empty.services] == [("web", ())]


def test_grouping_drops_a_name_that_cannot_be_a_service(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    found = group_services([("Not_A_Name", Backend("192.0.2.1", ports={"": 80}))],
                           log=logging.getLogger("test"))
    assert found == Discovery()
    assert "expected a Service name" in caplog.text


def test_shared_option_types_use_the_one_rule_and_message(tmp_path: Path) -> None:
    class Options(ProviderOptions):
        service: ServiceName
        port: PortNumber
        file: ConfigPath

    with pytest.raises(ValidationError) as info:
        Options.model_validate({"service": "Web", "port": "80", "file": ""})
    text = str(info.value)
    assert "expected a Service name (a DNS-1035 label" in text
    assert "valid integer" in text
    assert "expected a file path" in text
    ok = Options.model_validate({"service": "web", "port": 80, "file": "t.yaml"},
                                context={"config_dir": tmp_path})
    assert ok.file == tmp_path / "t.yaml"


def test_a_secret_is_never_shown_but_can_be_revealed() -> None:
    class Options(ProviderOptions):
        token: Secret

    options = Options.model_validate({"token": "s3cr3t-token-value"})
    assert options.token.reveal() == "s3cr3t-token-value"
    for shown in (repr(options), str(options), options.model_dump_json(), str(options.token)):
        assert "s3cr3t" not in shown
    assert redact("GET / with s3cr3t-token-value failed") == "GET / with [redacted] failed"
    with pytest.raises(ValidationError) as info:
        Options.model_validate({"token": ["s3cr3t-in-a-list"]})
    assert "s3cr3t" not in str(info.value)


def test_providers_import_nothing_of_the_core_but_the_plugin_api() -> None:
    modules = [*sorted((ROOT / "providers").glob("*.py")),
               *sorted((ROOT / "examples" / "plugins").rglob("*.py"))]
    modules = [m for m in modules if "tests" not in m.relative_to(ROOT).parts[2:]]
    assert len(modules) >= 5
    offenders = []
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{module.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] == "syncer" and n != "syncer.plugin"]
    assert offenders == []
