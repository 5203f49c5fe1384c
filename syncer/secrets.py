"""Secret values: the `Secret` option type, and the one place that cuts secrets out of text.

Every `Secret` made in this process remembers its value, and `redact` replaces every
remembered value in a text. The core passes everything it shows through `redact`: log lines
(text and JSON), error messages, plan and render output. A provider therefore only has to
hold its secrets as `Secret` (an option typed `Secret`, or `Secret.read(path)` for a token
file); a value that reaches a message by accident is cut out anyway.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic only when a Secret is validated: the log lines need no pydantic
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import core_schema

REDACTED = "[redacted]"
# A secret shorter than this would cut ordinary words out of every message; such a value
# is no secret anyway.
MIN_REDACTED_LENGTH = 4



class _Known:
    """The secret values of this process, and one pattern matching them all."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.lock = threading.Lock()

    def add(self, value: str) -> None:
        with self.lock:
            if value not in self.values:
                self.values.add(value)
                # Longest first: a secret that contains another is cut whole.
                alternatives = sorted(self.values, key=len, reverse=True)
                self.pattern = re.compile("|".join(re.escape(v) for v in alternatives))


_known = _Known()

# Shaped like an AWS access key id, or a long base64 blob (a secret key, a session token).
# Only for messages of a remote server, which may echo request material we never held as a
# Secret: applied everywhere it would also cut long DNS labels out of a plan.
_CREDENTIAL_SHAPED = re.compile(
    r"(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA)[A-Z0-9]{12,}|[A-Za-z0-9/+]{40,}=*")


def remember(value: str) -> None:
    """From now on, `redact` cuts `value` out of every text."""
    if len(value) >= MIN_REDACTED_LENGTH:
        _known.add(value)


def redact(text: str) -> str:
    """`text` with every secret this process holds replaced by `[redacted]`."""
    pattern = _known.pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def redact_remote_message(text: str, limit: int = 300) -> str:
    """A remote server's error message, fit to show: secrets and anything shaped like a
    credential cut out, whitespace folded, at most `limit` characters."""
    cleaned = _CREDENTIAL_SHAPED.sub(REDACTED, " ".join(redact(text).split()))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class Secret:
    """A secret option value (a token, a password). `repr`, `str` and every output of the
    core show `[redacted]`; `reveal()` gives the value to whoever must send it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a string")
        self._value = value
        remember(value)

    @classmethod
    def read(cls, path: str | Path) -> Secret:
        """A secret held in a file (a mounted Kubernetes Secret): its text without the
        surrounding whitespace. Read it on every run, so that a rotated secret is picked up.
        Raises OSError or UnicodeDecodeError; the messages of both name no content."""
        return cls(Path(path).read_text(encoding="utf-8").strip())

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        from pydantic_core import core_schema

        def validate(value: object) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # YAML reads an all-digit token as a number
            if not isinstance(value, str):
                # A ValueError: the core never quotes the input of one, which may be the secret.
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: REDACTED),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "writeOnly": True, "format": "password"}
