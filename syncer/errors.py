"""The project's error types.

Each error says whether retrying could help (transient) or not (permanent), and the CLI maps
them to exit codes: configuration errors exit 2 before anything is contacted; source and
write failures exit 1 after everything else was applied.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class of every error endpoints-sync raises on purpose."""


class ConfigError(SyncError):
    """Bad configuration or inventory: names the file, the field path and the expectation."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}")


class SourceError(SyncError):
    """A provider could not discover its services. The run leaves the source's objects alone."""

    transient = False


class TransientSourceError(SourceError):
    """Network trouble, throttling, timeouts: the next run may well succeed."""

    transient = True


class PermanentSourceError(SourceError):
    """Bad credentials, access denied, bad options: retrying will not help."""


class KubeError(SyncError):
    """A Kubernetes API request failed; `status` is the HTTP status (0 for no response)."""

    def __init__(self, message: str, status: int = 0, reason: str = "",
                 retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message)
