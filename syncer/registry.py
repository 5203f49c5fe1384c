"""Finds provider plugins through the `endpoints_sync.providers` entry-point group.

Built-ins and third-party plugins go through the same path. Everything that can be wrong
with a plugin (it fails to import, two distributions claim one name, the entry point is not
a provider, a dependency is missing) is a `PluginError` with one message, which `validate`,
`run` and `providers` all report the same way (exit 2).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from syncer.config import Config, SourceConfig
from syncer.documents import config_error_from, document_name, folder_of
from syncer.errors import ConfigError
from syncer.options import CONFIG_DIR
from syncer.plugin import (
    ENTRY_POINT_GROUP,
    Provider,
    ProviderOptions,
    SourceContext,
    contract_problem,
    missing_module_message,
)

ProviderClass = type[Provider[Any]]


class PluginError(Exception):
    """A provider plugin that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Plugin:
    """One registered provider name and where it comes from."""

    name: str
    entry_points: tuple[EntryPoint, ...]

    @property
    def entry_point(self) -> EntryPoint:
        return self.entry_points[0]

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return dist.name if dist is not None else "?"

    @property
    def version(self) -> str:
        dist = self.entry_point.dist
        return dist.version if dist is not None else "?"

    def load(self) -> ProviderClass:
        """The provider class, with its dependencies checked; PluginError otherwise."""
        if len(self.entry_points) > 1:
            owners = ", ".join(f"{_dist_name(ep)} ({ep.value})" for ep in self.entry_points)
            raise PluginError(f"provider {self.name!r} is registered by several distributions: "
                              f"{owners}; uninstall all but one")
        ep = self.entry_point
        try:
            cls = ep.load()
        except Exception as e:  # an ImportError, or any error a plugin's import raises
            raise PluginError(f"provider {self.name!r} ({ep.value}, from {self.distribution}) "
                              f"failed to import: {type(e).__name__}: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise PluginError(f"provider {self.name!r}: entry point {ep.value} (from "
                              f"{self.distribution}) is not a syncer.plugin.Provider subclass")
        problem = contract_problem(cls)
        if problem:  # a class made without `class` syntax skips __init_subclass__
            raise PluginError(f"provider {self.name!r} ({ep.value}): {problem}")
        for module, extra in cls.optional_imports.items():
            if importlib.util.find_spec(module) is None:
                raise PluginError(missing_module_message(module, self.name, self.distribution,
                                                         extra))
        return cls


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def installed() -> dict[str, Plugin]:
    """Every registered provider name, sorted."""
    found: dict[str, list[EntryPoint]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution found twice on sys.path (an editable install run from its
        # checkout) is one registration.
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            found[ep.name].append(ep)
    return {name: Plugin(name, tuple(eps)) for name, eps in sorted(found.items())}


def find(name: str, plugins: dict[str, Plugin] | None = None) -> Plugin:
    plugins = installed() if plugins is None else plugins
    if name not in plugins:
        names = ", ".join(plugins) or "none"
        raise PluginError(f"unknown provider {name!r}; installed providers: {names}")
    return plugins[name]


@dataclass(frozen=True)
class Source:
    """A configured source: its settings and the provider built from them."""

    config: SourceConfig
    provider: Provider[ProviderOptions]

    @property
    def name(self) -> str:
        return self.config.name


def build_sources(config: Config, config_file: str) -> list[Source]:
    """Build every source's provider; a plugin problem or a bad option is a ConfigError."""
    plugins = installed()
    # `-c -` (standard input): relative paths in it resolve against the working directory.
    config_dir = folder_of(config_file)
    config_file = document_name(config_file)
    sources = []
    for i, sc in enumerate(config.sources):
        where = f"sources[{i}]"
        try:
            cls = find(sc.provider, plugins).load()
        except PluginError as e:
            raise ConfigError(config_file, f"{where}.provider", str(e)) from None
        try:
            options = cls.Options.model_validate(sc.options, context={CONFIG_DIR: config_dir})
        except ValidationError as e:
            raise config_error_from(config_file, e, prefix=where) from None
        context = SourceContext(source=sc.name, config_file=config_file, field_path=where,
                                config_dir=config_dir,
                                default_namespace=sc.namespace or config.namespace)
        sources.append(Source(sc, cls(options, context)))
    return sources
