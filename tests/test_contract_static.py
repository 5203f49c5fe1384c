"""The static provider passes the provider contract (syncer.testing)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from providers.static import StaticProvider
from syncer.errors import ConfigError
from syncer.testing import ProviderContract

INVENTORY = """
services:
  - name: web
    namespace: shop
    ports: [{name: http, port: 80}, {name: https, port: 443, app_protocol: https}]
    endpoints:
      - {address: 192.0.2.10, zone: z1, hostname: web-1}
      - {address: 2001:DB8::0:1, ports: {http: 8080, https: 8443}, ready: false}
      - {address: Web-3.Example.COM.}
  - name: mail
    type: ExternalName
    external_name: mail.example.com.
"""


class TestStaticContract(ProviderContract):
    provider_name = "static"
    provider_class = StaticProvider
    bad_values: ClassVar[Mapping[str, object]] = {"path": ""}
    # The inventory belongs to the configuration: a missing or broken one stops the run
    # before anything is written (exit 2), not a source failure (exit 1).
    failure_error = ConfigError

    @pytest.fixture
    def options(self, tmp_path: Path) -> dict[str, object]:
        # Written non-canonically on purpose: the provider hands the core canonical values.
        (tmp_path / "inventory.yaml").write_text(INVENTORY)
        return {"path": "inventory.yaml"}

    @pytest.fixture
    def broken_options(self, tmp_path: Path) -> dict[str, object]:
        (tmp_path / "broken.yaml").write_text("services:\n  - name: web\n    ports: []\n")
        return {"path": "broken.yaml"}


def test_a_file_vanished_since_validate_is_a_config_error(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY)
    provider = TestStaticContract().load_provider(tmp_path, {"path": "inventory.yaml"})
    provider.check()
    inventory.unlink()
    with pytest.raises(ConfigError) as e:
        provider.discover()
    assert e.value.field == "sources[0].path"
    assert "not found" in e.value.message
