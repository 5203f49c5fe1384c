"""Backends grouped into Services, with the one port rule every provider shares.

A provider that finds backends (instances, targets, registrations) and a Service name for
each hands them to `group_services`. The port rule: explicit Service ports (a `port` option)
win, and a backend that names no port of its own listens on them; otherwise the Service port
comes from the data (a port tag, label or registered port), and a Service whose backends
disagree, or none of which tells, is left as it is and named: guessing would move its
clients.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from syncer.discovery import Discovery, Kept
from syncer.model import Backend, Protocol, ServicePort, ServiceSpec
from syncer.names import service_name_problem


def group_services(
    members: Iterable[tuple[str, Backend]],
    *,
    ports: Sequence[ServicePort] | None = None,
    port_name: str = "",
    protocol: Protocol = "TCP",
    always: Iterable[str] = (),
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> Discovery:
    """One Service per name among `members` ((Service name, backend) pairs).

    - `ports`: the Service ports, when the configuration gives them. Otherwise each backend
      tells its port as `ports={port_name: n}` (or `{}` when it does not know), and the
      Service gets the one port its backends agree on, named `port_name`.
    - `always`: names that are a Service even when nothing matched (a fixed `service`
      option): published empty, which the core's `allow_empty` guard then judges.
    - A name that is not a valid Service name is dropped with a warning on `log` (data from
      a catalog, not a configuration error); its backends go with it.
    """
    groups: dict[str, list[Backend]] = defaultdict(list)
    for name in always:
        groups.setdefault(name, [])
    for name, backend in members:
        groups[name].append(backend)
    services: list[ServiceSpec] = []
    kept: list[Kept] = []
    for name, backends in sorted(groups.items()):
        problem = service_name_problem(name)
        if problem:
            if log is not None:
                log.warning("%d backends dropped: their Service name is not valid: %s",
                            len(backends), problem)
            continue
        service_ports, reason = _service_ports(backends, ports, port_name, protocol)
        if reason is not None:
            kept.append(Kept(name, reason))
            continue
        ordered = sorted(backends, key=lambda b: (b.address, sorted(b.ports.items())))
        services.append(ServiceSpec(name=name, ports=service_ports, backends=tuple(ordered)))
    return Discovery(tuple(services), tuple(kept))


def _service_ports(backends: Sequence[Backend], ports: Sequence[ServicePort] | None,
                   port_name: str, protocol: Protocol,
                   ) -> tuple[tuple[ServicePort, ...], str | None]:
    if ports is not None:
        return tuple(ports), None
    told = sorted({n for b in backends for n in b.ports.values()})
    if len(told) == 1:
        return (ServicePort(name=port_name, port=told[0], protocol=protocol),), None
    if told:
        return (), (f"its backends listen on ports {', '.join(map(str, told))}; set `port` "
                    "to choose the Service port (each backend keeps its own)")
    if backends:
        return (), "no backend tells its port; set `port`"
    return (), "nothing matched, so its port is unknown; set `port` to publish it empty"
