"""What `plan` and `render` print on stdout."""

from __future__ import annotations

import json
from collections.abc import Iterable

import yaml

from syncer.desired import Desired
from syncer.ownership import JSON
from syncer.plan import Change, Plan
from syncer.render import RenderedService

try:
    from yaml import CSafeDumper as YamlDumper
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as YamlDumper  # type: ignore[assignment]


def render_text(rendered: Iterable[RenderedService], fmt: str) -> str:
    objects = [o for svc in rendered for o in svc.objects]
    if fmt == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    # Multi-document YAML, as `kubectl apply -f -` reads it.
    return yaml.dump_all(objects, Dumper=YamlDumper, sort_keys=False, explicit_start=True)


def endpoint_addresses(obj: JSON | None) -> set[str]:
    """`ip:port/PROTO[ name]` strings, `(not ready)` marked, for address diffs."""
    if obj is None:
        return set()
    out: set[str] = set()
    if obj["kind"] == "EndpointSlice":
        ports = obj.get("ports") or []
        for e in obj.get("endpoints") or []:
            ready = (e.get("conditions") or {}).get("ready", True)
            for address in e.get("addresses") or []:
                out.update(_address(address, p, ready) for p in ports)
    elif obj["kind"] == "Endpoints":
        for s in obj.get("subsets") or []:
            ports = s.get("ports") or []
            for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                for a in s.get(key) or []:
                    out.update(_address(a["ip"], p, ready) for p in ports)
    return out


def _address(ip: str, port: JSON, ready: bool) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    name = f" {port['name']}" if port.get("name") else ""
    state = "" if ready else " (not ready)"
    return f"{host}:{port.get('port')}/{port.get('protocol', 'TCP')}{name}{state}"


def _describe(change: Change) -> list[str]:
    sign = {"create": "+", "update": "~", "delete": "-"}[change.action]
    action = "recreate (delete, then create)" if change.recreate else change.action
    lines = [f"{sign} {action} {change.kind} {change.name}"]
    if change.kind == "Service":
        if change.body is not None:
            spec = change.body.get("spec", {})
            ports = ", ".join(f"{p.get('name', '') or '-'}:{p['port']}/{p.get('protocol', 'TCP')}"
                              for p in spec.get("ports") or [])
            kind = spec.get("type", "ClusterIP")
            if spec.get("clusterIP") == "None":
                kind = "Headless"
            target = f" -> {spec['externalName']}" if spec.get("externalName") else ""
            lines.append(f"    {kind}{target} ports {ports or '-'}")
        return lines
    old, new = endpoint_addresses(change.current), endpoint_addresses(change.body)
    lines.extend(f"    + {a}" for a in sorted(new - old))
    lines.extend(f"    - {a}" for a in sorted(old - new))
    return lines


def plan_text(plan: Plan, desired: Desired | None = None) -> str:
    """The plan as people read it. Failed sources and Services left as they are are named:
    "No changes" is said only when every source answered and everything was compared."""
    lines: list[str] = []
    for change in plan.changes:
        lines.extend(_describe(change))
    for r in plan.readiness:
        lines.append(f"~ readiness Service {'/'.join(r.service)}: {r.text}")
    for held in plan.held:
        c = held.change
        lines.append(f"= held {c.action} {c.kind} {c.name}: {held.why}")
    for conflict in plan.conflicts:
        lines.append(f"! conflict {conflict.key[0]} {conflict.key[1]}/{conflict.key[2]}: "
                     f"{conflict.reason}; Service {'/'.join(conflict.service)} left alone")
    failed = desired.failed_sources if desired else {}
    for source, why in sorted(failed.items()):
        lines.append(f"! source {source} failed: {why}; its Services were not compared and "
                     "are left as they are")
    for namespace, name in sorted(desired.skipped if desired else ()):
        lines.append(f"! Service {namespace}/{name} left as it is: its source could not build "
                     "it (see the log)")
    if not lines:
        lines.append("No changes: the cluster matches the sources.")
    elif not plan.changes and not plan.held and not plan.conflicts:
        lines.append("No changes to the Services that could be compared.")
    return "\n".join(lines) + "\n"


PLAN_FORMAT_VERSION = 1


def plan_json(plan: Plan, desired: Desired, counts: dict[str, int]) -> str:
    """`plan -o json`: the plan for scripts. Its shape is a contract (README, "plan -o
    json"): keys are only ever added, and `version` changes if one changes meaning."""
    doc = {
        "version": PLAN_FORMAT_VERSION,
        "changes": [_change_json(c) for c in plan.changes],
        "held": [{**_object_json(h.change), "reason": h.reason, "action": _action(h.change),
                  "detail": h.detail} for h in plan.held],
        "conflicts": [{"kind": c.key[0], "namespace": c.key[1], "name": c.key[2],
                       "service": "/".join(c.service), "source": c.source, "reason": c.reason}
                      for c in plan.conflicts],
        "failed_sources": dict(sorted(desired.failed_sources.items())),
        "kept_services": [f"{ns}/{name}" for ns, name in sorted(desired.skipped)],
        "readiness": [{"service": "/".join(r.service), "source": r.source,
                       "endpoint": r.endpoint, "ready": r.ready, "reason": r.why}
                      for r in plan.readiness],
        "summary": counts,
    }
    return json.dumps(doc, indent=2) + "\n"


def _action(change: Change) -> str:
    return "recreate" if change.recreate else change.action


def _object_json(change: Change) -> dict[str, str]:
    kind, namespace, name = change.key
    return {"kind": kind, "namespace": namespace, "name": name,
            "service": "/".join(change.service), "source": change.source}


def _change_json(change: Change) -> dict[str, object]:
    diff = None
    if change.kind != "Service":
        old, new = endpoint_addresses(change.current), endpoint_addresses(change.body)
        diff = {"added": sorted(new - old), "removed": sorted(old - new)}
    return {"action": _action(change), **_object_json(change), "diff": diff}
