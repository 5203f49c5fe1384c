"""Metrics of `run`: the textfile, the Pushgateway push and loop mode's HTTP endpoints.

Runs go through the CLI's main() in-process against the Kubernetes API test server (and a
Consul double for source failures); files and pushes are parsed with prometheus_client's
own parser, as Prometheus would read them.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncer.cli import main
from syncer.errors import ConfigError
from syncer.health import LoopState, serve
from syncer.metrics import Metrics
from tests.consul_double import ConsulDouble, payments_double, running
from tests.kubeapi import KubeApiServer
from tests.loopback_http import LoopbackHTTPServer
from tests.specs import rgw_entry

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """name and labels -> value, for every sample."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(f"endpoints_sync_{name}", frozenset(labels.items()))]


def static_config(tmp: Path, services: list[dict[str, Any]]) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      "  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


def half_ready() -> dict[str, Any]:
    entry = rgw_entry([70, 71], ports=(9000,), name="half")
    entry["endpoints"][1]["ready"] = False
    return entry


def object_writes(kube: KubeApiServer) -> int:
    """Writes of Services, EndpointSlices and Endpoints (not Events)."""
    return sum(1 for r in kube.write_requests() if "/events" not in r.path)


def run(config: Path, kubeconfig: Path, *extra: str) -> int:
    return main(["run", "-c", str(config), "--kubeconfig", str(kubeconfig), *extra])


def test_a_run_writes_what_it_did_to_the_metrics_file(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = static_config(tmp_path, [rgw_entry(), half_ready()])
    out = tmp_path / "metrics"
    out.mkdir()
    before = time.time()
    assert run(config, kubeconfig, "--metrics-file", str(out / "sync.prom")) == 0

    found = samples((out / "sync.prom").read_text())
    written = object_writes(kube)
    assert written == 4 + 3  # each Service, its slices (one per port set), its Endpoints
    assert value(found, "runs_total", result="success") == 1
    assert value(found, "runs_total", result="failure") == 0
    assert value(found, "objects_total", action="created") == written
    assert value(found, "objects_total", action="unchanged") == 0
    assert value(found, "addresses", source="rgw") == 12 + 2
    assert value(found, "service_addresses", namespace="storage", service="half") == 2
    assert value(found, "service_ready_addresses", namespace="storage", service="half") == 1
    assert value(found, "service_ready_addresses", namespace="storage",
                 service="ocs-external-rgw-lb") == 12
    assert value(found, "held_changes", reason="delete-ratio") == 0
    assert before <= value(found, "last_success_timestamp_seconds") <= time.time()
    assert value(found, "last_run_timestamp_seconds") == value(
        found, "last_success_timestamp_seconds")
    assert 0 < value(found, "run_duration_seconds") < 60
    assert [p.name for p in out.iterdir()] == ["sync.prom"]  # no temporary file left behind

    # Unchanged objects count as such on the next run.
    assert run(config, kubeconfig, "--metrics-file", str(out / "sync.prom")) == 0
    found = samples((out / "sync.prom").read_text())
    assert value(found, "objects_total", action="unchanged") == written
    assert value(found, "objects_total", action="created") == 0


def test_a_failed_run_counts_as_failure_and_keeps_the_last_success(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    services = [rgw_entry(name=f"svc-{i}") for i in range(4)]
    config = static_config(tmp_path, services)
    out = tmp_path / "sync.prom"
    assert run(config, kubeconfig, "--metrics-file", str(out)) == 0
    success = value(samples(out.read_text()), "last_success_timestamp_seconds")

    # Three of four Services gone from the inventory: over max_delete_ratio, deletes held.
    static_config(tmp_path, services[:1])
    assert run(config, kubeconfig, "--metrics-file", str(out)) == 1
    found = samples(out.read_text())
    assert value(found, "runs_total", result="failure") == 1
    assert value(found, "runs_total", result="success") == 0
    # Each of the three: its Service, two slices and its Endpoints.
    assert value(found, "held_changes", reason="delete-ratio") == 3 * 4
    assert value(found, "last_success_timestamp_seconds") == success
    assert value(found, "last_run_timestamp_seconds") > success
    assert ("endpoints_sync_service_addresses",
            frozenset({"namespace": "storage", "service": "svc-1"}.items())) not in found


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    yield from running(payments_double())


@pytest.mark.parametrize(("status", "kind"), [(503, "transient"), (403, "permanent")])
def test_source_failures_are_counted_by_kind(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, consul: ConsulDouble,
        status: int, kind: str) -> None:
    static_config(tmp_path, [rgw_entry()])
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text() + f"  - {{name: catalog, provider: consul, "
                      f"url: '{consul.url}', timeout_seconds: 1}}\n")
    consul.fail(status, "ACL not found" if status == 403 else "no cluster leader")
    out = tmp_path / "sync.prom"
    assert run(config, kubeconfig, "--metrics-file", str(out)) == 1

    found = samples(out.read_text())
    assert value(found, "source_failures_total", source="catalog", kind=kind) == 1
    assert ("endpoints_sync_source_failures_total",
            frozenset({"source": "rgw", "kind": kind}.items())) not in found
    assert value(found, "addresses", source="rgw") == 12
    assert ("endpoints_sync_addresses", frozenset({"source": "catalog"}.items())) not in found
    assert "endpoints_sync_last_success_timestamp_seconds" not in {k[0] for k in found}


class FakePushgateway(LoopbackHTTPServer):
    """Records each push: (method, path, body)."""

    def __init__(self) -> None:
        self.pushes: list[tuple[str, str, str]] = []
        super().__init__(0, _PushHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _PushHandler(BaseHTTPRequestHandler):
    server: FakePushgateway

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.pushes.append((self.command, self.path, body.decode()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[FakePushgateway]:
    server = FakePushgateway()
    server.serve_in_thread("fake-pushgateway")
    yield server
    server.stop()


def test_a_run_pushes_its_metrics_grouped_by_job_and_owner(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        gateway: FakePushgateway) -> None:
    services = [rgw_entry(name=f"svc-{i}") for i in range(4)]
    config = static_config(tmp_path, services)
    assert run(config, kubeconfig, "--pushgateway", gateway.url) == 0
    static_config(tmp_path, services[:1])  # deletes held back: the run fails
    assert run(config, kubeconfig, "--pushgateway", gateway.url) == 1

    (method, path, body), (method2, path2, body2) = gateway.pushes
    assert path == path2 == "/metrics/job/endpoints-sync/owner/cluster-a"
    # A success replaces the group; a failure (POST) replaces only what it sends, so the
    # Pushgateway keeps the last success pushed before.
    assert (method, method2) == ("PUT", "POST")
    assert value(samples(body), "runs_total", result="success") == 1
    assert value(samples(body), "objects_total", action="created") == 16
    assert "endpoints_sync_last_success_timestamp_seconds" in body
    assert value(samples(body2), "runs_total", result="failure") == 1
    assert "endpoints_sync_last_success_timestamp_seconds" not in body2


def test_a_failed_push_is_logged_and_never_changes_the_exit_code(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    gone = FakePushgateway()
    url = gone.url
    gone.server_close()  # nothing listens there any more
    config = static_config(tmp_path, [rgw_entry()])
    assert run(config, kubeconfig, "--pushgateway", url) == 0
    err = capsys.readouterr().err
    assert "metrics not pushed to the Pushgateway" in err
    assert object_writes(kube) == 4


@pytest.mark.parametrize("option", [["--metrics-port", "9100"],
                                    ["--metrics-file", "/nonexistent-folder/sync.prom"]])
def test_metrics_options_that_cannot_work_exit_2_before_anything_is_contacted(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    config = static_config(tmp_path, [rgw_entry()])
    assert run(config, kubeconfig, *option) == 2
    assert option[0] in capsys.readouterr().err
    assert kube.requests == []


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_health_endpoints_follow_the_loop() -> None:
    metrics = Metrics()
    metrics.ended(True, 1.5)
    state = LoopState(interval=0.05, allowance=0.1)  # stuck after 0.2 s without a heartbeat
    server = serve("127.0.0.1", 0, metrics.text, state)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert get(f"{base}/readyz")[0] == 503  # no run completed yet
        assert get(f"{base}/healthz")[0] == 200
        state.completed()
        assert get(f"{base}/readyz")[0] == 200
        status, content_type, text = get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=")
        assert value(samples(text), "runs_total", result="success") == 1
        assert get(f"{base}/nothing")[0] == 404

        time.sleep(0.3)
        assert get(f"{base}/healthz")[0] == 503  # no heartbeat: the loop is stuck
        state.beat()
        assert get(f"{base}/healthz")[0] == 200

        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1 port"):
            serve("127.0.0.1", server.server_address[1], metrics.text, state)
    finally:
        server.shutdown()
        server.server_close()

