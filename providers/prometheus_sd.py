"""The Prometheus service-discovery format, shared by the `http_sd` and `file_sd` providers.

A document is a list of target groups, `[{"targets": ["host:port", ...], "labels": {...}}]`,
exactly what Prometheus's http_sd_config and file_sd_config read. This module checks a
document's shape (a broken shape fails the source: the cluster is left as it is, as
Prometheus keeps its last good targets), turns targets into backends (a malformed target is
dropped with a warning) and maps groups to Services by a label or a fixed `service`, with
the one port rule of `group_services`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syncer.plugin import (
    Backend,
    Discovery,
    PortNumber,
    ProviderOptions,
    ServiceName,
    ServicePort,
    address_problem,
    canonical_ip,
    group_services,
    port_name_problem,
    zone_problem,
)

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class DocumentError(ValueError):
    """A document that is not a list of target groups; `where` is the path inside it."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True, slots=True)
class TargetGroup:
    targets: tuple[str, ...]
    labels: Mapping[str, str]
    origin: str = ""
    """Where the group is, for messages: `targets.json[2]`."""


# --- the document ------------------------------------------------------------------------


def parse_groups(data: Any, *, strict_keys: bool, extra_labels: Mapping[str, str] | None = None,
                 origin: str = "") -> list[TargetGroup]:
    """The target groups of a document; DocumentError if it is not a list of them.

    `strict_keys`: refuse keys other than targets/labels (Prometheus reads files strictly
    and ignores unknown keys in HTTP answers). `extra_labels` are added to every group, the
    way Prometheus adds `__meta_url` or `__meta_filepath`.
    """
    if not isinstance(data, list):
        raise DocumentError("", f"expected a list of target groups, got {_kind(data)}")
    groups = []
    for i, item in enumerate(data):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise DocumentError(where, f"expected a target group (a mapping), got {_kind(item)}")
        unknown = sorted(str(k) for k in item if k not in ("targets", "labels"))
        if strict_keys and unknown:
            raise DocumentError(f"{where}.{unknown[0]}", "unknown key (expected targets, labels)")
        targets = item.get("targets", [])
        if targets is None:
            targets = []
        if not isinstance(targets, list):
            raise DocumentError(f"{where}.targets", f"expected a list, got {_kind(targets)}")
        for j, target in enumerate(targets):
            if not isinstance(target, str):
                raise DocumentError(f"{where}.targets[{j}]",
                                    f"expected a string \"host:port\", got {_kind(target)}")
        labels = item.get("labels", {})
        if labels is None:
            labels = {}
        if not isinstance(labels, dict):
            raise DocumentError(f"{where}.labels", f"expected a mapping, got {_kind(labels)}")
        for key, value in labels.items():
            if not isinstance(key, str) or not key:
                raise DocumentError(f"{where}.labels", "label names must be non-empty strings")
            if not isinstance(value, str):
                raise DocumentError(f"{where}.labels.{key}",
                                    f"label values must be strings, got {_kind(value)}")
        groups.append(TargetGroup(tuple(targets), {**labels, **(extra_labels or {})},
                                  f"{origin}{where}"))
    return groups


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def parse_target(text: str) -> tuple[str, int | None]:
    """`host:port`, `host`, `[v6]:port`, `[v6]` or a bare IPv6 address as (address, port);
    the address canonical (an IP compressed, a DNS name lowercase). ValueError otherwise."""
    host, port = _split(text.strip())
    problem = address_problem(host)
    if problem:
        raise ValueError(problem)
    ip = canonical_ip(host)
    return (ip if ip is not None else host.lower().rstrip(".")), port


def _split(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or ":" not in host:
            raise ValueError(f"expected [IPv6 address]:port, got {text!r}")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"expected [IPv6 address]:port, got {text!r}")
        return host, _port(rest[1:], text)
    if text.count(":") > 1:  # a bare IPv6 address: no port
        return text, None
    host, colon, port = text.partition(":")
    if not host:
        raise ValueError(f"expected host:port, got {text!r}")
    return host, (_port(port, text) if colon else None)


def _port(text: str, target: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"the port of {target!r} is not a number from 1 to 65535")
    return int(text)


# --- options and mapping ---------------------------------------------------------------


class TargetMappingOptions(ProviderOptions):
    """How target groups become Services: the options `http_sd` and `file_sd` share."""

    service: ServiceName | None = None
    """Every matching target backs this one Service (give `service` or `service_label`)."""
    service_label: str | None = Field(default=None, min_length=1)
    """A group's Service is the value of this label, e.g. `job` (see `rename`)."""
    rename: dict[str, ServiceName] = Field(default_factory=dict)
    """Label value -> Service name, for values that are not valid Service names
    (`node_exporter: node-exporter`)."""
    match_labels: dict[str, str] = Field(default_factory=dict)
    """Only groups carrying all of these labels with these values are used."""
    zone_label: str | None = Field(default=None, min_length=1)
    """Label (or `__meta_*` label) whose value is the endpoint's zone."""
    port: PortNumber | None = None
    """Service port; default: the targets' port when they all agree. A target's own port
    stays its backend port."""
    port_name: str = ""
    """Name of the Service port ('' = unnamed)."""
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    """Port protocol."""

    @model_validator(mode="after")
    def _one_way_to_name(self) -> TargetMappingOptions:
        if (self.service is None) == (self.service_label is None):
            raise ValueError("give `service` (one Service) or `service_label` (a Service per "
                             "label value), exactly one of them")
        if self.rename and self.service_label is None:
            raise ValueError("`rename` applies to `service_label` only")
        return self

    @field_validator("port_name")
    @classmethod
    def _port_name(cls, v: str) -> str:
        problem = port_name_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v


def to_discovery(groups: Sequence[TargetGroup], options: TargetMappingOptions,
                 log: Log) -> Discovery:
    """The Services the groups back. A group without the service label or a malformed
    target is dropped with a warning; a Service whose targets disagree on the port is kept."""
    members: dict[str, dict[tuple[str, int | None], Backend]] = {}
    for group in groups:
        if any(group.labels.get(k) != v for k, v in options.match_labels.items()):
            continue
        name = _service_of(group, options, log)
        if name is None:
            continue
        backends = members.setdefault(name, {})
        for target in group.targets:
            try:
                address, port = parse_target(target)
            except ValueError as e:
                log.warning("target group %s: target dropped: %s", group.origin, e)
                continue
            # The same target listed twice (two groups, one job) is one backend: first wins.
            backends.setdefault((address, port), Backend(
                address=address, ports={options.port_name: port} if port is not None else {},
                zone=_zone(group, options, log)))
    ports = None if options.port is None else [
        ServicePort(name=options.port_name, port=options.port, protocol=options.protocol)]
    pairs = [(name, b) for name, found in members.items() for b in found.values()]
    return group_services(pairs, ports=ports, port_name=options.port_name,
                          protocol=options.protocol,
                          always=() if options.service is None else (options.service,), log=log)


def _service_of(group: TargetGroup, options: TargetMappingOptions, log: Log) -> str | None:
    if options.service is not None:
        return options.service
    assert options.service_label is not None
    value = group.labels.get(options.service_label)
    if value is None:
        if group.targets:
            log.warning("target group %s dropped: it has no label %r", group.origin,
                        options.service_label)
        return None
    return options.rename.get(value, value)


def _zone(group: TargetGroup, options: TargetMappingOptions, log: Log) -> str | None:
    if options.zone_label is None:
        return None
    zone = group.labels.get(options.zone_label)
    if not zone:
        return None
    problem = zone_problem(zone)
    if problem:
        log.warning("target group %s: zone left unset: %s", group.origin, problem)
        return None
    return zone
