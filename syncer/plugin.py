"""The provider plugin API, v1.1: everything a provider (built-in or third-party) may import.

A provider is a class registered under the entry-point group `endpoints_sync.providers`. It
declares a pydantic options model (`Options`) and answers one call, `discover()`. Providers
import this module and nothing else of the core; the API follows semantic versioning
(`API_VERSION`): names here are removed or changed only in a new major version.

Lifecycle of a provider:

- The class is checked when it is defined: `Options` is a `ProviderOptions` subclass that
  matches the generic parameter and declares none of the core's source keys, `summary` is
  set and `discover` is implemented. A mistake is a TypeError at import, which the registry
  reports as a broken plugin (exit 2), never an AttributeError in the middle of a run.
- On every run (a loop run re-reads the configuration; `run --watch` keeps the instances
  while the configuration stays the same), the registry builds one instance per
  configured source with the validated options and a `SourceContext`, before anything is
  contacted. `optional_imports` are checked then: a missing one is a configuration error with
  the install hint (exit 2).
- `check()` runs for `endpoints-sync validate`: local checks only, no network.
- `discover()` runs once per run, in a worker thread, concurrently with the other sources'
  `discover()`: keep no state between calls that another thread could see half-made. Raise
  `TransientSourceError` (network, throttling) or `PermanentSourceError` (access denied):
  the source then counts as failed and every Service it feeds is left as it is (exit 1);
  the other sources are still synced. A `ConfigError` (a broken inventory file) stops the
  whole run before anything is written (exit 2). Any other exception is a bug of the
  provider: it is treated like a permanent source error and logged with its traceback at
  debug level.
- `watch(emit, stop)` (optional, since 1.1) runs in `run --watch` only: once per source, in a
  daemon thread of its own, after the first full sync. It blocks on the source's change feed
  and calls `emit()` with the source's complete state whenever it may have changed; the core
  syncs the Services that differ. A provider without it is synced at the interval only.
- Log through `context.log`: its records carry the source name, which the core shows; do
  not repeat it in messages. Hold secrets as `Secret`: the core cuts their values out of
  everything it shows.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from syncer.discovery import Discovery, Kept
from syncer.documents import config_error_from, load_document
from syncer.errors import ConfigError, PermanentSourceError, SourceError, TransientSourceError
from syncer.filewatch import watch_files
from syncer.grouping import group_services
from syncer.httpoptions import TlsOptions, header_value_problem, split_http_url
from syncer.model import Backend, Protocol, ServicePort, ServiceSpec
from syncer.names import (
    address_problem,
    annotations_problem,
    app_protocol_problem,
    canonical_ip,
    external_name_problem,
    hostname_problem,
    is_dns_label,
    is_dns_name,
    is_port_name,
    is_service_name,
    labels_problem,
    namespace_problem,
    port_name_problem,
    service_name_problem,
    service_ports_problem,
    zone_problem,
)
from syncer.options import (
    CONFIG_DIR,
    Cidr,
    ConfigPath,
    DnsName,
    IpAddress,
    Namespace,
    PortName,
    PortNumber,
    ProviderOptions,
    Secret,
    ServiceName,
)
from syncer.probeoptions import ProbeOptions, TrafficDistribution, probe_port_problem
from syncer.secrets import redact, redact_remote_message

__all__ = [
    "API_VERSION",
    "CONFIG_DIR",
    "Backend",
    "Cidr",
    "ConfigError",
    "ConfigPath",
    "Discovery",
    "DnsName",
    "Emit",
    "IpAddress",
    "Kept",
    "Namespace",
    "PermanentSourceError",
    "PortName",
    "PortNumber",
    "ProbeOptions",
    "Protocol",
    "Provider",
    "ProviderOptions",
    "Secret",
    "ServiceName",
    "ServicePort",
    "ServiceSpec",
    "SourceContext",
    "SourceError",
    "TlsOptions",
    "TrafficDistribution",
    "TransientSourceError",
    "address_problem",
    "annotations_problem",
    "app_protocol_problem",
    "canonical_ip",
    "config_error_from",
    "external_name_problem",
    "group_services",
    "header_value_problem",
    "hostname_problem",
    "import_optional",
    "is_dns_label",
    "is_dns_name",
    "is_port_name",
    "is_service_name",
    "labels_problem",
    "load_document",
    "namespace_problem",
    "port_name_problem",
    "probe_port_problem",
    "redact",
    "redact_remote_message",
    "service_name_problem",
    "service_ports_problem",
    "split_http_url",
    "watch_files",
    "watches",
    "zone_problem",
]

API_VERSION = "1.1"  # 1.1: ServiceSpec.probe, .traffic_distribution; Provider.watch, Emit
ENTRY_POINT_GROUP = "endpoints_sync.providers"

# The keys of a source that the core handles for every provider (syncer.config.SourceConfig);
# an options model must not declare them. Kept in step with SourceConfig by a test.
CORE_SOURCE_KEYS = frozenset({
    "name", "provider", "namespace", "allow_empty", "deny_cidrs", "allow_cidrs", "labels",
    "annotations", "max_change_ratio", "remove_after_misses", "probe", "traffic_distribution",
})


@dataclass(frozen=True)
class SourceContext:
    """What the core tells a provider about the source it serves."""

    source: str
    """The source's unique name from the configuration."""
    config_file: str
    """The configuration file, for error messages."""
    field_path: str
    """The source's path in the configuration, e.g. `sources[1]`."""
    config_dir: Path = field(default_factory=Path.cwd)
    """Relative paths resolve against this folder (`ConfigPath` options already are)."""
    default_namespace: str = "default"
    """The namespace of a Service that names none: the source's `namespace`, else the
    configuration's."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """The provider's logger; every record carries the source name."""
        return logging.LoggerAdapter(logging.getLogger("endpoints_sync.provider"),
                                     {"source": self.source})

    def config_error(self, option: str, message: str, file: str | None = None) -> ConfigError:
        """An error about one of this source's options (or about a file an option names)."""
        if file is not None:
            return ConfigError(file, option, message)
        return ConfigError(self.config_file, f"{self.field_path}.{option}", message)

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p


OptionsT = TypeVar("OptionsT", bound=ProviderOptions)

Emit = Callable[[Discovery | Sequence[ServiceSpec]], None]
"""What `Provider.watch` calls with the source's complete current state."""


class Provider(ABC, Generic[OptionsT]):
    """Base class of providers.

    Subclasses set `Options` to their options model and `summary` to one line, and implement
    `discover()`. An intermediate base class that leaves them to its subclasses says so:
    `class AwsProvider(Provider[T], abstract=True)`.
    """

    Options: ClassVar[type[ProviderOptions]]
    summary: ClassVar[str] = ""
    optional_imports: ClassVar[Mapping[str, str]] = {}
    """Module → the extra of the provider's distribution that installs it, e.g.
    `{"consul": "consul"}`: checked when the source is built, imported only by `discover`."""

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract:
            problem = contract_problem(cls)
            if problem:
                raise TypeError(f"provider class {cls.__module__}.{cls.__qualname__}: {problem}")

    def __init__(self, options: OptionsT, context: SourceContext) -> None:
        self.options = options
        self.context = context

    def check(self) -> None:
        """Local checks for `endpoints-sync validate`: read local files, contact nothing."""

    @abstractmethod
    def discover(self) -> Discovery | Sequence[ServiceSpec]:
        """The Services this source wants, with their backends, and the ones to keep as
        they are (`Discovery`); a plain list of ServiceSpec is a Discovery keeping none."""

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        """Optional (API 1.1): follow the source's changes for `run --watch`.

        The core calls it once, in a daemon thread of its own, after the first full sync. Block
        on the source's change feed (a blocking query, a file's modification time) and call
        `emit(state)` each time the state may have changed, with the COMPLETE current state:
        exactly what `discover()` would return now. The core compares it with the previous
        state Service by Service and syncs only those that differ, so emitting an unchanged
        state is harmless. Emitting the state at once when called is fine (and right after a
        restart: the source may have changed meanwhile).

        Return when `stop` is set, promptly where you can (wait on `stop.wait(seconds)`
        rather than `time.sleep`; a blocking request may finish its own wait: the core does
        not wait for the thread more than about a second at shutdown).

        Raise as `discover()` does (TransientSourceError, PermanentSourceError, ConfigError
        for a broken inventory file; anything else is a bug): the core logs it (a ConfigError
        names the file), keeps the last state (deletes nothing) and calls `watch` again after
        a backoff ($ENDPOINTS_SYNC_RETRY_BACKOFF seconds, default 5, doubling, at most 60 s or
        the interval). It runs concurrently with the interval's full resync calling
        `discover()` on the same instance: share nothing half-made between the two.

        A provider that does not override it is synced at the interval only (`watches()`).
        For sources that are files, `watch_files` is the whole implementation."""
        raise NotImplementedError(f"{type(self).__name__} does not watch its source")


def watches(provider: Provider[Any]) -> bool:
    """Whether the provider's class implements `watch` (the base class's does not)."""
    return type(provider).watch is not Provider.watch


def contract_problem(cls: type[Provider[Any]]) -> str | None:
    """What is wrong with a provider class, if anything."""
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, ProviderOptions)):
        return "set `Options` to a subclass of syncer.plugin.ProviderOptions"
    declared = _generic_parameter(cls)
    if declared is not None and not issubclass(options, declared):
        return (f"`Options` is {options.__name__}, but the class is declared as "
                f"Provider[{declared.__name__}]")
    reserved = sorted(CORE_SOURCE_KEYS & set(options.model_fields))
    if reserved:
        return (f"{options.__name__} declares {', '.join(map(repr, reserved))}, which the core "
                "handles for every source; remove it and use the core's")
    if not isinstance(cls.summary, str) or not cls.summary.strip():
        return "set `summary` to one line saying what the provider discovers"
    if inspect.isabstract(cls):
        return "implement discover()"
    for module, extra in cls.optional_imports.items():
        if not (isinstance(module, str) and isinstance(extra, str)):
            return "`optional_imports` maps module names to extra names"
    return None


def _generic_parameter(cls: type) -> type | None:
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if get_origin(base) is Provider:
                (arg,) = get_args(base)
                return arg if isinstance(arg, type) else None
    return None


def missing_module_message(module: str, provider: str, distribution: str, extra: str) -> str:
    """The one message for a provider whose optional dependency is not installed."""
    return (f"the {provider} provider needs the '{module}' package, which is not installed: "
            f"pip install '{distribution}[{extra}]'")


def import_optional(module: str, provider: str, extra: str,
                    distribution: str = "endpoints-sync") -> ModuleType:
    """Import a provider's heavy dependency only when the provider is used. List it in
    `optional_imports` too, so that a missing one is found before the run starts."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PermanentSourceError(
            missing_module_message(module, provider, distribution, extra)) from e
