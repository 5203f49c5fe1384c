"""A run killed half-way, and runs racing each other, never leave the owned objects
half-deleted, duplicated or orphaned: the next run converges, and one after it writes
nothing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.cli import run_sync
from tests.kubeapi import KubeApiServer
from tests.test_kube_faults import (
    JSON,
    assert_converged,
    ok,
    owned,
    popen_sync,
    rendered,
    service,
    synced,
    wait_for,
    write_config,
)

WRITES = "POST|PUT|DELETE"


def before() -> list[JSON]:
    return [service("a", "storage", range(1, 4)), service("b", "external", range(10, 13)),
            service("c", "external", range(20, 22))]


def after() -> list[JSON]:
    """`a` changes its addresses, `b` stays, `c` goes (pruned), `d` is new."""
    return [service("a", "storage", range(2, 6)), service("b", "external", range(10, 13)),
            service("d", "storage", range(30, 33), port=9090)]


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    return proc.returncode, stderr


def test_sigkill_mid_apply_then_the_next_run_completes_the_job(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    synced(write_config(tmp_path, before()), kubeconfig)
    config = write_config(tmp_path, after())
    # The first three writes go through; the next ones hang until the process is dead.
    kube.inject_fault(WRITES, r".*", delay=2.0, times=100, after=3)
    writes_before = len(kube.write_requests())
    proc = popen_sync(config, kubeconfig)
    wait_for(lambda: kube.faults.pending() < 100)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.monotonic()
    kube.clear_faults()
    assert len(kube.write_requests()) - writes_before == 3  # really caught half-way
    assert owned(kube).keys() != rendered(config).keys()
    # The held requests still reach the store (as they would in a real API server) while
    # the next run is going on: whatever the order, it ends converged.
    ok(run_sync(config, kubeconfig))
    time.sleep(max(0.0, killed_at + 2.5 - time.monotonic()))
    assert_converged(kube, kubeconfig, config)


def test_two_runs_racing_on_the_same_config_converge(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    synced(write_config(tmp_path, before()), kubeconfig)
    config = write_config(tmp_path, after())
    # Delays on every write, so the two runs' writes interleave.
    kube.inject_fault(WRITES, r".*", delay=0.3, times=1000)
    kube.reset_requests()
    first, second = popen_sync(config, kubeconfig), popen_sync(config, kubeconfig)
    codes = [finish(first)[0], finish(second)[0]]
    assert set(codes) <= {0, 1}, codes
    kube.clear_faults()
    # They did race: one found the other's create (409) or delete (404) done already.
    assert {409, 404} & {r.status for r in kube.write_requests()}
    assert_converged(kube, kubeconfig, config)


def test_two_runs_racing_with_different_inventories_leave_nothing_the_next_run_cannot_fix(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    # Which inventory "wins" is not defined (each run prunes only what it listed), so the
    # guarantee is that a later run with either one converges exactly and orphans nothing.
    synced(write_config(tmp_path, before()), kubeconfig)
    mine = write_config(tmp_path, after(), "mine.yaml")
    theirs = write_config(tmp_path, [service("a", "storage", range(40, 42)),
                                     service("e", "external", range(50, 52))], "theirs.yaml")
    kube.inject_fault(WRITES, r".*", delay=0.05, times=1000)
    runs = [popen_sync(mine, kubeconfig), popen_sync(theirs, kubeconfig)]
    codes = [finish(p)[0] for p in runs]
    assert set(codes) <= {0, 1}, codes
    kube.clear_faults()
    synced(mine, kubeconfig, force=True)
    assert_converged(kube, kubeconfig, mine)
