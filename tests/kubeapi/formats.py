"""String and IP format checks, with kube-apiserver's own messages (apimachinery's
util/validation and core validation's ValidateNonSpecialIP)."""

from __future__ import annotations

import ipaddress
import re

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_label(value: str) -> list[str]:
    errs = [_too_long(63)] if len(value) > 63 else []
    return errs + ([] if _DNS1123_LABEL.fullmatch(value) else [DNS1123_LABEL_MSG])


def dns1035_label(value: str) -> list[str]:
    errs = [_too_long(63)] if len(value) > 63 else []
    return errs + ([] if _DNS1035_LABEL.fullmatch(value) else [DNS1035_LABEL_MSG])


def dns1123_subdomain(value: str) -> list[str]:
    errs = [_too_long(253)] if len(value) > 253 else []
    return errs + ([] if _DNS1123_SUBDOMAIN.fullmatch(value) else [DNS1123_SUBDOMAIN_MSG])


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: `[prefix/]name`."""
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + _QUALIFIED_NAME_MSG + " with an optional DNS subdomain "
                "prefix and '/' (e.g. 'example.com/MyName')"]
    errs: list[str] = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in dns1123_subdomain(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _too_long(63))
    if name and not _QUALIFIED_NAME.fullmatch(name):
        errs.append("name part " + _QUALIFIED_NAME_MSG)
    return errs


def label_value(value: str) -> list[str]:
    errs = [_too_long(63)] if len(value) > 63 else []
    return errs + ([] if _LABEL_VALUE.fullmatch(value) else [_LABEL_VALUE_MSG])


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME, as for targetPort names."""
    errs = []
    if len(value) > 15:
        errs.append(_too_long(15))
    if not _IANA_SVC_NAME.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not any(c.isalpha() for c in value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def fqdn(value: str) -> list[str]:
    name = value.removesuffix(".")
    errs = dns1123_subdomain(name)
    if errs:
        return [",".join(errs)]
    if len(name.split(".")) < 2:
        return ["should be a domain with at least two segments separated by dots"]
    return [m for label in name.split(".") for m in dns1123_label(label)]


_IP_MSG = {
    None: "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    4: "must be a valid IPv4 address",
    6: "must be a valid IPv6 address",
}
_LINK_LOCAL_MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/24")


def ip_address(value: str, family: int | None = None) -> list[str]:
    """A valid, canonical IP of `family` (4, 6 or None for either) that is not special."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return [_IP_MSG[family]]
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if family is not None and (ip.version != family or mapped is not None):
        return [_IP_MSG[family]]
    # Newer servers reject non-canonical forms (upper case, zero runs, IPv4-mapped).
    canonical = str(mapped) if mapped is not None else str(ip)
    if value != canonical:
        return [f'must be in canonical form ("{canonical}")']
    return non_special_ip(ip)


def non_special_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    errs = []
    if ip.is_unspecified:
        errs.append(f"may not be unspecified ({ip})")
    if ip.is_loopback:
        errs.append("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    if ip.is_link_local:
        errs.append("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    # Go's IsLinkLocalMulticast: 224.0.0.0/24, or IPv6 multicast with link-local scope.
    if (ip.version == 4 and ip in _LINK_LOCAL_MULTICAST_V4) or (
        ip.version == 6 and ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02
    ):
        errs.append("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
    return errs
