"""Request handling: routing, content negotiation and the verbs, over the Store.

Transport-free: it takes a parsed request and returns status, JSON body and headers,
so the HTTP layer stays small and every answer is a proper object or Status."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from tests.kubeapi import errors, patch, rbac, resources, selectors
from tests.kubeapi.errors import ApiError
from tests.kubeapi.resources import ENDPOINTS, NAMESPACES, SERVICES, Resource
from tests.kubeapi.store import Obj, Page, Store
from tests.kubeapi.table import table
from tests.kubeapi.watch import Watches, WatchRequest

# Bodies in these encodings are refused (415); any other body is read as JSON, since the
# official Python client sends POST bodies without a Content-Type.
_REFUSED_BODY_TYPES = ("protobuf", "yaml", "cbor")
# What kube-apiserver 1.33+ answers every Endpoints write with (pkg/registry/core/endpoint).
ENDPOINTS_WARNING = ('299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 '
                     'EndpointSlice"')


class Headers(Protocol):
    """Case-insensitive header lookup, as http.server's message object offers."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: Obj | str
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[Obj] | None = None
    """A watch: these events follow, one JSON line each (chunked), instead of `body`."""


@dataclass(frozen=True)
class Route:
    res: Resource
    namespace: str | None  # None: all namespaces, or a cluster-scoped resource
    name: str | None  # None: the collection


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 2:
        return None  # subresources (status, ...) are not served
    res = resources.by_path(group, version, rest[0])
    name = rest[1] if len(rest) == 2 else None
    if res is None or (namespace is not None and not res.namespaced):
        return None
    if res.namespaced and name is not None and namespace is None:
        return None
    return Route(res, namespace, name)


def is_watch(query: str | dict[str, list[str]]) -> bool:
    """?watch=true (or 1): a GET of a collection or object that streams its changes."""
    parsed = parse_qs(query) if isinstance(query, str) else query
    return parsed.get("watch", [""])[-1] in ("true", "1")


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _strip_type_meta(obj: Obj) -> Obj:
    """List items come back without kind/apiVersion, as from a real server."""
    obj.pop("kind", None)
    obj.pop("apiVersion", None)
    return obj


class Api:
    def __init__(self, store: Store, server_address: Callable[[], str]) -> None:
        self.store = store
        self._server_address = server_address
        self.rules: list[rbac.Rule] | None = None
        """When set, every resource request must be allowed by one of these rules (else 403)."""
        self.endpoints_warning = False
        """Answer Endpoints creates and updates with 1.33's deprecation Warning header."""
        self.watches = Watches(store)

    def handle(self, req: Request) -> Response:
        try:
            return self._handle(req)
        except ApiError as exc:
            return Response(exc.code, exc.status_body(), dict(exc.headers))

    def _handle(self, req: Request) -> Response:
        if req.path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok")
        doc = self._discovery(req.path.rstrip("/") or "/")
        if doc is not None:
            if req.method != "GET":
                raise errors.method_not_allowed()
            return Response(200, doc)
        route = parse_route(req.path)
        if route is None:
            raise errors.server_not_found()
        query = parse_qs(req.query, keep_blank_values=True)
        watch = is_watch(query)
        if self.rules is not None:  # authorization comes before anything else is looked at
            rbac.authorize(self.rules, req.method, route, watch)
        if watch:
            return self._watch(req, route, {k: v[-1] for k, v in query.items()})
        handler = self._collection_verbs if route.name is None else self._item_verbs
        response = handler(req, route, {k: v[-1] for k, v in query.items()})
        if (self.endpoints_warning and route.res is ENDPOINTS and req.method in ("POST", "PUT")
                and response.status < 300):
            response.headers["Warning"] = ENDPOINTS_WARNING
        return response

    def _discovery(self, path: str) -> Obj | None:
        groups = resources.GROUPS
        docs: dict[str, Callable[[], Obj]] = {
            "/": lambda: {"paths": ["/api", "/api/v1", "/apis",
                                    *(p for g in groups for p in (f"/apis/{g}", f"/apis/{g}/v1")),
                                    "/version"]},
            "/version": lambda: dict(resources.SERVER_VERSION),
            "/api": lambda: resources.api_versions(self._server_address()),
            "/apis": resources.api_group_list,
            "/api/v1": lambda: resources.api_resource_list("", "v1"),
        }
        for g in groups:
            docs[f"/apis/{g}"] = functools.partial(resources.api_group, g)
            docs[f"/apis/{g}/v1"] = functools.partial(resources.api_resource_list, g, "v1")
        make = docs.get(path)
        return make() if make else None

    # -- verbs -------------------------------------------------------------------------

    def _collection_verbs(self, req: Request, route: Route, query: dict[str, str]) -> Response:
        res, namespace = route.res, route.namespace
        if req.method == "GET":
            page = self._list(res, namespace, query)
            return Response(200, self._list_body(req, res, page, query))
        if res.namespaced and namespace is None:
            raise errors.method_not_allowed()
        if req.method == "POST":
            body = self._json_body(req)
            obj = self.store.create(res, namespace or "", body, dry_run=_dry_run(query, None))
            return Response(201, obj)
        if req.method == "DELETE":
            options = self._delete_options(req)
            labels, fields = self._selectors(query)
            page = self.store.delete_collection(res, namespace, labels, fields,
                                                dry_run=_dry_run(query, options))
            return Response(200, self._list_body(req, res, page, query))
        raise errors.method_not_allowed()

    def _item_verbs(self, req: Request, route: Route, query: dict[str, str]) -> Response:
        res, namespace, name = route.res, route.namespace or "", route.name or ""
        if req.method == "GET":
            obj = self.store.get(res, namespace, name)
            if self._wants_table(req):
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                return Response(200, table(res, [obj], meta, query.get("includeObject", "")))
            return Response(200, obj)
        if req.method == "PUT":
            body = self._json_body(req)
            return Response(200, self.store.update(res, namespace, name, body,
                                                   dry_run=_dry_run(query, None)))
        if req.method == "PATCH":
            apply = self._patch_function(req)
            return Response(200, self.store.patch(res, namespace, name, apply,
                                                  dry_run=_dry_run(query, None)))
        if req.method == "DELETE":
            options = self._delete_options(req)
            deleted = self.store.delete(res, namespace, name, options.get("preconditions"),
                                        dry_run=_dry_run(query, options))
            if res in (SERVICES, NAMESPACES):  # these return the object, others a Status
                return Response(200, deleted)
            details: Obj = {"name": name}
            if res.group:
                details["group"] = res.group
            details.update(kind=res.plural, uid=deleted["metadata"]["uid"])
            return Response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "details": details})
        raise errors.method_not_allowed()

    def _watch(self, req: Request, route: Route, query: dict[str, str]) -> Response:
        """GET ?watch=true of a collection, or of one object (its name as a field selector)."""
        if req.method != "GET":
            raise errors.method_not_allowed()
        if query.get("sendInitialEvents"):
            raise errors.bad_request("sendInitialEvents (watch-list) is not supported by the "
                                     "test server")
        if route.name is not None:
            named = f"metadata.name={route.name}"
            query["fieldSelector"] = ",".join(filter(None, (query.get("fieldSelector"), named)))
        labels, fields = self._selectors(query)
        timeout_text = query.get("timeoutSeconds", "")
        if timeout_text and not timeout_text.isdigit():
            raise errors.bad_request(f"timeoutSeconds: Invalid value: {timeout_text!r}")
        events = self.watches.open(WatchRequest(
            route.res, route.namespace, labels, fields, query.get("resourceVersion", ""),
            float(timeout_text) if timeout_text else None,
            query.get("allowWatchBookmarks", "") in ("true", "1")))
        return Response(200, "", stream=events)

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _selectors(
        query: dict[str, str]
    ) -> tuple[selectors.LabelSelector, selectors.FieldSelector]:
        try:
            return (selectors.parse_label_selector(query.get("labelSelector", "")),
                    selectors.parse_field_selector(query.get("fieldSelector", "")))
        except selectors.SelectorError as exc:
            raise errors.bad_request(str(exc)) from None

    def _list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> Page:
        labels, fields = self._selectors(query)
        limit_text = query.get("limit", "") or "0"
        if not limit_text.isdigit():
            raise errors.bad_request(f"limit: Invalid value: {limit_text!r}")
        return self.store.list(res, namespace, labels, fields, int(limit_text),
                               query.get("continue", ""))

    def _list_body(self, req: Request, res: Resource, page: Page, query: dict[str, str]) -> Obj:
        meta: Obj = {"resourceVersion": page.resource_version}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        if self._wants_table(req):
            return table(res, page.items, meta, query.get("includeObject", ""))
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta,
                "items": [_strip_type_meta(item) for item in page.items]}

    @staticmethod
    def _wants_table(req: Request) -> bool:
        return req.method == "GET" and "as=Table" in (req.headers.get("Accept") or "")

    @staticmethod
    def _json_body(req: Request) -> Any:
        content_type = _media_type(req.headers.get("Content-Type"))
        if any(refused in content_type for refused in _REFUSED_BODY_TYPES):
            raise errors.unsupported_media_type(content_type, ["application/json"])
        try:
            return json.loads(req.body or b"null")
        except ValueError as exc:
            raise errors.bad_request(
                f"couldn't get version/kind; json parse error: {exc}") from None

    def _delete_options(self, req: Request) -> Obj:
        if not req.body.strip():
            return {}
        options = self._json_body(req)
        if not isinstance(options, dict):
            raise errors.bad_request("the body of a delete request must be DeleteOptions")
        return options

    @staticmethod
    def _patch_function(req: Request) -> Callable[[Obj], Any]:
        content_type = _media_type(req.headers.get("Content-Type"))
        if content_type not in patch.PATCH_TYPES:
            raise errors.unsupported_media_type(content_type, patch.PATCH_TYPES)
        try:
            document = json.loads(req.body or b"null")
        except ValueError as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from None
        if content_type == patch.JSON_PATCH:
            operations = document

            def apply(obj: Obj) -> Any:
                try:
                    return patch.json_patch(obj, operations)
                except patch.PatchError as exc:
                    raise ApiError(422, str(exc), "Invalid") from None

            return apply
        if not isinstance(document, dict):
            raise errors.bad_request("a merge patch must be a JSON object")
        return lambda obj: patch.merge_patch(obj, document)


def _dry_run(query: dict[str, str], body: Any) -> bool:
    in_body = isinstance(body, dict) and "All" in (body.get("dryRun") or [])
    return query.get("dryRun") == "All" or in_body
