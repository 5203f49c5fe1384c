"""The provider contract test kit: one pytest suite that every provider's tests subclass.

A provider's test module subclasses `ProviderContract` (the `keyring.testing` pattern), says
which provider it tests and how to get a working and a failing source, and inherits every
`test_*` check below::

    from syncer.testing import ProviderContract

    class TestConsulContract(ProviderContract):
        provider_name = "consul"                  # its entry-point name
        provider_class = ConsulProvider
        secret_options = ("token",)               # options whose values must never be shown
        bad_values = {"port": 0, "url": "ftp://x"}  # option -> a value it must refuse

        @pytest.fixture
        def options(self, consul_double) -> dict[str, object]:
            # Options of a working source (start a fake server, write files into tmp_path).
            return {"url": consul_double.url, "service": "web", "token": "s3cr3t-token"}

        @pytest.fixture
        def broken_options(self, tmp_path) -> dict[str, object]:
            # Valid options whose discover() must fail (a fake answering 500, a closed port).
            return {"url": "http://127.0.0.1:9", "service": "web"}

Sources are built the way a run builds them: the kit writes a configuration file
(`sources: [{name: contract, provider: NAME, **options}]`) into the test's `tmp_path` (so a
relative path option resolves against the folder the fixtures write into) and loads it with
`syncer.run.load`, which finds the entry point, checks optional imports and validates the
options. What each inherited test proves:

- `test_entry_point_resolves_to_the_class`: the name in the configuration reaches this class.
- `test_unknown_key_is_refused_with_its_field_path`: a typo in an option is exit 2 naming
  `sources[0].<key>`, not silently ignored.
- `test_bad_values_are_refused_with_their_field_path`: each `bad_values` entry is refused
  naming `sources[0].<option>` (a model declaring the option, not an "unknown key").
- `test_check_opens_no_socket`: `check()` (run by `validate`) connects to nothing.
- `test_discover_is_deterministic`: the same input gives equal results, call after call.
- `test_results_are_valid_and_canonical`: every returned name, namespace, port, address,
  zone, hostname, label and kept Service passes the core's own rules (`syncer.names`) and is
  in canonical form, so the core never has to drop or rewrite a provider's data.
- `test_failure_raises_a_source_error`: a failing source raises `failure_error` (a
  `SourceError` by default), not a bare exception, and leaves naming the source to the core.
- `test_secrets_never_shown`: no `secret_options` value appears in `repr`, errors or logs.
- `test_missing_optional_dependency_names_the_extra`: a missing `optional_imports` module is
  exit 2 with the `pip install` hint; a provider without any builds and checks with the
  built-ins' heavy libraries blocked.
- `test_watch_emits_what_discover_returns`: a provider that implements `watch` (API 1.1)
  emits, within `watch_first_emit_seconds`, the complete state that `discover()` returns; one
  that does not is left to the interval's resync (`watches()` is False).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from syncer.discovery import Discovery
from syncer.errors import ConfigError, SourceError
from syncer.model import ServiceSpec
from syncer.names import (
    address_problem,
    annotations_problem,
    app_protocol_problem,
    canonical_ip,
    hostname_problem,
    labels_problem,
    looks_like_ip,
    namespace_problem,
    service_name_problem,
    service_ports_problem,
    zone_problem,
)
from syncer.plugin import Provider, watches
from syncer.registry import find
from syncer.run import load

__all__ = ["ProviderContract"]

SOURCE = "contract"
WHERE = "sources[0]"
# The built-ins' heavy libraries: a provider without optional_imports must not need them.
HEAVY_MODULES = ("boto3", "botocore", "consul")
UNKNOWN_KEY = "contract_unknown_key"
PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "Headless", "ExternalName")

_files = itertools.count()


# --- watching for sockets ------------------------------------------------------------------
# An audit hook cannot be removed, so one is installed per process and records only while a
# `_no_connect()` block runs; any thread's connect counts (check() may start one).

_watch_lock = threading.Lock()
_watching: list[list[str]] = []
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _watching:
        with _watch_lock:
            for seen in _watching:
                seen.append(repr(args[1]))


@contextmanager
def _no_connect() -> Iterator[list[str]]:
    """Every address connected to inside the block."""
    global _hook_installed  # noqa: PLW0603 - the one hook of this process
    with _watch_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True
        seen: list[str] = []
        _watching.append(seen)
    try:
        yield seen
    finally:
        with _watch_lock:
            _watching.remove(seen)


# --- the suite -----------------------------------------------------------------------------

class ProviderContract:
    """The contract every provider passes; subclass it as `Test<Name>Contract`.

    Set `provider_name`, `provider_class`, `bad_values` (and `secret_options` if the provider
    has secrets), and define the fixtures `options` and `broken_options`.
    """

    provider_name: ClassVar[str]
    """The provider's entry-point name, as written in a configuration."""
    provider_class: ClassVar[type[Provider[Any]]]
    secret_options: ClassVar[tuple[str, ...]] = ()
    """Options whose values must never be shown; `options` must set each."""
    bad_values: ClassVar[Mapping[str, object]] = {}
    """Option -> a value the options model must refuse (at least one)."""
    watch_first_emit_seconds: ClassVar[float] = 10.0
    """How long `watch` may take to emit its first state (a hang guard, not a timing)."""
    failure_error: ClassVar[type[Exception]] = SourceError
    """What `discover()` raises with `broken_options`. Only a provider whose failures are
    configuration errors by design (the static inventory belongs to the configuration:
    exit 2) sets `ConfigError`."""

    @pytest.fixture
    def options(self) -> dict[str, object]:
        """Options of a working source that returns at least one Service."""
        raise NotImplementedError(f"{type(self).__name__} must define the `options` fixture")

    @pytest.fixture
    def broken_options(self) -> dict[str, object]:
        """Valid options with which `discover()` raises `failure_error`."""
        raise NotImplementedError(
            f"{type(self).__name__} must define the `broken_options` fixture")

    # --- building sources the way a run does ---

    def load_provider(self, folder: Path, options: Mapping[str, object]) -> Provider[Any]:
        """The provider of a one-source configuration written into `folder`."""
        config = folder / f"endpoints-sync-contract-{next(_files)}.yaml"
        source = {"name": SOURCE, "provider": self.provider_name, **_plain(options)}
        config.write_text(yaml.safe_dump({"sources": [source]}, sort_keys=False),
                          encoding="utf-8")
        return load(str(config)).sources[0].provider

    def refusal(self, folder: Path, options: Mapping[str, object]) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            self.load_provider(folder, options)
        return info.value

    # --- the checks ---

    def test_entry_point_resolves_to_the_class(self) -> None:
        found = find(self.provider_name).load()
        assert found is self.provider_class, (
            f"{self.provider_name!r} resolves to {found.__module__}.{found.__qualname__}")

    def test_unknown_key_is_refused_with_its_field_path(
            self, tmp_path: Path, options: dict[str, object]) -> None:
        error = self.refusal(tmp_path, {**options, UNKNOWN_KEY: 1})
        assert error.field == f"{WHERE}.{UNKNOWN_KEY}", str(error)
        assert error.message == "unknown key", str(error)

    def test_bad_values_are_refused_with_their_field_path(
            self, tmp_path: Path, options: dict[str, object]) -> None:
        assert self.bad_values, ("set `bad_values` to at least one option and a value it must "
                                 "refuse: every option model has a rule worth proving")
        fields = self.provider_class.Options.model_fields
        for option, value in self.bad_values.items():
            assert option in fields, f"bad_values names {option!r}, which is not an option"
            error = self.refusal(tmp_path, {**options, option: value})
            where = f"{WHERE}.{option}"
            assert error.field == where or error.field.startswith((f"{where}.", f"{where}[")), (
                f"{option}={value!r}: refused naming {error.field!r}: {error}")
            assert error.message != "unknown key", str(error)

    def test_check_opens_no_socket(self, tmp_path: Path, options: dict[str, object]) -> None:
        provider = self.load_provider(tmp_path, options)
        with _no_connect() as connected:
            provider.check()
        assert connected == [], f"check() connected to {connected}"

    def test_discover_is_deterministic(self, tmp_path: Path,
                                       options: dict[str, object]) -> None:
        provider = self.load_provider(tmp_path, options)
        first = Discovery.of(provider.discover())
        assert Discovery.of(provider.discover()) == first, "a second discover() differs"
        # A freshly built source (the next run) agrees too.
        again = Discovery.of(self.load_provider(tmp_path, options).discover())
        assert again == first, "a freshly built source's discover() differs"

    def test_results_are_valid_and_canonical(self, tmp_path: Path,
                                             options: dict[str, object]) -> None:
        found = Discovery.of(self.load_provider(tmp_path, options).discover())
        assert found.services, "`options` must give a source that returns at least one Service"
        problems = [p for spec in found.services for p in _spec_problems(spec)]
        for kept in found.kept:
            problems += _named(f"kept {kept.name!r}", [
                service_name_problem(kept.name),
                kept.namespace is not None and namespace_problem(kept.namespace),
                not kept.reason.strip() and "no reason given",
                kept.reason.startswith("source '") and "the reason names the source (the "
                "core does)"])
        assert problems == [], "invalid or non-canonical results:\n" + "\n".join(problems)

    def test_failure_raises_a_source_error(self, tmp_path: Path,
                                           broken_options: dict[str, object]) -> None:
        self._failure(tmp_path, broken_options)

    def test_secrets_never_shown(self, tmp_path: Path, options: dict[str, object],
                                 broken_options: dict[str, object],
                                 caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        for option in self.secret_options:
            value = options.get(option)
            assert isinstance(value, str | int) and len(str(value)) >= 4, (
                f"`options` must set the secret option {option!r} to a value of 4 or more "
                "characters, else this check proves nothing")
            secret = str(value)
            provider = self.load_provider(tmp_path, options)
            assert getattr(provider.options, option, None), f"{option!r} is not set"
            shown = {"repr(provider)": repr(provider), "repr(options)": repr(provider.options),
                     "str(options)": str(provider.options),
                     "options as JSON": provider.options.model_dump_json()}
            provider.check()
            provider.discover()
            failure = self._raised(tmp_path, {**broken_options, option: value})
            shown["the error of broken_options"] = str(failure)
            for bad, wrong in self.bad_values.items():
                if bad != option:
                    error = self.refusal(tmp_path, {**options, bad: wrong})
                    shown[f"the error of {bad}={wrong!r}"] = str(error)
            for i, record in enumerate(caplog.records):
                shown[f"log record {i} ({record.name}, {record.pathname}:{record.lineno})"] = (
                    _record_text(record))
            # Name where it leaked, never the text: that would show the secret again.
            leaks = [where for where, text in shown.items() if secret in text]
            assert leaks == [], f"the value of {option!r} is shown in: {', '.join(leaks)}"

    def test_missing_optional_dependency_names_the_extra(
            self, tmp_path: Path, options: dict[str, object],
            monkeypatch: pytest.MonkeyPatch) -> None:
        optional = self.provider_class.optional_imports
        for module, extra in optional.items():
            with monkeypatch.context() as m:
                m.setitem(sys.modules, module, None)  # find_spec() now says "not installed"
                error = self.refusal(tmp_path, options)
            assert error.field == f"{WHERE}.provider", str(error)
            assert "pip install" in error.message and f"[{extra}]" in error.message, str(error)
        if not optional:
            for module in HEAVY_MODULES:
                monkeypatch.setitem(sys.modules, module, None)
            try:
                self.load_provider(tmp_path, options).check()
            except ImportError as e:
                raise AssertionError(
                    f"with {', '.join(HEAVY_MODULES)} not installed, check() failed ({e}): "
                    "declare the module in `optional_imports`") from e

    def test_watch_emits_what_discover_returns(self, tmp_path: Path,
                                               options: dict[str, object]) -> None:
        provider = self.load_provider(tmp_path, options)
        if not watches(provider):
            with pytest.raises(NotImplementedError):  # the core never calls it: interval only
                provider.watch(lambda state: None, threading.Event())
            return
        emitted: list[Discovery] = []
        failed: list[BaseException] = []
        first = threading.Event()
        stop = threading.Event()

        def emit(state: Discovery | Sequence[ServiceSpec]) -> None:
            emitted.append(Discovery.of(state))
            first.set()

        def watch() -> None:
            try:
                provider.watch(emit, stop)
            except BaseException as e:
                failed.append(e)
                first.set()

        thread = threading.Thread(target=watch, daemon=True, name="contract-watch")
        thread.start()
        try:
            assert first.wait(self.watch_first_emit_seconds), (
                f"watch() emitted nothing within {self.watch_first_emit_seconds} s")
        finally:
            stop.set()
            thread.join(1.0)  # a blocking request may finish its wait: not waited for
        assert not failed, f"watch() raised {failed[0]!r}"
        assert emitted[0] == Discovery.of(provider.discover()), (
            "the first state watch() emitted differs from what discover() returns")

    # --- helpers ---

    def _raised(self, folder: Path, options: Mapping[str, object]) -> Exception:
        """What discover() raised (it must raise)."""
        provider = self.load_provider(folder, options)
        try:
            provider.discover()
        except Exception as e:
            return e
        raise AssertionError("discover() with `broken_options` raised nothing")

    def _failure(self, folder: Path, options: Mapping[str, object]) -> Exception:
        """What discover() raised, checked to be a `failure_error` fit to show."""
        e = self._raised(folder, options)
        assert isinstance(e, self.failure_error), (
            f"discover() raised {type(e).__name__}, not a {self.failure_error.__name__}: {e}")
        assert str(e).strip(), "the error has no message"
        assert not str(e).startswith("source '"), (
            f"the message names the source (the core does): {e}")
        return e


def _plain(value: Any) -> Any:
    """Fixture values as YAML can write them (paths as text, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _named(what: str, problems: list[str | bool | None]) -> list[str]:
    return [f"{what}: {p}" for p in problems if isinstance(p, str) and p]


def _address_problem(address: str) -> str | None:
    problem = address_problem(address)
    if problem:
        return problem
    if looks_like_ip(address):
        canonical = canonical_ip(address)
        return None if canonical == address else f"address {address!r} is not canonical: " \
            f"write {canonical!r}"
    if address != address.lower() or address.endswith("."):
        return f"DNS name {address!r} is not canonical: lowercase, without the trailing dot"
    return None


def _spec_problems(spec: ServiceSpec) -> list[str]:
    where = f"Service {spec.name!r}"
    port_names = {p.name for p in spec.ports}
    problems: list[str | bool | None] = [
        service_name_problem(spec.name),
        spec.namespace is not None and namespace_problem(spec.namespace),
        spec.type not in SERVICE_TYPES and f"type {spec.type!r}",
        service_ports_problem((p.name, p.port, p.protocol) for p in spec.ports),
        spec.type == "ClusterIP" and not spec.ports and "a ClusterIP Service without ports",
        labels_problem(spec.labels),
        annotations_problem(spec.annotations),
        spec.source != "" and "`source` is the core's to fill in",
    ]
    for port in spec.ports:
        problems += [
            port.protocol not in PROTOCOLS and f"port {port.name!r}: protocol {port.protocol!r}",
            not isinstance(port.port, int) and f"port {port.name!r}: {port.port!r} not an int",
            port.app_protocol is not None and app_protocol_problem(port.app_protocol)]
    for backend in spec.backends:
        at = f"backend {backend.address!r}"
        problems += [f"{at}: {p}" for p in [
            _address_problem(backend.address),
            backend.zone is not None and zone_problem(backend.zone),
            backend.hostname is not None and hostname_problem(backend.hostname),
            not set(backend.ports) <= port_names and
            f"ports {sorted(backend.ports)} are not all Service port names {sorted(port_names)}",
            *[not (isinstance(n, int) and 1 <= n <= 65535) and f"port {k!r}: {n!r}"
              for k, n in backend.ports.items()],
        ] if isinstance(p, str) and p]
    return _named(where, problems)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a handler could show of a record: the message and the exception's."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += f"\n{record.exc_info[1]!r}"
    return text
