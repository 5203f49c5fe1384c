"""RBAC as kube-apiserver's authorizer applies it: each resource request needs a rule that
grants its (API group, resource, verb); otherwise 403 Forbidden with the real Status body.

Discovery, /version and the health paths are always allowed, as the system:discovery and
system:public-info-viewer roles allow them to every authenticated user."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.kubeapi.errors import ApiError

if TYPE_CHECKING:
    from tests.kubeapi.api import Route

# Who the test kubeconfig's token stands for, in messages.
USER = "system:serviceaccount:endpoints-sync:endpoints-sync"
Permission = tuple[str, str, str]  # (API group, resource, verb)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule: any of its groups x resources x verbs ("*" matches anything)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def allows(self, group: str, resource: str, verb: str) -> bool:
        return all(want in have or "*" in have for want, have in (
            (group, self.api_groups), (resource, self.resources), (verb, self.verbs)))

    def permissions(self) -> set[Permission]:
        return {(g, r, v) for g in self.api_groups for r in self.resources for v in self.verbs}


def cluster_role_rules(path: str | Path, name: str | None = None) -> list[Rule]:
    """The rules of the (named, or only) ClusterRole in a multi-document YAML file."""
    roles = [d for d in yaml.safe_load_all(Path(path).read_text())
             if isinstance(d, dict) and d.get("kind") == "ClusterRole"
             and (name is None or d["metadata"]["name"] == name)]
    if len(roles) != 1:
        raise ValueError(f"{path}: expected one ClusterRole, found {len(roles)}")
    return [_rule(r) for r in roles[0].get("rules") or []]


def _rule(doc: dict[str, Any]) -> Rule:
    if doc.get("resourceNames") or doc.get("nonResourceURLs"):
        raise ValueError("resourceNames and nonResourceURLs are not supported")
    return Rule(tuple(doc.get("apiGroups") or ()), tuple(doc.get("resources") or ()),
                tuple(doc.get("verbs") or ()))


def permissions(rules: Iterable[Rule]) -> set[Permission]:
    """Every (group, resource, verb) the rules grant, wildcards as written."""
    return {p for rule in rules for p in rule.permissions()}


def without(rules: Iterable[Rule], removed: Permission) -> list[Rule]:
    """The same grants less one permission, as one rule per permission."""
    return [Rule((g,), (r,), (v,)) for g, r, v in sorted(permissions(rules) - {removed})]


def verb_of(method: str, collection: bool, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else ("list" if collection else "get")
    if method == "DELETE":
        return "deletecollection" if collection else "delete"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def authorize(rules: Iterable[Rule], method: str, route: Route, watch: bool) -> None:
    """Raise the 403 the real server answers when no rule allows the request."""
    res = route.res
    verb = verb_of(method, route.name is None, watch)
    if any(rule.allows(res.group, res.plural, verb) for rule in rules):
        return
    what = f'{res.group_resource} "{route.name}"' if route.name else res.group_resource
    scope = (f'in the namespace "{route.namespace}"' if route.namespace
             else "at the cluster scope")
    details: dict[str, Any] = {"name": route.name} if route.name else {}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    raise ApiError(403, f'{what} is forbidden: User "{USER}" cannot {verb} resource '
                   f'"{res.plural}" in API group "{res.group}" {scope}', "Forbidden", details)
