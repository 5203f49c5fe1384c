"""Typed reads of JSON fields. A value of the wrong JSON type raises ShapeError (a 400),
as the real server's decoder rejects it before any validation runs."""

from __future__ import annotations

from typing import Any

from tests.kubeapi.errors import ShapeError


def obj(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShapeError(path, "object", value)
    return value


def objs(parent: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ShapeError(path, "[]object", value)
    return value


def string(parent: dict[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ShapeError(path, "string", value)
    return value


def strings(parent: dict[str, Any], key: str, path: str) -> list[str]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ShapeError(path, "[]string", value)
    return value


def integer(parent: dict[str, Any], key: str, path: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(path, "int32", value)
    return value


def boolean(parent: dict[str, Any], key: str, path: str) -> bool | None:
    value = parent.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ShapeError(path, "bool", value)


def string_map(parent: dict[str, Any], key: str, path: str) -> dict[str, str]:
    value = obj(parent, key, path)
    for v in value.values():
        if not isinstance(v, str):
            raise ShapeError(path, "map[string]string", v)
    return value
