"""Loop mode (`run --interval`) through the real CLI in a subprocess, a Consul double as the
source and the Kubernetes API test server: transient source failures are retried before
the interval, permanent ones wait for it, the HTTP endpoints answer, SIGTERM ends it."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from syncer.kube import connect
from syncer.loop import Backoff
from syncer.run import load, sync
from tests.cli import Loop
from tests.consul_double import ConsulDouble, payments_double, running
from tests.kubeapi import KubeApiServer
from tests.specs import rgw_entry


def test_backoff_doubles_up_to_the_interval_and_resets_after_a_run_without_one() -> None:
    backoff = Backoff(5, 60)
    assert [backoff.after(True) for _ in range(6)] == [5, 10, 20, 40, 60, 60]
    assert backoff.after(False) == 60
    assert backoff.after(True) == 5


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    yield from running(payments_double())


def write_config(tmp_path: Path, consul: ConsulDouble) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      f"  - {{name: catalog, provider: consul, url: '{consul.url}', "
                      "timeout_seconds: 1}\n")
    return config


def discoveries(consul: ConsulDouble) -> int:
    return consul.paths().count("/v1/catalog/services")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"endpoints_sync_{name}" and s.labels == labels:
                return s.value
    raise AssertionError(f"{name}{labels} not in\n{text}")


def test_a_transient_failure_is_retried_sooner_and_the_endpoints_answer(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, consul: ConsulDouble) -> None:
    consul.fail(503, "no cluster leader")
    loop = Loop(write_config(tmp_path, consul), kubeconfig,
                "--metrics-port", "0", "--metrics-address", "127.0.0.1")
    try:
        loop.wait_for(lambda: re.search(r"on http://127\.0\.0\.1:(\d+)", loop.log))
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", loop.log)
        assert found is not None
        base = f"http://127.0.0.1:{found.group(1)}"

        # Retried after 0.2 s, then 0.4 s: long before the 60 s interval.
        loop.wait_for(lambda: discoveries(consul) >= 3)
        assert "catalog failed with a transient error: retrying in 0.2s" in loop.log
        assert "retrying in 0.4s" in loop.log
        assert get(f"{base}/readyz")[0] == 200  # failed runs completed all the same
        assert get(f"{base}/healthz")[0] == 200

        consul.clear_faults()
        loop.wait_for(lambda: kube.get_object("Service", "external", "payments"))
        loop.wait_for(lambda: "summary created=" in loop.log and "failed_sources=0" in loop.log)
        tried = discoveries(consul)
        _, text = get(f"{base}/metrics")
        assert metric(text, "runs_total", result="success") == 1
        assert metric(text, "runs_total", result="failure") >= 2
        assert metric(text, "source_failures_total", source="catalog", kind="transient") >= 2
        assert metric(text, "addresses", source="catalog") == 1

        time.sleep(1.0)  # over twice the longest backoff so far: a success waits the interval
        assert discoveries(consul) == tried
    finally:
        took = loop.stop() if loop.proc.poll() is None else 0.0
        loop.kill()
    assert loop.proc.returncode == 0, loop.log
    assert took < 2, loop.log
    assert "SIGTERM: stopping after the writes in flight" in loop.log


def test_a_permanent_failure_waits_for_the_interval(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, consul: ConsulDouble) -> None:
    consul.fail(403, "ACL not found")
    out = tmp_path / "sync.prom"
    loop = Loop(write_config(tmp_path, consul), kubeconfig, "--metrics-file", str(out))
    try:
        loop.wait_for(out.exists)
        time.sleep(1.0)  # five times the first retry's delay
        assert discoveries(consul) == 1, loop.log
        assert "retrying" not in loop.log
        text = out.read_text()
        assert metric(text, "source_failures_total", source="catalog", kind="permanent") == 1
        assert metric(text, "runs_total", result="failure") == 1
    finally:
        took = loop.stop() if loop.proc.poll() is None else 0.0
        loop.kill()
    assert loop.proc.returncode == 0, loop.log
    assert took < 2, loop.log
    assert kube.get_object("Service", "external", "payments") is None


def test_a_stop_lets_the_writes_in_flight_finish_and_starts_no_new_one(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    """SIGTERM sets the loop's stop event: in-process, the same event set after the third
    write leaves the rest for the next run, and that run completes the job."""
    services = [rgw_entry(name=f"rgw-{i}") for i in range(6)]
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: storage\nsources:\n"
                      "  - {name: rgw, provider: static, path: inventory.yaml}\n")
    kube.create_namespace("storage")
    stop = threading.Event()
    writes: list[str] = []

    def observe(request: object) -> None:
        writes.append(str(request))
        if len(writes) == 3:
            stop.set()

    kube.observe_writes(observe)
    loaded = load(str(config))
    first = sync(loaded, lambda: connect(str(kubeconfig)), apply=True, stop=stop)
    assert first.applied is not None
    total = len(first.plan.changes)  # 6 Services x (Service, 2 slices, Endpoints)
    done = first.applied.created
    # Up to one write in flight per worker (8) when the stop came; none started after it.
    assert 3 <= done <= 3 + 8 < total and first.applied.left == total - done
    assert not first.applied.failed
    second = sync(loaded, lambda: connect(str(kubeconfig)), apply=True)
    assert second.applied is not None and second.applied.created == total - done
    assert second.exit_code == 0
