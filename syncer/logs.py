"""One line per event on stderr, as text or JSON.

A record's `source` field (providers log through `SourceContext.log`, the core passes
`extra={"source": ...}`) shows as `source 'x': ` in text and as a field in JSON; messages do
not repeat it. Every line passes through `syncer.secrets.redact`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

from syncer.secrets import redact

LogFormat = Literal["text", "json"]


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        source = getattr(record, "source", None)
        about = f"source {source!r}: " if source else ""
        line = f"{stamp} {record.levelname.lower():7} {about}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        source = getattr(record, "source", None)
        if source:
            line["source"] = source
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, sort_keys=False))


def configure(fmt: LogFormat = "text", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # The HTTP clients' own chatter is noise at INFO (and may carry URLs with tokens at DEBUG).
    for noisy in ("urllib3", "kubernetes", "botocore", "boto3", "consul"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
