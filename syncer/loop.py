"""Loop mode (`run --interval S`): one run every S seconds until SIGTERM or SIGINT.

- A failed run does not end the loop; a configuration error does only on the first run
  (later ones are logged and the cluster is left as it is).
- A source that failed with a transient error (or a Kubernetes API that did not answer) is
  retried sooner: after $ENDPOINTS_SYNC_RETRY_BACKOFF seconds (default 5), doubling on each
  further transient failure, never longer than the interval. A permanent failure waits for
  the next interval: retrying would not help.
- SIGTERM/SIGINT: the writes in flight complete and no new write starts (every prefix of a
  Service's writes is safe: make before break); the rest is left for the next start. No new
  run starts; exit 0. A second SIGINT ends the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from syncer.environment import seconds_from_env
from syncer.errors import ConfigError, KubeError
from syncer.health import LoopState, serve
from syncer.metrics import Telemetry
from syncer.run import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

log = logging.getLogger("endpoints_sync")

RETRY_ENV = "ENDPOINTS_SYNC_RETRY_BACKOFF"
RETRY_FIRST = 5.0


class Backoff:
    """How long to wait after a run: the interval, or sooner after a transient failure."""

    def __init__(self, first: float, interval: float) -> None:
        self.first, self.interval = first, interval
        self.current = first

    def after(self, transient: bool) -> float:
        if not transient:
            self.current = self.first
            return self.interval
        wait = min(self.current, self.interval)
        self.current = min(self.current * 2, self.interval)
        return wait


def retry_first() -> float:
    """$ENDPOINTS_SYNC_RETRY_BACKOFF, or RETRY_FIRST."""
    return seconds_from_env(RETRY_ENV, RETRY_FIRST, 3600)


def _transient(e: KubeError) -> bool:
    return e.status in {0, 429} or e.status >= 500


def run_loop(once: Callable[[threading.Event], int], interval: float, telemetry: Telemetry, *,
             address: str = "0.0.0.0", port: int | None = None,
             idle: Callable[[threading.Event, float], None] | None = None) -> int:
    """Call `once(stop)` (one run, returning its exit code) until stopped; returns 0.
    Between runs, `idle(stop, seconds)` (watch mode: sync the changes that come) or a wait;
    either returns early once `stop` is set."""
    backoff = Backoff(retry_first(), interval)
    state = LoopState(interval)
    server = serve(address, port, telemetry.metrics.text, state) if port is not None else None
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    first = True
    try:
        while not stop.is_set():
            state.beat()
            telemetry.begin()
            transient: list[str] = []
            try:
                code = once(stop)
            except ConfigError as e:
                if first:
                    raise
                log.error("configuration error (keeping the cluster as it is): %s", e)
                telemetry.failed()
                code = EXIT_CONFIG
            except KubeError as e:
                log.error("Kubernetes API: %s", e)
                code = EXIT_FAILED
                if _transient(e):
                    transient = ["the Kubernetes API"]
            first = False
            state.beat()
            if telemetry.last is not None:
                state.completed()
                transient = sorted(s for s, kind in telemetry.last.desired.failed_kinds.items()
                                   if kind == "transient")
            wait = backoff.after(bool(transient))
            if transient and wait < interval:
                log.info("%s failed with a transient error: retrying in %gs",
                         ", ".join(transient), wait)
            else:
                log.debug("run ended with exit code %d; next in %gs", code, wait)
            if idle is None:
                stop.wait(wait)
            else:
                idle(stop, wait)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        restore()
    return EXIT_OK


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop`; returns how to put the previous handlers back."""
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user means it
        log.info("%s: stopping after the writes in flight", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return restore
