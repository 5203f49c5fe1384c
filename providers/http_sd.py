"""The `http_sd` provider: a Prometheus HTTP SD endpoint's target groups as Services.

One GET per run. As Prometheus requires: HTTP 200, Content-Type application/json, a UTF-8
JSON list of target groups; an empty list is valid (no targets). Any other answer, or none,
fails the source, and the core leaves the cluster as it is (Prometheus keeps its last good
targets). The bearer token goes only to the configured host: a redirect to another host,
port or scheme drops the Authorization header.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

import urllib3
from pydantic import Field, field_validator, model_validator

from providers.prometheus_sd import DocumentError, TargetMappingOptions, parse_groups, to_discovery
from syncer.plugin import (
    ConfigPath,
    Discovery,
    PermanentSourceError,
    Provider,
    Secret,
    SourceError,
    TlsOptions,
    TransientSourceError,
    header_value_problem,
    redact_remote_message,
    split_http_url,
)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REDIRECTS = 5
USER_AGENT = "endpoints-sync"
_JSON_TYPE = re.compile(r"application/json\s*(;.*)?", re.IGNORECASE)
# Worth another try on the next run: the server is busy or broken for now.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpSdOptions(TargetMappingOptions, TlsOptions):
    """Options of an `http_sd` source."""

    url: str
    """The HTTP SD endpoint, http:// or https://."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, strict=True)
    """Bound on connecting and on reading the whole answer."""
    bearer_token: Secret | None = None
    """Sent as `Authorization: Bearer ...` (not with bearer_token_file)."""
    bearer_token_file: ConfigPath | None = None
    """File holding the bearer token, read on every run (a mounted Kubernetes Secret)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        split_http_url(v.strip(), credentials_instead="bearer_token")
        return v.strip()

    @field_validator("bearer_token")
    @classmethod
    def _token(cls, v: Secret | None) -> Secret | None:
        problem = header_value_problem(v.reveal()) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> HttpSdOptions:
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ValueError("give bearer_token or bearer_token_file, not both")
        return self


class HttpSdProvider(Provider[HttpSdOptions]):
    """Prometheus HTTP service discovery."""

    Options = HttpSdOptions
    summary = "targets of a Prometheus HTTP SD endpoint (job label or a fixed service)"

    def check(self) -> None:
        for option in ("bearer_token_file", "ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self.options, option)
            if path is not None and not path.is_file():
                raise self.context.config_error(option, f"file {path} not found")
        if self.options.bearer_token_file is not None:
            try:
                self._token()
            except SourceError as e:
                raise self.context.config_error("bearer_token_file", str(e)) from None

    def discover(self) -> Discovery:
        body = self._fetch()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentSourceError(f"{self._shown_url}: the answer is not UTF-8") from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            # A half-written answer from a server being updated: the next run may do.
            detail = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deep"
            raise TransientSourceError(f"{self._shown_url}: the answer is not JSON: "
                                       f"{detail}") from None
        try:
            groups = parse_groups(data, strict_keys=False,
                                  extra_labels={"__meta_url": self.options.url})
        except DocumentError as e:
            raise PermanentSourceError(f"{self._shown_url}: not an HTTP SD document: "
                                       f"{redact_remote_message(str(e))}") from None
        return to_discovery(groups, self.options, self.context.log)

    @property
    def _shown_url(self) -> str:
        """The URL for a message, without its query (which may carry a key)."""
        parts = urllib.parse.urlsplit(self.options.url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def _token(self) -> Secret | None:
        if self.options.bearer_token is not None:
            return self.options.bearer_token
        path = self.options.bearer_token_file
        if path is None:
            return None
        try:
            token = Secret.read(path)  # on every run: a rotated Secret is picked up
        except (OSError, UnicodeDecodeError) as e:
            raise PermanentSourceError(f"cannot read bearer_token_file {path}: "
                                       f"{type(e).__name__}") from None
        problem = header_value_problem(token.reveal())
        if problem:
            raise PermanentSourceError(f"bearer_token_file {path}: {problem}")
        return token

    def _pool(self) -> urllib3.PoolManager:
        opts = self.options
        timeout = urllib3.Timeout(connect=opts.timeout_seconds, read=opts.timeout_seconds)
        # Redirects are followed; urllib3 drops Authorization when one leaves the host.
        retries = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                redirect=MAX_REDIRECTS, raise_on_redirect=True,
                                raise_on_status=False)
        tls: dict[str, object] = {}
        if opts.url.lower().startswith("https://"):
            tls = {"cert_reqs": "CERT_REQUIRED" if opts.verify else "CERT_NONE",
                   "ca_certs": str(opts.ca_file) if opts.ca_file else None,
                   "cert_file": str(opts.cert_file) if opts.cert_file else None,
                   "key_file": str(opts.key_file) if opts.key_file else None}
            if not opts.verify:
                tls["assert_hostname"] = False
        return urllib3.PoolManager(num_pools=2, timeout=timeout, retries=retries,
                                   **tls)  # type: ignore[arg-type]

    def _fetch(self) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = self._token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        deadline = time.monotonic() + self.options.timeout_seconds
        pool = self._pool()
        try:
            response = pool.request("GET", self.options.url, headers=headers,
                                    preload_content=False)
            try:
                self._check_answer(response)
                return self._read(response, deadline)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as e:
            raise self._request_error(e) from None
        finally:
            pool.clear()

    def _check_answer(self, response: urllib3.BaseHTTPResponse) -> None:
        status = response.status
        if status != 200:
            snippet = redact_remote_message(response.read(2048).decode("utf-8", "replace"),
                                            limit=200)
            message = f"{self._shown_url}: HTTP {status}" + (f": {snippet}" if snippet else "")
            if status in _TRANSIENT_STATUS:
                raise TransientSourceError(message)
            raise PermanentSourceError(message)
        content_type = response.headers.get("Content-Type", "")
        if not _JSON_TYPE.fullmatch(content_type.strip()):
            shown = redact_remote_message(content_type, limit=80) or "none"
            raise PermanentSourceError(f"{self._shown_url}: expected Content-Type "
                                       f"application/json, got {shown}")

    def _read(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise PermanentSourceError(f"{self._shown_url}: the answer is larger than "
                                           f"{MAX_BODY_BYTES >> 20} MiB")
            if time.monotonic() > deadline:  # a server dripping bytes must not stall the run
                raise TransientSourceError(f"{self._shown_url}: no whole answer within "
                                           f"{self.options.timeout_seconds:g} s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _request_error(self, e: urllib3.exceptions.HTTPError) -> SourceError:
        reason = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
        if isinstance(reason, urllib3.exceptions.SSLError):
            return PermanentSourceError(f"{self._shown_url}: TLS failed: "
                                        f"{redact_remote_message(str(reason), limit=200)}")
        if isinstance(reason, urllib3.exceptions.ResponseError):  # too many redirects
            return PermanentSourceError(f"{self._shown_url}: more than {MAX_REDIRECTS} "
                                        "redirects")
        if isinstance(reason, urllib3.exceptions.NewConnectionError):  # a TimeoutError too
            return TransientSourceError(f"{self._shown_url}: cannot connect: "
                                        f"{redact_remote_message(str(reason), limit=200)}")
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return TransientSourceError(f"{self._shown_url}: no answer within "
                                        f"{self.options.timeout_seconds:g} s")
        return TransientSourceError(f"{self._shown_url}: request failed: "
                                    f"{type(reason).__name__}: "
                                    f"{redact_remote_message(str(reason), limit=200)}")
