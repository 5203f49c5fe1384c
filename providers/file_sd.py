"""The `file_sd` provider: Prometheus file_sd target-group files as Services.

The same files Prometheus's file_sd_config reads: JSON (`.json`) or YAML (`.yml`, `.yaml`),
each a list of target groups, named by paths whose last element may be a glob. A glob that
matches nothing is no error (no targets). The files are written by other systems while we
run, so a broken one is not a configuration error: it fails the source (exit 1) and the core
leaves the cluster as it is, as Prometheus keeps its last good targets. In `run --watch` the
files (and what the globs match) are polled each second (syncer.plugin.watch_files) and a
change is synced; a broken file is logged naming it, and the last good state is kept.
"""

from __future__ import annotations

import glob
import threading
from pathlib import Path

from pydantic import Field, field_validator

from providers.prometheus_sd import (
    DocumentError,
    TargetGroup,
    TargetMappingOptions,
    parse_groups,
    to_discovery,
)
from syncer.plugin import (
    ConfigError,
    Discovery,
    Emit,
    PermanentSourceError,
    Provider,
    load_document,
    watch_files,
)

SUFFIXES = (".json", ".yml", ".yaml")
_GLOB_CHARS = frozenset("*?[")


def _pattern(value: str) -> str:
    """Prometheus's rule: a glob only in the last path element, and a known extension."""
    if not value.strip():
        raise ValueError("expected a file path or glob, got an empty string")
    path = Path(value)
    if not path.name.lower().endswith(SUFFIXES):
        raise ValueError(f"expected a .json, .yml or .yaml file, got {value!r}")
    if any(c in _GLOB_CHARS for c in str(path.parent)):
        raise ValueError(f"a glob is allowed in the file name only, got {value!r}")
    return value


def expand(patterns: tuple[str, ...], base: Path) -> list[Path]:
    """The files the patterns name, relative ones against `base`; sorted, each once. A
    literal path is returned whether or not it exists (reading it says); a glob gives the
    files that exist now."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        path = path if path.is_absolute() else base / path
        if any(c in _GLOB_CHARS for c in path.name):
            matches = sorted(Path(p) for p in glob.glob(
                str(Path(glob.escape(str(path.parent))) / path.name)))
        else:
            matches = [path]
        found.update(dict.fromkeys(matches))
    return list(found)


class FileSdOptions(TargetMappingOptions):
    """Options of a `file_sd` source."""

    files: tuple[str, ...] = Field(min_length=1)
    """Target-group files (.json, .yml, .yaml); the file name may be a glob (`targets/*.json`).
    Relative paths start at the configuration file's folder."""

    @field_validator("files")
    @classmethod
    def _files(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, pattern in enumerate(v):
            try:
                _pattern(pattern)
            except ValueError as e:
                raise ValueError(f"files[{i}]: {e}") from None
        return v


class FileSdProvider(Provider[FileSdOptions]):
    """Prometheus file-based service discovery."""

    Options = FileSdOptions
    summary = "targets of Prometheus file_sd JSON/YAML files (job label or a fixed service)"

    def check(self) -> None:
        self._groups()  # a broken file is a ConfigError for `validate`

    def discover(self) -> Discovery:
        try:
            return self._read()
        except ConfigError as e:
            # Written at run time by another system: fail this source, keep the cluster.
            raise PermanentSourceError(str(e)) from None

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        watch_files(self._files, self._read, emit, stop, self.context.log)

    def _files(self) -> list[Path]:
        return expand(self.options.files, self.context.config_dir)

    def _read(self) -> Discovery:
        """discover() with a broken file as a ConfigError, which watch_files logs."""
        return to_discovery(self._groups(), self.options, self.context.log)

    def _groups(self) -> list[TargetGroup]:
        groups: list[TargetGroup] = []
        for path in self._files():
            data = load_document(path)
            try:
                groups += parse_groups(data, strict_keys=True,
                                       extra_labels={"__meta_filepath": str(path)},
                                       origin=path.name)
            except DocumentError as e:
                raise ConfigError(str(path), e.where, e.problem) from None
        return groups
