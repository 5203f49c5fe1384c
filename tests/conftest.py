"""Shared fixtures. The Kubernetes API test server lives in tests/kubeapi."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncer.logs import TextFormatter
from tests.kubeapi import KubeApiServer

TEST_NAMESPACES = ("default", "storage", "external")


@pytest.fixture(autouse=True)
def _logs_as_users_see_them(caplog: pytest.LogCaptureFixture) -> None:
    """caplog.text in the CLI's text format: with the `source 'x': ` of a record's source
    field, and secrets redacted."""
    caplog.handler.setFormatter(TextFormatter())


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    """A started API server with the namespaces default, storage and external."""
    with KubeApiServer(TEST_NAMESPACES) as server:
        yield server


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose current context is the `kube` server."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


# End-to-end modules: the CLI in subprocesses, fault sweeps, races, provider doubles.
SLOW_MODULES = frozenset({
    "test_aws_e2e", "test_consul_e2e", "test_e2e_static", "test_immutable_changes",
    "test_kill_and_race", "test_kube_faults", "test_make_before_break", "test_secrets",
    "test_source_failures",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark end-to-end tests `slow`: whole e2e modules, and any test that syncs through a
    kubeconfig. `pytest -m "not slow"` (make test-fast) runs the rest in seconds."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if isinstance(item, pytest.Function) \
            else ""
        if module in SLOW_MODULES or "kubeconfig" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
