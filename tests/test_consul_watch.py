"""`run --watch` for Consul: blocking queries through py-consul against the Consul double.

First the double's blocking queries (py-consul's own `index=`/`wait=` calls), then
ConsulProvider.watch() in a thread with an emit that records, then the CLI end to end.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import consul as py_consul
import pytest
from pydantic import ValidationError

from providers.consul import ConsulOptions, ConsulProvider, check_signatures
from providers.consul_watch import TokenBucket, blocking_params, next_index
from syncer.options import CONFIG_DIR
from syncer.plugin import Discovery, PermanentSourceError, ServiceSpec, SourceContext
from tests.cli import Loop
from tests.consul_double import ConsulDouble, Status, parse_wait, running
from tests.kubeapi import KubeApiServer

HANG_GUARD = 10.0  # seconds: a bound against hangs, never a performance figure


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    """`web` on two nodes, `api` on one."""
    double = ConsulDouble()
    double.add_node("node-a", "192.0.2.10")
    double.add_node("node-b", "192.0.2.11")
    double.register("web", "node-a", port=8080, service_id="web-a")
    double.register("web", "node-b", port=8080, service_id="web-b")
    double.register("api", "node-b", port=9000, service_id="api-b")
    yield from running(double)


# --- the double: blocking queries as Consul answers them ------------------------------------


def client(double: ConsulDouble) -> Any:
    return py_consul.Consul(host="127.0.0.1", port=double.port, connections_timeout=5)


def later(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_double_holds_a_blocking_query_until_its_index_moves(consul: ConsulDouble) -> None:
    c = client(consul)
    index, entries = c.health.service("web")
    assert int(index) > 0 and len(entries) == 2
    later(0.3, lambda: consul.deregister("web-a"))
    start = time.monotonic()
    new_index, entries = c.health.service("web", index=index, wait="5s")
    assert 0.25 < time.monotonic() - start < 2
    assert int(new_index) > int(index)
    assert [e["Service"]["ID"] for e in entries] == ["web-b"]


def test_double_answers_after_wait_when_nothing_changes(consul: ConsulDouble) -> None:
    c = client(consul)
    index, _ = c.catalog.services()
    start = time.monotonic()
    same, _ = c.catalog.services(index=index, wait="300ms")
    elapsed = time.monotonic() - start
    assert same == index
    assert 0.3 <= elapsed < 0.3 + 0.3 / 16 + 0.3  # wait, Consul's jitter (wait/16), slack


def test_double_check_change_moves_health_index_not_catalog_index(
        consul: ConsulDouble) -> None:
    c = client(consul)
    catalog_index, _ = c.catalog.services()
    web_index, _ = c.health.service("web")
    api_index, _ = c.health.service("api")
    consul.set_check("web-a", "critical")
    assert c.catalog.services()[0] == catalog_index
    assert int(c.health.service("web")[0]) > int(web_index)
    assert c.health.service("api")[0] == api_index  # another service's index stays
    # A blocked catalog query is not woken by the check change.
    start = time.monotonic()
    assert c.catalog.services(index=catalog_index, wait="200ms")[0] == catalog_index
    assert time.monotonic() - start >= 0.2


def test_double_restart_resets_indexes_and_answers_held_queries(consul: ConsulDouble) -> None:
    c = client(consul)
    index, _ = c.health.service("web")
    later(0.2, lambda: consul.restart(index=2))
    start = time.monotonic()
    low, entries = c.health.service("web", index=index, wait="5s")
    assert time.monotonic() - start < 2
    assert int(low) <= 2 < int(index) and len(entries) == 2  # data as it was


@pytest.mark.parametrize(("mode", "expected"), [("zero", "0"), ("absent", None)])
def test_double_can_answer_index_zero_or_none(consul: ConsulDouble, mode: str,
                                              expected: str | None) -> None:
    consul.index_header = mode  # type: ignore[assignment]
    response = client(consul).http.get(lambda r: r, "/v1/health/service/web")
    assert response.headers.get("X-Consul-Index") == expected


def test_double_wait_is_a_go_duration() -> None:
    assert parse_wait("1m30s") == 90 and parse_wait("250ms") == 0.25
    with pytest.raises(ValueError, match="invalid duration"):
        parse_wait("5 minutes")


# --- the rules, as pure functions -----------------------------------------------------------


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (0, 57, 57),  # the first read
    (57, 60, 60),  # moved on
    (57, 57, 57),  # the wait passed
    (57, 3, 0),  # went backwards: start over
    (57, 0, 0),  # backwards to 0: start over
    (0, 0, 1),  # 0 would not block: 1 does
    (57, None, 0),  # no index at all: read at once, paced by the rate limit
])
def test_next_index_follows_consuls_rules(previous: int, returned: int | None,
                                          expected: int) -> None:
    assert next_index(previous, returned) == expected


def test_index_zero_is_not_a_blocking_query() -> None:
    assert blocking_params(0, 300) == []
    assert blocking_params(42, 299.5) == [("index", "42"), ("wait", "299500ms")]


def test_token_bucket_allows_a_burst_of_two_then_one_a_second() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
    stop = threading.Event()
    assert bucket.take(stop) and bucket.take(stop)
    waits: list[float | None] = []

    class Clocked(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            now[0] += timeout or 0
            return False

    assert bucket.take(Clocked())
    assert waits == [pytest.approx(1.0)]
    stop.set()
    assert not bucket.take(stop)


def test_check_signatures_include_the_checks_of_the_node() -> None:
    def check(node: str, check_id: str, service: str, status: str) -> dict[str, str]:
        return {"Node": node, "CheckID": check_id, "ServiceName": service,
                "ServiceID": f"{service}-{node}" if service else "", "Status": status}

    checks = [check("n1", "serfHealth", "", "passing"), check("n2", "serfHealth", "", "passing"),
              check("n1", "c", "web", "passing"), check("n2", "c", "api", "passing")]
    before = check_signatures(checks)
    checks[0] = check("n1", "serfHealth", "", "critical")  # node n1 fails
    after = check_signatures(checks)
    assert before["web"] != after["web"] and before["api"] == after["api"]


# --- ConsulProvider.watch -------------------------------------------------------------------


class Recorder:
    """The emit callback: every state, in order, and a way to wait for one."""

    def __init__(self) -> None:
        self.states: list[Discovery] = []
        self._changed = threading.Condition()

    def __call__(self, state: Discovery | Sequence[ServiceSpec]) -> None:
        assert isinstance(state, Discovery)
        with self._changed:
            self.states.append(state)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Discovery], bool],
                 timeout: float = HANG_GUARD) -> Discovery:
        """The first state emitted so far or later that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for state in self.states:
                    if predicate(state):
                        return state
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no such state within {timeout} s: {self.states}"
                self._changed.wait(remaining)

    def count(self) -> int:
        with self._changed:
            return len(self.states)


def addresses(state: Discovery, service: str) -> dict[str, bool]:
    """address -> ready, of one Service of a state ({} when the Service is not in it)."""
    spec = next((s for s in state.services if s.name == service), None)
    return {} if spec is None else {b.address: b.ready for b in spec.backends}


def make(double: ConsulDouble, tmp_path: Path, **options: Any) -> ConsulProvider:
    opts = ConsulOptions.model_validate(
        {"url": double.url, "timeout_seconds": 2, "watch_wait": 30, **options},
        context={CONFIG_DIR: tmp_path})
    return ConsulProvider(opts, SourceContext(source="consul", config_file="config.yaml",
                                              field_path="sources[0]", config_dir=tmp_path))


@contextmanager
def watching(provider: ConsulProvider) -> Iterator[Recorder]:
    """provider.watch() in a thread, as the core runs it; on leaving, stop must return it
    within about a second even with requests still blocked."""
    recorder, stop = Recorder(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            provider.watch(recorder, stop)
        except BaseException as e:
            failures.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        stop.set()
        thread.join(1.5)
        assert not thread.is_alive(), "watch() did not return promptly after stop"
    assert not failures, failures


def requests_during(double: ConsulDouble, seconds: float) -> list[str]:
    start = time.monotonic()
    time.sleep(seconds)
    with double._lock:
        return [r.path for r in double.requests if r.at >= start]


def test_first_state_is_what_discover_returns(consul: ConsulDouble, tmp_path: Path) -> None:
    provider = make(consul, tmp_path)
    with watching(provider) as states:
        first = states.wait_for(lambda s: True)
    assert first == provider.discover()
    assert addresses(first, "web") == {"192.0.2.10": True, "192.0.2.11": True}


def test_deregistration_emits_a_state_without_the_instance(consul: ConsulDouble,
                                                           tmp_path: Path) -> None:
    with watching(make(consul, tmp_path)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        time.sleep(0.2)  # the watches are blocked now
        start = time.monotonic()
        consul.deregister("web-a")
        state = states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.11": True})
        assert time.monotonic() - start < 1.0
    assert addresses(state, "api") == {"192.0.2.11": True}  # the complete state


def test_check_turning_critical_emits_not_ready(consul: ConsulDouble, tmp_path: Path) -> None:
    with watching(make(consul, tmp_path, passing_only=False)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        time.sleep(0.2)
        start = time.monotonic()
        consul.set_check("web-a", "critical")  # the catalog's index does not move
        states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.10": False,
                                                          "192.0.2.11": True})
        assert time.monotonic() - start < 1.0


def test_catalog_changes_add_and_remove_services(consul: ConsulDouble,
                                                 tmp_path: Path) -> None:
    with watching(make(consul, tmp_path)) as states:
        states.wait_for(lambda s: bool(addresses(s, "api")))
        consul.register("cache", "node-a", port=6379, service_id="cache-a")
        states.wait_for(lambda s: addresses(s, "cache") == {"192.0.2.10": True})
        consul.deregister("api-b")
        state = states.wait_for(lambda s: not addresses(s, "api"))
    assert {s.name for s in state.services} == {"web", "cache"}


def test_listed_services_watch_their_health_only(consul: ConsulDouble, tmp_path: Path) -> None:
    with watching(make(consul, tmp_path, services=["web"])) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        consul.deregister("web-b")
        states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.10": True})
    assert "/v1/catalog/services" not in consul.paths()
    assert {p for p in consul.paths()} == {"/v1/health/service/web"}


def test_index_reset_does_not_spin_nor_delete(consul: ConsulDouble, tmp_path: Path) -> None:
    with watching(make(consul, tmp_path)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        time.sleep(0.3)
        emitted = states.count()
        consul.restart(index=2)  # held queries answer at once, with indexes far lower
        seen = requests_during(consul, 1.0)
        # Per watch (catalog, web, api): the held answer, the read at index 0, one blocked.
        assert len(seen) <= 9, seen
        consul.deregister("web-b")  # and the watches still follow the new indexes
        states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.10": True})
    assert all(len(addresses(s, "web")) >= 1 for s in states.states[emitted:])


@pytest.mark.parametrize("mode", ["zero", "absent"])
def test_index_zero_or_absent_does_not_spin(consul: ConsulDouble, tmp_path: Path,
                                            mode: str) -> None:
    consul.index_header = mode  # type: ignore[assignment]
    with watching(make(consul, tmp_path)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        seen = requests_during(consul, 1.0)
    # Index 0 -> 1 blocks; no index at all is paced at 1 query a second per watch.
    assert len(seen) <= 3 * 2, seen


@pytest.mark.slow
def test_an_index_that_moves_all_the_time_is_rate_limited(consul: ConsulDouble,
                                                          tmp_path: Path) -> None:
    flapping = threading.Event()

    def flap() -> None:
        statuses = itertools.cycle(get_args(Status))
        while not flapping.is_set():
            consul.set_check("web-a", next(statuses))  # web's index moves every 5 ms
            flapping.wait(0.005)

    with watching(make(consul, tmp_path, passing_only=False)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        flapper = threading.Thread(target=flap, daemon=True)
        flapper.start()
        try:
            time.sleep(1.0)  # the burst of 2 is spent
            seen = requests_during(consul, 2.0)
        finally:
            flapping.set()
            flapper.join()
    web = [p for p in seen if p == "/v1/health/service/web"]
    assert 1 <= len(web) <= 3, web  # about one a second, not hundreds
    assert seen.count("/v1/health/service/api") <= 1  # api's index did not move


@pytest.mark.slow
def test_consul_down_emits_nothing_and_recovers(consul: ConsulDouble, tmp_path: Path) -> None:
    with watching(make(consul, tmp_path, timeout_seconds=0.5)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        emitted = states.count()
        consul.stop()  # blocked requests are cut, new ones refused
        time.sleep(1.5)
        assert states.count() == emitted  # nothing emitted: the last state stays
        consul.deregister("web-a")  # changed while the watch could not see it
        consul.start()
        state = states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.11": True})
    assert addresses(state, "api") == {"192.0.2.11": True}


def test_a_storm_of_deregistrations_costs_few_emits(consul: ConsulDouble,
                                                    tmp_path: Path) -> None:
    for n in range(20):
        consul.add_node(f"bulk-{n}", f"198.18.0.{n + 1}")
    ids = [consul.register("bulk", f"bulk-{n % 20}", port=7000 + n // 20,
                           service_id=f"bulk-{n}") for n in range(200)]
    with watching(make(consul, tmp_path, port=7000)) as states:
        states.wait_for(lambda s: len(addresses(s, "bulk")) == 20)
        time.sleep(0.2)
        emitted = states.count()
        consul.deregister(*ids[:190])  # one catalog update: 190 of 200 instances go
        states.wait_for(lambda s: len(addresses(s, "bulk")) == 10)
        time.sleep(0.5)
        assert states.count() - emitted <= 2


def test_many_services_are_watched_through_the_checks(consul: ConsulDouble,
                                                      tmp_path: Path) -> None:
    # watch_concurrency 2: the catalog's watch leaves room for 1 health watch, not 2.
    with watching(make(consul, tmp_path, watch_concurrency=2, passing_only=False)) as states:
        states.wait_for(lambda s: len(addresses(s, "web")) == 2)
        time.sleep(0.2)
        before = len(consul.paths())
        consul.set_check("web-a", "critical")
        states.wait_for(lambda s: addresses(s, "web") == {"192.0.2.10": False,
                                                          "192.0.2.11": True})
        consul.deregister("api-b")
        states.wait_for(lambda s: not addresses(s, "api"))
    paths = consul.paths()
    # One blocking query on every check instead of one per service ...
    assert "/v1/health/state/any" in paths[:before]
    # ... and a check change re-reads only the service whose checks changed.
    assert "/v1/health/service/web" in paths[before:]
    assert "/v1/health/service/api" not in paths[before:]


def test_access_denied_is_raised_to_the_core(tmp_path: Path) -> None:
    double = ConsulDouble(acl_token="right")
    double.add_node("node-a", "192.0.2.10")
    double.register("web", "node-a", port=80)
    with double:
        provider = make(double, tmp_path, token="wrong")
        with pytest.raises(PermanentSourceError, match="access denied"):
            provider.watch(Recorder(), threading.Event())


@pytest.mark.parametrize("value", [0.5, 601, "5m"])
def test_watch_wait_is_validated(value: object) -> None:
    with pytest.raises(ValidationError, match="watch_wait"):
        ConsulOptions.model_validate({"watch_wait": value})


# --- end to end: `run --watch` through the CLI ----------------------------------------------


def slice_addresses(kube: KubeApiServer, service: str) -> set[str]:
    return {a for s in kube.list_objects("EndpointSlice", "external")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
            for e in s["endpoints"] for a in e["addresses"]}


def object_writes(kube: KubeApiServer) -> list[str]:
    """The methods of the writes to objects (Events are records, not objects we own)."""
    return [r.method for r in kube.requests
            if r.method != "GET" and "/events" not in r.path]


def watch_mode(consul: ConsulDouble, kubeconfig: Path, tmp_path: Path) -> Loop:
    """`run --watch --interval 300` of the `consul` fixture, past its first full sync: any
    change seen within seconds came through the watch."""
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      f"  - {{name: catalog, provider: consul, url: '{consul.url}', "
                      "timeout_seconds: 1}\n")
    watching = Loop(config, kubeconfig, "--watch", "--interval", "300")
    try:
        watching.wait_for(lambda: "summary created=6" in watching.log, timeout=30)
    except BaseException:
        watching.kill()
        raise
    return watching


@pytest.mark.slow
def test_run_watch_follows_a_deregistration_and_exits_on_sigterm(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    watching = watch_mode(consul, kubeconfig, tmp_path)
    try:
        assert slice_addresses(kube, "web") == {"192.0.2.10", "192.0.2.11"}
        time.sleep(0.5)  # the watches are blocked now
        writes = len(object_writes(kube))
        consul.deregister("web-a")
        watching.wait_for(lambda: slice_addresses(kube, "web") == {"192.0.2.11"})
        consul.restart(index=2)  # indexes reset: no spin, nothing deleted
        time.sleep(1.0)
        assert slice_addresses(kube, "web") == {"192.0.2.11"}
        assert slice_addresses(kube, "api") == {"192.0.2.11"}
        # The deregistration's two writes (EndpointSlice, Endpoints), no more, no DELETE.
        later_writes = object_writes(kube)[writes:]
        assert len(later_writes) <= 2 and "DELETE" not in later_writes, later_writes
        watching.stop()
        assert watching.proc.returncode == 0, watching.log
    finally:
        watching.kill()


@pytest.mark.slow
def test_run_watch_keeps_the_last_state_while_consul_is_down_and_recovers(
        consul: ConsulDouble, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    watching = watch_mode(consul, kubeconfig, tmp_path)
    try:
        time.sleep(0.5)  # the watches are blocked now
        writes = len(object_writes(kube))
        consul.stop()  # the port closes, held queries are cut
        watching.wait_for(lambda: "failed" in watching.log.split("summary created=6")[-1])
        time.sleep(1.0)
        assert watching.proc.poll() is None, watching.log  # still running
        assert object_writes(kube)[writes:] == []  # nothing deleted, nothing written
        assert slice_addresses(kube, "web") == {"192.0.2.10", "192.0.2.11"}
        consul.start()  # on its old port
        consul.deregister("web-a")
        watching.wait_for(lambda: slice_addresses(kube, "web") == {"192.0.2.11"})
        assert "DELETE" not in object_writes(kube)[writes:]
        watching.stop()
        assert watching.proc.returncode == 0, watching.log
    finally:
        watching.kill()
