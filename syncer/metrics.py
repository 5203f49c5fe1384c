"""Prometheus metrics of `run`: what each run did, for alerts and dashboards.

One private registry per process (never prometheus_client's global one). Where they go:
`--metrics-file` (the node_exporter textfile format, written atomically after each run),
`--pushgateway` (pushed after each run, grouped by job and owner), and in loop mode
`--metrics-port` (syncer.health serves /metrics). A failure to write or push them is logged
and never changes a run's exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import typing
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from syncer.errors import ConfigError
from syncer.plan import Held

# prometheus_client is imported by the functions that use it: the CLI imports this module
# for add_metrics_options, and `--help` must stay light (tests/test_startup.py).
if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from syncer.config import Config
    from syncer.run import Outcome

log = logging.getLogger("endpoints_sync")

PREFIX = "endpoints_sync"
JOB = "endpoints-sync"
PUSH_TIMEOUT = 10.0
HELD_REASONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(Held)["reason"])
ACTIONS = ("created", "updated", "deleted", "unchanged")
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


def add_metrics_options(run: argparse.ArgumentParser) -> None:
    """The `run` subcommand's metrics options."""
    group = run.add_argument_group("metrics")
    group.add_argument("--metrics-file", metavar="PATH",
                       help="after each run, write the metrics to PATH (node_exporter "
                       "textfile format; name it *.prom), atomically")
    group.add_argument("--pushgateway", metavar="URL",
                       help="after each run, push the metrics to this Prometheus Pushgateway "
                       "(grouping key job=endpoints-sync, owner=<config owner>)")
    group.add_argument("--metrics-port", type=_port, metavar="N",
                       help="loop mode: serve /metrics, /healthz and /readyz on port N")
    group.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDRESS",
                       help="the address --metrics-port listens on (default: 0.0.0.0)")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text[:20]!r}")
    return int(text)


class _Timestamps:
    """The last run's and last success's times, shown only once known: a gauge that is not
    set would read 0 (1970), and a failed run must not replace the last success pushed or
    written before. A prometheus_client Collector (a Protocol: no base class needed)."""

    def __init__(self) -> None:
        self.last_run: float | None = None
        self.last_success: float | None = None

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if self.last_run is not None:
            yield GaugeMetricFamily(f"{PREFIX}_last_run_timestamp_seconds",
                                    "When the last run ended (Unix time)", self.last_run)
        if self.last_success is not None:
            yield GaugeMetricFamily(LAST_SUCCESS, "When the last run that exited 0 ended "
                                    "(Unix time)", self.last_success)


class Metrics:
    """The metric families, and how one run's outcome sets them."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        # The `_created` series prometheus_client adds to each counter double the output and
        # mean nothing in a one-shot run's file or push.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry()
        self.runs = Counter("runs", "Runs by result: success (exit 0) or failure",
                            ["result"], namespace=PREFIX, registry=r)
        self.duration = Gauge("run_duration_seconds", "How long the last run took",
                              namespace=PREFIX, registry=r)
        self.objects = Counter("objects", "Objects written or found unchanged, by action",
                               ["action"], namespace=PREFIX, registry=r)
        self.held = Gauge("held_changes", "Changes the last run held back, by reason",
                          ["reason"], namespace=PREFIX, registry=r)
        self.conflicts = Gauge("conflicts", "Objects in the way that are not ours (last run)",
                               namespace=PREFIX, registry=r)
        self.skipped = Gauge("skipped_services", "Services left as they are because their "
                             "source got them wrong (last run)", namespace=PREFIX, registry=r)
        self.addresses = Gauge("addresses", "Addresses each source published (last run; "
                               "absent for a failed source)", ["source"], namespace=PREFIX,
                               registry=r)
        self.service_addresses = Gauge("service_addresses", "Addresses of each Service",
                                       ["namespace", "service"], namespace=PREFIX, registry=r)
        self.service_ready = Gauge("service_ready_addresses", "Ready addresses of each Service",
                                   ["namespace", "service"], namespace=PREFIX, registry=r)
        self.source_failures = Counter("source_failures", "Source failures by kind",
                                       ["source", "kind"], namespace=PREFIX, registry=r)
        self.probes = Counter("probes", "Health probes of backends by source and result "
                              "(pass, fail)", ["source", "result"], namespace=PREFIX, registry=r)
        self.probe_not_ready = Gauge("probe_not_ready_addresses", "Addresses each source's "
                                     "probes published not ready (last run)", ["source"],
                                     namespace=PREFIX, registry=r)
        self.times = _Timestamps()
        r.register(self.times)
        for result in ("success", "failure"):  # rate() needs the series before the first one
            self.runs.labels(result)
        for action in ACTIONS:
            self.objects.labels(action)

    def observe(self, config: Config, outcome: Outcome, duration: float) -> None:
        plan, desired = outcome.plan, outcome.desired
        self.count(outcome)
        held = Tally[str](h.reason for h in plan.held)
        for reason in HELD_REASONS:
            self.held.labels(reason).set(held[reason])
        self.conflicts.set(len(plan.conflicts))
        self.skipped.set(len(desired.skipped))
        self.addresses.clear()  # a source or Service that is gone must not linger
        per_source = Tally({s.name: 0 for s in config.sources
                            if s.name not in desired.failed_sources})
        self.service_addresses.clear()
        self.service_ready.clear()
        for spec in desired.specs:
            per_source[spec.source] += len(spec.backends)
            key = (spec.namespace or config.namespace, spec.name)
            self.service_addresses.labels(*key).set(len(spec.backends))
            self.service_ready.labels(*key).set(sum(1 for b in spec.backends if b.ready))
        for source, n in per_source.items():
            self.addresses.labels(source).set(n)
        for source in desired.failed_sources:
            self.source_failures.labels(source, desired.failed_kinds.get(source, "permanent")).inc()
        readiness = outcome.readiness
        self.probe_not_ready.clear()
        for source in {*readiness.passed, *readiness.failed}:
            self.probe_not_ready.labels(source).set(readiness.held_down[source])
        self.ended(outcome.exit_code == 0, duration)

    def count(self, outcome: Outcome) -> None:
        """The counters of a run or of watch mode's sync of a few Services: the objects it
        wrote or left, the probes it made."""
        readiness = outcome.readiness
        for source in {*readiness.passed, *readiness.failed}:
            self.probes.labels(source, "pass").inc(readiness.passed[source])
            self.probes.labels(source, "fail").inc(readiness.failed[source])
        applied = outcome.applied
        if applied is not None:  # a dry run writes nothing
            done = {"created": applied.created, "updated": applied.updated,
                    "deleted": applied.deleted, "unchanged": outcome.plan.unchanged}
            for action, n in done.items():
                self.objects.labels(action).inc(n)

    def ended(self, success: bool, duration: float) -> None:
        self.runs.labels("success" if success else "failure").inc()
        self.duration.set(duration)
        self.times.last_run = time.time()
        if success:
            self.times.last_success = self.times.last_run

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Telemetry:
    """The CLI's side: measures each `run`, records it, writes and pushes the metrics.
    Inactive (records nothing) for every other command."""

    def __init__(self, *, active: bool, metrics_file: str | None = None,
                 pushgateway: str | None = None) -> None:
        self.active = active
        self.metrics = Metrics()
        self.metrics_file = metrics_file
        self.pushgateway = pushgateway
        self.owner: str | None = None
        self.last: Outcome | None = None
        """The outcome of this run once it completed; loop mode reads its failures."""
        self._recorded = False
        if metrics_file is not None:
            self.metrics.times.last_success = _previous_success(metrics_file)

    @classmethod
    def of(cls, args: argparse.Namespace) -> Telemetry:
        """From the command line. Raises ConfigError for options that cannot work."""
        metrics_file = getattr(args, "metrics_file", None)
        port = getattr(args, "metrics_port", None)
        if port is not None and not getattr(args, "interval", None):
            raise ConfigError("command line", "--metrics-port", "serves only in loop mode: "
                              "add --interval (a one-shot run can write --metrics-file or "
                              "push to --pushgateway)")
        if metrics_file is not None and not Path(metrics_file).parent.is_dir():
            raise ConfigError("command line", "--metrics-file",
                              f"{metrics_file}: its folder does not exist")
        return cls(active=args.command == "run", metrics_file=metrics_file,
                   pushgateway=getattr(args, "pushgateway", None))

    def begin(self) -> None:
        """Loop mode: a new run starts."""
        self.last, self._recorded = None, False

    def measure(self, config: Config, run: Callable[[], Outcome]) -> Outcome:
        """Run, record what it did (a run that raises counts as a failure), publish."""
        if not self.active:
            return run()
        self.owner = config.owner
        started = time.monotonic()
        try:
            outcome = run()
        except Exception:
            self.failed(time.monotonic() - started)
            raise
        self.metrics.observe(config, outcome, time.monotonic() - started)
        self.last, self._recorded = outcome, True
        self.publish(outcome.exit_code == 0)
        return outcome

    def failed(self, duration: float = 0.0) -> None:
        """A run that ended before it had an outcome (a configuration or API error); once
        per run."""
        if self.active and not self._recorded:
            self._recorded = True
            self.metrics.ended(False, duration)
            self.publish(False)

    def publish(self, success: bool) -> None:
        if self.metrics_file is not None:
            try:
                write_atomically(self.metrics_file, self.metrics.text())
            except OSError as e:
                log.error("metrics file %s not written: %s", self.metrics_file, e)
        if self.pushgateway is not None and self.owner is not None:
            from prometheus_client.exposition import push_to_gateway, pushadd_to_gateway

            # PUT after a success replaces the group (Services gone since are dropped);
            # POST after a failure keeps the last success pushed before.
            push = push_to_gateway if success else pushadd_to_gateway
            try:
                push(self.pushgateway, JOB, self.metrics.registry,
                     grouping_key={"owner": self.owner}, timeout=PUSH_TIMEOUT)
            except Exception as e:  # whatever went wrong, metrics never fail the run
                log.warning("metrics not pushed to the Pushgateway: %s", e)


def telemetry_of(args: argparse.Namespace) -> Telemetry:
    """The Telemetry the CLI's main() put on its arguments."""
    telemetry = args.telemetry
    assert isinstance(telemetry, Telemetry)
    return telemetry


def write_atomically(path: str, data: bytes) -> None:
    """Readers (node_exporter) see the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".endpoints-sync-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # node_exporter may run as another user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _previous_success(path: str) -> float | None:
    """The last success a previous run wrote to the metrics file: a CronJob's failed run
    keeps it, so "no success for an hour" alerts on time, not on the first failure."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(path).read_text()
        for family in text_string_to_metric_families(text):
            if family.name == LAST_SUCCESS and family.samples:
                return float(family.samples[0].value)
    except (OSError, ValueError):
        pass
    return None
