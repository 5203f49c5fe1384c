"""The object store: every read and write of the server happens here, under one lock.

Objects are kept as JSON dicts keyed by (namespace, name) per resource, with kind and
apiVersion set; callers get deep copies so nothing outside the lock aliases stored state.

Every change is also kept, in order, in a history of the last `history` changes (what
kube-apiserver's watch cache keeps): watches read it (tests/kubeapi/watch.py) and wait on
`changed` for more."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi import errors, services, shape
from tests.kubeapi.defaults import apply_defaults
from tests.kubeapi.errors import ApiError, ShapeError
from tests.kubeapi.resources import ALL, ENDPOINT_SLICES, NAMESPACES, SERVICES, Resource, by_kind
from tests.kubeapi.selectors import FieldSelector, LabelSelector
from tests.kubeapi.validation import validate

_RANDOM = random.Random()  # own generator: jitter never moves the global random state

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds
EVERYTHING = LabelSelector()
ANY_FIELDS = FieldSelector()
HISTORY = 1000  # changes kept for watches; a watch from before them gets 410 Expired


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _same(a: Obj, b: Obj) -> bool:
    """Equal apart from resourceVersion: such an update writes nothing, as etcd would."""

    def strip(o: Obj) -> str:
        o = copy.deepcopy(o)
        o.get("metadata", {}).pop("resourceVersion", None)
        return json.dumps(o, sort_keys=True)

    return strip(a) == strip(b)


@dataclass(frozen=True)
class Change:
    """One write as a watch sees it: `obj` after it (for DELETED the last state, with the
    deletion's resourceVersion) and `prev` before it (None for ADDED)."""

    rv: int
    res: Resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    prev: Obj | None


Changes = list[Change]  # (Store.list hides the builtin inside the class)


class Expired(Exception):
    """The resourceVersion asked for is older than the history kept."""

    def __init__(self, asked: int, floor: int) -> None:
        super().__init__(f"too old resource version: {asked} ({floor})")


@dataclass
class Page:
    items: list[Obj]
    resource_version: str
    continue_token: str
    remaining: int | None


class Store:
    def __init__(self, namespaces: Iterable[str], history: int = HISTORY) -> None:
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        """Notified after every change (and by watch.Watches.close_all)."""
        self._rv = 0
        self._history: deque[Change] = deque()
        self._history_size = history
        self._floor = 0  # the oldest resourceVersion whose later changes are all kept
        self._compacted = 0  # compact(): new watches start no earlier than this
        self._objects: dict[str, dict[Key, Obj]] = {r.plural: {} for r in ALL}
        self._ips = services.ClusterIpAllocator()
        for name in namespaces:
            self.create_namespace(name)

    # -- reads -------------------------------------------------------------------------

    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects[res.plural].get((namespace, name))
            if obj is None:
                raise errors.not_found(res, name)
            return copy.deepcopy(obj)

    def find(self, res: Resource, namespace: str, name: str) -> Obj | None:
        with self._lock:
            obj = self._objects[res.plural].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        res: Resource,
        namespace: str | None,
        labels: LabelSelector = EVERYTHING,
        fields: FieldSelector = ANY_FIELDS,
        limit: int = 0,
        continue_token: str = "",
    ) -> Page:
        with self._lock:
            rv, start = self._decode_continue(continue_token) if continue_token else (
                self._rv, None)
            matching = [
                (key, obj)
                for key, obj in sorted(self._objects[res.plural].items())
                if (namespace is None or key[0] == namespace)
                and (start is None or key > start)
                and labels.matches(obj["metadata"].get("labels") or {})
                and fields.matches(obj)
            ]
            page = matching[:limit] if limit > 0 else matching
            token, remaining = "", None
            if len(page) < len(matching):
                token = self._encode_continue(rv, page[-1][0])
                remaining = len(matching) - len(page)
            return Page([copy.deepcopy(o) for _, o in page], str(rv), token, remaining)

    def resource_version(self) -> str:
        return str(self.current_version())

    # -- history (watches) -------------------------------------------------------------

    def changes_after(self, rv: int) -> Changes:
        """Every change after resourceVersion `rv`, oldest first; Expired when some of them
        are no longer kept (a watch that fell that far behind)."""
        with self._lock:
            if rv < self._floor:
                raise Expired(rv, self._floor)
            return [c for c in self._history if c.rv > rv]

    def check_start(self, rv: int) -> None:
        """Expired unless a new watch may start from resourceVersion `rv`."""
        with self._lock:
            floor = max(self._floor, self._compacted)
            if rv < floor:
                raise Expired(rv, floor)

    def current_version(self) -> int:
        with self._lock:
            return self._rv

    def compact(self) -> None:
        """As an etcd compaction: a new watch from an earlier resourceVersion gets 410
        Expired. Open watches go on, as the watch cache has their events already."""
        with self._lock:
            self._compacted = self._rv

    # -- writes ------------------------------------------------------------------------

    def create(self, res: Resource, namespace: str, body: Any, *, dry_run: bool = False) -> Obj:
        obj = self._prepare_body(res, body)
        meta = obj["metadata"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            # The real server fails this deep in storage, hence a 500 without a reason.
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        for server_owned in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
            meta.pop(server_owned, None)
        with self._lock:
            if res.namespaced and ("", namespace) not in self._objects[NAMESPACES.plural]:
                raise errors.namespace_not_found(namespace)
            if not meta.get("name") and isinstance(meta.get("generateName"), str):
                meta["name"] = self._generate_name(res, namespace, meta["generateName"])
            self._default_and_validate(res, obj, None)
            name = meta["name"]
            if (namespace, name) in self._objects[res.plural]:
                raise errors.already_exists(res, name)
            if res is SERVICES and obj["spec"].get("type") != "ExternalName":
                self._allocate(obj, dry_run=dry_run)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if res is ENDPOINT_SLICES:
                meta["generation"] = 1
            if not dry_run:
                meta["resourceVersion"] = self._bump()
                self._objects[res.plural][(namespace, name)] = copy.deepcopy(obj)
                self._record(res, "ADDED", obj, None)
            return obj

    def update(
        self, res: Resource, namespace: str, name: str, body: Any, *, dry_run: bool = False
    ) -> Obj:
        obj = self._prepare_body(res, body)
        self._check_identity(obj["metadata"], namespace, name)
        with self._lock:
            old = self._objects[res.plural].get((namespace, name))
            if old is None:
                raise errors.not_found(res, name)
            rv = obj["metadata"].get("resourceVersion")
            if not rv:
                raise errors.unprocessable(res, name, [errors.invalid(
                    "metadata.resourceVersion", 0, "must be specified for an update")])
            if rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            return self._commit_update(res, old, obj, dry_run)

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        apply: Callable[[Obj], Any],
        *,
        dry_run: bool = False,
    ) -> Obj:
        with self._lock:
            old = self._objects[res.plural].get((namespace, name))
            if old is None:
                raise errors.not_found(res, name)
            obj = self._prepare_body(res, apply(copy.deepcopy(old)))
            meta = obj["metadata"]
            for key, want in (("name", name), ("namespace", old["metadata"].get("namespace"))):
                if meta.get(key) != want:
                    raise errors.unprocessable(res, name, [errors.invalid(
                        f"metadata.{key}", meta.get(key), "field is immutable")])
            # A resourceVersion in the patch is a precondition, as on the real server.
            if meta.get("resourceVersion", "") not in ("", old["metadata"]["resourceVersion"]):
                raise errors.conflict(res, name)
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._commit_update(res, old, obj, dry_run)

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        preconditions: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        with self._lock:
            key = (namespace, name)
            old = self._objects[res.plural].get(key)
            if old is None:
                raise errors.not_found(res, name)
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                want = (preconditions or {}).get(field)
                have = old["metadata"].get(field)
                if want and want != have:
                    raise errors.precondition_failed(res, name, label, want, have)
            deleted = copy.deepcopy(old)
            if not dry_run:
                self._remove(res, key)
            if res is NAMESPACES:
                deleted["metadata"]["deletionTimestamp"] = now()
                deleted["status"] = {"phase": "Terminating"}
            return deleted

    def delete_collection(
        self,
        res: Resource,
        namespace: str | None,
        labels: LabelSelector = EVERYTHING,
        fields: FieldSelector = ANY_FIELDS,
        *,
        dry_run: bool = False,
    ) -> Page:
        with self._lock:
            page = self.list(res, namespace, labels, fields)
            page.items = [
                self.delete(res, o["metadata"].get("namespace", ""), o["metadata"]["name"],
                            dry_run=dry_run)
                for o in page.items
            ]
            return page

    # -- seeding (bypasses validation) -------------------------------------------------

    def create_namespace(self, name: str) -> None:
        with self._lock:
            if ("", name) not in self._objects[NAMESPACES.plural]:
                self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def seed(self, body: Obj) -> Obj:
        res = by_kind(str(body.get("kind", "")))
        obj = self._prepare_body(res, copy.deepcopy(body))
        meta = obj["metadata"]
        if not meta.get("name"):
            raise ValueError("a seeded object needs metadata.name")
        namespace = meta.setdefault("namespace", "default") if res.namespaced else ""
        key = (namespace, meta["name"])
        with self._lock:
            if res.namespaced:
                self.create_namespace(namespace)
            apply_defaults(res, obj)
            if res is SERVICES and obj["spec"].get("type") != "ExternalName":
                ip = obj["spec"].get("clusterIP") or self._ips.allocate()
                obj["spec"]["clusterIP"] = ip
                obj["spec"].setdefault("clusterIPs", [ip])
                if ip != "None":
                    self._ips.reserve(ip)
            existing = self._objects[res.plural].get(key)
            meta["uid"] = existing["metadata"]["uid"] if existing else str(uuid.uuid4())
            meta.setdefault("creationTimestamp", now())
            if res is ENDPOINT_SLICES:
                meta["generation"] = existing["metadata"]["generation"] + 1 if existing else 1
            meta["resourceVersion"] = self._bump()
            self._objects[res.plural][key] = copy.deepcopy(obj)
            self._record(res, "MODIFIED" if existing else "ADDED", obj, existing)
            return obj

    # -- internals ---------------------------------------------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, res: Resource, type_: str, obj: Obj, prev: Obj | None) -> None:
        """Keep a change made at the current resourceVersion (the lock is held)."""
        self._history.append(Change(self._rv, res, type_, copy.deepcopy(obj), prev))
        self._trim()
        self.changed.notify_all()

    def _trim(self) -> None:
        while len(self._history) > self._history_size:
            self._floor = self._history.popleft().rv

    @staticmethod
    def _prepare_body(res: Resource, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request must be a {res.kind} object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind not in (None, "", res.kind) or api_version not in (None, "", res.api_version):
            raise errors.bad_request(
                f'{kind} in version "{api_version}" cannot be handled as a {res.kind}: '
                f"no kind \"{kind}\" is registered for version \"{api_version}\"")
        try:
            meta = shape.obj(body, "metadata", "metadata")
        except ShapeError as exc:
            raise exc.to_api_error(res) from None
        rest = {k: v for k, v in body.items() if k not in ("kind", "apiVersion", "metadata")}
        # kind and apiVersion first, in the order the real server's encoder writes them
        return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta, **rest}

    @staticmethod
    def _check_identity(meta: Obj, namespace: str, name: str) -> None:
        if meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match "
                                     f"the name on the URL ({name})")
        if namespace and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request("the namespace of the provided object does not match "
                                     "the namespace sent on the request")
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace

    def _default_and_validate(self, res: Resource, obj: Obj, old: Obj | None) -> None:
        name = str(obj["metadata"].get("name") or "")
        try:
            carried = services.carry_over(obj, old) if res is SERVICES and old else []
            apply_defaults(res, obj)
            errs = carried + validate(res, obj, old)
        except ShapeError as exc:
            raise exc.to_api_error(res) from None
        if errs:
            raise errors.unprocessable(res, name, errs)

    def _allocate(self, obj: Obj, *, dry_run: bool) -> None:
        spec = obj["spec"]
        requested = spec.get("clusterIP") or ""
        if requested == "None":
            spec["clusterIPs"] = ["None"]
            return
        try:
            ip = self._ips.allocate(requested, dry_run=dry_run)
        except services.AllocationError as exc:
            raise errors.unprocessable(SERVICES, obj["metadata"]["name"], [exc.error]) from None
        spec["clusterIP"], spec["clusterIPs"] = ip, [ip]

    def _commit_update(self, res: Resource, old: Obj, obj: Obj, dry_run: bool) -> Obj:
        meta, old_meta = obj["metadata"], old["metadata"]
        if res in (SERVICES, NAMESPACES):  # status is a subresource: PUT keeps the old one
            obj["status"] = copy.deepcopy(old.get("status"))
        self._default_and_validate(res, obj, old)
        meta["uid"] = old_meta["uid"]
        meta["creationTimestamp"] = old_meta["creationTimestamp"]
        meta.pop("generation", None)
        if res is SERVICES:
            self._reallocate(obj, old, dry_run=dry_run)
        if res is ENDPOINT_SLICES:
            meta["generation"] = old_meta.get("generation", 1) + (
                0 if _same_spec(obj, old) else 1)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if _same(obj, old):
            return copy.deepcopy(old)
        if not dry_run:
            meta["resourceVersion"] = self._bump()
            key = (old_meta.get("namespace", ""), old_meta["name"])
            self._objects[res.plural][key] = copy.deepcopy(obj)
            self._record(res, "MODIFIED", obj, old)
        return obj

    def _reallocate(self, obj: Obj, old: Obj, *, dry_run: bool) -> None:
        had, has = services.has_ip(old["spec"]), obj["spec"].get("type") != "ExternalName"
        if has and not (had and obj["spec"].get("clusterIP") == old["spec"]["clusterIP"]):
            self._allocate(obj, dry_run=dry_run)
        if had and not has and not dry_run:
            self._ips.release(old["spec"]["clusterIP"])

    def _remove(self, res: Resource, key: Key) -> None:
        """Delete one object (and what goes with it), each at a resourceVersion of its own."""
        obj = self._objects[res.plural].pop(key)
        self._bump()
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(res, "DELETED", gone, obj)
        if res is SERVICES and services.has_ip(obj["spec"]):
            self._ips.release(obj["spec"]["clusterIP"])
        endpoints = by_kind("Endpoints")
        if res is SERVICES and key in self._objects[endpoints.plural]:
            self._remove(endpoints, key)  # kube-apiserver deletes the same-named Endpoints
        if res is NAMESPACES:  # the namespace controller's work, done at once
            for other in ALL:
                if other.namespaced:
                    for k in [k for k in self._objects[other.plural] if k[0] == key[1]]:
                        self._remove(other, k)

    def _generate_name(self, res: Resource, namespace: str, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the real generator's alphabet
        while True:
            name = prefix + "".join(_RANDOM.choices(alphabet, k=5))
            if (namespace, name) not in self._objects[res.plural]:
                return name

    @staticmethod
    def _encode_continue(rv: int, last: Key) -> str:
        token = {"v": "meta.k8s.io/v1", "rv": rv, "start": list(last)}
        return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, Key]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            ns, name = data["start"]
            return int(data["rv"]), (str(ns), str(name))
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise errors.bad_request(f"invalid continue token: {exc}") from None


def _same_spec(a: Obj, b: Obj) -> bool:
    """EndpointSlice generation moves when anything but metadata changes, or its labels."""

    def body(o: Obj) -> str:
        rest = {k: v for k, v in o.items() if k != "metadata"}
        return json.dumps([rest, o["metadata"].get("labels")], sort_keys=True)

    return body(a) == body(b)

