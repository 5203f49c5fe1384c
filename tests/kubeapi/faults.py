"""Fault injection: make the next matching requests fail, stall or vanish."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Fault:
    method: str  # upper case, "*" for any, or alternatives: "POST|PUT|DELETE"
    path: re.Pattern[str]
    status: int | None
    retry_after: int | None
    delay: float
    drop: bool
    remaining: int
    skip: int = 0
    """Matching requests still to let through before the fault starts (the Nth write)."""
    details: dict[str, Any] | None = None  # the Status body's details, e.g. 422 causes

    def matches(self, method: str, path: str) -> bool:
        return ((self.method == "*" or method in self.method.split("|"))
                and self.path.search(path) is not None)


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        method: str,
        path_regex: str,
        *,
        status: int | None,
        retry_after: int | None,
        delay: float,
        drop: bool,
        times: int,
        after: int = 0,
        details: dict[str, Any] | None = None,
    ) -> None:
        if times < 1 or after < 0:
            raise ValueError("times must be at least 1, after at least 0")
        if status is None and not drop and delay <= 0:
            raise ValueError("a fault needs a status, a delay or drop=True")
        fault = Fault(method.upper(), re.compile(path_regex), status, retry_after, delay, drop,
                      times, after, details)
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching this request, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)
