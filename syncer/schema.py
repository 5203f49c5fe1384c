"""The JSON Schema (draft 2020-12) of the configuration file, providers' options included.

Built from the pydantic models, so it cannot drift from what `validate` accepts: the core's
`Config`, with `sources.items` replaced by one choice per provider. Each choice is the
core's source keys plus that provider's options, `additionalProperties: false`, selected by
`if: {provider: {const: NAME}}` / `then:`: yaml-language-server completes and checks
if/then branches, and a failed branch reports its own error rather than one per provider
(as `oneOf` would).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from syncer.config import Config, SourceConfig
from syncer.registry import ProviderClass

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_DEFS = "#/$defs/"


def config_schema(providers: Mapping[str, ProviderClass]) -> dict[str, Any]:
    """The configuration's schema for these providers (name -> class)."""
    mode: JsonSchemaMode = "validation"
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Config, mode), (SourceConfig, mode)]
    models += [(cls.Options, mode) for cls in providers.values()]
    # One call for all models: pydantic names the $defs so that none clash.
    refs, document = models_json_schema(models, ref_template=_DEFS + "{model}")
    defs: dict[str, Any] = document["$defs"]

    def take(model: type[BaseModel]) -> dict[str, Any]:
        return copy.deepcopy(defs[refs[(model, mode)]["$ref"].removeprefix(_DEFS)])

    root, core = take(Config), take(SourceConfig)
    branches: list[dict[str, Any]] = []
    for name, cls in providers.items():
        options = take(cls.Options)
        key = _free_key(defs, f"source:{name}")
        defs[key] = {
            "type": "object",
            "title": f"{name} source",
            "description": cls.summary,
            "properties": core["properties"] | options.get("properties", {})
            | {"provider": {"const": name, "description": cls.summary}},
            "required": sorted({*core.get("required", ()), *options.get("required", ())}),
            "additionalProperties": False,
        }
        branches.append({"if": {"properties": {"provider": {"const": name}},
                                "required": ["provider"]},
                         "then": {"$ref": _DEFS + _pointer(key)}})
    names = list(providers)
    chooser = {"description": "installed providers: " + (", ".join(names) or "none"),
               "type": "string"} | ({"enum": names} if names else {})
    # The core keys stay outside the branches too, for completion before `provider` is set.
    root["properties"]["sources"]["items"] = {
        "type": "object",
        "properties": core["properties"] | {"provider": chooser},
        "required": core.get("required", []),
        "allOf": branches,
    }
    # The models now inlined into the choices are not needed as definitions (unless
    # another model refers to one).
    for model, _ in models:
        key = refs[(model, mode)]["$ref"].removeprefix(_DEFS)
        if key in defs and _DEFS + _pointer(key) not in _refs([root, *(
                d for k, d in defs.items() if k != key)]):
            del defs[key]

    return {"$schema": DRAFT, **root, "title": "endpoints-sync configuration",
            **({"$defs": defs} if defs else {})}


def _refs(node: Any) -> set[str]:
    """Every $ref in a schema."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _free_key(defs: Mapping[str, Any], key: str) -> str:
    while key in defs:
        key += "_"
    return key


def _pointer(key: str) -> str:
    """A $defs key as a JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
