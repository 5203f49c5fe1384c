"""One line per event on stderr, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()}"


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
        return json.dumps(line, sort_keys=False)


def configure(fmt: LogFormat = "text", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # The HTTP clients' own chatter is noise at INFO (and may carry URLs with tokens at DEBUG).
    for noisy in ("urllib3", "kubernetes", "botocore", "boto3", "consul"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
