"""The configuration file: YAML, strict, every error naming the file and the field path."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
)

from syncer.errors import ConfigError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRET_WORDS = ("token", "secret", "password", "credential")


try:  # the C loader is several times faster on large inventories
    from yaml import CSafeLoader as YamlLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as YamlLoader  # type: ignore[assignment]


class SourceConfig(BaseModel):
    """One entry of `sources`: the core's keys; the provider's options are kept aside."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=63)
    provider: str = Field(min_length=1)
    allow_empty: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_label_value(cls, v: str) -> str:
        if not LABEL_VALUE.match(v):
            raise ValueError("expected letters, digits, '-', '_' or '.', starting and ending "
                             "with a letter or digit (it is written as an annotation value)")
        return v

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
    adopt: bool = False
    max_delete_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    max_endpoints_per_slice: int = Field(default=100, ge=1, le=1000)
    deny_cidrs: tuple[IPvAnyNetwork, ...] = ()
    hosts: dict[str, tuple[IPvAnyAddress, ...]] = Field(default_factory=dict)
    sources: tuple[SourceConfig, ...] = Field(min_length=1)

    @field_validator("owner")
    @classmethod
    def _owner_is_label_value(cls, v: str) -> str:
        if not LABEL_VALUE.match(v):
            raise ValueError("expected a Kubernetes label value: letters, digits, '-', '_' or "
                             "'.', starting and ending with a letter or digit, at most 63")
        return v

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


def _check_namespace(v: str) -> str:
    if len(v) > 63 or not DNS1123_LABEL.match(v):
        raise ValueError(f"expected a namespace name (a DNS-1123 label), got {v!r}")
    return v


def field_path(loc: Sequence[int | str]) -> str:
    """Pydantic's error location as a config path: ('sources', 1, 'region') -> sources[1].region."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def config_error_from(file: str, e: ValidationError, prefix: str = "") -> ConfigError:
    """A ConfigError for every problem pydantic found, the first one first."""
    errors = e.errors(include_url=False)
    # A list whose item failed also reports itself too short: the item is the news.
    errors = [x for x in errors if x["type"] != "too_short"] or errors
    problems = [_describe(err) for err in errors]
    problems = [(f"{prefix}{f}" if f.startswith("[") else f"{prefix}.{f}" if prefix and f
                 else prefix or f, m) for f, m in problems]
    field, msg = problems[0]
    error = ConfigError(file, field, msg)
    if len(problems) > 1:
        rest = "\n".join(f"{file}: {f}: {m}" for f, m in problems[1:])
        error.args = (f"{error.args[0]}\n{rest}",)
    return error


def _describe(err: Any) -> tuple[str, str]:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "too_short":
        msg = f"expected at least {err.get('ctx', {}).get('min_length', 1)} item(s)"
    elif "input" in err and err["type"] not in ("value_error",) and not _secret(err["loc"]):
        msg = f"{msg} (got {_short(err['input'])})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return field_path(loc), msg


def _secret(loc: Sequence[int | str]) -> bool:
    """Never echo what was given for a field that may hold a secret."""
    return any(isinstance(p, str) and any(w in p.lower() for w in SECRET_WORDS) for p in loc)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_document(path: Path) -> Any:
    """Read a YAML (or JSON, a subset of YAML) file; syntax errors become ConfigErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read the file: {e}") from None
    try:
        return yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    data = load_document(p)
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "expected a mapping with at least a 'sources' list")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise config_error_from(str(p), e) from None
