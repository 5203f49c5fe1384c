"""Shared fixtures. The Kubernetes API test server lives in tests/kubeapi."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubeapi import KubeApiServer

TEST_NAMESPACES = ("default", "storage", "external")


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    """A started API server with the namespaces default, storage and external."""
    with KubeApiServer(TEST_NAMESPACES) as server:
        yield server


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose current context is the `kube` server."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig")
