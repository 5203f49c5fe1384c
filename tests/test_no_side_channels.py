"""No side channels: no shell-outs, YAML through safe loaders only, and no connection to a
backend address (only to the configured APIs: here the test servers on 127.0.0.1).

The first two are AST scans of syncer/ and providers/; each scanner is also shown to catch
what it looks for. The third runs a real sync in a CLI process whose audit hook records
every socket.connect and name lookup.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.aws_fakes import (
    DESCRIBE_DB_INSTANCES,
    DESCRIBE_INSTANCES,
    EMPTY_DESCRIBE_DB_CLUSTERS,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    RDS_HOST,
    AwsDouble,
    Reply,
)
from tests.cli import ROOT
from tests.consul_double import ConsulDouble, running
from tests.kubeapi import KubeApiServer

CODE = sorted([*(ROOT / "syncer").rglob("*.py"), *(ROOT / "providers").rglob("*.py")])

# --- shell-outs -----------------------------------------------------------------------

PROCESS_MODULES = frozenset({"subprocess", "pty", "pexpect", "sh", "commands",
                             "multiprocessing", "concurrent.futures.process"})
PROCESS_CALLS = {
    "os": ("system", "popen", "exec", "spawn", "posix_spawn", "fork", "forkpty"),
    "asyncio": ("create_subprocess_exec", "create_subprocess_shell"),
    "platform": ("popen",),
}


def shell_outs(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PROCESS_MODULES
                      or a.name in PROCESS_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PROCESS_MODULES or node.module.split(".")[0] in PROCESS_MODULES:
                found.append(node.module)
            prefixes = PROCESS_CALLS.get(node.module, ())
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith(prefixes)]
            if node.module == "concurrent.futures":
                found += [a.name for a in node.names if a.name == "ProcessPoolExecutor"]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            prefixes = PROCESS_CALLS.get(node.value.id, ())
            if prefixes and node.attr.startswith(prefixes):
                found.append(f"{node.value.id}.{node.attr}")
    return found


# --- YAML loaders ---------------------------------------------------------------------

SAFE_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})
UNSAFE_NAMES = frozenset({
    "load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all",
    "Loader", "CLoader", "FullLoader", "CFullLoader", "UnsafeLoader", "CUnsafeLoader",
    "Constructor", "FullConstructor", "UnsafeConstructor"})


def _loader_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def unsafe_yaml(tree: ast.AST) -> list[str]:
    """Unsafe loaders or constructors named anywhere; yaml.load only with a safe Loader."""
    found = []
    aliases = {"yaml"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "yaml"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yaml"):
            found += [f"from yaml import {a.name}" for a in node.names if a.name in UNSAFE_NAMES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in aliases \
                and node.func.attr in ("load", "load_all"):
            loaders = [k.value for k in node.keywords if k.arg == "Loader"] + node.args[1:2]
            if not loaders or _loader_name(loaders[0]) not in SAFE_LOADERS:
                found.append(f"yaml.{node.func.attr} without a safe Loader")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr in UNSAFE_NAMES - {"load",
                                                                               "load_all"}:
            found.append(f"yaml.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(("tag:yaml.org,2002:python", "!!python")):
            found.append(f"python tag {node.value}")
    return found


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def test_the_scan_covers_the_code() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in CODE}
    assert {"syncer/cli.py", "syncer/documents.py", "providers/consul.py",
            "providers/aws_session.py"} <= names


@pytest.mark.parametrize("path", CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_shell_outs_and_only_safe_yaml(path: Path) -> None:
    tree = parse(path)
    assert shell_outs(tree) == []
    assert unsafe_yaml(tree) == []


@pytest.mark.parametrize("source", [
    "import subprocess", "from subprocess import run", "import pty", "os.system('ls')",
    "x = os.popen", "from os import execvp", "os.posix_spawnp(a, b, c, d)",
    "asyncio.create_subprocess_shell('ls')", "from concurrent.futures import "
    "ProcessPoolExecutor", "import multiprocessing.pool",
])
def test_the_shell_out_scan_catches(source: str) -> None:
    assert shell_outs(ast.parse(source))


@pytest.mark.parametrize("source", [
    "yaml.load(text)", "yaml.load(text, Loader=yaml.Loader)", "yaml.load(text, yaml.FullLoader)",
    "yaml.unsafe_load(text)", "yaml.full_load(text)", "from yaml import FullLoader",
    "import yaml as y\ny.load_all(text, Loader=y.UnsafeLoader)",
    "class L(yaml.UnsafeLoader): pass", "x.add_constructor('tag:yaml.org,2002:python/name:', f)",
])
def test_the_yaml_scan_catches(source: str) -> None:
    assert unsafe_yaml(ast.parse(source))


def test_the_yaml_scan_allows_safe_loading() -> None:
    assert unsafe_yaml(ast.parse(
        "yaml.load(text, Loader=yaml.CSafeLoader)\nyaml.safe_load(text)\n"
        "from yaml import CSafeLoader as YamlLoader\nclass L(yaml.SafeLoader): pass")) == []


# --- connections ----------------------------------------------------------------------

AUDITED = """
import atexit, json, socket, sys
events = []
def hook(event, args):
    if event == "socket.connect":
        address = args[1]
        events.append(["connect", list(address) if isinstance(address, tuple) else address])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                   "socket.gethostbyaddr"):
        events.append(["lookup", str(args[0])])
def dump():
    with open(sys.argv[1], "w") as f:
        json.dump(events, f)
atexit.register(dump)
sys.addaudithook(hook)
from syncer.cli import main
sys.exit(main(sys.argv[2:]))
"""
BACKENDS = ["192.0.2.50", "192.0.2.51", "203.0.113.1", "203.0.113.2", "198.51.100.10",
            "198.51.100.20"]


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    double = ConsulDouble()
    double.add_node("node-1", "203.0.113.1")
    double.add_node("node-2", "203.0.113.2")
    double.register("payments", "node-1", port=8443)
    double.register("payments", "node-2", port=8443)
    yield from running(double)


@pytest.fixture
def aws() -> Iterator[AwsDouble]:
    double = AwsDouble({"DescribeInstances": Reply(200, DESCRIBE_INSTANCES),
                        "DescribeDBInstances": Reply(200, DESCRIBE_DB_INSTANCES),
                        "DescribeDBClusters": Reply(200, EMPTY_DESCRIBE_DB_CLUSTERS)}).start()
    try:
        yield double
    finally:
        double.stop()


def test_a_sync_connects_only_to_the_apis_never_to_a_backend(
        consul: ConsulDouble, aws: AwsDouble, kube: KubeApiServer, kubeconfig: Path,
        tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"services": [{
        "name": "rgw", "ports": [{"port": 80}],
        "endpoints": [{"address": a, "port": 8080} for a in BACKENDS[:2]]}]}))
    aws_common = {"regions": ["us-east-1"], "endpoint_url": aws.url, "max_attempts": 1}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "namespace": "external", "hosts": {RDS_HOST: [BACKENDS[5]]}, "sources": [
            {"name": "rgw", "provider": "static", "path": "inventory.yaml"},
            {"name": "consul", "provider": "consul", "url": consul.url,
             "services": ["payments"]},
            {"name": "ec2", "provider": "aws_ec2", "service": "web", "port": 80,
             **aws_common},
            {"name": "rds", "provider": "aws_rds", **aws_common},
        ]}))
    events_file = tmp_path / "events.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")
           and not k.startswith(("CONSUL_", "AWS_"))}
    env |= {"AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    result = subprocess.run(
        [sys.executable, "-c", AUDITED, str(events_file), "run", "-c", str(config),
         "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    published = {a["ip"] for ep in kube.list_objects("Endpoints", "external")
                 for s in ep["subsets"] for a in s["addresses"]}
    assert published == set(BACKENDS)
    events = json.loads(events_file.read_text())
    connects = [tuple(address) for kind, address in events if kind == "connect"]
    ports = {port for _, port, *_ in connects}
    assert {kube.port, consul.port, int(aws.url.rsplit(":", 1)[1])} <= ports, connects
    assert {host for host, *_ in connects} == {"127.0.0.1"}, connects
    lookups = {host for kind, host in events if kind == "lookup"}
    assert lookups <= {"127.0.0.1"}, lookups
