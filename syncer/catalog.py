"""Describes the installed providers and their options, for `endpoints-sync providers`.

The JSON shape (`providers -o json`; stable, documented in the README): a list of

    {"name", "distribution", "version", "entry_point", "summary",
     "options": [{"name", "type", "required", "default", "secret", "description"}],
     "error"}

where `default` is null for a required option (or a secret one) and `error` is null unless
the plugin cannot load, in which case `summary` is "" and `options` is empty.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from syncer import options as shared
from syncer.registry import Plugin, PluginError
from syncer.secrets import Secret


@dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str
    required: bool
    default: Any  # JSON-able; None when required or secret
    secret: bool
    description: str


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    distribution: str
    version: str
    entry_point: str
    summary: str
    options: tuple[OptionInfo, ...]
    error: str | None = None


def describe(plugin: Plugin) -> ProviderInfo:
    """One provider; a plugin that cannot load is described by its error."""
    where = dict(name=plugin.name, distribution=plugin.distribution, version=plugin.version,
                 entry_point=plugin.entry_point.value)
    try:
        cls = plugin.load()
    except PluginError as e:
        return ProviderInfo(**where, summary="", options=(), error=str(e))
    options = tuple(_option(name, info) for name, info in cls.Options.model_fields.items())
    return ProviderInfo(**where, summary=cls.summary, options=options)


def _option(name: str, info: FieldInfo) -> OptionInfo:
    secret = _mentions_secret(info.annotation)
    default: Any = None
    if not info.is_required():
        value = info.get_default(call_default_factory=True)
        # A secret's default is never shown, not even as "[redacted]" in JSON.
        default = None if secret else to_jsonable_python(value, fallback=str)
    return OptionInfo(name=name, type=type_name(info.annotation, info.metadata),
                      required=info.is_required(), default=default, secret=secret,
                      description=" ".join((info.description or "").split()))


def _mentions_secret(annotation: Any) -> bool:
    return annotation is Secret or any(_mentions_secret(a) for a in get_args(annotation))


def _flat(metadata: Any) -> list[Any]:
    """Annotated metadata with nested FieldInfo constraints spread out, as pydantic does."""
    out: list[Any] = []
    for m in metadata:
        out.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return out


# The shared option types (syncer.options) by name: shown as `PortNumber`, not `int`.
_SHARED = [(name, get_args(t)[0], _flat(t.__metadata__)) for name in shared.__all__
           if get_origin(t := getattr(shared, name)) is Annotated]


def type_name(annotation: Any, metadata: Any = ()) -> str:
    """A readable type: `list[str] | None`, `'sync' | 'upsert-only'`, `PortNumber`."""
    if metadata or get_origin(annotation) is Annotated:
        base = get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation
        flat = _flat([*getattr(annotation, "__metadata__", ()), *metadata])
        for name, shared_base, shared_meta in _SHARED:
            if base == shared_base and flat[: len(shared_meta)] == shared_meta:
                return name
        return type_name(base)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is Union or type(annotation).__name__ == "UnionType":
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def as_json(info: ProviderInfo) -> dict[str, Any]:
    return asdict(info) | {"options": [asdict(o) for o in info.options]}


def as_text(info: ProviderInfo) -> str:
    lines = [f"{info.name}  ({info.distribution} {info.version}, {info.entry_point})"]
    if info.error is not None:
        lines.append(f"    unavailable: {info.error}")
    else:
        lines.append(f"    {info.summary}")
    for o in info.options:
        lines.append(f"    {o.name}: {o.type}{_default_text(o)}")
        lines += textwrap.wrap(o.description, 88, initial_indent=" " * 8,
                               subsequent_indent=" " * 8)
    return "\n".join(lines) + "\n"


def _default_text(o: OptionInfo) -> str:
    if o.required:
        return " (required)"
    if o.secret:
        return " (optional; the default is not shown)"
    return " (default: none)" if o.default is None else f" = {json.dumps(o.default)}"
