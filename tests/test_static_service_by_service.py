"""The static provider validates an inventory Service by Service (to bound its memory on
huge files) and still reports as it did when it validated the whole file at once: every
validation problem first, in one error; other problems only when there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.static import StaticOptions, StaticProvider
from syncer.errors import ConfigError
from syncer.options import CONFIG_DIR
from syncer.plugin import SourceContext

WEB = {"name": "web", "ports": [{"name": "http", "port": 80}],
       "endpoints": [{"address": "192.0.2.10"}]}


def discover(tmp_path: Path, services: list[object], **outer: object) -> str:
    """The ConfigError's text for an inventory of `services` (and `outer` keys)."""
    (tmp_path / "inv.json").write_text(json.dumps({"services": services, **outer}))
    ctx = SourceContext(source="inv", config_file=str(tmp_path / "config.yaml"),
                        field_path="sources[0]", config_dir=tmp_path)
    options = StaticOptions.model_validate({"path": "inv.json"},
                                           context={CONFIG_DIR: tmp_path})
    with pytest.raises(ConfigError) as info:
        StaticProvider(options, ctx).discover()
    return str(info.value)


def test_every_services_validation_problems_are_reported_together(tmp_path: Path) -> None:
    bad_port = {**WEB, "name": "a", "ports": [{"name": "http", "port": 0}]}
    bad_address = {**WEB, "name": "c", "endpoints": [{"address": "192.0.2.300"}]}
    message = discover(tmp_path, [bad_port, {**WEB, "name": "b"}, bad_address])
    first, second = message.splitlines()
    assert "inv.json: services[0].ports[0].port: " in first
    assert "inv.json: services[2].endpoints[0].address: " in second


def test_validation_problems_come_before_a_service_listed_twice(tmp_path: Path) -> None:
    late = {**WEB, "name": "z", "endpoints": [{"address": "192.0.2.11", "bogus": 1}]}
    message = discover(tmp_path, [WEB, WEB, late])
    assert "services[2].endpoints[0].bogus: unknown key" in message
    assert "listed twice" not in message


def test_without_validation_problems_the_first_other_problem_is_reported(
        tmp_path: Path) -> None:
    wrong_port_name = {**WEB, "name": "b", "endpoints": [
        {"address": "192.0.2.11", "ports": {"https": 8443}}]}
    message = discover(tmp_path, [WEB, wrong_port_name, WEB])
    assert message.startswith(f"{tmp_path / 'inv.json'}: services[1].endpoints[0].ports: "
                              "no Service port named 'https'")


def test_the_outer_shape_is_checked_first(tmp_path: Path) -> None:
    message = discover(tmp_path, [WEB, WEB], extra=1)
    assert "inv.json: extra: unknown key" in message and "listed twice" not in message
