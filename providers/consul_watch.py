"""Consul's rules for blocking queries, as one loop: `follow()`.

developer.hashicorp.com/consul/api-docs/features/blocking asks every client to

- reset the index to 0 when an answer's X-Consul-Index is lower than the one before (a
  snapshot restore, a rebuilt cluster): the next request then reads the current state at once;
- never block on index 0 (a bug of some Consul versions answers 0): 1 is always safe, and
  blocks;
- rate-limit the loop rather than sleep in it: a token bucket with a burst of 2, so the first
  changes arrive at once and an index that moves all the time degrades into polling.

Here also: a `wait` jittered below the configured one, so that many loops started together do
not all expire together; a failed request emits nothing (the caller keeps its last state) and
is retried after a backoff that doubles up to a cap; a permanent failure (access denied, a
bad filter) ends the loop by raising, so that the caller can start over with fresh inputs
(a rotated token file).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from syncer.plugin import PermanentSourceError, SourceError

_RANDOM = random.Random()  # own generator: jitter never moves the global random state

T = TypeVar("T")
Fetch = Callable[[int, float], tuple[T, int | None]]
"""(index, wait seconds) -> (the answer, its X-Consul-Index or None when it had none)."""


@dataclass(frozen=True)
class Pace:
    """How fast one loop may go."""

    wait: float
    """The `wait` of each blocking query, seconds (jittered down by up to 1/16)."""
    rate: float = 1.0
    """Queries per second once the burst is spent."""
    burst: int = 2
    backoff_first: float = 1.0
    backoff_max: float = 30.0


def next_index(previous: int, returned: int | None) -> int:
    """The index of the next query, by Consul's rules."""
    if returned is None:
        return 0  # no X-Consul-Index: this endpoint cannot block; the rate limit paces it
    if returned < previous:
        return 0  # went backwards: start over with a read of the current state
    return max(returned, 1)  # 0 would not block: a busy loop


def blocking_params(index: int, wait: float) -> list[tuple[str, str]]:
    """The query parameters of a blocking query (none for index 0: read at once, as
    py-consul does)."""
    if index <= 0:
        return []
    return [("index", str(index)), ("wait", f"{max(1, round(wait * 1000))}ms")]


class TokenBucket:
    """`burst` queries at once, then `rate` per second."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self, stop: threading.Event) -> bool:
        """Wait for a token; False when `stop` is set first."""
        while not stop.is_set():
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            stop.wait((1 - self._tokens) / self._rate)
        return False


def follow(fetch: Fetch[T], deliver: Callable[[T], None], stop: threading.Event, pace: Pace,
           log: logging.LoggerAdapter[logging.Logger], what: str) -> None:
    """Run blocking queries until `stop` is set, handing every answer to `deliver`.

    A transient failure delivers nothing and is retried after the backoff; a permanent one is
    raised. Nothing is delivered once `stop` is set.
    """
    bucket = TokenBucket(pace.rate, pace.burst)
    index, failures = 0, 0
    while bucket.take(stop):
        wait = pace.wait * _RANDOM.uniform(15 / 16, 1)
        try:
            answer, returned = fetch(index, wait)
        except PermanentSourceError:
            raise
        except SourceError as e:
            if stop.is_set():
                return
            delay = min(pace.backoff_first * 2 ** failures, pace.backoff_max)
            failures += 1
            log.warning("watching %s: %s; retrying in %g s, the last state stays", what, e,
                        delay)
            stop.wait(delay)
            continue
        if failures:
            log.info("watching %s: Consul answers again", what)
        failures = 0
        index = next_index(index, returned)
        if stop.is_set():
            return
        deliver(answer)
