"""Health probes: the one place endpoints-sync connects to a backend, and only for the
Services that have a `probe:` (syncer.probeoptions). syncer.readiness turns the results into
published readiness.

- tcp: the connection opens. http/https: `GET path` answers with a status in `status`; only
  the status line is read. Every probe is bounded by `timeout`: connect, TLS handshake,
  request and answer together.
- Which port: a port NAME is the backend's port for that Service port; a NUMBER is that port
  on the backend's address; by default, the backend's port for the Service's first port (its
  first port when it does not map that one). A Service without the named port, or whose
  chosen port is not TCP, is not probed (a warning; its backends are published as the source
  says).
- Each distinct (address, port, probe settings) is probed once per run, however many
  Services list it. At most `concurrency` probes of one source are in flight at once (a
  source whose Services set different values uses the smallest), and sources probe side by
  side: a source's probes take about timeout x ceil(backends / concurrency).

Connections go through one injectable connector, as DNS names go through syncer.resolve's
resolver: `use_connector(...)` swaps it for the duration of a `with` block (tests map
documentation addresses to loopback listeners with it; syncer.cli's main() runs in-process
in tests/cli.py and picks it up).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncer import __version__
from syncer.logs import service_fields
from syncer.model import ServiceSpec
from syncer.probeoptions import probe_port_problem
from syncer.readiness import Ident, ProbeResult, ServiceKey, service_key
from syncer.render import group_backends

if TYPE_CHECKING:
    import ssl

    from syncer.probeoptions import ProbeOptions

log = logging.getLogger("endpoints_sync")

Connector = Callable[[str, int, float], socket.socket]
"""Opens a TCP connection to (address, port) within `timeout` seconds, or raises OSError."""
STATUS_LINE_LIMIT = 8192  # bytes read at most while waiting for `HTTP/1.1 200 OK`


def system_connector(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


_active: list[Connector] = [system_connector]  # the innermost use_connector's last


@contextlib.contextmanager
def use_connector(connector: Connector) -> Iterator[None]:
    """Every probe inside the block connects through `connector` (process-wide, not
    per thread: the probes run in worker threads)."""
    _active.append(connector)
    try:
        yield
    finally:
        _active.remove(connector)


def current_connector() -> Connector:
    return _active[-1]


@dataclass(frozen=True)
class Target:
    """What one probe connects to, and how."""

    address: str
    port: int
    options: ProbeOptions


def probe_specs(specs: Sequence[ServiceSpec], connector: Connector | None = None,
                ) -> dict[tuple[ServiceKey, Ident], ProbeResult]:
    """Probe every source-ready backend of the Services that have a probe; the results by
    (Service, backend). Contacts nothing when no Service has a probe."""
    wanted: dict[tuple[ServiceKey, Ident], Target] = {}
    by_source: dict[str, dict[Target, None]] = defaultdict(dict)
    for spec in specs:
        if spec.probe is None or spec.type == "ExternalName":
            continue
        for ident, target in _targets(spec, spec.probe).items():
            wanted[(service_key(spec), ident)] = target
            by_source[spec.source][target] = None
    if not wanted:
        return {}
    claimed: set[Target] = set()  # one probe per target, even across sources
    jobs = {}
    for source, targets in by_source.items():
        jobs[source] = [t for t in targets if t not in claimed]
        claimed.update(jobs[source])
    results = run_probes(jobs, connector or current_connector())
    return {where: results[target] for where, target in wanted.items()}


def _targets(spec: ServiceSpec, probe: ProbeOptions) -> dict[Ident, Target]:
    port_of, problem = _port_rule(spec, probe)
    if problem:
        log.warning("Service %s/%s not probed: %s; its backends are published as the source "
                    "reports", *service_key(spec), problem,
                    extra={"source": spec.source, **service_fields(service_key(spec),
                                                                   "probe_skipped")})
        return {}
    found = {}
    for ports, backends in group_backends(spec).items():
        number = port_of(dict(ports))
        for address, b in backends.items():
            if b.ready and number is not None:
                found[(address, ports)] = Target(address, number, probe)
    return found


PortRule = Callable[[dict[str, int]], int | None]
"""A backend's probe port from its ports (Service port name -> number)."""


def _port_rule(spec: ServiceSpec, probe: ProbeOptions) -> tuple[PortRule, str | None]:
    """How to find each backend's probe port, or why this Service cannot be probed."""
    if isinstance(probe.port, int):
        number = probe.port
        return (lambda ports: number), None
    problem = probe_port_problem({p.name: p.protocol for p in spec.ports}, probe)
    if problem or not spec.ports:
        return (lambda ports: None), problem or "it has no ports"
    if probe.port is None:  # the default: the first port, as the backend maps it
        first = spec.ports[0].name
        return (lambda ports: ports.get(first, next(iter(ports.values()), None))), None
    name = probe.port
    return (lambda ports: ports.get(name)), None


def run_probes(jobs: Mapping[str, Collection[Target]],
               connector: Connector) -> dict[Target, ProbeResult]:
    """Every source's targets, each source with its own bound of probes in flight, all
    sources at once."""
    contexts = _tls_contexts(t.options for targets in jobs.values() for t in targets)
    futures: dict[Target, Future[ProbeResult]] = {}
    with contextlib.ExitStack() as stack:
        for targets in jobs.values():
            if not targets:
                continue
            workers = min(len(targets), *(t.options.concurrency for t in targets))
            pool = stack.enter_context(ThreadPoolExecutor(workers, "probe"))
            for t in targets:
                futures[t] = pool.submit(probe_one, t, connector, contexts.get(t.options))
    return {t: f.result() for t, f in futures.items()}


def _tls_contexts(options: Iterator[ProbeOptions]) -> dict[ProbeOptions, ssl.SSLContext | None]:
    """One TLS context per https setting (a CA file is read once a run). One that cannot be
    made (an unreadable CA file) fails that setting's probes with the reason."""
    contexts: dict[ProbeOptions, ssl.SSLContext | None] = {}
    for o in options:
        if o.type == "https" and o not in contexts:
            import ssl  # only when https is probed

            try:
                ctx = ssl.create_default_context(cafile=str(o.ca_file) if o.ca_file else None)
            except (OSError, ssl.SSLError) as e:
                log.error("probe CA file %s cannot be used: %s", o.ca_file, e)
                contexts[o] = None
                continue
            if not o.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            contexts[o] = ctx
    return contexts


def probe_one(target: Target, connector: Connector,
              tls: ssl.SSLContext | None = None) -> ProbeResult:
    """One probe; never raises for what the network does."""
    o = target.options
    deadline = time.monotonic() + o.timeout
    if o.type == "https" and tls is None:
        return ProbeResult(False, "TLS: the CA file cannot be used (see the log)")
    try:
        sock = connector(target.address, target.port, o.timeout)
    except OSError as e:
        return ProbeResult(False, _why(e, o.timeout))
    try:
        if o.type == "tcp":
            return ProbeResult(True, "connected")
        if tls is not None:
            sock = _handshake(tls, sock, _server_name(target), deadline)
        status = _status(sock, _request(target), deadline)
        low, high = o.status
        return ProbeResult(low <= status <= high, f"HTTP {status}")
    except OSError as e:
        return ProbeResult(False, _why(e, o.timeout))
    except ValueError as e:
        return ProbeResult(False, str(e))
    finally:
        sock.close()


def _why(e: OSError, timeout: float) -> str:
    ssl = sys.modules.get("ssl")  # not imported: no TLS error is possible
    if isinstance(e, TimeoutError):  # socket.timeout is TimeoutError
        return f"no answer within {timeout:g}s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if ssl is not None and isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: {e.verify_message or e.reason}"
    if ssl is not None and isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    return e.strerror or str(e) or type(e).__name__


def _authority(target: Target) -> str:
    """The Host header: `host` when set, else the address (IPv6 in brackets) and the port
    when it is not the scheme's default, as RFC 9110 asks."""
    if target.options.host:
        return target.options.host
    host = f"[{target.address}]" if ":" in target.address else target.address
    default = 443 if target.options.type == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _server_name(target: Target) -> str:
    """The TLS name (SNI, and the name the certificate must carry): server_name, else the
    Host header's host, else the address (an IP: no SNI, matched against the IP SANs)."""
    o = target.options
    if o.server_name:
        return o.server_name
    if o.host:
        return o.host.rsplit(":", 1)[0] if not o.host.startswith("[") else \
            o.host[1:].split("]", 1)[0]
    return target.address


def _request(target: Target) -> bytes:
    return (f"GET {target.options.path} HTTP/1.1\r\nHost: {_authority(target)}\r\n"
            f"User-Agent: endpoints-sync/{__version__} (health probe)\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _handshake(ctx: ssl.SSLContext, sock: socket.socket, name: str,
               deadline: float) -> socket.socket:
    """The TLS handshake within the deadline (a blocking handshake would give each of its
    reads the whole timeout)."""
    import ssl

    tls = ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
    try:  # `sock` is detached now: a failed handshake must close `tls`
        tls.setblocking(False)
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                ready = select.select([tls], [], [], _remaining(deadline))[0]
            except ssl.SSLWantWriteError:
                ready = select.select([], [tls], [], _remaining(deadline))[1]
            if not ready:
                raise TimeoutError
    except BaseException:
        tls.close()
        raise


def _status(sock: socket.socket, request: bytes, deadline: float) -> int:
    """Send the request; the status code of the answer's status line."""
    sock.settimeout(_remaining(deadline))
    sock.sendall(request)
    answer = b""
    while b"\r\n" not in answer:
        if len(answer) > STATUS_LINE_LIMIT:
            raise ValueError("not an HTTP answer (no status line)")
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(1024)
        if not chunk:
            if answer:
                break
            raise ValueError("connection closed without an answer")
        answer += chunk
    parts = answer.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise ValueError("not an HTTP answer (no status line)")
    return int(parts[1])
