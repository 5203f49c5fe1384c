"""ClusterIP allocation and the clusterIP rules of Service create and update."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.kubeapi.errors import ApiError, FieldError, invalid

# 198.18.0.0/15 is reserved for benchmarking (RFC 2544): never a real cluster's range.
SERVICE_CIDR = ipaddress.IPv4Network("198.19.0.0/16")


class ClusterIpAllocator:
    """Hands out service IPs in order; the caller holds the store lock."""

    def __init__(self, cidr: ipaddress.IPv4Network = SERVICE_CIDR) -> None:
        self._cidr = cidr
        self._used: set[str] = set()
        self._next = 1

    def allocate(self, requested: str = "", *, dry_run: bool = False) -> str:
        ip = requested or self._next_free()
        if requested:
            self._check_requested(requested)
        if not dry_run:
            self._used.add(ip)
        return ip

    def reserve(self, ip: str) -> None:
        """Mark an IP used without checks (seeded objects)."""
        self._used.add(ip)

    def release(self, ip: str) -> None:
        self._used.discard(ip)

    def _next_free(self) -> str:
        size = self._cidr.num_addresses - 2
        for step in range(size):
            offset = (self._next - 1 + step) % size + 1
            ip = str(self._cidr.network_address + offset)
            if ip not in self._used:
                self._next = offset % size + 1
                return ip
        raise ApiError(500, f"Internal error occurred: range is full: {self._cidr}",
                       "InternalError")

    def _check_requested(self, ip: str) -> None:
        why = ""
        if ipaddress.ip_address(ip) not in self._cidr:
            why = (f"the provided IP ({ip}) is not in the valid range. "
                   f"The range of valid IPs is {self._cidr}")
        elif ip in self._used:
            why = "provided IP is already allocated"
        if why:
            raise AllocationError(
                invalid("spec.clusterIPs", [ip], f"failed to allocate IP {ip}: {why}")
            )


class AllocationError(Exception):
    """A requested clusterIP that cannot be had; the store answers it as a 422."""

    def __init__(self, error: FieldError) -> None:
        super().__init__(str(error))
        self.error = error


def has_ip(spec: dict[str, Any]) -> bool:
    ip = spec.get("clusterIP")
    return bool(ip) and ip != "None" and spec.get("type") != "ExternalName"


def carry_over(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """Keep old allocations an update leaves out; report attempts to change them."""
    spec, old_spec = new.get("spec"), old.get("spec", {})
    if not isinstance(spec, dict):
        return []
    if spec.get("type", "ClusterIP") == "ExternalName":
        _drop_stale_allocations(spec, old_spec)
        return []
    old_ip = old_spec.get("clusterIP", "")
    if old_spec.get("type") == "ExternalName" or not old_ip:
        return []
    if not spec.get("clusterIP"):
        spec["clusterIP"] = old_ip
        spec.setdefault("clusterIPs", old_spec.get("clusterIPs", [old_ip]))
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if key in old_spec:
                spec.setdefault(key, old_spec[key])
        return []
    if spec["clusterIP"] != old_ip:
        return [invalid("spec.clusterIP", spec["clusterIP"], "field is immutable")]
    return []


def _drop_stale_allocations(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """On a change to ExternalName the server drops what only applied to the old type,
    when the client merely sent the old values back."""
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy",
                "internalTrafficPolicy"):
        if key in spec and spec[key] == old_spec.get(key):
            del spec[key]
