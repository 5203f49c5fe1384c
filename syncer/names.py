"""Kubernetes naming rules and address parsing shared by the core and the providers.

One rule, one place, one message: each `*_problem` function returns None when the value is
one the API server accepts, else the message (the value shown, shortened). The static
inventory raises them as config errors, the core drops provider data with them, and
`syncer.apirules` checks the rendered objects with them. The rules follow apimachinery's
util/validation (IsQualifiedName, IsValidLabelValue, IsDNS1123Label/Subdomain,
IsDNS1035Label, IsValidPortName) and core/discovery validation.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ANNOTATIONS_BYTES = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB

_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.?$"
)
_LINK_LOCAL_MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/24")


def shown(value: str) -> str:
    """A value for a message: quoted and cut, so no message embeds a huge input."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def service_name_problem(name: str) -> str | None:
    if len(name) <= 63 and _DNS1035_LABEL.fullmatch(name):
        return None
    return ("expected a Service name (a DNS-1035 label: lowercase letters, digits and '-', "
            f"starting with a letter, at most 63), got {shown(name)}")


def namespace_problem(name: str) -> str | None:
    if len(name) <= 63 and _DNS1123_LABEL.fullmatch(name):
        return None
    return ("expected a namespace name (a DNS-1123 label: lowercase letters, digits and '-', "
            f"at most 63), got {shown(name)}")


def hostname_problem(name: str) -> str | None:
    """An endpoint hostname is a DNS-1123 label."""
    if len(name) <= 63 and _DNS1123_LABEL.fullmatch(name):
        return None
    return ("expected a hostname (a DNS-1123 label: lowercase letters, digits and '-', at most "
            f"63), got {shown(name)}")


def subdomain_problem(name: str) -> str | None:
    """A DNS-1123 subdomain: lowercase labels joined by dots, at most 253."""
    if len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name):
        return None
    return ("expected a lowercase DNS name (a DNS-1123 subdomain: lowercase letters, digits, "
            f"'-' and '.', at most 253), got {shown(name)}")


def external_name_problem(name: str) -> str | None:
    """The API strips one trailing dot (a fully qualified name), then wants a subdomain."""
    return subdomain_problem(name.removesuffix("."))


def port_name_problem(name: str) -> str | None:
    """IANA service name rules (stricter than the API's DNS label for Service ports; it is
    what a named targetPort must be)."""
    if (len(name) <= 15 and _DNS1123_LABEL.fullmatch(name) and "--" not in name
            and any(c.isalpha() for c in name)):
        return None
    return ("expected a port name (lowercase letters, digits and single '-', at least one "
            f"letter, at most 15), got {shown(name)}")


def qualified_name_problem(key: str, what: str = "key") -> str | None:
    """A label or annotation key, or an appProtocol: `[DNS-1123 subdomain prefix/]name`,
    the name at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends."""
    prefix, slash, name = key.rpartition("/")
    ok = ("/" not in prefix and len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None
          and (not slash or subdomain_problem(prefix) is None))
    if ok:
        return None
    return (f"expected a {what} (an optional DNS-1123 subdomain prefix and '/', then at most "
            "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit), "
            f"got {shown(key)}")


def label_value_problem(value: str, what: str = "label value") -> str | None:
    if len(value) <= 63 and _LABEL_VALUE.fullmatch(value):
        return None
    return (f"expected a {what} (empty, or at most 63 letters, digits, '-', '_' or '.', "
            f"starting and ending with a letter or digit), got {shown(value)}")


def zone_problem(zone: str) -> str | None:
    """The API does not check a zone, but consumers match it against the nodes' label
    topology.kubernetes.io/zone: anything but a label value can never match."""
    return label_value_problem(zone, "zone (a label value)")


def app_protocol_problem(value: str) -> str | None:
    return qualified_name_problem(value, "appProtocol (e.g. 'http', 'kubernetes.io/h2c')")


def labels_problem(labels: Mapping[str, str]) -> str | None:
    for key, value in labels.items():
        problem = qualified_name_problem(key, "label key") or label_value_problem(value)
        if problem:
            return problem
    return None


def annotations_problem(annotations: Mapping[str, str]) -> str | None:
    """Keys are qualified names (the API lowercases them first); keys and values together
    at most 256 KiB."""
    for key in annotations:
        problem = qualified_name_problem(key.lower(), "annotation key")
        if problem:
            return problem
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        return (f"annotations total {size} bytes, more than the API's limit of "
                f"{MAX_ANNOTATIONS_BYTES} (256 KiB)")
    return None


def port_names_problem(names: Sequence[str]) -> str | None:
    """Port names: each valid, and required and unique when there are several."""
    seen: set[str] = set()
    for name in names:
        if not name:
            if len(names) > 1:
                return "several ports need a unique 'name' on each"
            continue
        problem = port_name_problem(name)
        if problem:
            return problem
        if name in seen:
            return f"port name {shown(name)} is used twice"
        seen.add(name)
    return None


def service_ports_problem(ports: Iterable[tuple[str, int, str]]) -> str | None:
    """(name, port, protocol) of a Service's ports: names as `port_names_problem`, numbers
    1-65535, and no number+protocol twice (the API's "Duplicate value")."""
    listed = list(ports)
    problem = port_names_problem([name for name, _, _ in listed])
    if problem:
        return problem
    numbers: set[tuple[int, str]] = set()
    for _, port, protocol in listed:
        if not 1 <= port <= 65535:
            return f"port {port} is not a port number (1-65535)"
        if (port, protocol) in numbers:
            return f"port {port}/{protocol} is listed twice (the API refuses duplicate ports)"
        numbers.add((port, protocol))
    return None


def parse_ip(text: str) -> IPAddress:
    """The one strict IP parser (Kubernetes' StrictIPCIDRValidation, KEP-4858).

    Refused, with the reason: IPv4 with leading zeros (octal to some parsers, decimal to
    others), IPv4-mapped IPv6 (`::ffff:a.b.c.d`: the same host as an IPv4 address, and a
    way around IPv4 checks) and zone-suffixed IPv6 (`fe80::1%eth0`, which Python accepts).
    Raises ValueError with a message naming the value.
    """
    packed = _canonical_ipv4(text)
    if packed is not None:  # the common case at C speed: it runs for every backend, often
        return ipaddress.IPv4Address(packed)
    if "%" in text:
        raise ValueError(f"zone-suffixed IPv6 addresses are refused, got {shown(text)}")
    if _has_leading_zeros(text):
        raise ValueError(f"IPv4 addresses with leading zeros are refused (ambiguous), "
                         f"got {shown(text)}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"expected an IP address, got {shown(text)}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise ValueError(f"IPv4-mapped IPv6 addresses are refused: write {ip.ipv4_mapped}, "
                         f"got {shown(text)}")
    return ip


def _canonical_ipv4(text: str) -> bytes | None:
    """An IPv4 address written canonically (a dotted quad of decimals without leading
    zeros: what the text renders back to) as its 4 bytes; else None, and the full parser
    decides. Only a shortcut: it accepts nothing that parser refuses."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError, UnicodeError):
        return None
    return packed if socket.inet_ntop(socket.AF_INET, packed) == text else None


def _has_leading_zeros(text: str) -> bool:
    """A dotted-quad part (also the IPv4 tail of an IPv6 address) like `010`."""
    quad = text.rpartition(":")[2]
    return "." in quad and any(len(p) > 1 and p[0] == "0" and p.isdigit()
                               for p in quad.split("."))


def ip_problem(text: str) -> str | None:
    try:
        parse_ip(text)
    except ValueError as e:
        return str(e)
    return None


def strict_ip(text: str) -> IPAddress | None:
    """A strictly valid IP address (see `parse_ip`), else None."""
    try:
        return parse_ip(text)
    except ValueError:
        return None


def canonical_ip(text: str) -> str | None:
    """The canonical form of a strictly valid IP address (see `parse_ip`), else None."""
    ip = strict_ip(text)
    return None if ip is None else ip.compressed


def special_ip_reason(ip: IPAddress) -> str | None:
    """Why the API server refuses this address as an endpoint, if it does (core validation's
    ValidateNonSpecialIP). An IPv4-mapped address is judged as its IPv4 address: Python
    3.11 calls `::ffff:127.0.0.1` not loopback, Go (and the API server) calls it loopback."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if (ip.version == 4 and ip in _LINK_LOCAL_MULTICAST_V4) or (
            ip.version == 6 and ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02):
        return "link-local multicast"
    return None


def looks_like_ip(text: str) -> bool:
    """Digits and dots only, or a colon: meant as an IP address, never a DNS name."""
    return ":" in text or all(part.isdigit() for part in text.split(".") if part)


def is_dns_name(text: str) -> bool:
    """A name the resolver may be asked about (letters of either case, '_' in labels)."""
    return not looks_like_ip(text) and bool(_DNS_NAME.match(text))


def address_problem(text: str) -> str | None:
    """A backend address is a strictly valid IP or a DNS name to resolve."""
    if looks_like_ip(text) or "%" in text:
        return ip_problem(text)
    if is_dns_name(text):
        return None
    return f"expected an IP address or a DNS name, got {shown(text)}"


# Predicates of the plugin API (syncer.plugin re-exports them).
def is_service_name(name: str) -> bool:
    return service_name_problem(name) is None


def is_dns_label(name: str) -> bool:
    return hostname_problem(name) is None


def is_port_name(name: str) -> bool:
    return port_name_problem(name) is None
