"""End to end through the CLI: a static inventory into the Kubernetes API test server."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli import cli, run_sync
from tests.kubeapi import KubeApiServer
from tests.specs import dual_stack_entries, rgw_entry

JSON = dict[str, Any]
OWNED = {"app.kubernetes.io/managed-by": "endpoints-sync", "endpoints-sync.io/owner": "cluster-a"}


def write(tmp: Path, services: list[JSON], policy: str = "sync", extra: str = "") -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: cluster-a\nnamespace: external\npolicy: {policy}\n{extra}"
                      "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


def slices_of(kube: KubeApiServer, service: str, ns: str = "storage") -> list[JSON]:
    return [s for s in kube.list_objects("EndpointSlice", ns)
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service]


def slice_pairs(kube: KubeApiServer, service: str, ns: str = "storage") -> set[str]:
    return {f"{e['addresses'][0]}:{s['ports'][0]['port']}"
            for s in slices_of(kube, service, ns) for e in s["endpoints"]}


def endpoints_pairs(kube: KubeApiServer, service: str, ns: str = "storage") -> set[str]:
    ep = kube.get_object("Endpoints", ns, service)
    assert ep is not None
    return {f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
            for a in s.get("addresses", []) for p in s["ports"]}


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    return result.stderr


def test_article_example_first_run_second_run_and_removals(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(), rgw_entry(range(60, 62), name="other")])
    err = ok(run_sync(config, kubeconfig))
    assert "summary created=8 updated=0 deleted=0" in err
    first = kube.write_requests()
    assert sorted({r.method for r in first}) == ["POST"]

    svc = kube.get_object("Service", "storage", "ocs-external-rgw-lb")
    assert svc is not None
    assert "selector" not in svc["spec"]
    assert svc["spec"]["ports"][0]["port"] == 80
    assert OWNED.items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["annotations"]["endpoints-sync.io/source"] == "rgw"
    slices = slices_of(kube, "ocs-external-rgw-lb")
    assert sorted(s["ports"][0]["port"] for s in slices) == [8080, 8081]
    assert all(len(s["endpoints"]) == 6 for s in slices)
    assert all(s["metadata"]["name"].startswith("ocs-external-rgw-lb-") for s in slices)
    assert all(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
               == "endpoints-sync" for s in slices)
    ep = kube.get_object("Endpoints", "storage", "ocs-external-rgw-lb")
    assert ep is not None
    assert len(ep["subsets"]) == 2
    assert ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"] == "true"
    assert len(slice_pairs(kube, "ocs-external-rgw-lb")) == 12

    # Second run: nothing is written.
    kube.reset_requests()
    err = ok(run_sync(config, kubeconfig))
    assert kube.write_requests() == []
    assert "created=0 updated=0 deleted=0 unchanged=8" in err

    # One address+port removed: exactly it disappears, from the slice and the Endpoints.
    smaller = rgw_entry()
    smaller["endpoints"].remove({"address": "192.0.2.55", "port": 8081})
    write(tmp_path, [smaller, rgw_entry(range(60, 62), name="other")])
    kube.reset_requests()
    ok(run_sync(config, kubeconfig))
    assert sorted(r.method for r in kube.write_requests()) == ["PUT", "PUT"]
    expected = {f"192.0.2.{i}:{p}" for i in range(50, 56) for p in (8080, 8081)}
    expected.discard("192.0.2.55:8081")
    assert slice_pairs(kube, "ocs-external-rgw-lb") == expected
    assert endpoints_pairs(kube, "ocs-external-rgw-lb") == expected

    # The other Service removed from the file: its objects go (policy sync).
    write(tmp_path, [smaller])
    ok(run_sync(config, kubeconfig))
    assert kube.get_object("Service", "storage", "other") is None
    assert kube.get_object("Endpoints", "storage", "other") is None
    assert slices_of(kube, "other") == []
    assert kube.get_object("Service", "storage", "ocs-external-rgw-lb") is not None


def test_upsert_only_never_deletes_and_create_only_never_updates(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(), rgw_entry(range(60, 62), name="other")])
    ok(run_sync(config, kubeconfig))

    write(tmp_path, [rgw_entry(range(50, 53))], policy="upsert-only")
    kube.reset_requests()
    ok(run_sync(config, kubeconfig))
    assert {r.method for r in kube.write_requests()} == {"PUT"}
    assert kube.get_object("Service", "storage", "other") is not None
    assert len(slice_pairs(kube, "ocs-external-rgw-lb")) == 6

    write(tmp_path, [rgw_entry(range(50, 51)), rgw_entry(name="brand-new")],
          policy="create-only")
    kube.reset_requests()
    ok(run_sync(config, kubeconfig))
    assert {r.method for r in kube.write_requests()} == {"POST"}
    assert len(slice_pairs(kube, "ocs-external-rgw-lb")) == 6
    assert kube.get_object("Service", "storage", "brand-new") is not None


def test_plan_render_validate_write_nothing(kube: KubeApiServer, kubeconfig: Path,
                                            tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry()])
    plan = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    ok(plan)
    assert "+ create Service storage/ocs-external-rgw-lb" in plan.stdout
    assert "+ create EndpointSlice storage/ocs-external-rgw-lb-ipv4-" in plan.stdout
    assert "    + 192.0.2.50:8080/TCP http" in plan.stdout
    assert kube.write_requests() == []

    ok(run_sync(config, kubeconfig))
    smaller = rgw_entry()
    smaller["endpoints"].remove({"address": "192.0.2.52", "port": 8080})
    smaller["endpoints"].append({"address": "192.0.2.99", "port": 8080})
    write(tmp_path, [smaller])
    kube.reset_requests()
    plan = cli("plan", "-c", config, "--kubeconfig", kubeconfig)
    ok(plan)
    assert "~ update Endpoints storage/ocs-external-rgw-lb" in plan.stdout
    assert "    - 192.0.2.52:8080/TCP http" in plan.stdout
    assert "    + 192.0.2.99:8080/TCP http" in plan.stdout
    dry = run_sync(config, kubeconfig, "--dry-run")
    ok(dry)
    assert dry.stdout == plan.stdout
    assert kube.write_requests() == []

    # render and validate need no cluster at all.
    rendered = cli("render", "-c", config)
    ok(rendered)
    docs = list(yaml.safe_load_all(rendered.stdout))
    assert [d["kind"] for d in docs] == ["Service", "EndpointSlice", "EndpointSlice",
                                         "Endpoints"]
    as_json = json.loads(ok_stdout(cli("render", "-c", config, "-o", "json")))
    assert as_json["kind"] == "List" and len(as_json["items"]) == 4
    assert "OK" in ok_stdout(cli("validate", "-c", config))
    assert "static" in ok_stdout(cli("providers"))


def ok_stdout(result: subprocess.CompletedProcess[str]) -> str:
    ok(result)
    return result.stdout


def test_config_from_environment_variable(kube: KubeApiServer, kubeconfig: Path,
                                          tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry()])
    result = cli("run", "--kubeconfig", kubeconfig, env={"ENDPOINTS_SYNC_CONFIG": str(config)})
    ok(result)
    assert kube.get_object("Service", "storage", "ocs-external-rgw-lb") is not None
    assert cli("run", "--kubeconfig", kubeconfig).returncode == 2


def test_python_m_syncer_and_the_console_script_run_in_their_own_process(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    """Most tests call the CLI's entry point in-process (tests/cli.py); this one proves the
    two ways a user starts it: `python -m syncer` and the installed `endpoints-sync`."""
    config = write(tmp_path, [rgw_entry()])
    ok(cli("run", "-c", config, "--kubeconfig", kubeconfig, subprocess_only=True))
    assert kube.get_object("Service", "storage", "ocs-external-rgw-lb") is not None
    script = Path(sys.executable).parent / "endpoints-sync"
    done = subprocess.run([str(script), "plan", "-c", str(config), "--kubeconfig",
                           str(kubeconfig)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "No changes" in done.stdout


def foreign_service(name: str, selector: bool, labels: dict[str, str] | None = None) -> JSON:
    spec: JSON = {"ports": [{"name": "http", "port": 80}]}
    if selector:
        spec["selector"] = {"app": name}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "storage", "labels": labels or {}},
            "spec": spec}


def test_foreign_objects_are_never_touched(kube: KubeApiServer, kubeconfig: Path,
                                           tmp_path: Path) -> None:
    kube.put_object(foreign_service("with-selector", selector=True))
    kube.put_object(foreign_service("hand-made", selector=False))
    theirs = {"app.kubernetes.io/managed-by": "endpoints-sync",
              "endpoints-sync.io/owner": "cluster-b"}
    kube.put_object(foreign_service("theirs", selector=False, labels=theirs))
    kube.put_object({"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": "theirs", "namespace": "storage", "labels": theirs},
                     "subsets": [{"addresses": [{"ip": "198.51.100.7"}],
                                  "ports": [{"port": 80}]}]})
    before = {k: kube.list_objects(k, "storage") for k in ("Service", "Endpoints")}

    config = write(tmp_path, [rgw_entry(name="with-selector"), rgw_entry(name="hand-made"),
                              rgw_entry(name="mine")])
    result = run_sync(config, kubeconfig)
    err = ok(result, 1)
    assert "with-selector" in err and "selector" in err
    assert "hand-made" in err and "without" in err
    assert kube.get_object("Service", "storage", "mine") is not None
    for name in ("with-selector", "hand-made"):
        assert slices_of(kube, name) == []
    after = {k: kube.list_objects(k, "storage") for k in ("Service", "Endpoints")}
    for kind, objects in before.items():
        for obj in objects:
            assert obj in after[kind]
    # Another owner's objects in the same namespace survive a prune of ours.
    write(tmp_path, [rgw_entry(name="mine"), rgw_entry(name="mine2")])
    ok(run_sync(config, kubeconfig))
    assert kube.get_object("Service", "storage", "theirs") is not None
    assert kube.get_object("Endpoints", "storage", "theirs") is not None


def test_ipv6_dual_stack_and_many_backends(kube: KubeApiServer, kubeconfig: Path,
                                           tmp_path: Path) -> None:
    dual, v6, big = dual_stack_entries()
    config = write(tmp_path, [dual, v6, big])
    ok(run_sync(config, kubeconfig))
    dual_slices = {s["addressType"]: [e["addresses"][0] for e in s["endpoints"]]
                   for s in slices_of(kube, "dual", "external")}
    assert dual_slices == {"IPv4": ["192.0.2.10"], "IPv6": ["2001:db8::10", "2001:db8::11"]}
    ep = kube.get_object("Endpoints", "external", "dual")
    assert ep is not None
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == [
        "192.0.2.10", "2001:db8::10", "2001:db8::11"]
    (v6slice,) = slices_of(kube, "v6only", "external")
    assert v6slice["addressType"] == "IPv6" and v6slice["ports"][0]["protocol"] == "UDP"
    big_slices = slices_of(kube, "big", "external")
    assert sorted(len(s["endpoints"]) for s in big_slices) == [50, 100, 100]
    kube.reset_requests()
    ok(run_sync(config, kubeconfig))
    assert kube.write_requests() == []


def test_special_addresses_are_dropped_with_a_warning(kube: KubeApiServer, kubeconfig: Path,
                                                      tmp_path: Path) -> None:
    svc = {"name": "web", "ports": [{"port": 80}],
           "endpoints": [{"address": a} for a in (
               "192.0.2.1", "127.0.0.1", "0.0.0.0", "169.254.1.1", "::1", "fe80::1",
               "224.0.0.5", "ff02::1", "203.0.113.9")]}
    config = write(tmp_path, [svc], extra="deny_cidrs: [203.0.113.0/24]\n")
    err = ok(run_sync(config, kubeconfig))
    (sl,) = slices_of(kube, "web", "external")
    assert [e["addresses"][0] for e in sl["endpoints"]] == ["192.0.2.1"]
    for reason in ("loopback", "unspecified", "link-local", "link-local multicast",
                   "deny_cidrs"):
        assert reason in err
    assert "source 'rgw'" in err


def test_missing_namespace_fails_that_service_only(kube: KubeApiServer, kubeconfig: Path,
                                                   tmp_path: Path) -> None:
    lost = rgw_entry(name="lost")
    lost["namespace"] = "nowhere"
    config = write(tmp_path, [lost, rgw_entry()])
    err = ok(run_sync(config, kubeconfig), 1)
    assert 'namespaces "nowhere" not found' in err
    assert "failed_writes=1" in err
    assert kube.get_object("Service", "storage", "ocs-external-rgw-lb") is not None


def test_empty_guard_and_allow_empty(kube: KubeApiServer, kubeconfig: Path,
                                     tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(), rgw_entry(name="b")])
    ok(run_sync(config, kubeconfig))
    emptied = rgw_entry()
    emptied["endpoints"] = []
    write(tmp_path, [emptied, rgw_entry(name="b")])
    err = ok(run_sync(config, kubeconfig), 1)
    assert "allow_empty" in err
    assert len(slice_pairs(kube, "ocs-external-rgw-lb")) == 12
    config.write_text(config.read_text().replace("path: inventory.yaml",
                                                 "path: inventory.yaml, allow_empty: true"))
    ok(run_sync(config, kubeconfig))
    assert slice_pairs(kube, "ocs-external-rgw-lb") == set()
    assert endpoints_pairs(kube, "ocs-external-rgw-lb") == set()


def test_delete_ratio_guard_holds_until_force(kube: KubeApiServer, kubeconfig: Path,
                                              tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry(name=n) for n in ("a", "b", "c")])
    ok(run_sync(config, kubeconfig))
    write(tmp_path, [rgw_entry(name="a")])
    kube.reset_requests()
    err = ok(run_sync(config, kubeconfig), 1)
    assert "--force" in err
    assert kube.write_requests() == []
    ok(run_sync(config, kubeconfig, "--force"))
    assert kube.get_object("Service", "storage", "b") is None
    assert kube.get_object("Service", "storage", "a") is not None


def test_transient_api_errors_are_retried(kube: KubeApiServer, kubeconfig: Path,
                                          tmp_path: Path) -> None:
    kube.inject_fault("POST", r"/services$", status=429, retry_after=1)
    kube.inject_fault("GET", r"/endpointslices", status=500)
    kube.inject_fault("PUT", r".*", status=503)
    config = write(tmp_path, [rgw_entry()])
    ok(run_sync(config, kubeconfig))
    posts = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/services")]
    assert [r.status for r in posts] == [429, 201]
    assert kube.get_object("Service", "storage", "ocs-external-rgw-lb") is not None


def test_unreachable_cluster_exits_1(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with KubeApiServer() as server:
        server.write_kubeconfig(kubeconfig)
    config = write(tmp_path, [rgw_entry()])
    result = run_sync(config, kubeconfig)
    assert result.returncode == 1
    assert "Kubernetes API" in result.stderr


def test_kubectl_reads_what_the_syncer_wrote(kube: KubeApiServer, kubeconfig: Path,
                                             tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl must be on the PATH for this test"
    ok(run_sync(write(tmp_path, [rgw_entry()]), kubeconfig))
    base = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run([*base, "get",
                          "svc,endpoints,endpointslices", "-A", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=60)
    items = json.loads(out.stdout)["items"]
    kinds = sorted(i["kind"] for i in items if i["metadata"]["namespace"] == "storage")
    assert kinds == ["EndpointSlice", "EndpointSlice", "Endpoints", "Service"]
    table = subprocess.run([*base, "get",
                            "svc,endpoints,endpointslices", "-A"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert "ocs-external-rgw-lb" in table.stdout


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).parent / "endpoints-sync"
    out = subprocess.run([str(script), "providers"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0
    assert out.stdout == ok_stdout(cli("providers"))


@pytest.mark.parametrize("args", [["run", "--interval", "0"], ["render", "-o", "xml"], []])
def test_bad_command_line_exits_2(args: list[str]) -> None:
    assert cli(*args).returncode == 2


def test_interval_loop_follows_the_inventory_and_stops_on_sigterm(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry()])
    proc = subprocess.Popen([sys.executable, "-m", "syncer", "run", "-c", str(config),
                             "--kubeconfig", str(kubeconfig), "--interval", "0.3"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(slice_pairs(kube, "ocs-external-rgw-lb")) == 12)
        write(tmp_path, [rgw_entry(range(50, 52))])
        assert wait_for(lambda: len(slice_pairs(kube, "ocs-external-rgw-lb")) == 4)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping after the writes in flight" in err


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_adopt_takes_over_a_hand_kept_endpoints(kube: KubeApiServer, kubeconfig: Path,
                                                tmp_path: Path) -> None:
    # The article's starting point: a selectorless Service and a hand-written Endpoints.
    kube.put_object(foreign_service("ocs-external-rgw-lb", selector=False))
    kube.put_object({"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": "ocs-external-rgw-lb", "namespace": "storage"},
                     "subsets": [{"addresses": [{"ip": "192.0.2.40"}],
                                  "ports": [{"name": "http", "port": 8080}]}]})
    config = write(tmp_path, [rgw_entry()])
    ok(run_sync(config, kubeconfig), 1)
    assert endpoints_pairs(kube, "ocs-external-rgw-lb") == {"192.0.2.40:8080"}
    write(tmp_path, [rgw_entry()], extra="adopt: true\n")
    ok(run_sync(config, kubeconfig))
    assert len(endpoints_pairs(kube, "ocs-external-rgw-lb")) == 12
    svc = kube.get_object("Service", "storage", "ocs-external-rgw-lb")
    assert svc is not None and OWNED.items() <= svc["metadata"]["labels"].items()


def test_json_logs_are_one_object_per_line(kube: KubeApiServer, kubeconfig: Path,
                                           tmp_path: Path) -> None:
    config = write(tmp_path, [rgw_entry()])
    err = ok(run_sync(config, kubeconfig, "--log-format", "json"))
    lines = [json.loads(line) for line in err.splitlines()]
    assert all({"time", "level", "msg"} <= line.keys() for line in lines)
    assert lines[-1]["msg"].startswith("summary created=4 ")
    assert any(line.get("source") == "rgw" for line in lines)
