"""The csv provider passes the provider contract (syncer.testing), like every built-in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest
from endpoints_sync_csv import CsvProvider

from syncer.plugin import ConfigError
from syncer.testing import ProviderContract

# Written non-canonically on purpose: the provider hands the core canonical addresses.
INVENTORY = """service,address,port,zone
web,192.0.2.10,8080,zone-a
web,2001:DB8::0:10,8080,zone-b
db,198.51.100.5,5432
"""


class TestCsvContract(ProviderContract):
    provider_name = "csv"
    provider_class = CsvProvider
    bad_values: ClassVar[Mapping[str, object]] = {"path": "", "port": 0}
    # The CSV file is local input, like the static inventory: an unusable one stops the run
    # before anything is written (exit 2).
    failure_error = ConfigError

    @pytest.fixture
    def options(self, tmp_path: Path) -> dict[str, object]:
        (tmp_path / "inventory.csv").write_text(INVENTORY)
        return {"path": "inventory.csv"}

    @pytest.fixture
    def broken_options(self, tmp_path: Path) -> dict[str, object]:
        return {"path": "missing.csv"}
