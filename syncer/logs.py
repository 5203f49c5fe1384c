"""One line per event on stderr, as text or JSON.

A record's `source` field (providers log through `SourceContext.log`, the core passes
`extra={"source": ...}`) shows as `source 'x': ` in text and as a field in JSON; messages do
not repeat it. The other fields a record may carry (see FIELDS, e.g.
`extra={"event": "summary", "counts": {...}}`) are JSON fields only: the text line already
says it in its message. Every line passes through `syncer.secrets.redact`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from syncer.secrets import redact

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")

FIELDS = ("event", "source", "namespace", "service", "counts", "duration_seconds")
"""The `extra` keys a JSON line carries, in this order after time, level and msg:
`event` a short stable name (e.g. "summary", "source_failed"), `source`, the Service's
`namespace` and `service`, `counts` (an object of numbers), `duration_seconds`."""


def service_fields(service: tuple[str, str], event: str) -> dict[str, str]:
    """The `extra` of a line about one Service: its namespace and name, and the event."""
    return {"event": event, "namespace": service[0], "service": service[1]}


def _stamp(record: logging.LogRecord) -> str:
    """UTC, RFC 3339 with milliseconds: watch mode acts within a second."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{whole}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        source = getattr(record, "source", None)
        about = f"source {source!r}: " if source else ""
        line = f"{_stamp(record)} {record.levelname.lower():7} {about}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None and value != "":
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, sort_keys=False, default=str))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is at each line, not as it was when configured (a test's
    captured stderr, closed since, would turn every later line into a logging error)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(fmt: LogFormat = "text", level: LogLevel = "info") -> None:
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # The HTTP clients' own chatter is noise at INFO (and may carry URLs with tokens at DEBUG).
    for noisy in ("urllib3", "kubernetes", "botocore", "boto3", "consul"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
