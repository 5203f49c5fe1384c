"""A real control plane for tests: etcd and kube-apiserver from $KUBEBUILDER_ASSETS (the envtest
convention: setup-envtest, or any Kubernetes release's binaries), on free loopback ports.

No controllers run: a deleted Namespace stays Terminating, nothing garbage-collects, and the
built-in aggregated ClusterRoles are empty. Every request to our three kinds (and ConfigMaps,
used as audit marks) is audited at Metadata level, so tests count writes from the audit log.
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ASSETS_ENV = "KUBEBUILDER_ASSETS"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Token users besides the admin: "syncer" is bound to deploy/rbac.yaml's ClusterRole by the
# tests; the "limited-*" users get reduced copies of it.
USERS = ("syncer", "limited-1", "limited-2", "limited-3")

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - {group: "", resources: [services, endpoints, configmaps]}
      - {group: discovery.k8s.io, resources: [endpointslices]}
  - level: None
"""


class StartError(RuntimeError):
    """The binaries are missing or did not come up: a failure, never a skip."""


@dataclass(frozen=True)
class AuditEvent:
    verb: str
    user: str
    resource: str
    namespace: str
    name: str
    code: int


class RealApiServer:
    """etcd + kube-apiserver in a fresh temp dir; `with RealApiServer() as api: ...`."""

    def __init__(self, assets: str | None = None) -> None:
        self.assets = Path(assets or os.environ.get(ASSETS_ENV, ""))
        self.dir = Path(tempfile.mkdtemp(prefix="realapi-"))
        self.tokens = {user: f"{user}-{secrets.token_hex(16)}" for user in ("admin", *USERS)}
        self._procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.ca_file = self.dir / "serving.crt"

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> RealApiServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        for binary in ("etcd", "kube-apiserver"):
            if not os.access(self.assets / binary, os.X_OK):
                raise StartError(f"${ASSETS_ENV}={self.assets}: no executable {binary} there "
                                 "(point it at setup-envtest's or a release's binaries)")
        etcd_port, peer_port, api_port = _free_ports(3)
        self._write_files()
        etcd_url = f"http://{HOST}:{etcd_port}"
        self._spawn("etcd", [
            "--name", "test", "--data-dir", str(self.dir / "etcd-data"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://{HOST}:{peer_port}", "--unsafe-no-fsync",
            "--log-level", "warn"])
        self.url = f"https://{HOST}:{api_port}"
        d = self.dir
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}", f"--bind-address={HOST}",
            f"--advertise-address={HOST}", f"--secure-port={api_port}",
            f"--tls-cert-file={d / 'serving.crt'}", f"--tls-private-key-file={d / 'serving.key'}",
            f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none",
            f"--audit-policy-file={d / 'audit-policy.yaml'}",
            f"--audit-log-path={d / 'audit.log'}", "--audit-log-mode=blocking",
            f"--cert-dir={d / 'cert-dir'}", "--profiling=false", "--v=0"])
        self._wait_ready()

    def stop(self) -> None:
        """Terminate, wait, kill: both processes, newest first; then the temp dir."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        with log:
            # Its own session: a Ctrl-C meant for pytest reaches us, and we stop it in order.
            # preexec_fn only calls prctl (async-signal-safe), so threads do not matter.
            self._procs.append(subprocess.Popen(
                [str(self.assets / name), *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent))  # noqa: PLW1509

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for proc, name in zip(self._procs, ("etcd", "kube-apiserver"), strict=True):
                if proc.poll() is not None:
                    raise StartError(f"{name} exited ({proc.returncode}) during startup:\n"
                                     + self.log_tail(name))
            try:
                status, body = self.request("GET", "/readyz", timeout=2)
                if status == 200 and body == b"ok":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise StartError(f"kube-apiserver not ready after {READY_TIMEOUT:.0f} s:\n"
                         + self.log_tail("kube-apiserver"))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _write_files(self) -> None:
        d = self.dir
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
                    critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        (d / "serving.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(d / "serving.key", key)
        sa = ec.generate_private_key(ec.SECP256R1())
        _write_key(d / "sa.key", sa)
        (d / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        rows = [f'{self.tokens["admin"]},admin,uid-admin,"system:masters"']
        rows += [f'{self.tokens[u]},{u},uid-{u},"testers"' for u in USERS]
        (d / "tokens.csv").write_text("\n".join(rows) + "\n")
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)

    def grant(self, user: str, rules: list[dict[str, Any]], name: str) -> None:
        """A ClusterRole `name` with `rules`, bound to `user`; returns once the authorizer
        applies it (RBAC reaches the authorizer through a watch, a moment later)."""
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self.json("POST", f"{rbac}/clusterroles", {"metadata": {"name": name}, "rules": rules})
        self.json("POST", f"{rbac}/clusterrolebindings", {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": user}]})
        first = rules[0]
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "resourceAttributes": {
                      "group": first["apiGroups"][0], "resource": first["resources"][0],
                      "verb": first["verbs"][0]}}}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = self.json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                               review)
            if answer["status"].get("allowed"):
                return
            time.sleep(0.05)
        raise AssertionError(f"ClusterRole {name} never took effect for {user}")

    # -- use ---------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, user: str = "admin", namespace: str = "default") -> Path:
        q = json.dumps  # JSON strings are valid YAML scalars
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: real\n  cluster:\n    server: {q(self.url)}\n"
            f"    certificate-authority: {q(str(self.ca_file))}\n"
            f"users:\n- name: {q(user)}\n  user:\n    token: {q(self.tokens[user])}\n"
            f"contexts:\n- name: real\n  context:\n    cluster: real\n    user: {q(user)}\n"
            f"    namespace: {q(namespace)}\n"
            "current-context: real\n")
        path.chmod(0o600)
        return path

    def request(self, method: str, path: str, body: Any = None, user: str = "admin",
                timeout: float = 10, content_type: str = "application/json",
                ) -> tuple[int, bytes]:
        """One raw HTTPS request as `user`: (status, body); HTTP errors are answers too."""
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.tokens[user]}", "Accept": "application/json",
            "Content-Type": content_type})
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def json(self, method: str, path: str, body: Any = None, user: str = "admin",
             expect: tuple[int, ...] = (200, 201)) -> Any:
        status, data = self.request(method, path, body, user)
        if status not in expect:
            raise AssertionError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data) if data else None

    def audit_events(self) -> list[AuditEvent]:
        """Every audited request so far (ResponseComplete), oldest first."""
        path = self.dir / "audit.log"
        text = path.read_text() if path.exists() else ""
        return list(_parse_audit(text))

    def audit_mark(self, namespace: str) -> int:
        """A request that is audited, then wait for it in the log: every request answered
        before it is in the log too. Returns the number of events so far."""
        name = f"audit-mark-{secrets.token_hex(4)}"
        self.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            events = self.audit_events()
            if any(e.name == name for e in events):
                return len(events)
            time.sleep(0.02)
        raise AssertionError("the audit mark never reached the audit log")


def _parse_audit(text: str) -> Iterator[AuditEvent]:
    for line in text.splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        yield AuditEvent(event.get("verb", ""), (event.get("user") or {}).get("username", ""),
                         ref.get("resource", ""), ref.get("namespace", ""), ref.get("name", ""),
                         int((event.get("responseStatus") or {}).get("code", 0)))


def _die_with_parent() -> None:
    """In the child: the kernel kills it if pytest dies without stopping it (SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# -- one interface over both servers, for tests that run against each ---------------------

@dataclass(frozen=True)
class Write:
    verb: str  # create, update, patch, delete
    resource: str  # services, endpoints, endpointslices
    status: int


_PATHS = {"Service": ("/api/v1", "services"), "Endpoints": ("/api/v1", "endpoints"),
          "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices")}
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, resource = _PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")


class TestServerCluster:
    """The Kubernetes API test server (a fresh one per test) as a `Cluster`."""

    __test__ = False  # not a test class, whatever its name
    name = "testserver"
    owner = "cluster-a"

    def __init__(self, kube: Any, kubeconfig: Path) -> None:
        self.kube = kube
        self.kubeconfig = kubeconfig

    def ns(self, logical: str) -> str:
        return logical

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.kube.get_object(kind, namespace, name)
        return found

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return list(self.kube.list_objects(kind, namespace))

    def seed(self, obj: dict[str, Any]) -> None:
        self.kube.put_object(obj)

    def replace(self, obj: dict[str, Any]) -> None:
        """Another writer's update (a new resourceVersion)."""
        self.kube.put_object(obj)

    def mark(self) -> None:
        self.kube.reset_requests()

    def writes(self) -> list[Write]:
        """The writes to our three kinds since mark(), in order."""
        out = []
        for r in self.kube.write_requests():
            parts = r.path.rsplit("/namespaces/", 1)[-1].split("/")
            resource = parts[1] if len(parts) > 1 else ""
            if resource in {res for _, res in _PATHS.values()}:
                out.append(Write(_VERBS[r.method], resource, r.status))
        return out


class RealCluster:
    """The shared real control plane as a `Cluster`: this test's own namespaces and owner
    (so no other test's objects are in its way), the syncer as the token user "syncer"."""

    name = "real"

    def __init__(self, api: RealApiServer, tmp: Path, user: str = "syncer") -> None:
        self.api = api
        self.user = user
        self.suffix = secrets.token_hex(3)
        self.owner = f"t-{self.suffix}"
        for logical in ("default", "storage", "external"):
            api.json("POST", "/api/v1/namespaces", {"metadata": {"name": self.ns(logical)}})
        self.kubeconfig = api.write_kubeconfig(tmp / "kubeconfig-real", user=user)
        self._since = 0

    def ns(self, logical: str) -> str:
        return f"{logical}-{self.suffix}"

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = self.api.request("GET", object_path(kind, namespace, name))
        if status == 404:
            return None
        assert status == 200, data
        found: dict[str, Any] = json.loads(data)
        return found

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.json("GET", object_path(kind, namespace))["items"]
        return items

    def seed(self, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        self.api.json("POST", object_path(obj["kind"], md["namespace"]), obj)

    def replace(self, obj: dict[str, Any]) -> None:
        """Another writer's update, as the admin."""
        md = obj["metadata"]
        self.api.json("PUT", object_path(obj["kind"], md["namespace"], md["name"]), obj)

    def mark(self) -> None:
        self._since = self.api.audit_mark(self.ns("default"))

    def writes(self) -> list[Write]:
        """The syncer user's writes in this test's namespaces since mark(), from the audit
        log."""
        self.api.audit_mark(self.ns("default"))
        mine = {self.ns(n) for n in ("default", "storage", "external")}
        return [Write(e.verb, e.resource, e.code) for e in self.api.audit_events()[self._since:]
                if e.user == self.user and e.namespace in mine and e.verb in WRITE_VERBS]
