"""Test support for the AWS providers: a fake credential environment, building a provider the
way the core does, and an HTTP double of the AWS query APIs for answers moto cannot give
(access denied, throttling, server errors, slow answers).

Nothing here talks to AWS: credentials are fake, instance metadata is disabled, and the
double listens on 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import boto3
import pytest
from botocore.loaders import Loader, create_loader
from botocore.session import Session as BotocoreSession
from moto.server import ThreadedMotoServer

from syncer.plugin import Provider, ProviderOptions, SourceContext
from tests.loopback_http import LoopbackHTTPServer

# AWS's documented example key: it looks real to botocore and to a leak check.
FAKE_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FAKE_SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLETOKENTHATISLONGENOUGHTOLOOKREAL0123456789abcdefABCDEF=="

_AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_RDS", "AWS_ENDPOINT_URL_STS",
    "AWS_SECURITY_TOKEN", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
)


def fake_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         region: str = "us-east-1") -> dict[str, str]:
    """Fake credentials and empty AWS config files: the developer's own never leak in."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_SESSION_TOKEN": FAKE_SESSION_TOKEN,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        # moto would otherwise build ~1,300 AMIs with snapshots for every region backend:
        # most of the suite's time. Our instances need no real image.
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


P = TypeVar("P", bound=Provider[Any])


def build(provider: type[P], options: Mapping[str, Any], source: str = "db") -> P:
    """Validate the options with the provider's model and build it, as the core does."""
    validated: ProviderOptions = provider.Options.model_validate(dict(options))
    return provider(validated, SourceContext(source=source, config_file="config.yaml",
                                             field_path="sources[0]"))


@functools.cache
def _loader() -> Loader:
    return create_loader()


def boto3_session(region: str, **credentials: str) -> boto3.session.Session:
    """A session for setting up fixtures. moto resets boto3's default session for every
    test, and parsing the service models again each time would triple the suite's time."""
    core = BotocoreSession()
    core.register_component("data_loader", _loader())
    return boto3.session.Session(botocore_session=core, region_name=region, **credentials)


def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 for a module's tests (a fixture's body): its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(url: str) -> str:
    """Empty a shared moto server: its state outlives a test otherwise."""
    reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as answer:
        assert answer.status == 200
    return url


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- an HTTP double of the AWS query protocol ------------------------------------------


def ec2_error(code: str, message: str) -> str:
    """An EC2 error body (EC2's own XML shape)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}'
            f"</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>11111111-2222-3333-4444-555555555555</RequestID></Response>")


def query_error(code: str, message: str) -> str:
    """An RDS/STS error body (the generic query-protocol XML shape)."""
    return (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error>"
            "<RequestId>11111111-2222-3333-4444-555555555555</RequestId></ErrorResponse>")


EMPTY_DESCRIBE_INSTANCES = (
    '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>1</requestId><reservationSet/></DescribeInstancesResponse>")
EMPTY_DESCRIBE_DB_INSTANCES = (
    "<DescribeDBInstancesResponse><DescribeDBInstancesResult><DBInstances/>"
    "</DescribeDBInstancesResult></DescribeDBInstancesResponse>")
EMPTY_DESCRIBE_DB_CLUSTERS = (
    "<DescribeDBClustersResponse><DescribeDBClustersResult><DBClusters/>"
    "</DescribeDBClustersResult></DescribeDBClustersResponse>")


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    delay: float = 0.0
    """Seconds to wait before answering (for timeouts and concurrency)."""


@dataclass(frozen=True)
class Request:
    action: str
    params: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def region(self) -> str:
        """From the SigV4 credential scope: Credential=<key>/<date>/<region>/<service>/..."""
        scope = self.headers.get("Authorization", "").partition("Credential=")[2]
        parts = scope.split("/")
        return parts[2] if len(parts) > 2 else ""


@dataclass
class AwsDouble:
    """Answers each AWS query-protocol request by its Action; records every request.

    `echo_headers` puts the request's credential headers into error messages, as a careless
    service might: the providers must still never show credentials.
    """

    replies: dict[str, Reply]
    in_region: dict[str, dict[str, Reply]] = field(default_factory=dict)
    """Replies for one region (read from the request signature), before `replies`."""
    echo_headers: bool = False
    requests: list[Request] = field(default_factory=list)
    peak_in_flight: int = 0
    """The most requests answered at the same time (a delayed reply keeps one in flight)."""
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LoopbackHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def actions(self) -> list[str]:
        return [r.action for r in self.requests]

    def start(self) -> AwsDouble:
        self._server = LoopbackHTTPServer(0, self._handler())
        self._server.serve_in_thread("aws-double")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _answer(self, request: Request) -> Reply:
        self.requests.append(request)
        replies = {**self.replies, **self.in_region.get(request.region, {})}
        reply = replies.get(request.action, Reply(400, query_error(
            "InvalidAction", f"the double has no answer for {request.action}")))
        if self.echo_headers and reply.status >= 400:
            echoed = escape(" ".join(f"{k}={v}" for k, v in request.headers.items()
                                     if k in ("Authorization", "X-Amz-Security-Token")))
            reply = Reply(reply.status, reply.body.replace("</Message>", f" {echoed}</Message>"),
                          reply.delay)
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                params = parse_qs(self.rfile.read(length).decode())
                reply = double._answer(Request(params.get("Action", [""])[0], params,
                                               dict(self.headers.items())))
                with double._lock:
                    double._in_flight += 1
                    double.peak_in_flight = max(double.peak_in_flight, double._in_flight)
                time.sleep(reply.delay)
                with double._lock:
                    double._in_flight -= 1
                body = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows failures, not every request."""

        return Handler


# One running EC2 instance and one available RDS instance, as the AWS APIs answer them.
RDS_HOST = "billing.c1abcdefghij.us-east-1.rds.amazonaws.com"
DESCRIBE_INSTANCES = (
    '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>1</requestId><reservationSet><item><reservationId>r-1</reservationId>"
    "<instancesSet><item><instanceId>i-0000000000000001</instanceId>"
    "<instanceState><code>16</code><name>running</name></instanceState>"
    "<privateIpAddress>198.51.100.10</privateIpAddress>"
    "<placement><availabilityZone>us-east-1a</availabilityZone></placement>"
    "</item></instancesSet></item></reservationSet></DescribeInstancesResponse>")
DESCRIBE_DB_INSTANCES = (
    "<DescribeDBInstancesResponse><DescribeDBInstancesResult><DBInstances><DBInstance>"
    "<DBInstanceIdentifier>billing</DBInstanceIdentifier>"
    "<DBInstanceStatus>available</DBInstanceStatus>"
    f"<Endpoint><Address>{RDS_HOST}</Address><Port>5432</Port></Endpoint>"
    "<AvailabilityZone>us-east-1a</AvailabilityZone></DBInstance></DBInstances>"
    "</DescribeDBInstancesResult></DescribeDBInstancesResponse>")
