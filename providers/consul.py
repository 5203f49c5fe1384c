"""The `consul` provider: Consul services and their healthy instances as selectorless Services.

consul-k8s catalog sync makes each Consul service an ExternalName Service that points at
Consul DNS. This provider makes a ClusterIP Service instead, whose endpoints are the
instances' own addresses, so Pods reach them through kube-proxy without Consul DNS.

One run: one catalog request (catalog mode only), then one health request per service with
bounded concurrency. Any request that fails fails the whole source, so the core leaves every
Service this source feeds exactly as it is; an answer that is not JSON or not of the expected
shape counts as a failed request. One malformed instance (no or bad address or port), or a
catalog name no `rename` makes a valid Service name, is left out with a warning instead: it
must not freeze the source's other Services. Contradictory data for one Service (two Consul
services on one name; instances on different ports without `port`) leaves that Service as it
is (`Kept`).

`run --watch`: `ConsulProvider.watch` follows the same reads as blocking queries (its
docstring; the rules are in providers/consul_watch.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from providers.consul_watch import Pace, blocking_params, follow
from syncer.plugin import (
    Backend,
    ConfigError,
    ConfigPath,
    Discovery,
    Emit,
    Kept,
    PermanentSourceError,
    PortNumber,
    Provider,
    Secret,
    ServiceName,
    ServicePort,
    SourceError,
    TlsOptions,
    TransientSourceError,
    address_problem,
    group_services,
    header_value_problem,
    import_optional,
    is_dns_label,
    is_service_name,
    port_name_problem,
    redact_remote_message,
    service_name_problem,
    split_http_url,
)

DEFAULT_URL = "http://127.0.0.1:8500"
ANNOTATION_SERVICE = "consul.endpoints-sync.io/service"
ANNOTATION_DATACENTER = "consul.endpoints-sync.io/datacenter"
HEALTH_ORDER = {"passing": 0, "warning": 1, "critical": 2}
AddressSource = Literal["service", "node", "lan", "wan"]
Block = tuple[int, float]
"""A blocking query's (index, wait seconds); index 0 reads at once."""
NO_BLOCK: Block = (0, 0.0)


# --- options -------------------------------------------------------------------------------


def _default_url() -> str:
    return os.environ.get("CONSUL_HTTP_ADDR", "").strip() or DEFAULT_URL


def normalise_url(value: str) -> str:
    """`host:port`, `http://host:port` or `https://host` as `scheme://host:port`.

    Like Consul's own clients, an address without a scheme means http, and a URL without a
    port takes the scheme's (80/443): Consul's docs ask for the port anyway.
    """
    text = value.strip()
    if not text:
        raise ValueError("expected a URL like http://consul.example:8500 or host:port")
    parts = split_http_url(text if "://" in text else f"http://{text}",
                           credentials_instead="token or token_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"expected scheme://host:port without a path or query, got {text!r}")
    host = str(parts.hostname)
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def kube_name(consul_name: str, prefix: str, rename: Mapping[str, str]) -> str:
    """The Kubernetes Service name for a Consul service: `rename` wins, else prefix + name."""
    return rename.get(consul_name, f"{prefix}{consul_name}")


def _name_problem(name: str) -> str | None:
    """The shared Service name rule, with the way out for a name that comes from Consul."""
    problem = service_name_problem(name)
    return f"{problem}; map it with `rename`" if problem else None


class ConsulOptions(TlsOptions):
    """Options of a `consul` source. Field order is the order `endpoints-sync providers` shows.

    The target namespace is the source's core-owned `namespace` key."""

    url: str = Field(default_factory=_default_url, validate_default=True,
                     description="Consul HTTP API: http(s)://host:port or host:port "
                     "(default $CONSUL_HTTP_ADDR, else http://127.0.0.1:8500)")
    datacenter: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$",
                                   description="datacenter to read (default: the agent's)")
    token: Secret | None = Field(default=None, description="ACL token, sent as the "
                                 "X-Consul-Token header (default $CONSUL_HTTP_TOKEN)")
    token_file: ConfigPath | None = Field(default=None, description="file holding the ACL "
                                          "token, read on every run (not with `token`)")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, strict=True,
                                   description="connect and read timeout of each request")
    consistency: Literal["default", "consistent", "stale"] = Field(
        default="stale", description="read consistency mode of every request")
    concurrency: int = Field(default=8, ge=1, le=64, strict=True,
                             description="health requests in flight")
    name_prefix: str = Field(default="", description="prefix of every Service name")
    rename: dict[str, ServiceName] = Field(default_factory=dict, description="Consul name -> "
                                           "Service name (used as is, without name_prefix)")
    services: tuple[str, ...] | None = Field(default=None, description="Consul services to "
                                             "sync; leave out to sync the whole catalog")
    tags: tuple[str, ...] = Field(default=(), description="instances must carry all of these")
    exclude_tags: tuple[str, ...] = Field(default=(), description="instances carrying any of "
                                          "these are left out (catalog mode: whole services)")
    filter: str | None = Field(default=None, min_length=1, description="Consul filter "
                               "expression on health entries (Service.Meta.x, Node.Meta.x ...)")
    catalog_filter: str | None = Field(default=None, min_length=1, description="catalog mode: "
                                       "filter expression on the catalog (ServiceMeta.x ...)")
    passing_only: bool = Field(default=True, strict=True, description="publish only instances "
                               "whose checks all pass; otherwise others are published as not "
                               "ready")
    port: PortNumber | None = Field(default=None, description="Service port (default: the "
                                    "instances' port when they all agree)")
    port_name: str = Field(default="", description="name of the Service port ('' = unnamed)")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="port protocol")
    address_source: AddressSource = Field(default="service", description="service | node | "
                                          "lan | wan: which address of an instance to publish")
    zone_node_meta: str | None = Field(default="zone", min_length=1, description="node meta "
                                       "key whose value is the endpoint's zone (null: none)")
    watch_wait: float = Field(default=300.0, ge=1, le=600, strict=True, description="run "
                              "--watch: seconds each blocking query waits for a change (1-600; "
                              "Consul's default is 300, its maximum 600)")
    watch_concurrency: int = Field(default=64, ge=2, le=190, strict=True, description="run "
                                   "--watch: blocking requests held open at most (one per "
                                   "service, plus the catalog's); with more services, one "
                                   "watch on all checks instead (below Consul's default of 200 "
                                   "connections per client)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return normalise_url(v)

    @field_validator("token")
    @classmethod
    def _token_usable(cls, v: Secret | None) -> Secret | None:
        if v is None:
            return None
        text = v.reveal().strip()
        problem = header_value_problem(text)
        if problem:
            raise ValueError(problem)
        return Secret(text)

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        # A prefix is the start of a DNS-1035 label: whatever follows it ends the label.
        if v and (len(v) > 62 or not is_service_name(f"{v}x")):
            raise ValueError("expected lowercase letters, digits and '-', starting with a "
                             f"letter, at most 62, got {v!r}")
        return v

    @field_validator("services")
    @classmethod
    def _explicit_names(cls, v: tuple[str, ...] | None,
                        info: ValidationInfo) -> tuple[str, ...] | None:
        # Explicit names are known now: their Service names are checked at load time, so
        # `endpoints-sync validate` catches them instead of a warning at every run.
        if v is None:
            return None
        if not v:
            raise ValueError("expected at least one service (or leave `services` out to sync "
                             "the whole catalog)")
        prefix = info.data.get("name_prefix", "")
        rename = info.data.get("rename", {})
        first: dict[str, str] = {}
        for i, name in enumerate(v):
            if not name:
                raise ValueError(f"services[{i}] is empty")
            target = kube_name(name, prefix, rename)
            if problem := _name_problem(target):
                raise ValueError(f"services[{i}] {name!r}: {problem}")
            if target in first:
                raise ValueError(f"services[{i}] {name!r} and {first[target]!r} both map to "
                                 f"Service {target!r}")
            first[target] = name
        unused = sorted(set(rename) - set(v))
        if unused:
            raise ValueError(f"rename names {unused[0]!r}, which is not in services")
        return v

    @field_validator("port_name")
    @classmethod
    def _port_name(cls, v: str) -> str:
        # "" is an unnamed port; anything else follows the shared port name rule.
        if v and (problem := port_name_problem(v)):
            raise ValueError(problem)
        return v

    @model_validator(mode="before")
    @classmethod
    def _token_from_env(cls, data: Any) -> Any:
        # Consul's own default. Applied only when neither token nor token_file is given, so
        # that token_file plus an inherited environment is not "both given".
        if isinstance(data, dict) and data.get("token") is None \
                and data.get("token_file") is None:
            env = os.environ.get("CONSUL_HTTP_TOKEN", "").strip()
            if env:
                return {**data, "token": env}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ConsulOptions:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        if self.catalog_filter is not None and self.services is not None:
            raise ValueError("catalog_filter applies to catalog mode only (without `services`)")
        return self

    @property
    def catalog_mode(self) -> bool:
        return self.services is None


# --- what Consul says about one instance (pure) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Instance:
    """One entry of /v1/health/service/<name>, reduced to what the Service needs."""

    service_id: str
    node: str
    node_id: str
    datacenter: str
    endpoints: tuple[tuple[str, int], ...]
    """(address, port) pairs to publish: two for a dual-stack tagged address; port 0 = none."""
    health: str
    tags: frozenset[str]
    kind: str
    zone: str | None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """Consul writes Address/Port; its docs show address/port. Accept both."""
    return mapping.get(name, mapping.get(name.lower()))


def _tagged(entries: Mapping[str, Any], kind: str, port: int) -> list[tuple[str, int]]:
    """The `kind` (lan|wan) tagged addresses of a service or node.

    The plain key (`wan`) wins: it is what operators set, while Consul agents fill
    `lan_ipv4`/`wan_ipv4` from the service address themselves. Otherwise both families are
    returned, so a dual-stack instance appears in both address families.
    """
    for keys in ([kind], [f"{kind}_ipv4", f"{kind}_ipv6"]):
        found = []
        for key in keys:
            value = entries.get(key)
            if isinstance(value, str) and value:  # node tagged addresses are plain strings
                found.append((value, port))
            elif isinstance(value, dict) and _text(_field(value, "Address")):
                found.append((_text(_field(value, "Address")),
                               _number(_field(value, "Port")) or port))
        if found:
            return found
    return []


def pick_endpoints(node: Mapping[str, Any], service: Mapping[str, Any],
                   source: AddressSource) -> list[tuple[str, int]]:
    """Which address(es) of an instance to publish, in the order Consul itself uses.

    `service`: Service.Address, else Node.Address (what Consul DNS answers). `node`:
    Node.Address. `lan`/`wan`: as Consul's BestAddress: the service's tagged address, else
    Service.Address, else the node's tagged address, else Node.Address.
    """
    port = _number(service.get("Port"))
    service_address = _text(service.get("Address"))
    node_address = _text(node.get("Address"))
    if source == "service":
        return [(service_address or node_address, port)]
    if source == "node":
        return [(node_address, port)]
    return (_tagged(_dict(service.get("TaggedAddresses")), source, port)
            or ([(service_address, port)] if service_address else [])
            or _tagged(_dict(node.get("TaggedAddresses")), source, port)
            or [(node_address, port)])


def is_port_number(port: int) -> bool:
    return 1 <= port <= 65535


def _endpoint_problem(address: str, port: int) -> str | None:
    """Why Consul's (address, port) for an instance cannot be published, if it cannot.

    Consul accepts any text as an address: anything but an IP or a DNS name is malformed.
    """
    if not address:
        return "it has no address"
    if (problem := address_problem(address)) is not None:
        return f"its address: {problem}"
    if not port:
        return "it has no port (set `port`)"
    if not is_port_number(port):
        return f"its port {port} is not a port number (1-65535)"
    return None


def worst_health(checks: Any) -> str:
    """The instance's health: its worst check (node checks included, as Consul counts them)."""
    worst = "passing"
    for check in checks if isinstance(checks, list) else []:
        status = _text(_dict(check).get("Status"))
        if HEALTH_ORDER.get(status, 2) > HEALTH_ORDER[worst]:
            # Unknown statuses (and maintenance, which is critical) count as critical.
            worst = status if status in HEALTH_ORDER else "critical"
    return worst


def parse_instance(entry: Any, source: AddressSource, zone_key: str | None) -> Instance:
    node = _dict(_dict(entry).get("Node"))
    service = _dict(_dict(entry).get("Service"))
    node_meta = _dict(node.get("Meta"))
    zone = _text(node_meta.get(zone_key)) if zone_key else ""
    tags = service.get("Tags")
    return Instance(
        service_id=_text(service.get("ID")),
        node=_text(node.get("Node")),
        node_id=_text(node.get("ID")),
        datacenter=_text(node.get("Datacenter")),
        endpoints=tuple(pick_endpoints(node, service, source)),
        health=worst_health(_dict(entry).get("Checks")),
        tags=frozenset(t for t in tags if isinstance(t, str)) if isinstance(tags, list)
        else frozenset(),
        kind=_text(service.get("Kind")),
        zone=zone or None,
    )


# --- talking to Consul ----------------------------------------------------------------------


class ConsulApi:
    """The two reads this provider makes, through py-consul, with errors in our own types.

    Requests go through py-consul's HTTP client (`Consul.http.get`) rather than
    `health.service()`, because py-consul 1.8 drops the consistency mode on health reads and
    hides the response headers. Each worker thread has its own client: a requests Session
    shared by more threads than its pool size discards connections with a warning.
    """

    def __init__(self, options: ConsulOptions, token: Secret | None,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._consul = import_optional("consul", "consul", "consul")
        self._options = options
        self._token = token
        self._log = log
        parts = urllib.parse.urlsplit(options.url)
        self._host = parts.netloc.rsplit(":", 1)[0]
        self._port = parts.port
        self._scheme = parts.scheme
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.http.session.close()
            self._clients.clear()

    def catalog_services(self, block: Block = NO_BLOCK) -> tuple[dict[str, list[str]], int | None]:
        """The catalog's services and their tags, and the answer's X-Consul-Index."""
        params = self._common_params(block)
        if self._options.catalog_filter:
            params.append(("filter", self._options.catalog_filter))
        data, index = self._get("/v1/catalog/services", params)
        if not isinstance(data, dict):
            raise self._unexpected("/v1/catalog/services", "a map of service names")
        return {str(k): [t for t in v if isinstance(t, str)] if isinstance(v, list) else []
                for k, v in data.items()}, index

    def health_service(self, name: str, passing: bool,
                       block: Block = NO_BLOCK) -> tuple[list[Any], int | None]:
        path = f"/v1/health/service/{name}"
        params = self._common_params(block)
        if passing:
            params.append(("passing", "1"))
        params.extend(("tag", tag) for tag in self._options.tags)
        if self._options.filter:
            params.append(("filter", self._options.filter))
        data, index = self._get(path, params)
        if not isinstance(data, list):
            raise self._unexpected(path, "a list of health entries")
        return data, index

    def health_checks(self, block: Block) -> tuple[list[Any], int | None]:
        """Every check of the datacenter (the change detector of a large watch)."""
        path = "/v1/health/state/any"
        data, index = self._get(path, self._common_params(block))
        if not isinstance(data, list):
            raise self._unexpected(path, "a list of checks")
        return data, index

    def _common_params(self, block: Block = NO_BLOCK) -> list[tuple[str, str]]:
        params = blocking_params(*block)
        if self._options.datacenter:
            params.append(("dc", self._options.datacenter))
        if self._options.consistency != "default":
            params.append((self._options.consistency, "1"))
        return params

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            verify: bool | str = (str(self._options.ca_file) if self._options.ca_file
                                  else self._options.verify)
            cert = ((str(self._options.cert_file), str(self._options.key_file))
                    if self._options.key_file else
                    str(self._options.cert_file) if self._options.cert_file else None)
            # host, port and scheme are always given, so py-consul reads no CONSUL_* variable
            # for them; the token is never handed to it (it prefers $CONSUL_HTTP_TOKEN).
            client = self._consul.Consul(
                host=self._host, port=self._port, scheme=self._scheme, verify=verify,
                cert=cert, connections_timeout=self._options.timeout_seconds)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _get(self, path: str, params: list[tuple[str, str]]) -> tuple[Any, int | None]:
        """The decoded answer and its X-Consul-Index (None when absent or not a number).
        py-consul sets the read timeout of a blocking query to timeout + wait + wait/16."""
        from consul.callback import CB  # only ever imported with consul itself

        headers = {"X-Consul-Token": self._token.reveal()} if self._token else {}

        def decode(response: Any) -> tuple[Any, Mapping[str, str]]:
            return CB.json(allow_404=False)(response), response.headers

        try:
            data, response_headers = self._client().http.get(
                decode, path, params=params, headers=headers)
        except Exception as e:
            raise self._translate(e, path) from e
        self._note_headers(path, response_headers)
        index = response_headers.get("X-Consul-Index", "")
        return data, int(index) if index.isdigit() else None

    def _note_headers(self, path: str, headers: Mapping[str, str]) -> None:
        log = self._log
        if headers.get("X-Consul-Results-Filtered-By-ACLs", "").lower() == "true":
            log.warning("Consul left results out of %s: the ACL token may lack "
                        "service:read or node:read", path)
        if headers.get("X-Consul-KnownLeader", "true").lower() == "false":
            log.warning("the Consul server has no known leader; %s may be stale", path)

    def _translate(self, e: Exception, path: str) -> SourceError:
        """py-consul's and requests' errors as transient or permanent source errors."""
        import requests

        exc = self._consul.exceptions
        where = f"Consul at {self._options.url} (GET {path})"
        # No Consul error echoes a token, but a proxy's might.
        detail = redact_remote_message(str(e))
        if isinstance(e, exc.ACLPermissionDenied | exc.ACLDisabled):
            return PermanentSourceError(f"{where}: access denied ({detail}); check the token "
                                        "and its service:read and node:read rules")
        if isinstance(e, exc.BadRequest | exc.NotFound):
            return PermanentSourceError(f"{where}: request refused: {detail}")
        if isinstance(e, exc.ClientError):
            if detail.startswith("429"):
                return TransientSourceError(f"{where}: rate limited: {detail}")
            return PermanentSourceError(f"{where}: request refused: {detail}")
        if isinstance(e, exc.ConsulException):
            if detail.startswith("Failed to decode JSON"):
                # A proxy's error page or a cut body; py-consul quotes all of it: do not.
                return TransientSourceError(f"{where}: malformed answer, not JSON")
            if "No path to datacenter" in detail:
                return PermanentSourceError(f"{where}: unknown datacenter "
                                            f"{self._options.datacenter!r}: {detail}")
            return TransientSourceError(f"{where}: server error: {detail}")
        if isinstance(e, requests.exceptions.SSLError):
            return PermanentSourceError(f"{where}: TLS failed: {detail}")
        if isinstance(e, requests.exceptions.Timeout):
            return TransientSourceError(f"{where}: no answer within "
                                        f"{self._options.timeout_seconds:g} s: {detail}")
        if isinstance(e, requests.exceptions.RequestException):
            return TransientSourceError(f"{where}: unreachable: {detail}")
        return TransientSourceError(f"{where}: {type(e).__name__}: {detail}")

    def _unexpected(self, path: str, expected: str) -> TransientSourceError:
        return TransientSourceError(f"Consul at {self._options.url} (GET {path}): malformed "
                                    f"answer, expected {expected}")


# --- the provider --------------------------------------------------------------------------


class ConsulProvider(Provider[ConsulOptions]):
    """Consul services (listed, or the whole catalog) with their instances as endpoints."""

    Options = ConsulOptions
    summary = "Consul services and their healthy instances (health API), as ClusterIP Services"
    optional_imports: ClassVar[Mapping[str, str]] = {"consul": "consul"}

    def check(self) -> None:
        """For `endpoints-sync validate`: the files the options name exist and the token file
        holds a usable token. Contacts nothing."""
        self._local_inputs()

    def discover(self) -> Discovery:
        api = self._api()
        try:
            names, collisions = self._selected_names(api)
            fetched = self._fetch_all(api, list(names))
        finally:
            api.close()
        return self._services(names, fetched) + Discovery(kept=collisions)

    def watch(self, emit: Emit, stop: threading.Event) -> None:
        """Follow Consul with blocking queries (providers/consul_watch.py has the rules).

        Catalog mode: one watch on the catalog (which services) and one on each service's
        health (the catalog's index does not move when only a check changes); with
        `services`: one health watch per service. Each change emits the complete state,
        built by discover()'s own code from the answers held. A failed request emits
        nothing and is retried after a backoff; a permanent failure (access denied) is
        raised, and the core calls watch() again, which re-reads the token file.

        Threads: one per blocking request, each a daemon thread (a blocked request may only
        end with its `wait`), at most `watch_concurrency` of them. When a source has more
        services than that, their health is followed instead through one blocking query on
        every check of the datacenter (/v1/health/state/any): a change there re-reads only
        the services whose checks changed, `concurrency` at a time. Returns as soon as
        `stop` is set; threads still blocked finish their request and emit nothing.
        """
        session = _WatchSession(self, self._api(), emit)
        session.start()
        try:
            # Woken 4 times a second to see whether a thread failed for good.
            while not stop.wait(0.25):
                if session.failure is not None:
                    raise session.failure
        finally:
            session.close()  # threads still blocked end with their request, emitting nothing

    def _api(self) -> ConsulApi:
        try:
            token = self._local_inputs()
        except ConfigError as e:
            # At run time a missing token or certificate is this source's trouble, like a bad
            # token: the source fails and the other sources are still applied.
            raise PermanentSourceError(str(e)) from None
        return ConsulApi(self.options, token, self.context.log)

    # -- inputs

    def _local_inputs(self) -> Secret | None:
        """Check the files the options name (already resolved); return the token."""
        for option in ("token_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self.options, option)
            if path is not None and not path.is_file():
                raise self.context.config_error(option, f"file {path} not found")
        return self._token()

    def _token(self) -> Secret | None:
        path = self.options.token_file
        if path is None:
            return self.options.token
        try:
            # Read on every run, so a rotated Kubernetes Secret is picked up.
            token = Secret.read(path)
        except (OSError, UnicodeDecodeError) as e:
            raise self.context.config_error(
                "token_file", f"cannot read {path}: {type(e).__name__}") from None
        problem = header_value_problem(token.reveal())
        if problem:
            raise self.context.config_error("token_file", f"{path}: {problem}")
        return token

    # -- which services

    def _selected_names(self, api: ConsulApi) -> tuple[dict[str, str], tuple[Kept, ...]]:
        """Consul name -> Service name, sorted by Consul name; and the Services to keep."""
        opts = self.options
        if opts.services is not None:
            return self._listed_names(), ()
        return self._catalog_names(api.catalog_services()[0])

    def _listed_names(self) -> dict[str, str]:
        opts = self.options
        return {n: kube_name(n, opts.name_prefix, opts.rename) for n in opts.services or ()}

    def _catalog_names(self, catalog: Mapping[str, Sequence[str]],
                       ) -> tuple[dict[str, str], tuple[Kept, ...]]:
        wanted = sorted(name for name, tags in catalog.items()
                        if name != "consul" and self._tags_match(tags))
        return self._map_names(wanted)

    def _tags_match(self, tags: Iterable[str]) -> bool:
        # In catalog mode the tags are the union over a service's instances: a service can
        # only match `tags` if the union has them all; any excluded tag leaves it out whole.
        have = set(tags)
        return have.issuperset(self.options.tags) and not have & set(self.options.exclude_tags)

    def _map_names(self, consul_names: Sequence[str]) -> tuple[dict[str, str], tuple[Kept, ...]]:
        opts = self.options
        mapped: dict[str, str] = {}
        for consul_name in consul_names:
            name = kube_name(consul_name, opts.name_prefix, opts.rename)
            if problem := _name_problem(name):
                # Unusable catalog data: dropped with a warning (the API's policy).
                self.context.log.warning("consul service %r left out: %s", consul_name, problem)
            else:
                mapped[consul_name] = name
        by_name: dict[str, list[str]] = defaultdict(list)
        for consul_name, name in mapped.items():
            by_name[name].append(consul_name)
        kept = []
        for name, both in sorted(by_name.items()):
            if len(both) > 1:
                # Contradictory data: leaving them out would let the core prune a Service
                # that exists, so it is kept as it is until `rename` tells them apart.
                kept.append(Kept(name, f"consul services {' and '.join(map(repr, sorted(both)))}"
                                 f" both map to Service {name!r}; tell them apart with "
                                 "`rename`"))
                for consul_name in both:
                    del mapped[consul_name]
        return mapped, tuple(kept)

    # -- fetching

    def _fetch_all(self, api: ConsulApi, names: list[str]) -> dict[str, tuple[Instance, ...]]:
        if not names:
            return {}
        workers = min(self.options.concurrency, len(names))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="consul") as pool:
            futures = [pool.submit(self._fetch, api, name) for name in names]
            try:
                return {name: f.result()[0] for name, f in zip(names, futures, strict=True)}
            except BaseException:
                # One failure fails the source: do not start the requests still queued.
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _fetch(self, api: ConsulApi, name: str,
               block: Block = NO_BLOCK) -> tuple[tuple[Instance, ...], int | None]:
        """A service's instances matching tags and filter: the passing ones (with
        `passing_only`), or, when none passes, all of them, which still tell the Service port
        and whether catalog mode selects the service at all. Only ready ones are published
        with `passing_only`. `block`: the first request is a blocking query; the index is
        that request's."""
        opts = self.options
        entries, index = api.health_service(name, passing=opts.passing_only, block=block)
        found = self._usable(entries)
        if found or not opts.passing_only or (not opts.catalog_mode and opts.port):
            return found, index
        return self._usable(api.health_service(name, passing=False)[0]), index

    def _usable(self, entries: list[Any]) -> tuple[Instance, ...]:
        opts = self.options
        instances = (parse_instance(e, opts.address_source, opts.zone_node_meta)
                     for e in entries)
        return tuple(i for i in instances
                     if not i.tags & set(opts.exclude_tags)
                     # Catalog mode syncs applications: not their Connect proxies and gateways.
                     and not (opts.catalog_mode and i.kind))

    # -- building the Services

    def _services(self, names: Mapping[str, str],
                  fetched: Mapping[str, tuple[Instance, ...]]) -> Discovery:
        """The shared port rule (group_services): `port` wins, else the one port the
        instances agree on; disagreeing instances keep their Service as it is."""
        opts = self.options
        consul_of = {name: consul_name for consul_name, name in names.items()}
        members = [(names[consul_name], backend)
                   for consul_name, instances in fetched.items()
                   for backend in self._backends(consul_name, instances)]
        ports = None if opts.port is None else (
            ServicePort(name=opts.port_name, port=opts.port, protocol=opts.protocol),)
        # Listed services are Services even when nothing matches; in catalog mode a service
        # no instance matches (tags, filter) is not selected at all.
        always = () if opts.catalog_mode else names.values()
        for consul_name in sorted(n for n, found in fetched.items() if opts.catalog_mode
                                  and not found):
            self.context.log.debug("consul service %r: no instance matches tags/filter; not "
                                   "selected", consul_name)
        grouped = group_services(members, ports=ports, port_name=opts.port_name,
                                 protocol=opts.protocol, always=always, log=self.context.log)
        specs = []
        for spec in grouped.services:
            consul_name = consul_of[spec.name]
            # Not-passing instances told the port; with passing_only they are not published.
            backends = tuple(b for b in spec.backends if b.ready or not opts.passing_only)
            self.context.log.debug("consul service %r -> Service %r: %d endpoints, %d ready",
                                   consul_name, spec.name, len(backends),
                                   sum(b.ready for b in backends))
            specs.append(dataclasses.replace(
                spec, backends=backends,
                annotations=self._annotations(consul_name, fetched.get(consul_name, ()))))
        kept = tuple(dataclasses.replace(k, reason=f"consul service {consul_of[k.name]!r}: "
                                         f"{k.reason}") for k in grouped.kept)
        return Discovery(tuple(specs), kept)

    def _annotations(self, consul_name: str, instances: Sequence[Instance]) -> dict[str, str]:
        annotations = {ANNOTATION_SERVICE: consul_name}
        datacenter = self.options.datacenter or next(
            (i.datacenter for i in instances if i.datacenter), "")
        if datacenter:
            annotations[ANNOTATION_DATACENTER] = datacenter
        return annotations

    def _backends(self, consul_name: str, instances: Sequence[Instance]) -> list[Backend]:
        seen: dict[tuple[str, int], Backend] = {}
        for inst in instances:
            ready = inst.health == "passing"
            for address, port in inst.endpoints:
                target = port or (self.options.port or 0)
                problem = _endpoint_problem(address, target)
                if problem:
                    # One malformed registration must not fail the source or its Service.
                    self.context.log.warning("consul service %r: instance %r on node %r left "
                                             "out: %s", consul_name, inst.service_id,
                                             inst.node, problem)
                    continue
                # The same address and port registered twice: ready if either is.
                key = (address, target)
                if key not in seen or (ready and not seen[key].ready):
                    seen[key] = self._backend(inst, address, target, ready)
        return list(seen.values())

    def _backend(self, inst: Instance, address: str, port: int, ready: bool) -> Backend:
        meta = {"consul.node": inst.node, "consul.service_id": inst.service_id}
        if inst.node_id:
            meta["consul.node_id"] = inst.node_id
        if inst.health != "passing":
            meta["consul.health"] = inst.health
        return Backend(address=address, ports={self.options.port_name: port}, ready=ready,
                       zone=inst.zone,
                       hostname=inst.node if is_dns_label(inst.node) else None, meta=meta)


# --- watching (run --watch) ----------------------------------------------------------------

CheckKey = tuple[str, str, str, str]
"""(node, check ID, service ID, status) of one check."""


def check_signatures(checks: Sequence[Any]) -> dict[str, frozenset[CheckKey]]:
    """Consul service name -> its checks and those of the nodes it runs on: when that
    changes, the service's health may have."""
    node_checks: dict[str, set[CheckKey]] = defaultdict(set)
    own: dict[str, set[CheckKey]] = defaultdict(set)
    nodes_of: dict[str, set[str]] = defaultdict(set)
    for check in checks:
        c = _dict(check)
        node, service = _text(c.get("Node")), _text(c.get("ServiceName"))
        key = (node, _text(c.get("CheckID")), _text(c.get("ServiceID")), _text(c.get("Status")))
        if service:
            own[service].add(key)
            nodes_of[service].add(node)
        else:
            node_checks[node].add(key)
    return {service: frozenset(keys.union(*(node_checks[n] for n in nodes_of[service])))
            for service, keys in own.items()}


class _WatchSession:
    """What one watch() call knows of the source, and the threads that keep it current.

    Every thread has its own ConsulApi (its own connection) and its own stop event, set when
    its service leaves the catalog or the session closes. The state changes under one lock,
    and is emitted under it, so emits come in order and each is complete: nothing is emitted
    before every selected service has been read once.
    """

    def __init__(self, provider: ConsulProvider, api: ConsulApi, emit: Emit) -> None:
        self._provider, self._emit = provider, emit
        self._options = provider.options
        self._log = provider.context.log
        self._pace = Pace(wait=provider.options.watch_wait)
        self._first_api: ConsulApi | None = api
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._names: dict[str, str] | None = None
        self._kept: tuple[Kept, ...] = ()
        self._fetched: dict[str, tuple[Instance, ...]] = {}
        self._health: dict[str, threading.Event] = {}
        """Per-service mode: Consul service -> the stop event of its health watch."""
        self._checks_stop: threading.Event | None = None
        """Checks mode (more services than watch_concurrency): its watch's stop event."""
        self._signatures: dict[str, frozenset[CheckKey]] = {}
        self.failure: BaseException | None = None

    # -- threads

    def start(self) -> None:
        if self._options.catalog_mode:
            self._spawn("catalog", self._closed, self._follow_catalog)
        else:
            with self._lock:
                self._set_names(self._provider._listed_names(), ())

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            for stop in self._health.values():
                stop.set()
            if self._checks_stop is not None:
                self._checks_stop.set()

    def _spawn(self, what: str, stop: threading.Event,
               body: Callable[[ConsulApi, threading.Event], None]) -> None:
        api, self._first_api = self._first_api or self._provider._api(), None

        def run() -> None:
            try:
                body(api, stop)
            except BaseException as e:  # reported by watch(), which raises it to the core
                if not stop.is_set():
                    self.failure = e
            finally:
                api.close()

        threading.Thread(target=run, name=f"consul-watch {what}", daemon=True).start()

    # -- the catalog (catalog mode)

    def _follow_catalog(self, api: ConsulApi, stop: threading.Event) -> None:
        provider = self._provider

        def fetch(index: int, wait: float) -> tuple[dict[str, list[str]], int | None]:
            return api.catalog_services(block=(index, wait))

        def deliver(catalog: dict[str, list[str]]) -> None:
            names, kept = provider._catalog_names(catalog)
            with self._lock:
                if not stop.is_set():
                    self._set_names(names, kept)

        follow(fetch, deliver, stop, self._pace, self._log, "the Consul catalog")

    def _set_names(self, names: dict[str, str], kept: tuple[Kept, ...]) -> None:
        """The selected services changed (or were read again): watch what is new, stop
        watching what is gone (called with the lock held)."""
        if names == self._names and kept == self._kept:
            return
        self._names, self._kept = names, kept
        self._fetched = {n: i for n, i in self._fetched.items() if n in names}
        budget = self._options.watch_concurrency - self._options.catalog_mode
        if len(names) <= budget:
            if self._checks_stop is not None:
                self._checks_stop.set()
                self._checks_stop, self._signatures = None, {}
            for gone in set(self._health) - set(names):
                self._health.pop(gone).set()
            for name in sorted(set(names) - set(self._health)):
                self._health[name] = stop = threading.Event()
                self._spawn(f"service {name}", stop, self._health_follower(name))
        else:
            for stop in self._health.values():
                stop.set()
            self._health.clear()
            if self._checks_stop is None:
                self._checks_stop = threading.Event()
                self._spawn("checks", self._checks_stop, self._follow_checks)
                self._log.info("watching %d Consul services through their checks "
                               "(more than watch_concurrency %d)", len(names),
                               self._options.watch_concurrency)
        self._publish()

    # -- one service's health (per-service mode)

    def _health_follower(self, name: str) -> Callable[[ConsulApi, threading.Event], None]:
        def body(api: ConsulApi, stop: threading.Event) -> None:
            def fetch(index: int, wait: float) -> tuple[tuple[Instance, ...], int | None]:
                return self._provider._fetch(api, name, block=(index, wait))

            def deliver(instances: tuple[Instance, ...]) -> None:
                with self._lock:
                    if not stop.is_set() and self._fetched.get(name) != instances:
                        self._fetched[name] = instances
                        self._publish()

            follow(fetch, deliver, stop, self._pace, self._log, f"Consul service {name!r}")
        return body

    # -- every check (checks mode)

    def _follow_checks(self, api: ConsulApi, stop: threading.Event) -> None:
        Round = tuple[dict[str, frozenset[CheckKey]], dict[str, tuple[Instance, ...]]]

        def fetch(index: int, wait: float) -> tuple[Round, int | None]:
            checks, returned = api.health_checks(block=(index, wait))
            signatures = check_signatures(checks)
            with self._lock:
                names = list(self._names or ())
                stale = [n for n in names if n not in self._fetched
                         or signatures.get(n) != self._signatures.get(n)]
            # Re-read only what changed, `concurrency` at a time, with a fresh connection set.
            reader = self._provider._api()
            try:
                return (signatures, self._provider._fetch_all(reader, stale)), returned
            finally:
                reader.close()

        def deliver(answer: Round) -> None:
            signatures, refreshed = answer
            with self._lock:
                if stop.is_set():
                    return
                self._signatures = signatures
                self._fetched.update((n, i) for n, i in refreshed.items()
                                     if n in (self._names or ()))
                if refreshed:
                    self._publish()

        follow(fetch, deliver, stop, self._pace, self._log, "the Consul checks")

    # -- the state

    def _publish(self) -> None:
        """Emit the complete state, if every selected service has been read (lock held)."""
        names = self._names
        if names is None or self._closed.is_set() or any(n not in self._fetched for n in names):
            return
        fetched = {n: self._fetched[n] for n in names}
        self._emit(self._provider._services(names, fetched) + Discovery(kept=self._kept))
