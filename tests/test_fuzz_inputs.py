"""Property tests: whatever the configuration, inventory or provider options hold, the loaders
give a valid result or a ConfigError naming the file, never another exception."""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.static import StaticOptions, StaticProvider
from syncer.config import Config, load_config
from syncer.documents import config_error_from
from syncer.errors import ConfigError
from syncer.options import CONFIG_DIR
from syncer.plugin import ENTRY_POINT_GROUP, SourceContext

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = st.sampled_from(["owner", "namespace", "namespaces", "write", "policy", "adopt",
                        "max_delete_ratio", "max_endpoints_per_slice", "deny_cidrs", "hosts",
                        "sources", "name", "provider", "path", "services", "ports", "port",
                        "endpoints", "address", "ready", "zone", "hostname", "type", "labels",
                        "url", "token", "verify", "regions", "page_size", "<<", "x"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(["0120", "1:20", "no", "80", "static",
                                                     "192.0.2.1", "::ffff:192.0.2.1", "web"]))
DATA = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5),
                    max_leaves=25)
# YAML-ish text: the characters YAML gives meaning to, and some that it refuses.
YAMLISH = st.text(alphabet=st.sampled_from([*"ab0:1 -[]{},&*!|>'\"#%@`?\t\n<=~.", "\x00", "é",
                                            "\ufeff"]), max_size=80)


def _write(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


def _document(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


def _check_config(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "config.yaml", text)
        try:
            assert isinstance(load_config(path), Config)
        except ConfigError as e:
            assert e.file == str(path)


def _check_inventory(text: str, name: str = "inventory.yaml") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _write(folder, name, text)
        ctx = SourceContext(source="inv", config_file=str(folder / "config.yaml"),
                            field_path="sources[0]", config_dir=folder)
        try:
            options = StaticOptions.model_validate({"path": name}, context={CONFIG_DIR: folder})
            specs = StaticProvider(options, ctx).discover()
            assert isinstance(specs, list)
        except ConfigError as e:
            assert e.file in (str(path), ctx.config_file)


@FUZZ
@given(YAMLISH)
def test_any_text_as_a_config(text: str) -> None:
    _check_config(text)


@FUZZ
@given(DATA)
def test_any_data_as_a_config(data: Any) -> None:
    _check_config(_document(data))


@FUZZ
@given(st.fixed_dictionaries({"sources": st.lists(
    st.fixed_dictionaries({"name": SCALARS, "provider": st.sampled_from(["static", "consul"])},
                          optional={"allow_empty": SCALARS, "path": SCALARS}), max_size=2)},
    optional={"adopt": SCALARS, "max_delete_ratio": SCALARS,
              "max_endpoints_per_slice": SCALARS, "owner": SCALARS}))
def test_config_shaped_data(data: dict[str, Any]) -> None:
    _check_config(_document(data))


@FUZZ
@given(YAMLISH)
def test_any_text_as_an_inventory(text: str) -> None:
    _check_inventory(text)


@FUZZ
@given(DATA)
def test_any_data_as_an_inventory(data: Any) -> None:
    _check_inventory(_document(data))


ENDPOINT = st.fixed_dictionaries({"address": SCALARS}, optional={
    "port": SCALARS, "ready": SCALARS, "ports": DATA, "zone": SCALARS})
SERVICE = st.fixed_dictionaries(
    {"name": SCALARS | st.sampled_from(["web", "db"])},
    optional={"ports": st.lists(st.fixed_dictionaries({"port": SCALARS},
                                                      optional={"name": SCALARS}), max_size=2),
              "endpoints": st.lists(ENDPOINT, max_size=3), "type": SCALARS,
              "namespace": SCALARS})


@FUZZ
@given(st.lists(SERVICE, max_size=3), st.booleans())
def test_inventory_shaped_data(services: list[dict[str, Any]], as_json: bool) -> None:
    doc = {"services": services}
    if as_json:
        _check_inventory(json.dumps(doc), "inventory.json")
    else:
        _check_inventory(_document(doc))


OPTION_MODELS = {ep.name: ep.load().Options for ep in entry_points(group=ENTRY_POINT_GROUP)}


def test_every_builtin_provider_is_fuzzed() -> None:
    assert {"static", "consul", "aws_ec2", "aws_rds"} <= set(OPTION_MODELS)


@FUZZ
@given(st.sampled_from(sorted(OPTION_MODELS)),
       st.dictionaries(st.sampled_from([*sorted({f for m in OPTION_MODELS.values()
                                                 for f in m.model_fields}), "x"]),
                       DATA, max_size=6))
def test_provider_options_give_a_model_or_a_config_error(name: str,
                                                         options: dict[str, Any]) -> None:
    model = OPTION_MODELS[name]
    try:
        model.model_validate(options)
    except ValidationError as e:
        error = config_error_from("config.yaml", e, prefix="sources[0]")
        assert isinstance(error, ConfigError)
        assert str(error).startswith("config.yaml: sources[0]")
