"""Per-kind validation, after kube-apiserver's pkg/apis/{core,discovery}/validation.

Each validator returns every field error it finds, so one 422 names them all, as the
real server does. Type errors in the JSON raise ShapeError (400) instead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.kubeapi import formats, shape
from tests.kubeapi.errors import (
    FieldError,
    bad_request,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
    too_long,
    too_many,
)
from tests.kubeapi.resources import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    EVENTS,
    NAMESPACES,
    SERVICES,
    Resource,
)

PROTOCOLS = ["SCTP", "TCP", "UDP"]
SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_ADDRESSES = 100
MAX_SLICE_PORTS = 100
MAX_ZONE_HINTS = 8
# ServiceTrafficDistribution, beta in 1.31-1.32: PreferSameZone and PreferSameNode are 1.33's.
TRAFFIC_DISTRIBUTIONS = ["PreferClose"]
MAX_ANNOTATIONS_BYTES = 256 * 1024

Errors = list[FieldError]


def _check(path: str, value: Any, messages: list[str]) -> Errors:
    return [invalid(path, value, m) for m in messages]


def validate(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> Errors:
    """All field errors of `obj` (a create when `old` is None, else an update)."""
    validator = _VALIDATORS[res.plural]
    errs = validate_metadata(res, shape.obj(obj, "metadata", "metadata"))
    errs += validator(obj)
    if old is not None:
        errs += _validate_update(res, obj, old)
    return errs


def validate_metadata(res: Resource, meta: dict[str, Any]) -> Errors:
    name = shape.string(meta, "name", "metadata.name")
    errs: Errors = []
    if not name:
        errs.append(required("metadata.name", "name or generateName is required"))
    else:
        check = formats.dns1035_label if res is SERVICES else formats.dns1123_subdomain
        if res is NAMESPACES:
            check = formats.dns1123_label
        errs += _check("metadata.name", name, check(name))
    errs += validate_labels(shape.string_map(meta, "labels", "metadata.labels"), "metadata.labels")
    annotations = shape.string_map(meta, "annotations", "metadata.annotations")
    for key in annotations:
        errs += _check("metadata.annotations", key, formats.qualified_name(key.lower()))
    if sum(len(k) + len(v) for k, v in annotations.items()) > MAX_ANNOTATIONS_BYTES:
        errs.append(too_long("metadata.annotations", MAX_ANNOTATIONS_BYTES))
    return errs


def validate_labels(labels: dict[str, str], path: str) -> Errors:
    errs: Errors = []
    for key, value in labels.items():
        errs += _check(path, key, formats.qualified_name(key))
        errs += _check(path, value, formats.label_value(value))
    return errs


def _validate_update(res: Resource, new: dict[str, Any], old: dict[str, Any]) -> Errors:
    errs: Errors = []
    new_uid = new["metadata"].get("uid")
    if new_uid and new_uid != old["metadata"].get("uid"):
        errs.append(invalid("metadata.uid", new_uid, "field is immutable"))
    if res is ENDPOINT_SLICES and new.get("addressType") != old.get("addressType"):
        errs.append(invalid("addressType", new.get("addressType"), "field is immutable"))
    return errs


def _validate_namespace(obj: dict[str, Any]) -> Errors:
    shape.strings(shape.obj(obj, "spec", "spec"), "finalizers", "spec.finalizers")
    return []


def _validate_service(obj: dict[str, Any]) -> Errors:
    spec = shape.obj(obj, "spec", "spec")
    errs: Errors = []
    svc_type = shape.string(spec, "type", "spec.type")
    if svc_type not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", svc_type, SERVICE_TYPES))
    cluster_ip = shape.string(spec, "clusterIP", "spec.clusterIP")
    headless = cluster_ip == "None"
    if svc_type == "ExternalName":
        errs += _validate_external_name(spec, cluster_ip)
    elif cluster_ip and not headless:
        errs += _check("spec.clusterIP", cluster_ip, formats.ip_address(cluster_ip)[:1])
    ips = shape.strings(spec, "clusterIPs", "spec.clusterIPs")
    if ips and ips[0] != cluster_ip:
        errs.append(invalid("spec.clusterIPs", ips, "must match `clusterIP` when set"))
    ports = shape.objs(spec, "ports", "spec.ports")
    if not ports and not headless and svc_type != "ExternalName":
        errs.append(required("spec.ports"))
    errs += _validate_service_ports(ports)
    affinity = shape.string(spec, "sessionAffinity", "spec.sessionAffinity")
    if affinity not in ("ClientIP", "None"):
        errs.append(not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"]))
    errs += validate_labels(shape.string_map(spec, "selector", "spec.selector"), "spec.selector")
    for i, family in enumerate(shape.strings(spec, "ipFamilies", "spec.ipFamilies")):
        if family not in ("IPv4", "IPv6"):
            errs.append(not_supported(f"spec.ipFamilies[{i}]", family, ["IPv4", "IPv6"]))
    policy = spec.get("ipFamilyPolicy")
    policies = ["PreferDualStack", "RequireDualStack", "SingleStack"]
    if policy is not None and policy not in policies:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, policies))
    if "trafficDistribution" in spec:  # any type, ExternalName too; "" is refused as well
        distribution = shape.string(spec, "trafficDistribution", "spec.trafficDistribution")
        if distribution not in TRAFFIC_DISTRIBUTIONS:
            errs.append(not_supported("spec.trafficDistribution", distribution,
                                      TRAFFIC_DISTRIBUTIONS))
    return errs


def _validate_external_name(spec: dict[str, Any], cluster_ip: str) -> Errors:
    errs: Errors = []
    if cluster_ip:
        errs.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
    name = shape.string(spec, "externalName", "spec.externalName")
    if not name:
        errs.append(required("spec.externalName"))
    else:
        errs += _check("spec.externalName", name, formats.fqdn(name)[:1])
    return errs


def _validate_service_ports(ports: list[dict[str, Any]]) -> Errors:
    errs: Errors = []
    names: set[str] = set()
    seen: set[tuple[int | None, str]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        errs += _validate_port_name(port, path, len(ports) > 1, names)
        number = shape.integer(port, "port", f"{path}.port")
        if number is None or not 1 <= number <= 65535:
            errs.append(invalid(f"{path}.port", number or 0, formats.PORT_RANGE_MSG))
        errs += _validate_protocol(port, path)
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            errs.append(invalid(f"{path}.targetPort", target, formats.PORT_RANGE_MSG))
        elif isinstance(target, str):
            errs += _check(f"{path}.targetPort", target, formats.port_name(target))
        key = (number, str(port.get("protocol")))
        if key in seen:
            errs.append(duplicate(path, {"port": number, "protocol": key[1]}))
        seen.add(key)
    return errs


def _validate_port_name(
    port: dict[str, Any], path: str, require: bool, names: set[str]
) -> Errors:
    name = shape.string(port, "name", f"{path}.name")
    if not name:
        return [required(f"{path}.name")] if require else []
    errs = _check(f"{path}.name", name, formats.dns1123_label(name))
    if name in names:
        errs.append(duplicate(f"{path}.name", name))
    names.add(name)
    return errs


def _validate_protocol(port: dict[str, Any], path: str) -> Errors:
    protocol = shape.string(port, "protocol", f"{path}.protocol")
    if not protocol:
        return [required(f"{path}.protocol")]
    if protocol not in PROTOCOLS:
        return [not_supported(f"{path}.protocol", protocol, PROTOCOLS)]
    return []


def _validate_endpoints(obj: dict[str, Any]) -> Errors:
    errs: Errors = []
    for i, subset in enumerate(shape.objs(obj, "subsets", "subsets")):
        path = f"subsets[{i}]"
        ready = shape.objs(subset, "addresses", f"{path}.addresses")
        not_ready = shape.objs(subset, "notReadyAddresses", f"{path}.notReadyAddresses")
        if not ready and not not_ready:
            errs.append(required(path, "must specify `addresses` or `notReadyAddresses`"))
        for field_name, addresses in (("addresses", ready), ("notReadyAddresses", not_ready)):
            for j, address in enumerate(addresses):
                errs += _validate_endpoint_address(address, f"{path}.{field_name}[{j}]")
        ports = shape.objs(subset, "ports", f"{path}.ports")
        for j, port in enumerate(ports):
            port_path = f"{path}.ports[{j}]"
            errs += _validate_port_name(port, port_path, len(ports) > 1, set())
            number = shape.integer(port, "port", f"{port_path}.port")
            if number is None or not 1 <= number <= 65535:
                errs.append(invalid(f"{port_path}.port", number or 0, formats.PORT_RANGE_MSG))
            errs += _validate_protocol(port, port_path)
    return errs


def _validate_endpoint_address(address: dict[str, Any], path: str) -> Errors:
    ip = shape.string(address, "ip", f"{path}.ip")
    errs = _check(f"{path}.ip", ip, formats.ip_address(ip))
    return errs + _validate_host_fields(address, path)


def _validate_endpoint_slice(obj: dict[str, Any]) -> Errors:
    errs: Errors = []
    address_type = shape.string(obj, "addressType", "addressType")
    if not address_type:
        errs.append(required("addressType"))
    elif address_type not in ADDRESS_TYPES:
        errs.append(not_supported("addressType", address_type, ADDRESS_TYPES))
    endpoints = shape.objs(obj, "endpoints", "endpoints")
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errs.append(too_many("endpoints", len(endpoints), MAX_SLICE_ENDPOINTS))
    else:
        for i, endpoint in enumerate(endpoints):
            errs += _validate_slice_endpoint(endpoint, f"endpoints[{i}]", address_type)
    ports = shape.objs(obj, "ports", "ports")
    if len(ports) > MAX_SLICE_PORTS:
        return [*errs, too_many("ports", len(ports), MAX_SLICE_PORTS)]
    names: set[str] = set()
    for i, port in enumerate(ports):
        path = f"ports[{i}]"
        name = shape.string(port, "name", f"{path}.name")
        if name:
            errs += _check(f"{path}.name", name, formats.dns1123_label(name))
        if name in names:
            errs.append(duplicate(f"{path}.name", name))
        names.add(name)
        errs += _validate_protocol(port, path)
        # An integer, but kube-apiserver (1.32) does not range-check a slice's port numbers:
        # 0, -1 and 70000 are stored (tests/test_differential.py); the syncer checks its own.
        shape.integer(port, "port", f"{path}.port")
    return errs


def _validate_slice_endpoint(endpoint: dict[str, Any], path: str, address_type: str) -> Errors:
    errs: Errors = []
    addresses = shape.strings(endpoint, "addresses", f"{path}.addresses")
    if not addresses:
        errs.append(required(f"{path}.addresses", "must contain at least 1 address"))
    elif len(addresses) > MAX_SLICE_ADDRESSES:
        errs.append(too_many(f"{path}.addresses", len(addresses), MAX_SLICE_ADDRESSES))
    check: Callable[[str], list[str]] | None = {
        "IPv4": lambda a: formats.ip_address(a, 4),
        "IPv6": lambda a: formats.ip_address(a, 6),
        "FQDN": formats.fqdn,
    }.get(address_type)
    for j, address in enumerate(addresses):
        if check is not None:
            errs += _check(f"{path}.addresses[{j}]", address, check(address))
    conditions = shape.obj(endpoint, "conditions", f"{path}.conditions")
    for cond in ("ready", "serving", "terminating"):
        shape.boolean(conditions, cond, f"{path}.conditions.{cond}")
    shape.string(endpoint, "zone", f"{path}.zone")  # a string, but not checked (1.32)
    if endpoint.get("hints") is not None:
        errs += _validate_hints(shape.obj(endpoint, "hints", f"{path}.hints"), f"{path}.hints")
    return errs + _validate_host_fields(endpoint, path)


def _validate_hints(hints: dict[str, Any], path: str) -> Errors:
    """validateHints: at most 8 zones, each a label value, none twice. An empty or missing
    name is stored, though the API's docs call it required."""
    zones = shape.objs(hints, "forZones", f"{path}.forZones")
    if len(zones) > MAX_ZONE_HINTS:
        return [too_many(f"{path}.forZones", len(zones), MAX_ZONE_HINTS)]
    errs: Errors = []
    seen: set[str] = set()
    for i, zone in enumerate(zones):
        name_path = f"{path}.forZones[{i}].name"
        name = shape.string(zone, "name", name_path)
        if name in seen:
            errs.append(duplicate(name_path, name))
        seen.add(name)
        errs += _check(name_path, name, formats.label_value(name))
    return errs


def _validate_host_fields(obj: dict[str, Any], path: str) -> Errors:
    """hostname and nodeName, as Endpoints addresses and EndpointSlice endpoints carry them."""
    errs: Errors = []
    hostname = shape.string(obj, "hostname", f"{path}.hostname")
    if hostname:
        errs += _check(f"{path}.hostname", hostname, formats.dns1123_label(hostname))
    node = shape.string(obj, "nodeName", f"{path}.nodeName")
    if node:
        errs += _check(f"{path}.nodeName", node, formats.dns1123_subdomain(node))
    return errs


def _validate_event(obj: dict[str, Any]) -> Errors:
    """ValidateEventCreate (pkg/apis/core/validation/events.go) for events.k8s.io/v1, which
    checks the internal type: hence `message` for note and `involvedObject` for regarding."""
    errs: Errors = []
    event_time = _micro_time(obj, "eventTime")
    namespace = shape.string(shape.obj(obj, "metadata", "metadata"), "namespace",
                             "metadata.namespace")
    regarding = shape.obj(obj, "regarding", "regarding")
    if event_time is not None:  # legacyValidateEvent's checks of "new" Events
        if (not shape.string(regarding, "namespace", "regarding.namespace")
                and namespace not in ("default", "kube-system")):
            errs.append(invalid("involvedObject.namespace", "", "does not match event.namespace"))
        controller = shape.string(obj, "reportingController", "reportingController")
        if not controller:
            errs.append(required("reportingController"))
        errs += _check("reportingController", controller, formats.qualified_name(controller))
        for key, path, limit in (("reportingInstance", "reportingInstance", 128),
                                 ("action", "action", 128), ("reason", "reason", 128),
                                 ("note", "message", 1024)):
            value = shape.string(obj, key, key)
            if not value and key != "note":
                errs.append(required(path))
            if len(value.encode()) > limit:  # Go's len(): bytes
                errs.append(invalid(path, "", f"can have at most {limit} characters"))
    else:
        errs.append(required("eventTime"))
    event_type = shape.string(obj, "type", "type")
    if event_type not in ("Normal", "Warning"):
        errs.append(invalid("type", "", f"has invalid value: {event_type}"))
    for key, path in (("deprecatedFirstTimestamp", "firstTimestamp"),
                      ("deprecatedLastTimestamp", "lastTimestamp")):
        if shape.string(obj, key, key):
            errs.append(invalid(path, "", "needs to be unset"))
    if shape.integer(obj, "deprecatedCount", "deprecatedCount"):
        errs.append(invalid("count", "", "needs to be unset"))
    source = shape.obj(obj, "deprecatedSource", "deprecatedSource")
    if shape.string(source, "component", "") or shape.string(source, "host", ""):
        errs.append(invalid("source", "", "needs to be unset"))
    series = obj.get("series")
    if series is not None:
        series = shape.obj(obj, "series", "series")
        count = shape.integer(series, "count", "series.count")
        if count is None or count < 2:
            errs.append(invalid("series.count", "", "should be at least 2"))
        if _micro_time(series, "lastObservedTime") is None:
            errs.append(required("series.lastObservedTime"))
    return errs


def _micro_time(parent: dict[str, Any], key: str) -> datetime | None:
    """A metav1.MicroTime (RFC 3339): None when unset; the decoder refuses anything else."""
    text = shape.string(parent, key, key)
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f'Event in version "v1" cannot be handled as a Event: parsing time '
                          f'"{text}" as "2006-01-02T15:04:05Z07:00": cannot parse') from None


_VALIDATORS: dict[str, Callable[[dict[str, Any]], Errors]] = {
    NAMESPACES.plural: _validate_namespace,
    SERVICES.plural: _validate_service,
    ENDPOINTS.plural: _validate_endpoints,
    ENDPOINT_SLICES.plural: _validate_endpoint_slice,
    EVENTS.plural: _validate_event,
}

