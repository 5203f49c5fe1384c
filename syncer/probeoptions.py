"""The `probe:` block of a source (and of a static inventory's Service): how to check that a
backend answers before it is published as ready. The keys and values are a contract
(issue 11); syncer.probe runs them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from syncer.names import canonical_ip, external_name_problem, port_name_problem
from syncer.options import ConfigPath

TrafficDistribution = Literal["PreferClose"]
"""`spec.trafficDistribution` values this tool writes (Kubernetes 1.31+)."""

_HTTP_ONLY = ("path", "status", "host")
_HTTPS_ONLY = ("verify", "ca_file", "server_name")
# host[:port] for the Host header: a DNS name or IPv4 address, or an IPv6 one in brackets.
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))"
                        r"(?::(?P<port>[0-9]{1,5}))?")


class ProbeOptions(BaseModel):
    """A probe of every backend of the Service: a failing backend stays listed, not ready."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["tcp", "http", "https"] = "tcp"
    """tcp: connect; http/https: GET `path` and expect a status in `status`."""
    port: StrictInt | str | None = None
    """The backend's port to probe, by Service port name or number (default: its first)."""
    path: str = "/"
    """http/https: the path to GET."""
    status: tuple[StrictInt, StrictInt] = (200, 399)
    """http/https: the accepted status range, inclusive."""
    host: str | None = None
    """http/https: the Host header (default: the backend address, IPv6 in brackets, with
    `:port` unless it is the scheme's default)."""
    verify: bool = Field(default=True, strict=True)
    """https: verify the certificate (against ca_file, else the system's CAs)."""
    ca_file: ConfigPath | None = None
    """https: the CA bundle that signs the backends' certificates."""
    server_name: str | None = None
    """https: the TLS server name (SNI) and the name the certificate must carry."""
    timeout: float = Field(default=1.0, gt=0, le=60, strict=True)
    """Seconds per probe: connect and answer."""
    failure_threshold: int = Field(default=1, ge=1, le=100, strict=True)
    """Consecutive failed runs before a ready backend is published not ready."""
    success_threshold: int = Field(default=1, ge=1, le=100, strict=True)
    """Consecutive passed runs before a not-ready backend is published ready again."""
    min_ready_ratio: float = Field(default=0.0, ge=0.0, le=1.0, strict=True)
    """Fail-open guard: when fewer than this share of a Service's backends pass, publish them
    all as ready and warn (0: off)."""
    concurrency: int = Field(default=64, ge=1, le=1024, strict=True)
    """Probes in flight at once for this source."""

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not 1 <= v <= 65535:
            raise ValueError("expected a port number 1-65535 or a port name")
        if isinstance(v, str) and (problem := port_name_problem(v)):
            raise ValueError(problem)
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() or not c.isprintable() or not c.isascii()
                                        for c in v):
            raise ValueError("expected an absolute path such as /healthz, in ASCII without "
                             "spaces (percent-encode anything else)")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        m = _AUTHORITY.fullmatch(v) if v is not None else None
        if v is not None and (m is None or (m["v6"] and canonical_ip(m["v6"]) is None)
                              or (m["port"] and not 1 <= int(m["port"]) <= 65535)):
            raise ValueError("expected a Host header value: a DNS name or IP address, "
                             "optionally with :port (an IPv6 address in brackets)")
        return v

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str | None) -> str | None:
        if v is not None and (problem := external_name_problem(v)):
            raise ValueError(f"expected the DNS name the certificate carries: {problem}")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"CA file {v} not found")
        return v

    @field_validator("status")
    @classmethod
    def _status(cls, v: tuple[int, int]) -> tuple[int, int]:
        low, high = v
        if not (100 <= low <= high <= 599):
            raise ValueError("expected [lowest, highest] HTTP status codes, 100-599, "
                             "lowest first")
        return v

    @model_validator(mode="after")
    def _keys_fit_type(self) -> Any:
        given = self.model_fields_set
        if self.type == "tcp":
            wrong = [k for k in _HTTP_ONLY + _HTTPS_ONLY if k in given]
            if wrong:
                raise ValueError(f"{wrong[0]!r} needs type http or https, not tcp")
        elif self.type == "http":
            wrong = [k for k in _HTTPS_ONLY if k in given]
            if wrong:
                raise ValueError(f"{wrong[0]!r} needs type https")
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file has no use with verify: false")
        return self


def probe_port_problem(protocols: Mapping[str, str], probe: ProbeOptions) -> str | None:
    """Why `probe` cannot probe a Service whose ports are `protocols` (port name ->
    protocol, in order), if it cannot: a port name must be one of its TCP ports (a number is
    probed as it is; no name means the first port)."""
    if isinstance(probe.port, int) or not protocols:
        return None
    port = probe.port if probe.port is not None else next(iter(protocols))
    if port not in protocols:
        return f"no Service port named {port!r}; the Service's ports are {sorted(protocols)}"
    if protocols[port] != "TCP":
        return f"port {port!r} is {protocols[port]}; probes connect over TCP"
    return None
