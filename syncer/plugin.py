"""The provider plugin API: everything a provider (built-in or third-party) may import.

A provider is a class registered under the entry-point group `endpoints_sync.providers`. It
declares a pydantic options model (`Options`), is built once per configured source with the
validated options and a `SourceContext`, and answers one call, `discover()`.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from syncer.documents import config_error_from, load_document
from syncer.errors import ConfigError, PermanentSourceError, SourceError, TransientSourceError
from syncer.model import Backend, ServicePort, ServiceSpec
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

__all__ = [
    "Backend",
    "ConfigError",
    "PermanentSourceError",
    "Provider",
    "ProviderOptions",
    "ServicePort",
    "ServiceSpec",
    "SourceContext",
    "SourceError",
    "TransientSourceError",
    "address_problem",
    "annotations_problem",
    "app_protocol_problem",
    "canonical_ip",
    "config_error_from",
    "external_name_problem",
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
    "service_name_problem",
    "service_ports_problem",
    "zone_problem",
]

ENTRY_POINT_GROUP = "endpoints_sync.providers"


class ProviderOptions(BaseModel):
    """Base class of provider options: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """Relative paths in options resolve against this folder."""
    default_namespace: str = "default"
    """The namespace of a Service that names none (`ServiceSpec.namespace=None`)."""
    skipped: list[tuple[str | None, str, str]] = field(default_factory=list, compare=False,
                                                       repr=False)
    """(namespace, name, reason) of the Services `skip` was called for, this run."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger("endpoints_sync.provider"),
                                     {"source": self.source})

    def skip(self, name: str, reason: str, namespace: str | None = None) -> None:
        """This one Service cannot be built this run: leave it in the cluster exactly as it is.

        Use it instead of leaving the Service out (which would prune it) or failing the whole
        source (which would freeze its other Services). The run warns with `reason`, counts
        the Service as skipped and exits 1; the source's other Services are synced.
        """
        self.skipped.append((namespace, name, reason))

    def config_error(self, option: str, message: str, file: str | None = None) -> ConfigError:
        """An error about one of this source's options (or about a file an option names)."""
        if file is not None:
            return ConfigError(file, option, message)
        return ConfigError(self.config_file, f"{self.field_path}.{option}", message)

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p


OptionsT = TypeVar("OptionsT", bound=ProviderOptions)


class Provider(ABC, Generic[OptionsT]):
    """Base class of providers.

    Subclasses set `Options` to their options model and implement `discover()`. Raise
    `TransientSourceError` for trouble that may pass (network, throttling),
    `PermanentSourceError` for trouble that will not (access denied), and `ConfigError` for
    bad local input (an inventory file). Never log or raise secrets.
    """

    Options: ClassVar[type[ProviderOptions]]
    summary: ClassVar[str] = ""

    def __init__(self, options: OptionsT, context: SourceContext) -> None:
        self.options = options
        self.context = context

    def check(self) -> None:
        """Local checks for `endpoints-sync validate`: read local files, contact nothing."""

    @abstractmethod
    def discover(self) -> list[ServiceSpec]:
        """Return the Services this source wants, with their backends."""


def import_optional(module: str, provider: str, extra: str) -> ModuleType:
    """Import a provider's heavy dependency only when the provider is used."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PermanentSourceError(
            f"the {provider} provider needs the '{module}' package: "
            f"pip install 'endpoints-sync[{extra}]'"
        ) from e
