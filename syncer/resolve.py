"""Turns DNS names in backend addresses into IPs, through one injectable resolver."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from syncer.errors import TransientSourceError
from syncer.names import canonical_ip

log = logging.getLogger("endpoints_sync")
# getaddrinfo's answers for a name that does not exist (as opposed to a DNS failure).
_NO_SUCH_NAME = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})


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
    """Resolve every name, concurrently.

    A name the DNS says does not exist (NXDOMAIN, no address) is one bad item: it maps to no
    address and is dropped with a warning, while the source's other names still count. But
    when no name at all resolves, or the DNS fails in any other way (timeout, SERVFAIL), the
    DNS itself is in doubt and the whole source fails, so its Services are left as they are.
    """
    unique = sorted(set(names))
    if not unique:
        return {}

    def one(name: str) -> tuple[str, list[str] | str]:
        try:
            found = resolver.resolve(name)
        except OSError as e:
            why = f"cannot resolve {name!r}: {e.strerror or e}"
            if e.errno in _NO_SUCH_NAME:
                return name, why
            raise TransientSourceError(why) from None
        ips = sorted({ip for ip in (canonical_ip(a) for a in found) if ip is not None})
        return name, ips or f"{name!r} has no IP address"

    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        answers = dict(pool.map(one, unique))
    unresolved = {n: why for n, why in answers.items() if isinstance(why, str)}
    if len(unresolved) == len(answers):
        raise TransientSourceError(next(iter(unresolved.values())))
    for why in unresolved.values():
        log.warning("%s; its backends are dropped this run", why,
                    extra={"source": source})
    return {n: ips for n, ips in answers.items() if not isinstance(ips, str)}
