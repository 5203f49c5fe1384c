"""Watch mode (`run --watch`) end to end: the real CLI in a subprocess (it handles SIGTERM) with
a static or file_sd source, against the Kubernetes API test server and its watches.

Every wait is a hang guard (WITHIN seconds), not a timing assertion: the figures are
bench/watch.py's."""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers.file_sd import FileSdOptions, FileSdProvider
from providers.http_sd import HttpSdOptions, HttpSdProvider
from providers.static import StaticOptions, StaticProvider
from syncer.discovery import Discovery
from syncer.errors import ConfigError
from syncer.model import ServiceSpec
from syncer.plugin import SourceContext, watch_files, watches
from syncer.watch import Feeds
from tests.cli import Loop, cli, exited
from tests.kubeapi import KubeApiServer
from tests.kubeapi.resources import by_kind
from tests.specs import rgw_entry, slice_endpoints
from tests.test_loop import get

JSON = dict[str, Any]
WITHIN = 10.0  # seconds: the hang guard of every wait
NS = "storage"
RGW = "ocs-external-rgw-lb"


def write_inventory(folder: Path, *services: JSON) -> None:
    """Atomically, as the README asks of whatever writes an inventory while watched."""
    tmp = folder / "inventory.yaml.tmp"
    tmp.write_text(yaml.safe_dump({"services": list(services)}))
    tmp.replace(folder / "inventory.yaml")


def static_config(folder: Path, extra: str = "") -> Path:
    config = folder / "config.yaml"
    config.write_text(f"owner: cluster-a\nnamespace: external\n{extra}sources:\n"
                      "  - {name: rgw, provider: static, path: inventory.yaml}\n")
    return config


@pytest.fixture
def watching(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> Iterator[Loop]:
    """`run --watch` of two static Services (rgw 192.0.2.50-55, other 192.0.2.60-61), once
    its first full sync is done; at the end it must exit 0 on SIGTERM."""
    write_inventory(tmp_path, rgw_entry(), rgw_entry(range(60, 62), name="other"))
    loop = Loop(static_config(tmp_path), kubeconfig, "--watch")
    try:
        loop.wait_for(lambda: "summary created=8 " in loop.log, WITHIN)
        yield loop
        loop.stop()
        assert loop.proc.returncode == 0, loop.log
    finally:
        loop.kill()


def addresses(kube: KubeApiServer, service: str) -> set[str]:
    return slice_endpoints(kube.list_objects("EndpointSlice", NS), service)


def rgw_pairs(hosts: range | list[int]) -> set[str]:
    return {f"192.0.2.{i}:{p}" for i in hosts for p in (8080, 8081)}


def slice_of(kube: KubeApiServer, service: str) -> JSON:
    return next(s for s in kube.list_objects("EndpointSlice", NS)
                if s["metadata"]["labels"]["kubernetes.io/service-name"] == service)


def settled(loop: Loop, count: int) -> Callable[[], bool]:
    """The watch's `count`-th incremental sync is logged."""
    return lambda: loop.log.count("watch: synced") >= count


def test_an_inventory_edit_syncs_only_that_service_reading_only_its_objects(
        kube: KubeApiServer, watching: Loop, tmp_path: Path) -> None:
    time.sleep(1.2)  # the file watch's first poll has seen the file as it was
    kube.reset_requests()
    write_inventory(tmp_path, rgw_entry(range(50, 53)), rgw_entry(range(60, 62), name="other"))
    watching.wait_for(lambda: addresses(kube, RGW) == rgw_pairs(range(50, 53)), WITHIN)
    watching.wait_for(settled(watching, 1), WITHIN)
    assert addresses(kube, "other") == rgw_pairs(range(60, 62))
    assert "source 'rgw': 1 services changed" in watching.log

    requests = [r for r in kube.requests if "watch=true" not in r.query]
    touched = {(r.method, r.path.rsplit("/", 1)[-1]) for r in requests}
    assert not [r for r in requests if "other" in r.path + r.query], requests
    # Read: the Service and Endpoints by name, its EndpointSlices by label, nothing listed.
    assert ("GET", RGW) in touched and ("GET", "endpointslices") in touched
    (listing,) = [r for r in requests if r.path.endswith("/endpointslices")]
    assert f"kubernetes.io/service-name%3D{RGW}" in listing.query
    assert not [r for r in requests if r.method == "GET" and r.path.endswith("/services")]
    # Written: only what changed (both slices and the Endpoints lose addresses), once each;
    # the echoes of those writes on the Kubernetes watch start no further sync.
    writes = sorted((r.method, r.path.rsplit("/", 2)[-2]) for r in kube.write_requests())
    assert writes == [("PUT", "endpoints"), ("PUT", "endpointslices"), ("PUT", "endpointslices")]
    time.sleep(0.5)
    assert watching.log.count("watch: synced") == 1, watching.log


def test_a_broken_inventory_is_logged_naming_the_file_and_the_cluster_kept_until_fixed(
        kube: KubeApiServer, watching: Loop, tmp_path: Path) -> None:
    before = addresses(kube, RGW)
    writes = len(kube.write_requests())
    (tmp_path / "inventory.yaml").write_text("services:\n  - name: [unclosed\n")
    watching.wait_for(lambda: "not synced until the file is fixed" in watching.log, WITHIN)
    line = next(ln for ln in watching.lines if "not synced until the file is fixed" in ln)
    assert "inventory.yaml" in line and line.split()[1] == "error", line
    time.sleep(1.5)  # polled again meanwhile: still broken, still nothing written
    assert watching.proc.poll() is None
    assert addresses(kube, RGW) == before and len(kube.write_requests()) == writes
    assert watching.log.count("not synced until the file is fixed") == 1  # once per change

    write_inventory(tmp_path, rgw_entry(range(50, 52)), rgw_entry(range(60, 62), name="other"))
    watching.wait_for(lambda: addresses(kube, RGW) == rgw_pairs(range(50, 52)), WITHIN)


def test_a_hand_edited_slice_and_a_deleted_endpoints_are_repaired(
        kube: KubeApiServer, watching: Loop) -> None:
    edited = copy.deepcopy(slice_of(kube, RGW))
    edited["endpoints"] = [{"addresses": ["203.0.113.9"], "conditions": {"ready": True}}]
    kube.put_object(edited)
    watching.wait_for(lambda: addresses(kube, RGW) == rgw_pairs(range(50, 56)), WITHIN)

    kube.store.delete(by_kind("Endpoints"), NS, "other")
    watching.wait_for(lambda: kube.get_object("Endpoints", NS, "other") is not None, WITHIN)
    ep = kube.get_object("Endpoints", NS, "other")
    assert ep is not None
    assert {a["ip"] for s in ep["subsets"] for a in s["addresses"]} == {"192.0.2.60",
                                                                      "192.0.2.61"}


def test_a_storm_of_edits_costs_one_write_per_changed_object(
        kube: KubeApiServer, watching: Loop) -> None:
    time.sleep(0.5)
    kube.reset_requests()
    syncs = watching.log.count("watch: synced")
    rgw, other = slice_of(kube, RGW), slice_of(kube, "other")
    for i in range(30):  # someone fighting over two slices, in one burst
        for original in (rgw, other):
            edited = copy.deepcopy(original)
            edited["endpoints"] = [{"addresses": [f"203.0.113.{i + 1}"]}]
            kube.put_object(edited)
    watching.wait_for(lambda: addresses(kube, RGW) == rgw_pairs(range(50, 56))
                      and addresses(kube, "other") == rgw_pairs(range(60, 62)), WITHIN)
    watching.wait_for(settled(watching, syncs + 1), WITHIN)
    time.sleep(0.5)
    puts = sorted(r.path.rsplit("/", 1)[-1] for r in kube.write_requests())
    assert puts == sorted([rgw["metadata"]["name"], other["metadata"]["name"]]), puts
    assert watching.log.count("watch: synced") == syncs + 1, watching.log


def test_sigterm_mid_watch_exits_0_and_the_health_endpoints_answer(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    write_inventory(tmp_path, rgw_entry())
    loop = Loop(static_config(tmp_path), kubeconfig, "--watch", "--metrics-port", "0",
                "--metrics-address", "127.0.0.1")
    try:
        loop.wait_for(lambda: "summary created=" in loop.log, WITHIN)
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", loop.log)
        assert found is not None
        base = f"http://127.0.0.1:{found.group(1)}"
        assert get(f"{base}/readyz")[0] == 200 and get(f"{base}/healthz")[0] == 200
        assert "endpoints_sync_objects_total" in get(f"{base}/metrics")[1]
        took = loop.stop()
        assert loop.proc.returncode == 0, loop.log
        assert took < WITHIN
        assert "SIGTERM: stopping" in loop.log and "Traceback" not in loop.log
    finally:
        loop.kill()


def test_a_broken_config_at_a_full_resync_is_logged_and_the_process_keeps_running(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    write_inventory(tmp_path, rgw_entry())
    config = static_config(tmp_path)
    loop = Loop(config, kubeconfig, "--watch", "--interval", "1")
    try:
        loop.wait_for(lambda: "summary created=" in loop.log, WITHIN)
        config.write_text("owner: cluster-a\nsources: 7\n")
        loop.wait_for(lambda: "configuration error (keeping the cluster as it is)" in loop.log,
                      WITHIN)
        assert "config.yaml" in loop.log
        assert addresses(kube, RGW) == rgw_pairs(range(50, 56))
        # Fixed, with another source layout: the next full resync follows it.
        static_config(tmp_path, extra="max_delete_ratio: 1.0\n")
        write_inventory(tmp_path, rgw_entry(range(50, 51)))
        loop.wait_for(lambda: addresses(kube, RGW) == rgw_pairs([50]), WITHIN)
        loop.stop()
        assert loop.proc.returncode == 0, loop.log
    finally:
        loop.kill()


def test_file_sd_targets_are_watched(kube: KubeApiServer, kubeconfig: Path,
                                     tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()

    def write(name: str, hosts: list[str]) -> None:
        tmp = targets / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": hosts, "labels": {"job": "node"}}]))
        tmp.replace(targets / name)

    write("a.json", ["198.51.100.1:9100"])
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      "  - {name: nodes, provider: file_sd, service_label: job,\n"
                      "     files: ['targets/*.json']}\n")
    loop = Loop(config, kubeconfig, "--watch")
    try:
        loop.wait_for(lambda: "summary created=" in loop.log, WITHIN)
        write("b.json", ["198.51.100.2:9100"])  # a new file the glob matches
        loop.wait_for(lambda: {e.split(":")[0] for e in slice_endpoints(
            kube.list_objects("EndpointSlice", "external"), "node")}
            == {"198.51.100.1", "198.51.100.2"}, WITHIN)
        loop.stop()
        assert loop.proc.returncode == 0, loop.log
    finally:
        loop.kill()


def test_watch_with_dry_run_or_stdin_is_a_usage_error_and_a_bad_config_exits_2(
        tmp_path: Path) -> None:
    config = static_config(tmp_path)
    err = exited(cli("run", "-c", config, "--watch", "--dry-run"), 2)
    assert "--watch" in err and "--dry-run" in err
    err = exited(cli("run", "-c", "-", "--watch", stdin="sources: []\n"), 2)
    assert "-c - cannot be used with --watch" in err
    assert "--watch" in cli("run", "--help").stdout
    config.write_text("sources: 7\n")  # at the first run, a bad configuration still exits 2
    assert "config.yaml: sources" in exited(cli("run", "-c", config, "--watch"), 2)


# --- the plugin API: watch_files and watches() ---------------------------------------------


class Recorder:
    """An `emit` that keeps every state."""

    def __init__(self) -> None:
        self.states: list[tuple[ServiceSpec, ...]] = []
        self.arrived = threading.Event()

    def __call__(self, state: Discovery | Sequence[ServiceSpec]) -> None:
        self.states.append(Discovery.of(state).services)
        self.arrived.set()

    def next(self) -> tuple[ServiceSpec, ...]:
        assert self.arrived.wait(WITHIN), "nothing emitted"
        self.arrived.clear()
        return self.states[-1]


def static_provider(folder: Path) -> StaticProvider:
    context = SourceContext("rgw", str(folder / "config.yaml"), "sources[0]", folder, "storage")
    return StaticProvider(StaticOptions(path=folder / "inventory.yaml"), context)


@pytest.mark.slow  # three polls of a second
def test_static_watch_emits_at_once_then_each_change_and_skips_a_broken_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_inventory(tmp_path, rgw_entry())
    provider = static_provider(tmp_path)
    emit, stop = Recorder(), threading.Event()
    thread = threading.Thread(target=provider.watch, args=(emit, stop), daemon=True)
    thread.start()
    try:
        assert list(emit.next()) == provider.discover()  # at once: the state may have moved
        write_inventory(tmp_path, rgw_entry(range(50, 51)))
        assert [b.address for b in emit.next()[0].backends] == ["192.0.2.50"] * 2
        (tmp_path / "inventory.yaml").write_text("services: {}\n")
        deadline = time.monotonic() + WITHIN
        while "not synced until the file is fixed" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert "inventory.yaml: services" in caplog.text
        assert len(emit.states) == 2
        write_inventory(tmp_path, rgw_entry(range(51, 52)))
        assert [b.address for b in emit.next()[0].backends] == ["192.0.2.51"] * 2
    finally:
        stop.set()
        thread.join(WITHIN)
    assert not thread.is_alive()


def test_watch_files_reads_again_a_file_that_changed_while_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("1")
    reads: list[str] = []
    emitted: list[str] = []
    stop = threading.Event()

    def read() -> str:
        text = path.read_text()
        reads.append(text)
        if len(reads) == 1:
            path.write_text("22")  # a writer still at work while we read
        return text

    def emit(text: str) -> None:
        emitted.append(text)
        stop.set()

    watch_files(lambda: [path], read, emit, stop, logging.getLogger("t"))
    assert emitted == ["22"] and reads == ["1", "22"]


def test_only_providers_with_a_change_feed_watch(tmp_path: Path) -> None:
    context = SourceContext("s", "c.yaml", "sources[0]", tmp_path)
    assert watches(static_provider(tmp_path))
    assert watches(FileSdProvider(FileSdOptions(files=("t.json",), service="t"), context))
    http = HttpSdProvider(HttpSdOptions(url="http://127.0.0.1:9/sd", service="t"), context)
    assert not watches(http)
    with pytest.raises(NotImplementedError):
        http.watch(lambda state: None, threading.Event())


def test_watch_files_passes_config_errors_to_the_log_only(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    stop = threading.Event()

    def read() -> Discovery:
        stop.set()
        raise ConfigError(str(tmp_path / "x.yaml"), "services[0]", "expected a mapping")

    watch_files(lambda: [tmp_path / "x.yaml"], read, lambda s: None, stop,
                logging.getLogger("t"))
    assert "x.yaml: services[0]: expected a mapping; not synced" in caplog.text


def test_a_failing_watch_is_logged_naming_its_file_and_called_again_after_a_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINTS_SYNC_RETRY_BACKOFF", "0.05")
    calls: list[float] = []
    again = threading.Event()

    def watch(stop: threading.Event) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConfigError(str(tmp_path / "inventory.yaml"), "services", "expected a list")
        again.set()
        stop.wait()

    feeds = Feeds(backoff_max=1.0)
    feeds.start("rgw", watch, "rgw")
    try:
        assert again.wait(WITHIN), caplog.text
    finally:
        feeds.close()
    assert "source 'rgw': watch failed (the last state is kept); watching again in 0.05s: " \
        f"{tmp_path / 'inventory.yaml'}: services: expected a list" in caplog.text
    assert "watching again in 0.1s" in caplog.text  # doubled
    assert calls[2] - calls[1] >= 0.1
