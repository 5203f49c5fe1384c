"""Errors shaped like kube-apiserver's: metav1.Status bodies and field.Error causes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.kubeapi.resources import NAMESPACES, Resource

# field.ErrorType -> Status cause reason
INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
DUPLICATE = "FieldValueDuplicate"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_MANY = "FieldValueTooMany"
TOO_LONG = "FieldValueTooLong"
FORBIDDEN = "FieldValueForbidden"

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def go_repr(value: Any) -> str:
    """Render a bad value the way field.Error does (%q for strings, %v for numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FieldError:
    reason: str
    field: str
    detail: str = ""
    value: Any = None

    def body(self) -> str:
        if self.reason == REQUIRED:
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.reason == DUPLICATE:
            return f"Duplicate value: {go_repr(self.value)}"
        if self.reason == NOT_SUPPORTED:
            return f"Unsupported value: {go_repr(self.value)}: supported values: {self.detail}"
        if self.reason == TOO_MANY:
            return f"Too many: {self.value}: must have at most {self.detail} items"
        if self.reason == TOO_LONG:
            return f"Too long: {self.detail}"
        if self.reason == FORBIDDEN:
            return f"Forbidden: {self.detail}"
        return f"Invalid value: {go_repr(self.value)}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.body(), "field": self.field}


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(INVALID, path, detail, value)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(REQUIRED, path, detail)


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError(DUPLICATE, path, value=value)


def not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    return FieldError(NOT_SUPPORTED, path, ", ".join(json.dumps(s) for s in supported), value)


def too_many(path: str, actual: int, limit: int) -> FieldError:
    return FieldError(TOO_MANY, path, str(limit), actual)


def too_long(path: str, limit: int) -> FieldError:
    return FieldError(TOO_LONG, path, f"must have at most {limit} bytes")


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(FORBIDDEN, path, detail)


@dataclass
class ApiError(Exception):
    """An error answered as a Status body; `reason` "" is omitted, as Go's omitempty does."""

    code: int
    message: str
    reason: str = ""
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(res: Resource, name: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = kind
    return details


def generic(code: int, message: str, retry_after: int | None = None) -> ApiError:
    """An error for a status code alone (fault injection, routing)."""
    reason = _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    err = ApiError(code, message, reason)
    if retry_after is not None:
        err.details = {"retryAfterSeconds": retry_after}
        err.headers["Retry-After"] = str(retry_after)
    return err


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(
        404, f'{res.group_resource} "{name}" not found', "NotFound", _details(res, name, res.plural)
    )


def namespace_not_found(name: str) -> ApiError:
    return not_found(NAMESPACES, name)


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'{res.group_resource} "{name}" already exists',
        "AlreadyExists",
        _details(res, name, res.plural),
    )


def conflict(res: Resource, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version"
        " and try again"
    )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.group_resource} "{name}": {why}',
        "Conflict",
        _details(res, name, res.plural),
    )


def precondition_failed(res: Resource, name: str, field: str, want: str, have: str) -> ApiError:
    """A delete whose precondition (UID or ResourceVersion) does not hold. Unlike an update's
    conflict, the real server names the kind here: details.kind "EndpointSlice"."""
    why = ("The object might have been deleted and then recreated" if field == "UID"
           else "The object might have been modified")
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.group_kind} "{name}": the {field} in the '
        f"precondition ({want}) does not match the {field} in record ({have}). {why}",
        "Conflict",
        _details(res, name, res.kind),
    )


def unprocessable(res: Resource, name: str, errors: list[FieldError]) -> ApiError:
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details = _details(res, name, res.kind)
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, f'{res.group_kind} "{name}" is invalid: {listed}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def server_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "the server does not allow this method on the requested resource",
        "MethodNotAllowed", {},
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        f"the body of the request was in an unknown format ({content_type or 'none'}) - "
        f"accepted media types include: {', '.join(accepted)}",
        "UnsupportedMediaType",
        {},
    )


class ShapeError(Exception):
    """A JSON value of the wrong type: the real server fails to decode it (400)."""

    def __init__(self, path: str, expected: str, got: Any) -> None:
        super().__init__(path)
        self.path, self.expected, self.got = path, expected, got

    def to_api_error(self, res: Resource) -> ApiError:
        got = {dict: "object", list: "array", str: "string", bool: "bool"}.get(
            type(self.got), "number"
        )
        return bad_request(
            f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
            f"json: cannot unmarshal {got} into Go struct field {self.path} of type "
            f"{self.expected}"
        )
