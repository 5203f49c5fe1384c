"""The provider contract kit for `http_sd` and `file_sd`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from providers.file_sd import FileSdProvider
from providers.http_sd import HttpSdProvider
from syncer.testing import ProviderContract
from tests.test_http_sd import Answer, SdServer, start

GROUPS = [{"targets": ["192.0.2.10:9100", "[2001:db8::1]:9100", "Host-1.Example.org.:9100"],
           "labels": {"job": "node", "__meta_zone": "zone-a"}},
          {"targets": ["192.0.2.20:8080", "not a target"], "labels": {"job": "web"}}]


@pytest.fixture
def sd_server() -> Iterator[SdServer]:
    server = start()
    server.serve(GROUPS)
    server.answers["/down"] = Answer(500, b"down", "text/plain")
    yield server
    assert server.server is not None
    server.server.stop()


class TestHttpSdContract(ProviderContract):
    provider_name = "http_sd"
    provider_class = HttpSdProvider
    secret_options = ("bearer_token",)
    bad_values: ClassVar[Mapping[str, object]] = {
        "url": "ftp://x", "port": 0, "timeout_seconds": 0, "service": "Bad_Name",
        "port_name": "HTTP"}

    @pytest.fixture
    def options(self, sd_server: SdServer) -> dict[str, object]:
        return {"url": sd_server.url, "service_label": "job", "zone_label": "__meta_zone",
                "bearer_token": "contract-bearer-token-1234", "timeout_seconds": 2}

    @pytest.fixture
    def broken_options(self, sd_server: SdServer) -> dict[str, object]:
        return {"url": sd_server.url.replace("/sd", "/down"), "service_label": "job",
                "timeout_seconds": 2}


class TestFileSdContract(ProviderContract):
    provider_name = "file_sd"
    provider_class = FileSdProvider
    bad_values: ClassVar[Mapping[str, object]] = {
        "files": ["targets.txt"], "port": 0, "service": "Bad_Name", "protocol": "ICMP"}

    @pytest.fixture
    def options(self, tmp_path: Path) -> dict[str, object]:
        (tmp_path / "sd").mkdir()
        (tmp_path / "sd" / "a.json").write_text(json.dumps(GROUPS))
        (tmp_path / "sd" / "b.yaml").write_text("- targets: ['198.51.100.7:8080']\n"
                                                "  labels: {job: web}\n")
        return {"files": ["sd/*.json", "sd/*.yaml"], "service_label": "job",
                "zone_label": "__meta_zone"}

    @pytest.fixture
    def broken_options(self, tmp_path: Path) -> dict[str, object]:
        (tmp_path / "broken.yaml").write_text("- targets: [192.0.2.1:80\n")
        return {"files": ["broken.yaml"], "service": "web", "port": 80}
