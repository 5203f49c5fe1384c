"""The configuration file: YAML, strict, every error naming the file and the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
)

from syncer.documents import config_error_from, load_document
from syncer.errors import ConfigError
from syncer.names import label_value_problem, namespace_problem

MAX_MISSES = 1000  # runs; the miss counts live in annotations, which must stay small





def _written_as_text(value: object) -> object:
    """An address or network must be written as text: pydantic would read `1` or `true` as
    0.0.0.1."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address or CIDR as a string, got {type(value).__name__}")
    return value


NetworkText = Annotated[IPvAnyNetwork, BeforeValidator(_written_as_text)]
AddressText = Annotated[IPvAnyAddress, BeforeValidator(_written_as_text)]

class SourceConfig(BaseModel):
    """One entry of `sources`: the core's keys; the provider's options are kept aside."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=63)
    provider: str = Field(min_length=1)
    allow_empty: bool = Field(default=False, strict=True)
    # Added to the config-level lists for this source's addresses (syncer.desired.AddressPolicy).
    deny_cidrs: tuple[NetworkText, ...] = ()
    allow_cidrs: tuple[NetworkText, ...] = ()
    # Guards (syncer.plan, syncer.damping); None: the config-level value applies.
    max_change_ratio: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    remove_after_misses: int | None = Field(default=None, ge=1, le=MAX_MISSES, strict=True)

    @field_validator("name")
    @classmethod
    def _name_is_label_value(cls, v: str) -> str:
        return _label_value(v, "source name (a label value)")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: str = Field(default="default", min_length=1, max_length=63)
    namespace: str = "default"
    namespaces: tuple[str, ...] | None = None
    write: tuple[Literal["endpointslices", "endpoints"], ...] = ("endpointslices", "endpoints")
    policy: Literal["sync", "upsert-only", "create-only"] = "sync"
    adopt: bool = Field(default=False, strict=True)
    max_delete_ratio: float = Field(default=0.5, ge=0.0, le=1.0, strict=True)
    max_endpoints_per_slice: int = Field(default=100, ge=1, le=1000, strict=True)
    max_change_ratio: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    """Hold a Service's address writes that change more than this share (None, 0: off)."""
    remove_after_misses: int = Field(default=1, ge=1, le=MAX_MISSES, strict=True)
    """Remove a vanished address on the Nth run it is missing (1: at once)."""
    deny_cidrs: tuple[NetworkText, ...] = ()
    allow_cidrs: tuple[NetworkText, ...] = ()
    hosts: dict[str, tuple[AddressText, ...]] = Field(default_factory=dict)
    sources: tuple[SourceConfig, ...] = Field(min_length=1)

    @field_validator("owner")
    @classmethod
    def _owner_is_label_value(cls, v: str) -> str:
        return _label_value(v, "owner id (a label value)")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, v: str) -> str:
        return _check_namespace(v)

    @field_validator("namespaces")
    @classmethod
    def _namespaces_are_labels(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            if not v:
                raise ValueError("expected at least one namespace (or leave the key out)")
            for ns in v:
                _check_namespace(ns)
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


def _label_value(v: str, what: str) -> str:
    problem = label_value_problem(v, what)
    if problem:
        raise ValueError(problem)
    return v


def _check_namespace(v: str) -> str:
    problem = namespace_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def load_config(path: str | Path) -> Config:
    p = Path(path)
    data = load_document(p)
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "expected a mapping with at least a 'sources' list")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise config_error_from(str(p), e) from None
