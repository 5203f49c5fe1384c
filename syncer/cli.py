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
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from syncer import __version__, catalog
from syncer.apirules import keep_valid
from syncer.errors import ConfigError, KubeError, SourceError
from syncer.logs import configure
from syncer.output import plan_text, render_text
from syncer.registry import PluginError, ProviderClass, find, installed
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
)
from syncer.schema import config_schema
from syncer.secrets import redact

if TYPE_CHECKING:
    from syncer.kube import Kube

log = logging.getLogger("endpoints_sync")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines on stderr as text or JSON (default: text)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("-c", "--config", default=os.environ.get("ENDPOINTS_SYNC_CONFIG"),
                        help="configuration file (default: $ENDPOINTS_SYNC_CONFIG)")
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster when "
                         "KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG, ~/.kube/config)")
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    cluster.add_argument("--force", action="store_true",
                         help="let held changes through: deletes over max_delete_ratio, address "
                         "changes over max_change_ratio, and recreating a Service whose "
                         "clusterIP must change (Headless <-> ClusterIP)")

    p = argparse.ArgumentParser(
        prog="endpoints-sync",
        description="Sync external backends into Kubernetes Services, EndpointSlices and "
                    "Endpoints.")
    p.add_argument("--version", action="version", version=f"endpoints-sync {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common, config, cluster],
                         help="sync the sources into the cluster")
    run.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    run.add_argument("--interval", type=_positive, metavar="SECONDS",
                     help="run again every SECONDS until stopped (SIGTERM/SIGINT)")
    sub.add_parser("plan", parents=[common, config, cluster],
                   help="print what a run would change; writes nothing")
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


MAX_INTERVAL_SECONDS = 7 * 24 * 3600  # a week: longer is surely a typo; use a CronJob


def _positive(text: str) -> float:
    # nan compares false with everything (a tight loop of full runs); inf overflows the sleep.
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a positive, finite number of seconds (at most {MAX_INTERVAL_SECONDS}, "
            f"a week), got {text[:60]!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure(args.log_format, args.verbose)
    if args.command == "providers":
        return _providers(args.name, args.output)
    if args.command == "schema":
        return _schema()
    if not args.config:
        _err("endpoints-sync: error: no configuration: give -c CONFIG or set "
             "ENDPOINTS_SYNC_CONFIG")
        return EXIT_CONFIG
    try:
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


def _once(args: argparse.Namespace) -> int:
    loaded = load(args.config)
    if args.command == "validate":
        try:
            check_sources(loaded)
        except SourceError as e:  # e.g. the provider's library is not installed
            log.error("%s", e)
            return EXIT_CONFIG
        names = ", ".join(f"{s.name} ({s.config.provider})" for s in loaded.sources)
        _out(f"{args.config}: OK: {len(loaded.sources)} source(s): {names}\n")
        return EXIT_OK
    if args.command == "render":
        desired = discover(loaded)
        rendered = render_all(desired.specs, render_settings(loaded.config))
        _out(render_text(keep_valid(rendered, desired.skipped), args.output))
        return EXIT_FAILED if desired.failed_sources or desired.skipped else EXIT_OK
    apply = args.command == "run" and not args.dry_run

    def kube() -> Kube:
        # Imported here: the official client takes most of a second to import, and
        # render/validate/providers never need it.
        from syncer.kube import connect
        return connect(args.kubeconfig, args.context)

    outcome = sync(loaded, kube, apply=apply, force=args.force)
    if not apply:
        _out(plan_text(outcome.plan, outcome.desired))
    log.info("%s", outcome.summary())
    return outcome.exit_code


def _loop(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after this run", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    first = True
    while not stop.is_set():
        try:
            code = _once(args)
        except ConfigError as e:
            if first:
                raise
            log.error("configuration error (keeping the cluster as it is): %s", e)
            code = EXIT_CONFIG
        except KubeError as e:
            log.error("Kubernetes API: %s", e)
            code = EXIT_FAILED
        first = False
        log.debug("run ended with exit code %d; next in %ss", code, args.interval)
        stop.wait(args.interval)
    return EXIT_OK


def _out(text: str) -> None:
    """The one way to stdout: nothing the CLI prints may show a secret."""
    sys.stdout.write(redact(text))
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(redact(text) + "\n")


def _providers(name: str | None, output: str) -> int:
    """Every installed provider (or NAME); exit 2 if one shown cannot load."""
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
    classes: dict[str, ProviderClass] = {}
    for name, plugin in installed().items():
        try:
            classes[name] = plugin.load()
        except PluginError as e:
            log.warning("left out of the schema: %s", e)
    _out(json.dumps(config_schema(classes), indent=2) + "\n")
    return EXIT_OK
