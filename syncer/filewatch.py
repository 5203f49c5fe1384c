"""Watching files by polling their metadata: the `watch` of providers whose source is files.

Once a second each file's (mtime_ns, size, inode) is compared with the last poll's; a change
(a file written, replaced by a rename, created, removed, or a glob matching another set)
re-reads the source. Polling, not inotify: no dependency, the same on every filesystem
(inotify misses changes on NFS and other network mounts, and a ConfigMap volume swaps a
symlink, which a watch on the file itself does not see), and a few stat calls a second cost
nothing next to a sync; a second of latency is well within the target of watch mode.

Stat follows symlinks, so a ConfigMap's atomic swap of its `..data` link is a change (another
inode). A file that is broken or caught mid-write (its read raises ConfigError, or it changes
while being read) is not emitted: the error is logged naming the file, the cluster keeps the
last good state, and the file is read again at its next change (the writer finishing).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from syncer.errors import ConfigError

POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.1

T = TypeVar("T")
Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
FileState = tuple[int, int, int] | None
"""(mtime_ns, size, inode), or None when the path does not exist or cannot be read."""


def file_states(paths: Iterable[Path]) -> tuple[tuple[str, FileState], ...]:
    """What polling compares: each path with its FileState."""
    states = []
    for path in paths:
        try:
            st = os.stat(path)
            state: FileState = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            state = None
        states.append((str(path), state))
    return tuple(states)


def watch_files(paths: Callable[[], Iterable[Path]], read: Callable[[], T],
                emit: Callable[[T], None], stop: threading.Event, log: Log,
                interval: float = POLL_SECONDS) -> None:
    """`emit(read())` at once, then each time one of `paths()` changes; returns once `stop`
    is set. `paths` is called on every poll (a glob may match new files).

    A read that raises ConfigError is logged (the message names the file) and nothing is
    emitted until the files change again; a read during which a file changed is not emitted
    either (it may have seen half a write) and is read again at once. Any other exception
    propagates: the core logs it and calls `watch` again after a backoff."""
    seen: tuple[tuple[str, FileState], ...] | None = None
    while not stop.is_set():
        wait = interval
        before = file_states(paths())
        if before != seen:
            try:
                state = read()
            except ConfigError as e:
                log.error("%s; not synced until the file is fixed, the cluster keeps the last "
                          "good state", e, extra={"event": "watch_failed"})
                seen = before
            else:
                if file_states(paths()) == before:
                    seen = before
                    emit(state)
                else:  # changed while read: read again soon, once the writer is done
                    wait = min(interval, SETTLE_SECONDS)
        stop.wait(wait)
