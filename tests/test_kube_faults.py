"""Kubernetes API faults, through the CLI against the API test server: each run ends with
nothing lost, a clear message and bounded time, and the next run converges."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.errors import KubeError
from syncer.kube import connect
from syncer.render import render_all
from syncer.run import discover, load, render_settings, sync
from tests.cli import ROOT, run_sync
from tests.kubeapi import KubeApiServer
from tests.kubeapi.server import RecordedRequest

JSON = dict[str, Any]
OWNER = "cluster-a"
KINDS = ("Service", "EndpointSlice", "Endpoints")
SLICES_A = r"^/apis/discovery\.k8s\.io/v1/namespaces/storage/endpointslices"
FAST = {"ENDPOINTS_SYNC_REQUEST_TIMEOUT": "1"}  # 1 s per request, 3 s per call


# --- helpers shared with test_kill_and_race -----------------------------------------------

def service(name: str, namespace: str, hosts: range, port: int = 8080) -> JSON:
    return {"name": name, "namespace": namespace, "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": f"192.0.2.{i}", "port": port} for i in hosts]}


def two_services() -> list[JSON]:
    """`a` in storage (the one faults aim at) and `b` in external."""
    return [service("a", "storage", range(1, 4)), service("b", "external", range(10, 12))]


def write_config(tmp: Path, services: list[JSON], name: str = "config.yaml") -> Path:
    inventory = tmp / f"{Path(name).stem}-inventory.yaml"
    inventory.write_text(yaml.safe_dump({"services": services}))
    config = tmp / name
    config.write_text(f"owner: {OWNER}\nnamespace: external\nsources:\n"
                      f"  - {{name: rgw, provider: static, path: {inventory.name}}}\n")
    return config


def rendered(config: Path) -> dict[tuple[str, str, str], JSON]:
    """What `render` prints, computed in-process (the same calls, no interpreter start-up)."""
    loaded = load(str(config))
    services = render_all(discover(loaded).specs, render_settings(loaded.config))
    return {_key(o["kind"], o): o for svc in services for o in svc.objects}


def owned(kube: KubeApiServer) -> dict[tuple[str, str, str], JSON]:
    return {_key(kind, o): o for kind in KINDS for o in kube.list_objects(kind)
            if (o["metadata"].get("labels") or {}).get("endpoints-sync.io/owner") == OWNER}


def _key(kind: str, obj: JSON) -> tuple[str, str, str]:
    return kind, obj["metadata"]["namespace"], obj["metadata"]["name"]


def contains(stored: Any, wanted: Any) -> bool:
    """`stored` holds everything `wanted` says (the server only adds defaults)."""
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(
            k in stored and contains(stored[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(stored, list) and len(stored) == len(wanted)
                and all(contains(s, w) for s, w in zip(stored, wanted, strict=True)))
    return bool(stored == wanted)


def assert_converged(kube: KubeApiServer, kubeconfig: Path, config: Path) -> None:
    """The owned objects are exactly the desired ones (none missing, none extra), each as
    rendered, and one more run writes nothing."""
    desired, state = rendered(config), owned(kube)
    assert sorted(state) == sorted(desired)
    for key, obj in desired.items():
        body = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        assert contains(state[key], body), (key, state[key], body)
    before = len(kube.write_requests())
    synced(config, kubeconfig)
    assert kube.write_requests()[before:] == []


def synced(config: Path, kubeconfig: Path, force: bool = False) -> None:
    """A successful run, in-process: the same code as `run` without an interpreter start-up
    (for the runs a test needs but is not about)."""
    outcome = sync(load(str(config)), lambda: connect(str(kubeconfig)), apply=True,
                   force=force)
    assert outcome.exit_code == 0, outcome.summary()


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " error " in line]


def popen_sync(config: Path, kubeconfig: Path,
               env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`run` started in the background (same environment rules as tests.cli.cli)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG", "ENDPOINTS_SYNC_CONFIG")}
    base.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "syncer", "run", "-c", str(config),
                             "--kubeconfig", str(kubeconfig)], cwd=ROOT, env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def matching(kube: KubeApiServer, method: str, path_regex: str) -> list[RecordedRequest]:
    return kube.requests_matching(method, path_regex)


# --- transient faults: retried, then success -----------------------------------------------

def test_429_retry_after_is_honoured_and_5xx_are_retried(kube: KubeApiServer, kubeconfig: Path,
                                                         tmp_path: Path) -> None:
    answered: list[tuple[float, RecordedRequest]] = []
    lock = threading.Lock()

    def stamp(request: RecordedRequest) -> None:
        with lock:
            answered.append((time.monotonic(), request))

    kube.observe_writes(stamp)
    kube.inject_fault("POST", r"/namespaces/storage/services$", status=429, retry_after=1)
    kube.inject_fault("GET", r"/endpointslices$", status=500)
    kube.inject_fault("POST", r"/namespaces/external/endpoints$", status=503, times=2)
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig))
    assert "retrying" in stderr
    posts = [(t, r.status) for t, r in answered if r.path.endswith("/storage/services")]
    assert [s for _, s in posts] == [429, 201]
    assert posts[1][0] - posts[0][0] >= 0.9  # Retry-After: 1 was waited for
    assert [r.status for r in matching(kube, "POST", r"/external/endpoints$")] == [503, 503, 201]
    assert [r.status for r in matching(kube, "GET", r"/endpointslices$")][:2] == [500, 200]
    assert kube.faults.pending() == 0
    assert_converged(kube, kubeconfig, config)


def test_a_write_that_keeps_failing_fails_only_its_own_service(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.inject_fault("POST", SLICES_A, status=503, times=100)
    config = write_config(tmp_path, two_services())
    started = time.monotonic()
    stderr = ok(run_sync(config, kubeconfig), code=1)
    assert time.monotonic() - started < 15
    assert len(matching(kube, "POST", SLICES_A)) == 5  # bounded attempts
    assert "gave up after 5 attempts" in stderr
    state, desired = owned(kube), rendered(config)
    assert not [k for k in state if k[0] == "EndpointSlice" and k[1] == "storage"]
    b = {k for k in desired if k[1] == "external"}
    assert b and b <= set(state)  # the other Service synced in full
    kube.clear_faults()
    synced(config, kubeconfig)
    assert_converged(kube, kubeconfig, config)


def test_slow_answers_under_the_timeout_succeed_and_over_it_are_retried(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.inject_fault("GET", r"/services$", delay=0.6)  # under the 1 s timeout
    kube.inject_fault("POST", r"/namespaces/external/services$", delay=1.5)  # over it
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig, env=FAST))
    assert len(matching(kube, "GET", r"/services$")) == 1  # waited for, not retried
    [retry] = [line for line in stderr.splitlines() if "retrying" in line]
    assert ("create Service external/b: no answer from http://127.0.0.1:"
            f"{kube.port}: no answer within the request timeout (attempt 1 of 5") in retry
    # The abandoned first POST still reaches the store, and finds the Service exists.
    wait_for(lambda: [r.status for r in matching(kube, "POST", r"/external/services$")]
             == [201, 409])
    assert_converged(kube, kubeconfig, config)


def test_answers_that_never_come_in_time_give_up_within_the_budget(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, two_services())
    kube.inject_fault("GET", r"/services$", delay=5, times=20)
    started = time.monotonic()
    stderr = ok(run_sync(config, kubeconfig, env=FAST), code=1)
    elapsed = time.monotonic() - started
    taken = 20 - kube.faults.pending()
    assert 2 <= taken <= 5, taken
    assert elapsed < 3 + 4, elapsed  # the 3 s budget plus the CLI's start-up
    [line] = errors(stderr)
    assert "list Service (all namespaces): no answer from http://127.0.0.1" in line
    assert "gave up after" in line
    assert kube.write_requests() == []


def test_dropped_connections_are_retried(kube: KubeApiServer, kubeconfig: Path,
                                         tmp_path: Path) -> None:
    kube.inject_fault("GET", r"/endpoints$", drop=True)
    kube.inject_fault("POST", SLICES_A, drop=True, times=2)
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig))
    assert "the connection was closed without an answer" in stderr
    assert [r.status for r in matching(kube, "POST", SLICES_A)] == [0, 0, 201]
    assert_converged(kube, kubeconfig, config)


# --- 409: someone wrote in between ------------------------------------------------------------

def test_conflict_on_update_rereads_replans_and_converges(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, two_services())
    synced(config, kubeconfig)
    config = write_config(tmp_path, [service("a", "storage", range(1, 6)),
                                     service("b", "external", range(10, 12))])
    [slice_a] = [o for k, o in owned(kube).items() if k[0] == "EndpointSlice" and k[1] ==
                 "storage"]
    name = slice_a["metadata"]["name"]
    # The update is held for a moment; meanwhile someone else changes the slice.
    kube.inject_fault("PUT", f"{SLICES_A}/{name}$", delay=1.0)
    kube.reset_requests()
    proc = popen_sync(config, kubeconfig)
    wait_for(lambda: kube.faults.pending() == 0)
    theirs = kube.get_object("EndpointSlice", "storage", name)
    assert theirs is not None
    theirs["metadata"].setdefault("annotations", {})["example.com/touched"] = "yes"
    kube.put_object(theirs)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert [r.status for r in matching(kube, "PUT", f"/endpointslices/{name}$")] == [409, 200]
    assert len(matching(kube, "GET", f"/endpointslices/{name}$")) == 1  # the re-read
    assert_converged(kube, kubeconfig, config)


# --- permanent faults: reported once, clearly, not retried ----------------------------------

def test_invalid_422_is_reported_with_the_causes_and_not_retried(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    causes = [{"reason": "FieldValueInvalid", "field": "endpoints[0].addresses[0]",
               "message": 'Invalid value: "192.0.2.1": may not be in a reserved range'},
              {"reason": "FieldValueRequired", "field": "ports[0].name",
               "message": "Required value"}]
    kube.inject_fault("POST", SLICES_A, status=422, details={"causes": causes}, times=10)
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig), code=1)
    assert len(matching(kube, "POST", SLICES_A)) == 1
    [line] = [e for e in errors(stderr) if "422" in e]
    assert "EndpointSlice storage/a-" in line
    assert ('endpoints[0].addresses[0]: Invalid value: "192.0.2.1": may not be in a reserved '
            "range; ports[0].name: Required value") in line
    assert "not retried" in line and "retrying" not in stderr
    kube.clear_faults()
    synced(config, kubeconfig)
    assert_converged(kube, kubeconfig, config)


@pytest.mark.parametrize(("method", "path", "needs"), [
    ("POST", SLICES_A,
     "needs `create` on endpointslices.discovery.k8s.io in namespace storage: see "
     "deploy/rbac.yaml"),
    ("GET", r"^/api/v1/services$", "needs `list` on services in all namespaces"),
])
def test_forbidden_names_verb_resource_namespace_and_rbac(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, method: str, path: str,
        needs: str) -> None:
    kube.inject_fault(method, path, status=403, times=10)
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig), code=1)
    assert len(matching(kube, method, path)) == 1
    assert any(needs in line and "403 Forbidden" in line for line in errors(stderr)), stderr
    assert "deploy/rbac.yaml" in stderr


def test_unauthorized_says_the_credentials_were_refused(kube: KubeApiServer, kubeconfig: Path,
                                                        tmp_path: Path) -> None:
    kube.inject_fault("GET", r".*", status=401, times=10)
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig), code=1)
    [line] = errors(stderr)
    assert "401 Unauthorized: the API server refused the credentials" in line
    assert "test-token" not in stderr  # the kubeconfig's token
    assert len(kube.requests) == 1
    assert kube.write_requests() == []


# --- no API server at all -----------------------------------------------------------------------

def test_unreachable_api_server_is_one_clear_line_within_the_budget(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with KubeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        kubeconfig.write_text(kubeconfig.read_text().replace(f":{server.port}", f":{port}"))
    config = write_config(tmp_path, two_services())
    started = time.monotonic()
    stderr = ok(run_sync(config, kubeconfig), code=1)
    assert time.monotonic() - started < 15
    [line] = errors(stderr)
    assert (f"Kubernetes API: list Service (all namespaces): no answer from "
            f"http://127.0.0.1:{port}: connection refused (gave up after 5 attempts in") in line


def test_tls_failure_is_one_clear_line_and_not_retried(kube: KubeApiServer, kubeconfig: Path,
                                                       tmp_path: Path) -> None:
    # An https:// server address for a server that speaks plain HTTP: the handshake fails.
    kubeconfig.write_text(kubeconfig.read_text().replace("http://", "https://"))
    config = write_config(tmp_path, two_services())
    stderr = ok(run_sync(config, kubeconfig), code=1)
    [line] = errors(stderr)
    assert "list Service (all namespaces): TLS failure talking to the API server" in line
    assert "retrying" not in stderr
    assert kube.write_requests() == []


def test_a_bad_request_timeout_is_a_configuration_error(kube: KubeApiServer, kubeconfig: Path,
                                                        tmp_path: Path) -> None:
    config = write_config(tmp_path, two_services())
    result = run_sync(config, kubeconfig, env={"ENDPOINTS_SYNC_REQUEST_TIMEOUT": "nan"})
    assert result.returncode == 2, result.stderr
    assert "$ENDPOINTS_SYNC_REQUEST_TIMEOUT: expected a number of seconds" in result.stderr
    assert kube.requests == []


def test_after_one_call_found_no_server_the_others_try_once_until_it_answers(
        tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = KubeApiServer(("storage",))
    kubeconfig = server.start(port).write_kubeconfig(tmp_path / "kubeconfig")
    server.stop()
    client = connect(str(kubeconfig), timeout=1, attempts=3)

    def failure() -> str:
        with pytest.raises(KubeError) as caught:
            client.get("Service", "storage", "a")
        return str(caught.value)

    assert "connection refused (gave up after 3 attempts" in failure()
    assert "connection refused (gave up after 1 attempt in" in failure()  # no more waiting
    with KubeApiServer(("storage",)).start(port):
        assert client.get("Service", "storage", "a") is None  # answered: 404
    assert "(gave up after 3 attempts" in failure()  # a fresh outage gets the full budget
