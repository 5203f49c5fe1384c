"""Secrets never appear in any output: every command, both log formats, debug logging on.

Each secret has a distinctive value with a `LEAK<x>` marker in it: the Consul `token`
option, $CONSUL_HTTP_TOKEN, a Consul `token_file`, the three AWS credential variables (in
the shapes AWS gives them) and the kubeconfig user's bearer token. The commands run in one
CLI process (`syncer.cli.main` called once per command line) to keep the test quick; the
sources are set up so that the error paths run too: a Consul that refuses a token, a Consul
that cannot be reached with one, AWS refusing the credentials with an error message that
echoes the signed request headers, the Kubernetes API answering 401 and 403, and options
that fail validation right beside a token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.aws_fakes import AwsDouble, Reply, closed_port, ec2_error
from tests.cli import ROOT
from tests.consul_double import ConsulDouble, running
from tests.kubeapi import KubeApiServer

CONSUL_TOKEN = "7f1c2e4a-LEAKA-4d0e-8c1b-0123456789ab"
CONSUL_ENV_TOKEN = "9a8b7c6d-LEAKF-4e5f-a1b2-0123456789ab"
CONSUL_FILE_TOKEN = "1b2c3d4e-LEAKG-4f5a-b6c7-0123456789ab"
AWS_KEY_ID = "AKIALEAKB00000000001"
AWS_SECRET = "LEAKCwJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPL"
AWS_SESSION = "FwoGZXIvYXdzLEAKD" + "Q" * 40 + "0123456789abcdefABCDEF/+=="
KUBE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.LEAKE.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
SECRETS = (CONSUL_TOKEN, CONSUL_ENV_TOKEN, CONSUL_FILE_TOKEN, AWS_KEY_ID, AWS_SECRET,
           AWS_SESSION, KUBE_TOKEN)
MARKERS = ("LEAKA", "LEAKB", "LEAKC", "LEAKD", "LEAKE", "LEAKF", "LEAKG")

RUNNER = """
import json, sys
from syncer.cli import main
for argv in json.loads(sys.argv[1]):
    print("=== " + " ".join(argv), file=sys.stderr, flush=True)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    sys.stdout.flush()
    print(f"=== exit {code}", file=sys.stderr, flush=True)
"""


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    double = ConsulDouble(acl_token=CONSUL_TOKEN)
    double.add_node("node-1", "203.0.113.1")
    double.register("payments", "node-1", port=8443)
    yield from running(double)


@pytest.fixture
def aws() -> Iterator[AwsDouble]:
    """AWS refusing the credentials, quoting the request's credential headers back."""
    double = AwsDouble({"DescribeInstances": Reply(401, ec2_error(
        "AuthFailure", "AWS was not able to validate the provided access credentials"))},
        echo_headers=True).start()
    try:
        yield double
    finally:
        double.stop()


def write_kubeconfig(kube: KubeApiServer, path: Path) -> Path:
    """The test server's kubeconfig with a distinctive bearer token."""
    text = kube.write_kubeconfig(path).read_text()
    assert "token: test-token" in text
    path.write_text(text.replace("token: test-token", f"token: {json.dumps(KUBE_TOKEN)}"))
    return path


def write_configs(folder: Path, consul: ConsulDouble, aws: AwsDouble) -> dict[str, Path]:
    (folder / "consul-token").write_text(CONSUL_FILE_TOKEN + "\n")
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"services": [{
        "name": "rgw", "ports": [{"port": 80}], "endpoints": [{"address": "192.0.2.50"}]}]}))
    good = {"owner": "secrets", "namespace": "external", "sources": [
        {"name": "rgw", "provider": "static", "path": "inventory.yaml"},
        {"name": "consul-ok", "provider": "consul", "url": consul.url, "token": CONSUL_TOKEN,
         "services": ["payments"], "timeout_seconds": 2},
        # No token option: $CONSUL_HTTP_TOKEN is used, and Consul refuses it (403).
        {"name": "consul-env", "provider": "consul", "url": consul.url,
         "services": ["payments"], "name_prefix": "env-", "timeout_seconds": 2},
        {"name": "consul-down", "provider": "consul",
         "url": f"http://127.0.0.1:{closed_port()}", "token_file": "consul-token",
         "services": ["payments"], "name_prefix": "down-", "timeout_seconds": 1},
        {"name": "ec2", "provider": "aws_ec2", "regions": ["us-east-1"],
         "endpoint_url": aws.url, "max_attempts": 1, "service": "web", "port": 80},
    ]}
    configs = {"good": folder / "good.yaml"}
    configs["good"].write_text(yaml.safe_dump(good))
    bad_options = {
        # A bad option beside a token; a token of the wrong type; a token pydantic refuses.
        "bad-timeout": f"{{token: {CONSUL_TOKEN}, timeout_seconds: soon}}",
        "token-list": f"{{token: [{CONSUL_TOKEN}]}}",
        "token-spaces": f"{{token: '{CONSUL_TOKEN} {CONSUL_TOKEN}'}}",
        "token-and-file": f"{{token: {CONSUL_TOKEN}, token_file: consul-token}}",
        "unknown-key": f"{{token: {CONSUL_TOKEN}, tokne: {CONSUL_TOKEN}}}",
    }
    for name, options in bad_options.items():
        path = folder / f"{name}.yaml"
        path.write_text("sources:\n  - {name: c, provider: consul, services: [payments], "
                        f"url: '{consul.url}', " + options[1:] + "\n")
        configs[name] = path
    # YAML errors on the token's own line: the message must not quote the line.
    for name, text in {
        "yaml-syntax": f"    token: {CONSUL_TOKEN}: oops\n",
        "yaml-unclosed": f"    token: \"{CONSUL_TOKEN}\n",
        "yaml-duplicate": f"    token: {CONSUL_TOKEN}\n    token: {CONSUL_ENV_TOKEN}\n",
    }.items():
        path = folder / f"{name}.yaml"
        path.write_text("sources:\n  - name: c\n    provider: consul\n" + text)
        configs[name] = path
    return configs


def run_commands(argvs: list[list[str]], env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_no_command_shows_a_secret(consul: ConsulDouble, aws: AwsDouble, kube: KubeApiServer,
                                   tmp_path: Path) -> None:
    configs = write_configs(tmp_path, consul, aws)
    kubeconfig = str(write_kubeconfig(kube, tmp_path / "kubeconfig"))
    good = str(configs["good"])
    env = {"CONSUL_HTTP_TOKEN": CONSUL_ENV_TOKEN, "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_SESSION,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    # As tests.cli.cli() does: our environment without cluster/Consul/AWS settings.
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG", "ENDPOINTS_SYNC_CONFIG")
            and not k.startswith(("CONSUL_", "AWS_"))} | env

    def every(commands: list[list[str]]) -> list[list[str]]:
        return [[*c, "--log-format", fmt, "-v"] for fmt in ("text", "json") for c in commands]

    cluster = ["--kubeconfig", kubeconfig]
    output = run_commands(every([
        ["validate", "-c", good], ["render", "-c", good], ["render", "-c", good, "-o", "json"],
        ["plan", "-c", good, *cluster], ["run", "-c", good, "--dry-run", *cluster],
        ["run", "-c", good, *cluster], ["providers"],
        *[["validate", "-c", str(p)] for name, p in configs.items() if name != "good"],
    ]), base)
    for status in (401, 403):
        kube.inject_fault("*", ".", status=status, times=1000)
        output += run_commands(every([["plan", "-c", good, *cluster],
                                      ["run", "-c", good, *cluster]]), base)
        kube.clear_faults()

    # The secrets were really in play: sent, refused, echoed back, failing runs.
    assert consul.requests and all(r.token_sent for r in consul.requests)
    assert any(AWS_KEY_ID in r.headers.get("Authorization", "") for r in aws.requests)
    assert "source 'consul-env': failed" in output and "access denied" in output
    assert "source 'consul-down': failed" in output and "unreachable" in output
    assert "source 'ec2': failed" in output and "credentials were rejected" in output
    assert "401" in output and "403" in output
    assert output.count("=== exit 2") == 2 * (len(configs) - 1)
    assert '"level": "debug"' in output and " debug " in output
    leaked = [s for s in SECRETS + MARKERS if s.lower() in output.lower()]
    assert not leaked, (leaked, output)
