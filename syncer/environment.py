"""Settings read from environment variables, each refused with one message when malformed."""

from __future__ import annotations

import math
import os

from syncer.errors import ConfigError


def seconds_from_env(name: str, default: float, maximum: float) -> float:
    """`$name` as a positive, finite number of seconds up to `maximum`; `default` if unset.
    A malformed value is a ConfigError (exit 2) naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise ConfigError(f"${name}", "", f"expected a number of seconds between 0 and "
                          f"{maximum:g}, got {text[:40]!r}")
    return value
