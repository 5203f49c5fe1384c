"""The configuration file: YAML, strict, every error naming the file and the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from syncer.documents import config_error_from, document_name, folder_of, load_document
from syncer.errors import ConfigError
from syncer.names import annotations_problem, label_value_problem, labels_problem
from syncer.options import CONFIG_DIR, Cidr, IpAddress, Namespace
from syncer.probeoptions import ProbeOptions, TrafficDistribution

T = TypeVar("T")

WRITE_CONCURRENCY = 8  # Services written at once: the API server's fair share of one client
MAX_MISSES = 1000  # runs; the miss counts live in annotations, which must stay small


class SourceConfig(BaseModel):
    """One entry of `sources`: the keys the core handles for every provider (the plugin API's
    CORE_SOURCE_KEYS); the provider's own options are kept aside."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=63)
    """Unique source name: in the source annotation, logs and metrics (a label value)."""
    provider: str = Field(min_length=1)
    """The provider plugin (see `endpoints-sync providers`)."""
    namespace: Namespace | None = None
    """The namespace of this source's Services that name none (default: the config's)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Added to each of this source's Services (over the provider's own)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Added to each of this source's Services (over the provider's own)."""
    allow_empty: bool = Field(default=False, strict=True)
    """May this source empty a Service that has addresses?"""
    # Added to the config-level lists for this source's addresses (syncer.desired.AddressPolicy).
    deny_cidrs: tuple[Cidr, ...] = ()
    """Networks this source may never publish, besides the config's deny_cidrs."""
    allow_cidrs: tuple[Cidr, ...] = ()
    """When set (here or in the config), only addresses inside these are published."""
    # Guards (syncer.plan, syncer.damping); None: the config-level value applies.
    max_change_ratio: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    """This source's max_change_ratio, in place of the config's (0: off)."""
    remove_after_misses: int | None = Field(default=None, ge=1, le=MAX_MISSES, strict=True)
    """This source's remove_after_misses, in place of the config's."""
    probe: ProbeOptions | None = None
    """Probe every backend of this source's Services; one that fails is published not ready
    (a static Service's own `probe` wins)."""
    traffic_distribution: TrafficDistribution | None = None
    """PreferClose: zone hints on every Service of this source whose endpoints all have a
    zone (a static Service's own setting wins)."""

    @field_validator("name")
    @classmethod
    def _name_is_label_value(cls, v: str) -> str:
        return _label_value(v, "source name (a label value)")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _no_problem(v, labels_problem(v))

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        return _no_problem(v, annotations_problem(v))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    owner: str = Field(default="default", min_length=1, max_length=63)
    """Ownership id written on every object; runs with other owners never touch them."""
    namespace: Namespace = "default"
    """Namespace of Services whose source names none."""
    namespaces: tuple[Namespace, ...] | None = None
    """Scope: only these namespaces are listed, written and pruned."""
    write: tuple[Literal["endpointslices", "endpoints"], ...] = ("endpointslices", "endpoints")
    """Which address objects to write."""
    policy: Literal["sync", "upsert-only", "create-only"] = "sync"
    """sync creates, updates and deletes; upsert-only never deletes; create-only only creates."""
    adopt: bool = Field(default=False, strict=True)
    """Take over same-named objects that no tool manages (migrating from hand-kept lists)."""
    max_delete_ratio: float = Field(default=0.5, ge=0.0, le=1.0, strict=True)
    """Hold deletes back above this share of the objects this owner manages."""
    max_endpoints_per_slice: int = Field(default=100, ge=1, le=1000, strict=True)
    """Endpoints per EndpointSlice (1..1000)."""
    write_concurrency: int = Field(default=WRITE_CONCURRENCY, ge=1, le=64, strict=True)
    """Services written at once (1..64); each Service's own writes go one after another."""
    max_change_ratio: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    """Hold a Service's address writes that change more than this share (None, 0: off)."""
    remove_after_misses: int = Field(default=1, ge=1, le=MAX_MISSES, strict=True)
    """Remove a vanished address on the Nth run it is missing (1: at once)."""
    deny_cidrs: tuple[Cidr, ...] = ()
    """Networks no source may publish."""
    allow_cidrs: tuple[Cidr, ...] = ()
    """When set, only addresses inside these networks are published."""
    hosts: dict[str, tuple[IpAddress, ...]] = Field(default_factory=dict)
    """Fixed answers for DNS names in backend addresses (like /etc/hosts)."""
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    """Where the backends come from: one entry per provider instance."""

    @field_validator("owner")
    @classmethod
    def _owner_is_label_value(cls, v: str) -> str:
        return _label_value(v, "owner id (a label value)")

    @field_validator("namespaces")
    @classmethod
    def _namespaces_are_labels(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("expected at least one namespace (or leave the key out)")
        return v

    @field_validator("write")
    @classmethod
    def _write_not_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("expected at least one of endpointslices, endpoints")
        return tuple(dict.fromkeys(v))

    @field_validator("sources")
    @classmethod
    def _source_names_unique(cls, v: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice; names must be unique")
            seen.add(s.name)
        return v

    @property
    def write_slices(self) -> bool:
        return "endpointslices" in self.write

    @property
    def write_endpoints(self) -> bool:
        return "endpoints" in self.write

    def change_ratios(self) -> dict[str, float]:
        """Per source: max_change_ratio where the guard is on (the source's value wins)."""
        ratios: dict[str, float] = {}
        for s in self.sources:
            ratio = s.max_change_ratio if s.max_change_ratio is not None else self.max_change_ratio
            if ratio:  # None and 0 are off
                ratios[s.name] = ratio
        return ratios

    def misses(self) -> dict[str, int]:
        """Per source: remove_after_misses (the source's value wins)."""
        return {s.name: s.remove_after_misses or self.remove_after_misses for s in self.sources}


def _no_problem(v: T, problem: str | None) -> T:
    if problem:
        raise ValueError(problem)
    return v


def _label_value(v: str, what: str) -> str:
    problem = label_value_problem(v, what)
    if problem:
        raise ValueError(problem)
    return v


def load_config(path: str | Path) -> Config:
    shown = document_name(path)  # `-` is standard input, `<stdin>` in messages
    data = load_document(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(shown, "", "expected a mapping with at least a 'sources' list")
    try:
        return Config.model_validate(data, context={CONFIG_DIR: folder_of(path)})
    except ValidationError as e:
        raise config_error_from(shown, e) from None
