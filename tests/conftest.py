"""Shared fixtures. The Kubernetes API test server lives in tests/kubeapi."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from syncer.logs import TextFormatter
from tests.kubeapi import KubeApiServer
from tests.kubeapi.rbac import cluster_role_rules
from tests.realapi import ASSETS_ENV, RealApiServer, RealCluster, TestServerCluster

TEST_NAMESPACES = ("default", "storage", "external")
DEPLOYED_RULES = cluster_role_rules(Path(__file__).parent.parent / "deploy" / "rbac.yaml")


@pytest.fixture(autouse=True)
def _logs_as_users_see_them(caplog: pytest.LogCaptureFixture) -> None:
    """caplog.text in the CLI's text format: with the `source 'x': ` of a record's source
    field, and secrets redacted."""
    caplog.handler.setFormatter(TextFormatter())


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    """A started API server with the namespaces default, storage and external, authorizing
    every request against deploy/rbac.yaml's ClusterRole: the whole suite runs with exactly
    the rights the manifests grant (tests that need others call kube.enforce_rbac)."""
    with KubeApiServer(TEST_NAMESPACES, rbac_rules=DEPLOYED_RULES) as server:
        yield server


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose current context is the `kube` server."""
    return kube.write_kubeconfig(tmp_path / "kubeconfig")


ROOT = Path(__file__).resolve().parent.parent
# The real kube-apiserver tier: these modules, and the "real" side of the `cluster` fixture.
REAL_MODULES = frozenset({"test_real_apiserver", "test_differential"})
REAL_NOT_RUN = f"real kube-apiserver tier not run: {ASSETS_ENV} is not set"


def deploy_rules() -> list[dict[str, object]]:
    """The rules of deploy/rbac.yaml's ClusterRole: all the syncer is granted in a cluster."""
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    rules: list[dict[str, object]] = role["rules"]
    return rules


@pytest.fixture(scope="session")
def real_apiserver() -> Iterator[RealApiServer]:
    """One etcd + kube-apiserver for the whole session (each test takes fresh namespaces),
    with the token user "syncer" bound to deploy/rbac.yaml's rules only. Stopped at the
    end, also when a test fails or the run is interrupted."""
    with RealApiServer() as api:
        api.grant("syncer", deploy_rules(), "endpoints-sync")
        yield api


@pytest.fixture(params=["testserver", "real"])
def cluster(request: pytest.FixtureRequest,
            tmp_path: Path) -> TestServerCluster | RealCluster:
    """The same test against the Kubernetes API test server and a real kube-apiserver."""
    if request.param == "real":
        return RealCluster(request.getfixturevalue("real_apiserver"), tmp_path)
    return TestServerCluster(request.getfixturevalue("kube"),
                             request.getfixturevalue("kubeconfig"))


def _is_real(item: pytest.Item, module: str) -> bool:
    """Needs the real control plane: a `cluster` test's "real" side; the rest of the real
    tier's modules (its "testserver" sides always run)."""
    spec = getattr(item, "callspec", None)
    if spec is not None and "cluster" in spec.params:
        return bool(spec.params["cluster"] == "real")
    return module in REAL_MODULES


# End-to-end modules: the CLI in subprocesses, fault sweeps, races, provider doubles.
SLOW_MODULES = frozenset({
    "test_aws_e2e", "test_consul_e2e", "test_e2e_static", "test_immutable_changes",
    "test_kill_and_race", "test_kube_faults", "test_make_before_break", "test_secrets",
    "test_source_failures",
})


LONGEST_FIRST = frozenset({"tests/test_image.py", "tests/test_real_apiserver.py",
                           "tests/test_differential.py", "tests/test_guards.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark end-to-end tests `slow`: whole e2e modules, and any test that syncs through a
    kubeconfig. `pytest -m "not slow"` (make test-fast) runs the rest in seconds.

    The real kube-apiserver tier runs on one xdist worker (`--dist loadgroup`: one control
    plane, not one per worker); without $KUBEBUILDER_ASSETS it is deselected, never passed
    or skipped, and the terminal summary says so."""
    real_available = bool(os.environ.get(ASSETS_ENV))
    kept, dropped = [], []
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if isinstance(item, pytest.Function) \
            else ""
        fixtures = getattr(item, "fixturenames", ())
        if module in SLOW_MODULES | REAL_MODULES or {"kubeconfig", "cluster"} & set(fixtures):
            item.add_marker(pytest.mark.slow)
        if _is_real(item, module):
            item.add_marker(pytest.mark.xdist_group("real-apiserver"))
            if not real_available:
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    # Longest first: xdist hands tests out in this order, and a 40-second test started last
    # would be the whole suite's tail.
    items[:] = sorted(kept, key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not os.environ.get(ASSETS_ENV):
        terminalreporter.write_line(REAL_NOT_RUN, yellow=True)
