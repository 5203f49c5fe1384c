"""The http_sd provider against a real HTTP(S) server on 127.0.0.1, and end to end via the CLI."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from providers.http_sd import MAX_BODY_BYTES, HttpSdOptions, HttpSdProvider
from syncer.options import CONFIG_DIR
from syncer.plugin import (
    ConfigError,
    Discovery,
    PermanentSourceError,
    ServicePort,
    SourceContext,
    TransientSourceError,
    config_error_from,
)
from tests.cli import exited, run_sync
from tests.kubeapi import KubeApiServer
from tests.loopback_http import LoopbackHTTPServer
from tests.specs import slice_endpoints

TOKEN = "sd-bearer-7f3c9a1e-secret-value"


# --- the HTTP SD server double ---------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"[]"
    content_type: str = "application/json"
    location: str | None = None
    delay: float = 0.0


@dataclass
class SdServer:
    """An HTTP SD endpoint: `answers` by path (default `/sd`), `requests` (path, headers)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server: LoopbackHTTPServer | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/sd"

    def serve(self, groups: Any, path: str = "/sd") -> None:
        self.answers[path] = Answer(body=json.dumps(groups).encode())


def start(ssl_context: ssl.SSLContext | None = None) -> SdServer:
    sd = SdServer(scheme="https" if ssl_context else "http")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            sd.requests.append((path, dict(self.headers.items())))
            answer = sd.answers.get(path, Answer(404, b"no such path", "text/plain"))
            time.sleep(answer.delay)
            self.send_response(answer.status)
            if answer.location:
                self.send_header("Location", answer.location)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = LoopbackHTTPServer(0, Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    server.serve_in_thread("sd-double")
    sd.server = server
    return sd


@pytest.fixture
def sd() -> Iterator[SdServer]:
    server = start()
    yield server
    assert server.server is not None
    server.server.stop()


# --- helpers ---------------------------------------------------------------------------------


def context(tmp_path: Path) -> SourceContext:
    return SourceContext(source="sd", config_file=str(tmp_path / "config.yaml"),
                         field_path="sources[0]", config_dir=tmp_path)


def provider(tmp_path: Path, **options: Any) -> HttpSdProvider:
    opts = HttpSdOptions.model_validate({"timeout_seconds": 2, **options},
                                        context={CONFIG_DIR: tmp_path})
    return HttpSdProvider(opts, context(tmp_path))


def discover(tmp_path: Path, **options: Any) -> Discovery:
    return provider(tmp_path, **options).discover()


def backends(found: Discovery, name: str) -> list[tuple[str, dict[str, int], str | None]]:
    (spec,) = [s for s in found.services if s.name == name]
    return [(b.address, dict(b.ports), b.zone) for b in spec.backends]


def problem(tmp_path: Path, **options: Any) -> str:
    with pytest.raises(ValidationError) as e:
        HttpSdOptions.model_validate(options, context={CONFIG_DIR: tmp_path})
    error = config_error_from("c.yaml", e.value, prefix="sources[0]")
    return str(error)


# --- mapping -----------------------------------------------------------------------------------


def test_groups_by_job_with_target_ports_zones_ipv6_and_dns_names(
        sd: SdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sd.serve([
        {"targets": ["192.0.2.10:9100", "[2001:db8::0:1]:9100", "Node-3.Example.org.:9100"],
         "labels": {"job": "node", "__meta_zone": "zone-a"}},
        {"targets": ["192.0.2.20:8080", "192.0.2.21:8080", "192.0.2.300:8080", "bad:port:x:"],
         "labels": {"job": "web"}},
        {"targets": ["198.51.100.1:80"], "labels": {"team": "no-job-label"}},
        {"targets": ["198.51.100.2:80"], "labels": {"job": "Not_A_Name"}},
    ])
    caplog.set_level(logging.WARNING)

    found = discover(tmp_path, url=sd.url, service_label="job", zone_label="__meta_zone")

    assert [s.name for s in found.services] == ["node", "web"]
    assert backends(found, "node") == [
        ("192.0.2.10", {"": 9100}, "zone-a"), ("2001:db8::1", {"": 9100}, "zone-a"),
        ("node-3.example.org", {"": 9100}, "zone-a")]
    assert found.services[0].ports == (ServicePort(name="", port=9100),)
    assert [a for a, _, _ in backends(found, "web")] == ["192.0.2.20", "192.0.2.21"]
    assert found.kept == ()
    log = caplog.text
    assert "source 'sd': target group [1]: target dropped:" in log
    assert "192.0.2.300" in log
    assert "target group [2] dropped: it has no label 'job'" in log
    assert "Service name is not valid" in log and "Not_A_Name" in log
    assert "source 'sd': source 'sd'" not in log


def test_explicit_port_wins_and_targets_keep_their_own_ports(sd: SdServer,
                                                            tmp_path: Path) -> None:
    sd.serve([{"targets": ["192.0.2.1:8080", "192.0.2.2:8081", "192.0.2.3"],
               "labels": {"job": "api"}}])

    found = discover(tmp_path, url=sd.url, service="api-gw", port=443, port_name="https")

    (spec,) = found.services
    assert spec.name == "api-gw" and spec.ports == (ServicePort(name="https", port=443),)
    assert backends(found, "api-gw") == [("192.0.2.1", {"https": 8080}, None),
                                         ("192.0.2.2", {"https": 8081}, None),
                                         ("192.0.2.3", {}, None)]


def test_disagreeing_ports_keep_the_service_and_match_labels_select_groups(
        sd: SdServer, tmp_path: Path) -> None:
    sd.serve([{"targets": ["192.0.2.1:8080"], "labels": {"job": "api", "env": "prod"}},
              {"targets": ["192.0.2.2:8081"], "labels": {"job": "api", "env": "prod"}},
              {"targets": ["192.0.2.3:9000"], "labels": {"job": "db", "env": "prod"}},
              {"targets": ["192.0.2.4:9000"], "labels": {"job": "db", "env": "dev"}}])

    found = discover(tmp_path, url=sd.url, service_label="job", match_labels={"env": "prod"})

    assert [(s.name, [b.address for b in s.backends]) for s in found.services] == [
        ("db", ["192.0.2.3"])]
    (kept,) = found.kept
    assert kept.name == "api" and "ports 8080, 8081; set `port`" in kept.reason


def test_an_empty_list_is_valid_and_a_fixed_service_is_published_empty(
        sd: SdServer, tmp_path: Path) -> None:
    sd.serve([])
    assert discover(tmp_path, url=sd.url, service_label="job") == Discovery()
    found = discover(tmp_path, url=sd.url, service="web", port=80)
    assert [(s.name, s.backends) for s in found.services] == [("web", ())]
    # Without a port nothing tells it: the Service is left as it is, not pruned.
    assert discover(tmp_path, url=sd.url, service="web").kept[0].name == "web"


def test_rename_maps_label_values_that_are_not_service_names(sd: SdServer,
                                                             tmp_path: Path) -> None:
    sd.serve([{"targets": ["192.0.2.1:9100"], "labels": {"job": "node_exporter"}}])
    found = discover(tmp_path, url=sd.url, service_label="job",
                     rename={"node_exporter": "node-exporter"})
    assert [s.name for s in found.services] == ["node-exporter"]


# --- the bearer token ---------------------------------------------------------------------


def test_bearer_token_is_sent_and_never_shown(sd: SdServer, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    sd.serve([{"targets": ["192.0.2.1:80"], "labels": {"job": "a"}}])
    p = provider(tmp_path, url=sd.url, service_label="job", bearer_token=TOKEN)
    p.discover()
    assert sd.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(p.options) and TOKEN not in str(p.options.model_dump())

    # The server echoes the token in its refusal: the message cuts it out.
    sd.answers["/sd"] = Answer(401, f"bad token {TOKEN}".encode(), "text/plain")
    with pytest.raises(PermanentSourceError, match="HTTP 401") as e:
        p.discover()
    assert TOKEN not in str(e.value) and "[redacted]" in str(e.value)
    assert TOKEN not in caplog.text


def test_token_file_is_read_on_every_run(sd: SdServer, tmp_path: Path) -> None:
    sd.serve([])
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    p = provider(tmp_path, url=sd.url, service_label="job", bearer_token_file="token")
    p.check()
    p.discover()
    token_file.write_text("rotated-token")
    p.discover()
    assert [h["Authorization"] for _, h in sd.requests] == ["Bearer first-token",
                                                            "Bearer rotated-token"]
    token_file.unlink()
    with pytest.raises(ConfigError, match=r"sources\[0\]\.bearer_token_file: file .* not found"):
        p.check()
    with pytest.raises(PermanentSourceError, match="cannot read bearer_token_file"):
        p.discover()


def test_redirects_keep_the_token_on_the_host_and_drop_it_elsewhere(
        sd: SdServer, tmp_path: Path) -> None:
    other = start()
    try:
        other.serve([{"targets": ["192.0.2.9:80"], "labels": {"job": "moved"}}])
        sd.serve([{"targets": ["192.0.2.8:80"], "labels": {"job": "same"}}], path="/v2")
        sd.answers["/sd"] = Answer(302, b"", "text/plain", location="/v2")
        found = discover(tmp_path, url=sd.url, service_label="job", bearer_token=TOKEN)
        assert [s.name for s in found.services] == ["same"]
        assert sd.requests[-1] == ("/v2", sd.requests[-1][1])
        assert sd.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"

        sd.answers["/sd"] = Answer(307, b"", "text/plain", location=other.url)
        found = discover(tmp_path, url=sd.url, service_label="job", bearer_token=TOKEN)
        assert [s.name for s in found.services] == ["moved"]
        assert "Authorization" not in other.requests[-1][1]
    finally:
        assert other.server is not None
        other.server.stop()


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "error", "message"), [
    (Answer(500, b"boom"), TransientSourceError, "HTTP 500: boom"),
    (Answer(503, b""), TransientSourceError, "HTTP 503"),
    (Answer(429, b"slow down"), TransientSourceError, "HTTP 429"),
    (Answer(404, b"not here"), PermanentSourceError, "HTTP 404: not here"),
    (Answer(403, b"denied"), PermanentSourceError, "HTTP 403"),
    (Answer(200, b"[]", "text/html"), PermanentSourceError,
     "expected Content-Type application/json, got text/html"),
    (Answer(200, b"[]", ""), PermanentSourceError, "got none"),
    (Answer(200, b"[{\"targets\": [\"192.0.2.1:80\""), TransientSourceError, "not JSON"),
    (Answer(200, b"\xff\xfe[]"), PermanentSourceError, "not UTF-8"),
    (Answer(200, b"{\"targets\": []}"), PermanentSourceError,
     "not an HTTP SD document: expected a list of target groups, got a mapping"),
    (Answer(200, b"[null]"), PermanentSourceError, r"\[0\]: expected a target group"),
    (Answer(200, b"[{\"targets\": \"192.0.2.1:80\"}]"), PermanentSourceError,
     r"\[0\]\.targets: expected a list, got a string"),
    (Answer(200, b"[{\"targets\": [80]}]"), PermanentSourceError,
     r"\[0\]\.targets\[0\]: expected a string"),
    (Answer(200, b"[{\"targets\": [], \"labels\": {\"job\": 1}}]"), PermanentSourceError,
     r"\[0\]\.labels\.job: label values must be strings"),
    (Answer(302, b"", location="/sd"), PermanentSourceError, "more than 5 redirects"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_failed_fetches_raise_source_errors(sd: SdServer, tmp_path: Path, answer: Answer,
                                            error: type[Exception], message: str) -> None:
    sd.answers["/sd"] = answer
    with pytest.raises(error, match=message) as e:
        discover(tmp_path, url=sd.url, service_label="job")
    assert type(e.value) is error
    assert not str(e.value).startswith("source ")


def test_unknown_keys_in_an_answer_are_ignored_as_prometheus_does(sd: SdServer,
                                                                  tmp_path: Path) -> None:
    sd.answers["/sd"] = Answer(body=b'[{"targets": ["192.0.2.1:80"], "labels": {"job": "a"},'
                               b' "extra": 1}]', content_type="application/json; charset=utf-8")
    assert [s.name for s in discover(tmp_path, url=sd.url, service_label="job").services] \
        == ["a"]


def test_an_oversized_answer_is_refused(sd: SdServer, tmp_path: Path) -> None:
    sd.answers["/sd"] = Answer(body=b"[" + b" " * MAX_BODY_BYTES + b"]")
    with pytest.raises(PermanentSourceError, match="larger than 16 MiB"):
        discover(tmp_path, url=sd.url, service_label="job")


def test_no_server_and_no_answer_in_time_are_transient(sd: SdServer, tmp_path: Path) -> None:
    sd.answers["/sd"] = Answer(delay=1.5)
    started = time.monotonic()
    with pytest.raises(TransientSourceError, match=r"no answer within 0\.3 s"):
        discover(tmp_path, url=sd.url, service_label="job", timeout_seconds=0.3)
    assert time.monotonic() - started < 1.2
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/sd"
    with pytest.raises(TransientSourceError, match=r"cannot connect: .*refused"):
        discover(tmp_path, url=closed, service_label="job")


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sd test CA")])

    def issue(name: str, key: ec.EllipticCurvePrivateKey, ca: bool,
              usage: x509.ObjectIdentifier | None) -> None:
        builder = (x509.CertificateBuilder()
                   .subject_name(ca_name if ca else x509.Name(
                       [x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    issue("ca", ca_key, True, None)
    issue("server", ec.generate_private_key(ec.SECP256R1()), False,
          ExtendedKeyUsageOID.SERVER_AUTH)
    issue("client", ec.generate_private_key(ec.SECP256R1()), False,
          ExtendedKeyUsageOID.CLIENT_AUTH)
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture
def tls_sd(pki: dict[str, Path]) -> Iterator[SdServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server"], pki["server-key"])
    ctx.load_verify_locations(pki["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED  # a client certificate is required
    server = start(ctx)
    server.serve([{"targets": ["192.0.2.1:443"], "labels": {"job": "secure"}}])
    yield server
    assert server.server is not None
    server.server.stop()


def test_https_with_ca_and_client_certificate(tls_sd: SdServer, pki: dict[str, Path],
                                              tmp_path: Path) -> None:
    found = discover(tmp_path, url=tls_sd.url, service_label="job", ca_file=str(pki["ca"]),
                     cert_file=str(pki["client"]), key_file=str(pki["client-key"]))
    assert [s.name for s in found.services] == ["secure"]


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_an_untrusted_certificate_fails_permanently_unless_verify_is_off(
        tls_sd: SdServer, pki: dict[str, Path], tmp_path: Path) -> None:
    client = {"cert_file": str(pki["client"]), "key_file": str(pki["client-key"])}
    with pytest.raises(PermanentSourceError, match=r"TLS failed.*CERTIFICATE_VERIFY"):
        discover(tmp_path, url=tls_sd.url, service_label="job", **client)
    found = discover(tmp_path, url=tls_sd.url, service_label="job", verify=False, **client)
    assert [s.name for s in found.services] == ["secure"]


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "expected"), [
    ({"url": "ftp://x/sd"}, r"sources\[0\]\.url: expected an http:// or https:// URL"),
    ({"url": "http://user:pw@h/sd"}, r"sources\[0\]\.url: credentials in the URL"),
    ({"url": "http://h:99999/sd"}, r"sources\[0\]\.url: the port in .* is not a number"),
    ({"service": "a", "service_label": "job"}, r"sources\[0\]: give `service`.*exactly one"),
    ({"service_label": None}, r"exactly one"),
    ({"service": "Bad_Name"}, r"sources\[0\]\.service: expected a Service name"),
    ({"port": 0}, r"sources\[0\]\.port: Input should be greater than or equal to 1"),
    ({"port_name": "HTTP"}, r"sources\[0\]\.port_name: expected a port name"),
    ({"bearer_token": TOKEN, "bearer_token_file": "t"}, r"not both"),
    ({"bearer_token": "has space"}, r"sources\[0\]\.bearer_token: the token is empty"),
    ({"cert_file": "c.pem", "url": "https://h/sd", "key_file": None}, None),
    ({"key_file": "k.pem", "url": "https://h/sd"}, r"key_file needs cert_file"),
    ({"ca_file": "ca.pem"}, r"ca_file needs an https:// url"),
    ({"ca_file": "ca.pem", "verify": False, "url": "https://h/sd"}, r"no use with verify"),
    ({"timeout_seconds": 0}, r"sources\[0\]\.timeout_seconds: Input should be greater than 0"),
    ({"namespace": "x"}, r"sources\[0\]\.namespace: unknown key"),
    ({"rename": {"a": "b"}, "service": "s", "service_label": None}, r"`rename` applies"),
])
def test_options_are_checked_with_their_field_path(tmp_path: Path, options: dict[str, Any],
                                                   expected: str | None) -> None:
    full = {"url": "http://127.0.0.1:1/sd", "service_label": "job", **options}
    full = {k: v for k, v in full.items() if v is not None}
    if expected is None:
        opts = HttpSdOptions.model_validate(full, context={CONFIG_DIR: tmp_path})
        assert opts.cert_file == tmp_path / "c.pem"  # ConfigPath: resolved at load
        return
    message = problem(tmp_path, **full)
    assert re.search(expected, message), message
    assert TOKEN not in message and "has space" not in message


# --- end to end ---------------------------------------------------------------------------


def write_config(tmp_path: Path, url: str, options: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      f"  - {{name: sd, provider: http_sd, url: '{url}', {options}}}\n")
    return config


def addresses(kube: KubeApiServer, service: str) -> set[str]:
    return slice_endpoints(kube.list_objects("EndpointSlice", "external"), service)


def test_cli_sync_then_empty_list_then_failed_fetch_keep_the_cluster(
        sd: SdServer, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    sd.serve([{"targets": ["192.0.2.10:9100", "192.0.2.11:9100"], "labels": {"job": "node"}}])
    config = write_config(tmp_path, sd.url, f"service: node, port: 9100, "
                          f"bearer_token: {TOKEN}")
    err = exited(run_sync(config, kubeconfig), 0)
    assert TOKEN not in err
    assert addresses(kube, "node") == {"192.0.2.10:9100", "192.0.2.11:9100"}
    svc = kube.get_object("Service", "external", "node")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 9100

    # An empty list is valid: the Service is published empty, and the core's empty guard
    # keeps its addresses (allow_empty is off).
    sd.serve([])
    err = exited(run_sync(config, kubeconfig), 1)
    assert "its source now lists no address" in err
    assert addresses(kube, "node") == {"192.0.2.10:9100", "192.0.2.11:9100"}

    # A failed fetch: the source fails, exit 1, nothing is written.
    sd.answers["/sd"] = Answer(500, f"down, token {TOKEN}".encode(), "text/plain")
    kube.reset_requests()
    err = exited(run_sync(config, kubeconfig), 1)
    assert "source 'sd': failed, its Services are left as they are" in err
    assert "HTTP 500" in err and TOKEN not in err
    assert kube.write_requests() == []
    assert addresses(kube, "node") == {"192.0.2.10:9100", "192.0.2.11:9100"}
