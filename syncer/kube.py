"""Kubernetes I/O with the official client: list what we own, get, create, replace, delete.

Requests go through the client's ApiClient (kubeconfig, auth, TLS, proxies: as the client's
generated API methods send them) and answers are read as raw JSON: building the client's
model objects for every listed item costs far more than the rest of a no-op run, and merely
importing the generated API classes (CoreV1Api and the ~260 models they import) took 0.6 s of
every run.

Retries, sized for a CronJob every few minutes: every request has REQUEST_TIMEOUT seconds to
connect and again to answer. Transient failures (429, 5xx, timeouts, dropped connections, an
API server that does not answer) are retried with exponential backoff (from BACKOFF_INITIAL,
plus up to BACKOFF_JITTER), at most ATTEMPTS attempts and at most BUDGET_TIMEOUTS request
timeouts' worth of time (30 s) per call; Retry-After is honoured, never beyond that budget.
Once a call has spent its budget without an answer, later calls make one attempt each until
the server answers again: an API server that went away costs a run seconds, not minutes.
$ENDPOINTS_SYNC_REQUEST_TIMEOUT sets the request timeout (and so the budget) in seconds.

Everything else surfaces at once as a KubeError carrying the API server's own message, and
for 401, 403 and 422 what to do about it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import config as k8s_config
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from syncer.environment import seconds_from_env
from syncer.errors import ConfigError, KubeError
from syncer.ownership import JSON

log = logging.getLogger("endpoints_sync")
T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
UNANSWERED = "Unanswered"  # KubeError.reason when no HTTP answer came back (retried)
TLS_FAILURE = "TLSFailure"  # ... when the TLS handshake failed (not retried: it will again)
PAGE_SIZE = 500
REQUEST_TIMEOUT = 10.0  # seconds to connect, and again to read the answer
ATTEMPTS = 5
BUDGET_TIMEOUTS = 3  # one call gives up after this many request timeouts' worth of time
BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_JITTER = 0.2, 5.0, 0.5
TIMEOUT_ENV = "ENDPOINTS_SYNC_REQUEST_TIMEOUT"
_BACKOFF = (wait_exponential(multiplier=BACKOFF_INITIAL, max=BACKOFF_MAX)
            + wait_random(0, BACKOFF_JITTER))
RBAC_FILE = "deploy/rbac.yaml"
EVENTS_RESOURCE = "events.events.k8s.io"  # as RBAC names it; Events are not one of _KINDS
ENDPOINTS_HINT = ("; once nothing in the cluster reads v1 Endpoints, set `write: "
                  "[endpointslices]` in the config (see the README's \"API warnings\")")

# kind -> (API group path, resource as the URL names it, resource as RBAC names it)
_KINDS: dict[str, tuple[str, str, str]] = {
    "Service": ("/api/v1", "services", "services"),
    "Endpoints": ("/api/v1", "endpoints", "endpoints"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices",
                      "endpointslices.discovery.k8s.io"),
}
_EVENTS_PATH = "/apis/events.k8s.io/v1"
# client method verb -> HTTP method
_HTTP_METHODS = {"list": "GET", "read": "GET", "create": "POST", "replace": "PUT",
                 "delete": "DELETE"}
# client method verb -> RBAC verb ("watch": a list method's watch=true, syncer/kubewatch.py)
_RBAC_VERBS = {"list": "list", "read": "get", "create": "create", "replace": "update",
               "delete": "delete", "watch": "watch"}


def connect(kubeconfig: str | None = None, context: str | None = None,
            timeout: float | None = None, attempts: int = ATTEMPTS) -> Kube:
    """As kubectl chooses: a kubeconfig when one is named (--kubeconfig, --context or
    $KUBECONFIG), else in-cluster when KUBERNETES_SERVICE_HOST is set, else ~/.kube/config."""
    timeout = timeout or request_timeout()
    configuration = Configuration()
    # Read here, not at the client's import: the client's default is fixed when imported.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not (kubeconfig or context):
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, OSError) as e:
        where = kubeconfig or "~/.kube/config"
        raise ConfigError(where, f"context {context}" if context else "",
                          f"cannot load the cluster configuration: {e}") from None
    # We retry ourselves, with one policy for every verb (urllib3 would retry some only).
    configuration.retries = False
    return Kube(ApiClient(configuration), timeout=timeout, attempts=attempts)


def request_timeout() -> float:
    """$ENDPOINTS_SYNC_REQUEST_TIMEOUT, or REQUEST_TIMEOUT."""
    return seconds_from_env(TIMEOUT_ENV, REQUEST_TIMEOUT, 600)


class Kube:
    def __init__(self, api_client: Any, timeout: float = REQUEST_TIMEOUT,
                 attempts: int = ATTEMPTS) -> None:
        self._api_client = api_client
        self._warned: set[str] = set()  # the API server's warnings logged so far (one Kube a run)
        self._warned_lock = threading.Lock()
        self._host = str(getattr(api_client.configuration, "host", "") or "the API server")
        self._timeout = timeout
        self._budget = BUDGET_TIMEOUTS * timeout
        self._attempts = attempts
        self._silent = threading.Event()  # set: the server stopped answering; try once each

    # --- reads -------------------------------------------------------------------------

    def list(self, kind: str, label_selector: str, namespaces: Sequence[str] | None = None,
             page_size: int = PAGE_SIZE) -> list[JSON]:
        """Every object of `kind` matching the selector, in the namespaces (or all), paged."""
        items: list[JSON] = []
        scopes: Sequence[str | None] = namespaces or [None]
        for namespace in scopes:
            token: str | None = None
            while True:
                page = self._call(kind, "list", namespace, query={
                    "labelSelector": label_selector, "limit": page_size, "continue": token})
                api_version = page.get("apiVersion", "v1")
                for item in page.get("items") or []:
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", api_version)
                    items.append(item)
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    break
        return items

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        try:
            obj = self._call(kind, "read", namespace, name)
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        obj.setdefault("kind", kind)
        return obj

    # --- writes ------------------------------------------------------------------------

    def create(self, obj: JSON) -> JSON:
        md = obj["metadata"]
        return self._call(obj["kind"], "create", md["namespace"], body=obj,
                          what_name=md.get("name"))

    def replace(self, obj: JSON) -> JSON:
        md = obj["metadata"]
        return self._call(obj["kind"], "replace", md["namespace"], md["name"], body=obj)

    def delete(self, kind: str, namespace: str, name: str,
               resource_version: str | None = None) -> bool:
        """Delete; False when it was already gone. With `resource_version`, only that exact
        version is deleted (409 if the object changed since it was read)."""
        body = ({"preconditions": {"resourceVersion": resource_version}}
                if resource_version else None)
        try:
            self._call(kind, "delete", namespace, name, body=body)
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    def create_event(self, event: JSON) -> JSON:
        """Create an events.k8s.io/v1 Event: one attempt, no retries, since Events are
        best-effort and must not slow a run down."""
        md = event["metadata"]
        path = _path(_EVENTS_PATH, "events", md["namespace"])
        request = _Request(f"create Event {md['namespace']}/{md['name']}", "create",
                           EVENTS_RESOURCE, md["namespace"])
        return self._with_retries(
            lambda t: self._json("POST", path, {}, event, t), request, attempts=1)

    # --- watch (syncer/kubewatch.py) ---------------------------------------------------

    def list_version(self, kind: str, label_selector: str, namespace: str | None) -> str:
        """The resourceVersion a LIST answers now, reading one item rather than all: where a
        watch of everything after this moment starts."""
        page = self._call(kind, "list", namespace, query={"labelSelector": label_selector,
                                                           "limit": 1})
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def open_watch(self, kind: str, label_selector: str, namespace: str | None,
                   resource_version: str, timeout_seconds: int, read_timeout: float) -> Any:
        """Open a watch (one attempt, no retries: the caller resumes) and return urllib3's
        streaming response, JSON lines, for the caller to read, shutdown() and close()."""
        group, plural, resource = _KINDS[kind]
        request = _Request(_what("watch", kind, namespace), "watch", resource, namespace)
        query = {"watch": "true", "allowWatchBookmarks": "true",
                 "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
                 "labelSelector": label_selector}

        def open_stream() -> Any:
            response = _send(self._api_client, "GET", _path(group, plural, namespace), query,
                             None, (self._timeout, read_timeout))
            self._warn(response.headers)
            return response

        return self._answered(open_stream, request)

    # --- plumbing ----------------------------------------------------------------------

    def _warn(self, headers: Any) -> None:
        """Log each distinct `Warning` the API server answers with once: Kubernetes 1.33+
        warns on every Endpoints write, and one line per object would bury everything."""
        for text in api_warnings(headers):
            with self._warned_lock:
                if text in self._warned:
                    continue
                self._warned.add(text)
            hint = ENDPOINTS_HINT if "Endpoints is deprecated" in text else ""
            log.warning("the API server warns: %s%s", text, hint, extra={"event": "api_warning"})

    def _call(self, kind: str, verb: str, namespace: str | None = None,
              name: str | None = None, body: JSON | None = None,
              query: dict[str, Any] | None = None, what_name: str | None = None) -> JSON:
        """One request about `kind` (`name` in the URL for read, replace, delete)."""
        group, plural, resource = _KINDS[kind]
        path = _path(group, plural, namespace, name)
        query = {k: v for k, v in (query or {}).items() if v is not None}
        request = _Request(_what(verb, kind, namespace, what_name or name), _RBAC_VERBS[verb],
                           resource, namespace)
        return self._with_retries(
            lambda t: self._json(_HTTP_METHODS[verb], path, query, body, t), request)

    def _json(self, method: str, path: str, query: dict[str, Any], body: JSON | None,
              timeout: float) -> JSON:
        response = _send(self._api_client, method, path, query, body, (timeout, timeout))
        self._warn(response.headers)
        data = response.data
        result: JSON = json.loads(data) if data else {}
        return result

    def _answered(self, fn: Callable[[], T], request: _Request) -> T:
        """One request: its errors as KubeErrors; any answer ends the "silent" state."""
        try:
            result = fn()
        except ApiException as e:
            if e.status:
                self._silent.clear()  # an answer, if not the one hoped for
                self._warn(e.headers)
            raise _api_error(e, request) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _unanswered(e, request, self._host) from None
        self._silent.clear()
        return result

    def _with_retries(self, fn: Callable[[float], T], request: _Request,
                      attempts: int | None = None) -> T:
        """`fn(timeout)` until it succeeds, fails for good, or the attempts or the time
        budget are spent; the last error is raised, saying how long it was tried."""
        started = time.monotonic()
        budget = self._budget
        attempts = 1 if self._silent.is_set() else (attempts or self._attempts)

        def attempt() -> T:
            left = budget - (time.monotonic() - started)
            return self._answered(lambda: fn(max(0.5, min(self._timeout, left))), request)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, KubeError) and error.retry_after is not None:
                return error.retry_after  # beyond the budget: stop_before_delay gives up
            return float(_BACKOFF(state))

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("%s (attempt %d of %d; retrying in %.1f s)", error,
                        state.attempt_number, attempts, state.upcoming_sleep)

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(attempts) | stop_before_delay(budget),
            wait=wait, before_sleep=before_sleep, reraise=True,
        )
        try:
            return retrying(attempt)
        except KubeError as e:
            if not _is_transient(e):
                raise
            if e.reason == UNANSWERED:
                self._silent.set()
            tries = retrying.statistics.get("attempt_number", 1)
            raise KubeError(f"{e} (gave up after {tries} attempt{'s' * (tries > 1)} in "
                            f"{time.monotonic() - started:.1f} s)", e.status, e.reason,
                            e.retry_after) from None


@dataclass(frozen=True)
class _Request:
    """What a call was, for messages: its description and the RBAC rule it needs."""

    what: str
    verb: str
    resource: str
    namespace: str | None

    def rbac_hint(self) -> str:
        where = (f"in namespace {self.namespace}" if self.namespace else
                 "in all namespaces (a ClusterRole; or list the namespaces in the config's "
                 "`namespaces:` and grant a Role in each)")
        return (f"the ServiceAccount (or kubeconfig user) needs `{self.verb}` on "
                f"{self.resource} {where}: see {RBAC_FILE}")


def _what(verb: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """A request as messages name it: `read Service ns/name`, `list Service (all namespaces)`."""
    if name:
        return f"{verb} {kind} {namespace}/{name}"
    return f"{verb} {kind} " + (f"in namespace {namespace}" if namespace else "(all namespaces)")


def _path(group: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """`/api/v1/namespaces/NS/services/NAME`; without a namespace, across all of them."""
    where = f"/namespaces/{quote(namespace, safe='')}" if namespace is not None else ""
    return f"{group}{where}/{plural}" + (f"/{quote(name, safe='')}" if name else "")


def _send(api_client: ApiClient, method: str, path: str, query: dict[str, Any],
          body: JSON | None, timeout: tuple[float, float]) -> Any:
    """One request as the client's generated methods send it (the kubeconfig's auth, TLS,
    proxy), answered by urllib3's response, not yet read (a watch streams it); a non-2xx
    answer raises the client's ApiException, as those methods do."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method_, url, headers, body_, post = api_client.param_serialize(
        method, path, query_params=list(query.items()), header_params=headers, body=body,
        auth_settings=["BearerToken"])
    answer = api_client.call_api(method_, url, headers, body_, post, _request_timeout=timeout)
    if not 200 <= answer.status <= 299:
        answer.read()  # type: ignore[no-untyped-call]
        raise ApiException.from_response(http_resp=answer, body=None, data=None)
    return answer.response


# RFC 9111 warning-value: warn-code SP warn-agent SP quoted warn-text [SP quoted warn-date]
_WARNING = re.compile(r'(\d{3}) +\S+ +"((?:[^"\\]|\\.)*)"(?: +"[^"]*")?')


def api_warnings(headers: Any) -> list[str]:
    """The texts of every `Warning` header in an answer (several may share one header,
    comma-separated, as kube-apiserver sends them)."""
    if not headers or not hasattr(headers, "get"):
        return []
    values = (headers.getlist("Warning") if hasattr(headers, "getlist")
              else [headers.get("Warning") or ""])
    texts = []
    for value in values:
        found = [re.sub(r"\\(.)", r"\1", m.group(2)) for m in _WARNING.finditer(value)]
        texts.extend(found or ([value.strip()] if value.strip() else []))
    return texts


def _is_transient(error: BaseException) -> bool:
    return (isinstance(error, KubeError) and error.status in TRANSIENT_STATUSES
            and error.reason != TLS_FAILURE)


def _unanswered(e: Exception, request: _Request, host: str) -> KubeError:
    """One line for a request that got no HTTP answer at all."""
    if isinstance(e, urllib3.exceptions.NameResolutionError):
        why = "cannot resolve the API server's host name"
    elif isinstance(e, urllib3.exceptions.NewConnectionError):
        why = "connection refused" if "refused" in str(e).lower() else "cannot connect"
    elif isinstance(e, urllib3.exceptions.ConnectTimeoutError):
        why = "connecting timed out"
    elif isinstance(e, urllib3.exceptions.ReadTimeoutError):
        why = "no answer within the request timeout"
    elif isinstance(e, urllib3.exceptions.ProtocolError):
        why = "the connection was closed without an answer"
    else:
        why = f"{type(e).__name__}: {_one_line(str(e))}"
    return KubeError(f"{request.what}: no answer from {host}: {why}", 0, UNANSWERED)


def _api_error(e: ApiException, request: _Request) -> KubeError:
    what = request.what
    if not e.status:
        # The client turns TLS failures into a status-0 ApiException ("SSLError\n...").
        text = _one_line(str(e.reason or "")).removeprefix("SSLError ")
        return KubeError(f"{what}: TLS failure talking to the API server: {text}", 0,
                         TLS_FAILURE)
    message, reason = e.reason or "", e.reason or ""
    causes: list[Any] = []
    try:
        status = json.loads(e.body or "{}")
        message = status.get("message") or message
        reason = status.get("reason") or reason
        causes = (status.get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        pass
    headers = e.headers or {}
    after = str(headers.get("Retry-After", "")) if hasattr(headers, "get") else ""
    retry_after = float(after) if after.isdigit() else None
    if e.status == 401:
        text = ("the API server refused the credentials: check the kubeconfig user or the "
                "ServiceAccount token")
    elif e.status == 403:
        text = f"{_one_line(message)}; {request.rbac_hint()}"
    elif e.status == 422 and causes:
        text = "rejected as invalid (not retried): " + "; ".join(
            ": ".join(str(c[k]) for k in ("field", "message") if c.get(k)) for c in causes
            if isinstance(c, dict))
    else:
        text = _one_line(message)
    return KubeError(f"{what}: {e.status} {reason}: {text}", e.status, reason,
                     retry_after=retry_after)


def _one_line(text: str) -> str:
    return " ".join(text.split())
