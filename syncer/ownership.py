"""The labels and annotations that mark an object as ours, and the checks that read them."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER = "endpoints-sync.io/owner"
SOURCE = "endpoints-sync.io/source"
HOSTNAME = "endpoints-sync.io/hostname"
MISSES = "endpoints-sync.io/misses"  # flap damping: runs each kept address was missing
PROBE_STATE = "endpoints-sync.io/probe"  # health probes: each failing address's state
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
TOOL = "endpoints-sync"

# Label keys whose presence we decide; others on our objects (set by people) are kept.
MANAGED_LABELS = frozenset({MANAGED_BY, OWNER, SERVICE_NAME, SLICE_MANAGED_BY, SKIP_MIRROR})

JSON = dict[str, Any]
ADDRESS_KINDS = ("EndpointSlice", "Endpoints")


def owner_selector(owner: str) -> str:
    return f"{MANAGED_BY}={TOOL},{OWNER}={owner}"


def ownership_labels(owner: str) -> dict[str, str]:
    return {MANAGED_BY: TOOL, OWNER: owner}


def labels_of(obj: JSON) -> dict[str, str]:
    found: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return found


def annotations_of(obj: JSON) -> dict[str, str]:
    found: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
    return found


def is_owned(obj: JSON, owner: str) -> bool:
    """Ours to change: our managed-by label and our owner id, both."""
    lb = labels_of(obj)
    return lb.get(MANAGED_BY) == TOOL and lb.get(OWNER) == owner


def state_annotation(obj: JSON, key: str) -> dict[str, Any]:
    """The JSON mapping a run left in annotation `key` (MISSES, PROBE_STATE). A person or an
    older version may have written anything there: what is not a JSON object reads as {}."""
    value = annotations_of(obj).get(key)
    if not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def with_state_annotation(obj: JSON, key: str, held: Mapping[str, object],
                          current: JSON | None) -> JSON:
    """`obj` carrying `held` in annotation `key` as compact JSON with sorted keys (a run that
    changes nothing writes nothing). Emptied to `{}` where `current` had it (updates keep
    annotations they are not told about); left out where there never was any."""
    if not held and (current is None or key not in annotations_of(current)):
        return obj
    md = obj["metadata"]
    annotations = {**md.get("annotations", {}),
                   key: json.dumps(held, sort_keys=True, separators=(",", ":"))}
    return {**obj, "metadata": {**md, "annotations": annotations}}


def owned_address_objects(current: Iterable[JSON],
                          owner: str) -> dict[tuple[str, str], list[JSON]]:
    """This owner's EndpointSlices and Endpoints by (namespace, Service)."""
    found: dict[tuple[str, str], list[JSON]] = defaultdict(list)
    for obj in current:
        if obj.get("kind") in ADDRESS_KINDS and is_owned(obj, owner):
            found[(obj["metadata"].get("namespace", ""), service_of(obj))].append(obj)
    return found


def source_of(obj: JSON) -> str:
    return annotations_of(obj).get(SOURCE, "")


def key_of(obj: JSON) -> tuple[str, str, str]:
    md = obj["metadata"]
    return (obj["kind"], md.get("namespace", ""), md["name"])


def service_of(obj: JSON) -> str:
    """The Service an object belongs to: itself, or the service-name label of a slice."""
    if obj["kind"] == "EndpointSlice":
        return labels_of(obj).get(SERVICE_NAME, "")
    return str(obj["metadata"]["name"])
