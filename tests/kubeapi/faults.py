"""Fault injection: make the next matching requests fail, stall or vanish."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    method: str  # upper case, or "*" for any
    path: re.Pattern[str]
    status: int | None
    retry_after: int | None
    delay: float
    drop: bool
    remaining: int

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.path.search(path) is not None


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
    ) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        if status is None and not drop and delay <= 0:
            raise ValueError("a fault needs a status, a delay or drop=True")
        fault = Fault(method.upper(), re.compile(path_regex), status, retry_after, delay, drop,
                      times)
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching this request, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
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
