"""Kubernetes naming rules and address parsing shared by the core and the providers."""

from __future__ import annotations

import ipaddress
import re

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.?$"
)


def is_service_name(name: str) -> bool:
    """A Service name is a DNS-1035 label: lowercase, starts with a letter, at most 63."""
    return len(name) <= 63 and bool(_DNS1035_LABEL.match(name))


def is_dns_label(name: str) -> bool:
    """A DNS-1123 label, as an endpoint hostname must be."""
    return len(name) <= 63 and bool(_DNS1123_LABEL.match(name))


def is_port_name(name: str) -> bool:
    """IANA service name rules as Kubernetes applies them to port names."""
    return (len(name) <= 15 and bool(_PORT_NAME.match(name)) and "--" not in name
            and any(c.isalpha() for c in name))


def canonical_ip(text: str) -> str | None:
    """The canonical form of an IP address, or None if `text` is not one."""
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        return None


def looks_like_ip(text: str) -> bool:
    """Digits and dots only, or a colon: meant as an IP address, never a DNS name."""
    return ":" in text or all(part.isdigit() for part in text.split(".") if part)


def is_dns_name(text: str) -> bool:
    return not looks_like_ip(text) and bool(_DNS_NAME.match(text))
