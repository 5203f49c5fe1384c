"""Kubernetes I/O with the official client: list what we own, get, create, replace, delete.

Responses are read as raw JSON (`_preload_content=False`): building the client's model
objects for every listed item costs far more than the rest of a no-op run. Transient failures
(429, 5xx, timeouts, dropped connections) are retried with backoff; everything else surfaces
as a KubeError carrying the API server's own message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from syncer.errors import ConfigError, KubeError
from syncer.ownership import JSON

log = logging.getLogger("endpoints_sync")
T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
PAGE_SIZE = 500

# kind -> (API class, method suffix)
_KINDS: dict[str, tuple[type[Any], str]] = {
    "Service": (k8s.CoreV1Api, "service"),
    "Endpoints": (k8s.CoreV1Api, "endpoints"),
    "EndpointSlice": (k8s.DiscoveryV1Api, "endpoint_slice"),
}


def connect(kubeconfig: str | None = None, context: str | None = None,
            timeout: float = 30.0) -> Kube:
    """In-cluster when KUBERNETES_SERVICE_HOST is set (and no kubeconfig is named), else the
    kubeconfig: --kubeconfig, $KUBECONFIG, ~/.kube/config."""
    configuration = k8s.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig and not context:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, OSError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ConfigError(where, f"context {context}" if context else "",
                          f"cannot load the cluster configuration: {e}") from None
    # We retry ourselves, with one policy for every verb (urllib3 would retry some only).
    configuration.retries = False
    return Kube(k8s.ApiClient(configuration), timeout=timeout)


class Kube:
    def __init__(self, api_client: Any, timeout: float = 30.0, attempts: int = 5,
                 max_wait: float = 30.0) -> None:
        self._apis = {cls: cls(api_client) for cls in {c for c, _ in _KINDS.values()}}
        self._timeout = (min(10.0, timeout), timeout)
        self._attempts = attempts
        self._max_wait = max_wait

    # --- reads -------------------------------------------------------------------------

    def list(self, kind: str, label_selector: str, namespaces: Sequence[str] | None = None,
             page_size: int = PAGE_SIZE) -> list[JSON]:
        """Every object of `kind` matching the selector, in the namespaces (or all), paged."""
        items: list[JSON] = []
        scopes: Sequence[str | None] = namespaces or [None]
        for namespace in scopes:
            token: str | None = None
            while True:
                page = self._call(kind, "list", namespace=namespace,
                                  label_selector=label_selector, limit=page_size,
                                  _continue=token)
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
            obj = self._call(kind, "read", namespace=namespace, name=name)
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        obj.setdefault("kind", kind)
        return obj

    # --- writes ------------------------------------------------------------------------

    def create(self, obj: JSON) -> JSON:
        md = obj["metadata"]
        return self._call(obj["kind"], "create", namespace=md["namespace"], body=obj)

    def replace(self, obj: JSON) -> JSON:
        md = obj["metadata"]
        return self._call(obj["kind"], "replace", namespace=md["namespace"], name=md["name"],
                          body=obj)

    def delete(self, kind: str, namespace: str, name: str,
               resource_version: str | None = None) -> bool:
        """Delete; False when it was already gone. With `resource_version`, only that exact
        version is deleted (409 if the object changed since it was read)."""
        body = ({"preconditions": {"resourceVersion": resource_version}}
                if resource_version else None)
        try:
            self._call(kind, "delete", namespace=namespace, name=name, body=body)
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    # --- plumbing ----------------------------------------------------------------------

    def _call(self, kind: str, verb: str, namespace: str | None = None,
              **kwargs: Any) -> JSON:
        api_cls, suffix = _KINDS[kind]
        api = self._apis[api_cls]
        if namespace is None:
            method = getattr(api, f"{verb}_{suffix}_for_all_namespaces")
        else:
            method = getattr(api, f"{verb}_namespaced_{suffix}")
            kwargs["namespace"] = namespace
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        what = f"{verb} {kind} {namespace + '/' if namespace else ''}{kwargs.get('name', '')}"
        return self._with_retries(lambda: _raw(method, kwargs, self._timeout), what.strip())

    def _with_retries(self, fn: Callable[[], T], what: str) -> T:
        def wrapped() -> T:
            try:
                return fn()
            except ApiException as e:
                raise _api_error(e, what) from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise KubeError(f"{what}: no answer from the API server: "
                                f"{type(e).__name__}: {e}", 0, "Unreachable") from None

        max_wait = self._max_wait

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, KubeError) and error.retry_after is not None:
                return min(error.retry_after, max_wait)
            return float(wait_exponential_jitter(initial=0.2, max=5.0)(state))

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("%s (attempt %d of %d, retrying)", error, state.attempt_number,
                        self._attempts)

        retrying = retry(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self._attempts) | stop_after_delay(120),
            wait=wait, before_sleep=before_sleep, reraise=True,
        )
        return retrying(wrapped)()


def _raw(method: Callable[..., Any], kwargs: dict[str, Any],
         timeout: tuple[float, float]) -> JSON:
    response = method(_preload_content=False, _request_timeout=timeout, **kwargs)
    data = response.data
    result: JSON = json.loads(data) if data else {}
    return result


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, KubeError) and error.status in TRANSIENT_STATUSES


def _api_error(e: ApiException, what: str) -> KubeError:
    message, reason = e.reason or "", e.reason or ""
    try:
        status = json.loads(e.body or "{}")
        message = status.get("message") or message
        reason = status.get("reason") or reason
    except (ValueError, AttributeError):
        pass
    headers = e.headers or {}
    after = str(headers.get("Retry-After", "")) if hasattr(headers, "get") else ""
    return KubeError(f"{what}: {e.status} {reason}: {message}", e.status or 0, reason,
                     retry_after=float(after) if after.isdigit() else None)
