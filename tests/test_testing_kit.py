"""The contract kit catches broken providers: each deliberately wrong provider, registered
through a real entry point, fails exactly the kit test about its mistake and passes the rest."""

from __future__ import annotations

import pytest

import syncer.testing  # imported here, so the inner run reuses it (one audit hook)

pytest_plugins = ["pytester"]

PLUGIN = '''
import dataclasses
import importlib
import socket

from syncer.plugin import (
    Backend, PortNumber, Provider, ProviderOptions, Secret, ServiceName, ServicePort,
    ServiceSpec, TransientSourceError,
)


class KitOptions(ProviderOptions):
    service: ServiceName = "web"
    """The Service."""
    port: PortNumber = 80
    """Its port."""
    token: Secret | None = None
    """A token."""
    fail: bool = False
    """Fail discover()."""


class Good(Provider[KitOptions]):
    Options = KitOptions
    summary = "a provider keeping the contract"

    def discover(self):
        if self.options.fail:
            raise TransientSourceError("backend unreachable")
        return [ServiceSpec(self.options.service, (ServicePort("http", self.options.port),),
                            (Backend("192.0.2.1"),))]


class Uppercase(Good):
    def discover(self):
        return [dataclasses.replace(s, name=s.name.capitalize()) for s in super().discover()]


class Crashing(Good):
    def discover(self):
        if self.options.fail:
            raise RuntimeError("backend unreachable")
        return super().discover()


class Leaky(Good):
    def discover(self):
        if self.options.token:
            self.context.log.debug("using token %s", self.options.token.reveal())
        return super().discover()


class Connecting(Good):
    def check(self):
        with socket.create_server(("127.0.0.1", 0)) as server:
            socket.create_connection(server.getsockname()).close()


class Undeclared(Good):
    def check(self):
        importlib.import_module("consul")  # a heavy library not in optional_imports
'''

NAMES = ("Good", "Uppercase", "Crashing", "Leaky", "Connecting", "Undeclared")

CONTRACTS = '''
import pytest

import kitplugin
from syncer.testing import ProviderContract


class Kit(ProviderContract):
    secret_options = ("token",)
    bad_values = {"port": 0, "service": "Web"}

    @pytest.fixture
    def options(self):
        return {"token": "kit-s3cr3t-value"}

    @pytest.fixture
    def broken_options(self):
        return {"fail": True}
''' + "".join(f'''

class Test{name}(Kit):
    provider_name = "kit_{name.lower()}"
    provider_class = kitplugin.{name}
''' for name in NAMES)

# The one kit test each broken provider must fail.
EXPECTED_FAILURES = {
    "TestUppercase": "test_results_are_valid_and_canonical",
    "TestCrashing": "test_failure_raises_a_source_error",
    "TestLeaky": "test_secrets_never_shown",
    "TestConnecting": "test_check_opens_no_socket",
    "TestUndeclared": "test_missing_optional_dependency_names_the_extra",
}


def test_each_broken_provider_fails_exactly_its_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(kitplugin=PLUGIN, test_kit=CONTRACTS)
    dist = pytester.mkdir("kitplugin-0.1.dist-info")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kitplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[endpoints_sync.providers]\n" + "".join(
        f"kit_{name.lower()} = kitplugin:{name}\n" for name in NAMES))
    pytester.syspathinsert()

    recorder = pytester.inline_run("-p", "no:cacheprovider", "-p", "no:xdist")

    passed, skipped, failed = recorder.listoutcomes()
    failures = {tuple(r.nodeid.split("::")[1:]) for r in failed}
    assert failures == set(EXPECTED_FAILURES.items()), [r.longreprtext for r in failed]
    assert skipped == []
    kit_tests = [n for n in dir(syncer.testing.ProviderContract) if n.startswith("test_")]
    assert len(passed) == len(NAMES) * len(kit_tests) - len(EXPECTED_FAILURES)
    # The kit says what went wrong, not just that something did.
    reasons = {r.nodeid.split("::")[1]: r.longreprtext for r in failed}
    assert "'Web'" in reasons["TestUppercase"]
    assert "raised RuntimeError, not a SourceError" in reasons["TestCrashing"]
    assert "the value of 'token' is shown" in reasons["TestLeaky"]
    assert "check() connected to" in reasons["TestConnecting"]
    assert "consul" in reasons["TestUndeclared"]
