"""Finds provider plugins through the `endpoints_sync.providers` entry-point group."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from pydantic import ValidationError

from syncer.config import Config, SourceConfig
from syncer.documents import config_error_from
from syncer.errors import ConfigError
from syncer.plugin import ENTRY_POINT_GROUP, Provider, ProviderOptions, SourceContext


def installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_class(ep: EntryPoint) -> type[Provider[ProviderOptions]]:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a Provider subclass")
    return cls


@dataclass(frozen=True)
class Source:
    """A configured source: its settings and the provider built from them."""

    config: SourceConfig
    provider: Provider[ProviderOptions]

    @property
    def name(self) -> str:
        return self.config.name


def build_sources(config: Config, config_file: str) -> list[Source]:
    """Build every source's provider; any unknown provider or bad option is a ConfigError."""
    plugins = installed()
    config_dir = Path(config_file).resolve().parent
    sources = []
    for i, sc in enumerate(config.sources):
        where = f"sources[{i}]"
        ep = plugins.get(sc.provider)
        if ep is None:
            names = ", ".join(sorted(plugins)) or "none"
            raise ConfigError(config_file, f"{where}.provider",
                              f"unknown provider {sc.provider!r}; installed providers: {names}")
        cls = load_class(ep)
        try:
            options = cls.Options.model_validate(sc.options)
        except ValidationError as e:
            raise config_error_from(config_file, e, prefix=where) from None
        context = SourceContext(source=sc.name, config_file=config_file, field_path=where,
                                config_dir=config_dir, default_namespace=config.namespace)
        sources.append(Source(sc, cls(options, context)))
    return sources
