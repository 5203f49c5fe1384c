"""Turns DNS names in backend addresses into IPs, through one injectable resolver."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from syncer.errors import TransientSourceError
from syncer.names import canonical_ip


class Resolver(Protocol):
    def resolve(self, name: str) -> list[str]:
        """Every IPv4 and IPv6 address of `name`; raise OSError when it cannot be resolved."""


class SystemResolver:
    """The operating system's resolver (getaddrinfo), with a fixed-answer `hosts` map first."""

    def __init__(self, hosts: Mapping[str, Iterable[str]] | None = None) -> None:
        self.hosts = {k.rstrip(".").lower(): [str(ip) for ip in v]
                      for k, v in (hosts or {}).items()}

    def resolve(self, name: str) -> list[str]:
        fixed = self.hosts.get(name.rstrip(".").lower())
        if fixed is not None:
            return list(fixed)
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]


def resolve_names(names: Iterable[str], resolver: Resolver, source: str,
                  workers: int = 8) -> dict[str, list[str]]:
    """Resolve every name, concurrently; one failure fails the whole source."""
    unique = sorted(set(names))
    if not unique:
        return {}

    def one(name: str) -> tuple[str, list[str]]:
        try:
            found = resolver.resolve(name)
        except OSError as e:
            raise TransientSourceError(f"source {source!r}: cannot resolve {name!r}: "
                                       f"{e.strerror or e}") from None
        ips = sorted({ip for ip in (canonical_ip(a) for a in found) if ip is not None})
        if not ips:
            raise TransientSourceError(f"source {source!r}: {name!r} has no IP address")
        return name, ips

    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        return dict(pool.map(one, unique))
