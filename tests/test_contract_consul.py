"""The consul provider against the plugin API's contract kit, talking to the Consul double."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from providers.consul import ConsulProvider
from syncer.testing import ProviderContract
from tests.consul_double import ConsulDouble, running

TOKEN = "9d4e1b7a-3c2f-4e8d-b6a5-contract-secret"


@pytest.fixture(autouse=True)
def _no_consul_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    """ACLs on; `web` on two nodes (one with its own address, one in a zone), `db` on one."""
    double = ConsulDouble(acl_token=TOKEN)
    double.add_node("node-a", "192.0.2.10", meta={"zone": "zone-a"})
    double.add_node("node-b", "192.0.2.11")
    double.register("web", "node-a", port=8080, address="198.51.100.10")
    double.register("web", "node-b", port=8080)
    double.register("db", "node-b", port=5432, address="2001:db8::11")
    yield from running(double)


@pytest.fixture
def failing_consul() -> Iterator[ConsulDouble]:
    """A Consul whose every answer is a 500 that echoes the token (as a careless proxy
    might): the error must still not show it."""
    double = ConsulDouble(acl_token=TOKEN)
    double.fail(500, f"rpc error making call: token {TOKEN} rejected")
    yield from running(double)


class TestConsulContract(ProviderContract):
    provider_name = "consul"
    provider_class = ConsulProvider
    secret_options = ("token",)
    bad_values: ClassVar[dict[str, object]] = {
        "url": "ftp://consul.example:8500",
        "port": 0,
        "port_name": "HTTP",
        "timeout_seconds": 0,
        "concurrency": 0,
        "consistency": "eventual",
        "address_source": "public",
        "token": "has a space",
        "name_prefix": "9-",
        "rename": {"web": "Not_A_Service"},
    }

    @pytest.fixture
    def options(self, consul: ConsulDouble) -> dict[str, object]:
        return {"url": consul.url, "token": TOKEN, "timeout_seconds": 2,
                "zone_node_meta": "zone"}

    @pytest.fixture
    def broken_options(self, failing_consul: ConsulDouble) -> dict[str, object]:
        return {"url": failing_consul.url, "token": TOKEN, "timeout_seconds": 2}
