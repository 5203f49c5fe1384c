"""The command line: run, plan, render, validate, providers, schema.

Everything it prints, on stdout (`_out`) or stderr (`_err`, and log lines through
syncer.logs), passes through syncer.secrets.redact.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# Only light modules here (stdlib and syncer modules that import no third-party library):
# `--help` and a bad command line must cost argparse only (tests/test_startup.py). The
# others (pydantic, PyYAML, the providers, the Kubernetes client, prometheus_client) are
# imported by the functions that need them.
from syncer import __version__
from syncer.errors import ConfigError, KubeError, SourceError
from syncer.logs import LEVELS, configure
from syncer.metrics import Telemetry, add_metrics_options, telemetry_of
from syncer.secrets import redact

if TYPE_CHECKING:
    from syncer.kube import Kube
    from syncer.registry import ProviderClass

log = logging.getLogger("endpoints_sync")


def _parser() -> argparse.ArgumentParser:
    # The global options go before the command or after it, as with kubectl.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, before_command=False)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("-c", "--config", default=os.environ.get("ENDPOINTS_SYNC_CONFIG"),
                        help="configuration file, or - for standard input "
                        "(default: $ENDPOINTS_SYNC_CONFIG)")
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG when set, "
                         "else in-cluster when KUBERNETES_SERVICE_HOST is set, else "
                         "~/.kube/config)")
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    cluster.add_argument("--force", action="store_true",
                         help="let held changes through: deletes over max_delete_ratio, address "
                         "changes over max_change_ratio, and recreating a Service whose "
                         "clusterIP must change (Headless <-> ClusterIP)")
    plan_output = argparse.ArgumentParser(add_help=False)
    plan_output.add_argument("-o", "--output", choices=("text", "json"), default="text",
                             help="the plan as text, or as a JSON document for scripts")

    p = argparse.ArgumentParser(
        prog="endpoints-sync",
        description="Sync external backends into Kubernetes Services, EndpointSlices and "
                    "Endpoints.")
    p.add_argument("--version", action="version", version=f"endpoints-sync {__version__}")
    _global_options(p, before_command=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common, config, cluster, plan_output],
                         help="sync the sources into the cluster")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (-o text|json), write nothing")
    run.add_argument("--interval", type=_duration, metavar="DURATION",
                     help="run again every DURATION (seconds, or 90s, 5m, 1h30m) until "
                     "stopped (SIGTERM/SIGINT); with --watch, the full resync's period "
                     f"(default {WATCH_INTERVAL:g}s)")
    run.add_argument("--watch", action="store_true",
                     help="keep running and sync each change as the sources and the cluster "
                     "report it (consul, static, file_sd; the others at each --interval)")
    add_metrics_options(run)
    plan = sub.add_parser("plan", parents=[common, config, cluster, plan_output],
                          help="print what a run would change; writes nothing")
    plan.add_argument("--exit-code", action="store_true",
                      help=f"exit {EXIT_CHANGES} when changes are pending (0: none, 1: an "
                      "error, 2: bad configuration), like kubectl diff")
    render = sub.add_parser("render", parents=[common, config],
                            help="print the desired objects; needs no cluster")
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    sub.add_parser("validate", parents=[common, config],
                   help="check the configuration and inventories; contacts nothing")
    providers = sub.add_parser("providers", parents=[common],
                               help="list the installed provider plugins and their options")
    providers.add_argument("name", nargs="?", metavar="NAME", help="show this provider only")
    providers.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sub.add_parser("schema", parents=[common],
                   help="print the JSON Schema of the configuration file (for editors)")
    return p


EXIT_CHANGES = 3
"""`plan --exit-code`: the run would change something (and nothing failed)."""
WATCH_INTERVAL = 300.0
"""`run --watch`: seconds between full resyncs unless --interval says."""


def _global_options(parser: argparse.ArgumentParser, *, before_command: bool) -> None:
    """Only the main parser (before the command) has defaults: a command's own copy of an
    option is SUPPRESSed unless given, so it never overwrites a value given before."""
    def default(value: str) -> str:
        return value if before_command else argparse.SUPPRESS

    parser.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                        help="log lines on stderr as text or JSON (default: text)")
    parser.add_argument("--log-level", choices=LEVELS, default=default("info"),
                        help="the least severe log lines shown (default: info); debug also "
                        "shows the tracebacks of unexpected errors")
    parser.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                        const="debug", default=argparse.SUPPRESS, help="--log-level debug")


MAX_INTERVAL_SECONDS = 7 * 24 * 3600  # a week: longer is surely a typo; use a CronJob
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _duration(text: str) -> float:
    """Seconds (`300`, `0.5`) or Go-style units (`90s`, `5m`, `1h30m`, `1.5h`, `500ms`)."""
    value = math.nan
    spec = text.strip()
    try:
        value = float(spec)
    except ValueError:
        parts = list(_DURATION_PART.finditer(spec))
        if parts and "".join(m.group(0) for m in parts) == spec:
            value = sum(float(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in parts)
    # nan compares false with everything (a tight loop of full runs); inf overflows the sleep.
    if not 0 < value <= MAX_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a positive, finite number of seconds or a duration such as 90s, 5m "
            f"or 1h30m (at most {MAX_INTERVAL_SECONDS} seconds, a week), got {text[:60]!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure(args.log_format, args.log_level)
    if args.command == "providers":
        return _providers(args.name, args.output)
    if args.command == "schema":
        return _schema()
    from syncer.run import EXIT_CONFIG, EXIT_FAILED

    if not args.config:
        _err("endpoints-sync: error: no configuration: give -c CONFIG or set "
             "ENDPOINTS_SYNC_CONFIG")
        return EXIT_CONFIG
    problem = _conflicting_options(args)
    if problem:
        _err(f"endpoints-sync: error: {problem}")
        return EXIT_CONFIG
    if args.command == "run" and args.watch:
        args.interval = args.interval or WATCH_INTERVAL
    try:
        if args.command in ("run", "plan"):  # validate and render need no prometheus_client
            args.telemetry = Telemetry.of(args)  # `run`'s metrics: file, Pushgateway, /metrics
        if args.command == "run" and args.watch:
            return _watch(args)
        if args.command == "run" and args.interval:
            return _loop(args)
        return _once(args)
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return EXIT_CONFIG
    except KubeError as e:
        log.error("Kubernetes API: %s", e)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _once(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from syncer.apirules import keep_valid
    from syncer.documents import document_name
    from syncer.output import plan_json, plan_text, render_text
    from syncer.render import render_all
    from syncer.run import (
        EXIT_CONFIG,
        EXIT_FAILED,
        EXIT_OK,
        check_sources,
        discover,
        load,
        render_settings,
        sync,
        warn_hints_withheld,
    )

    loaded = load(args.config)
    if args.command == "validate":
        try:
            check_sources(loaded)
        except SourceError as e:  # e.g. the provider's library is not installed
            log.error("%s", e)
            return EXIT_CONFIG
        names = ", ".join(f"{s.name} ({s.config.provider})" for s in loaded.sources)
        _out(f"{document_name(args.config)}: OK: {len(loaded.sources)} source(s): {names}\n")
        return EXIT_OK
    if args.command == "render":
        desired = discover(loaded)
        rendered = keep_valid(render_all(desired.specs, render_settings(loaded.config)),
                              desired.skipped)
        warn_hints_withheld(rendered)
        _out(render_text(rendered, args.output))
        return EXIT_FAILED if desired.failed_sources or desired.skipped else EXIT_OK
    apply = args.command == "run" and not args.dry_run
    kube = _connector(args)
    started = time.monotonic()
    outcome = telemetry_of(args).measure(
        loaded.config, lambda: sync(loaded, kube, apply=apply, force=args.force, stop=stop))
    duration = time.monotonic() - started
    if not apply:
        _out(plan_json(outcome.plan, outcome.desired, outcome.counts()) if args.output == "json"
             else plan_text(outcome.plan, outcome.desired))
    outcome.log_summary(duration)
    if (args.command == "plan" and args.exit_code and outcome.exit_code == EXIT_OK
            and outcome.plan.changes):
        return EXIT_CHANGES
    return outcome.exit_code


def _conflicting_options(args: argparse.Namespace) -> str | None:
    """Combinations argparse cannot refuse by itself; exit 2 before anything is read."""
    from syncer.documents import STDIN

    if args.command == "run" and args.watch and args.dry_run:
        return ("--watch writes each change as it comes: it cannot be used with --dry-run "
                "(use plan to see what a run would change)")
    if args.command == "run" and (args.interval or args.watch) and args.config == STDIN:
        option = "--watch" if args.watch else "--interval"
        return (f"-c - cannot be used with {option}: the configuration is read again before "
                "each run; give a file (a ConfigMap mounted as a file in a cluster)")
    if args.command == "run" and args.output != "text" and not args.dry_run:
        return f"-o {args.output} prints a plan: use it with --dry-run (or use plan)"
    return None


def _loop(args: argparse.Namespace) -> int:
    from syncer.loop import run_loop

    return run_loop(lambda stop: _once(args, stop), args.interval, telemetry_of(args),
                    address=args.metrics_address, port=args.metrics_port)


def _connector(args: argparse.Namespace) -> Callable[[], Kube]:
    """How to connect to the cluster the command line names."""
    def kube() -> Kube:
        # Imported here: the official client takes most of a second to import, and
        # render/validate/providers never need it.
        from syncer.kube import connect
        return connect(args.kubeconfig, args.context)
    return kube


def _watch(args: argparse.Namespace) -> int:
    from syncer.watch import run_watch  # not at the top: `--help` stays light

    return run_watch(args.config, _connector(args), args.interval, telemetry_of(args),
                     force=args.force, address=args.metrics_address, port=args.metrics_port)


def _out(text: str) -> None:
    """The one way to stdout: nothing the CLI prints may show a secret."""
    sys.stdout.write(redact(text))
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(redact(text) + "\n")


def _providers(name: str | None, output: str) -> int:
    """Every installed provider (or NAME); exit 2 if one shown cannot load."""
    from syncer import catalog
    from syncer.registry import PluginError, find, installed
    from syncer.run import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

    plugins = installed()
    try:
        chosen = [find(name, plugins)] if name is not None else list(plugins.values())
    except PluginError as e:
        _err(f"endpoints-sync: error: {e}")
        return EXIT_CONFIG
    if not chosen:
        _err("endpoints-sync: error: no providers installed")
        return EXIT_FAILED
    infos = [catalog.describe(p) for p in chosen]  # a broken plugin does not hide the others
    if output == "json":
        shown: Any = [catalog.as_json(i) for i in infos]
        _out(json.dumps(shown[0] if name is not None else shown, indent=2) + "\n")
    else:
        _out("\n".join(catalog.as_text(i) for i in infos))
    for info in infos:
        if info.error is not None:
            log.error("%s", info.error)
    return EXIT_CONFIG if any(i.error is not None for i in infos) else EXIT_OK


def _schema() -> int:
    """The configuration's JSON Schema; a broken plugin is left out with a warning."""
    from syncer.registry import PluginError, installed
    from syncer.run import EXIT_OK
    from syncer.schema import config_schema

    classes: dict[str, ProviderClass] = {}
    for name, plugin in installed().items():
        try:
            classes[name] = plugin.load()
        except PluginError as e:
            log.warning("left out of the schema: %s", e)
    _out(json.dumps(config_schema(classes), indent=2) + "\n")
    return EXIT_OK
