"""Start-up stays light (issue #9): `--help` costs argparse only, and `validate` imports no
Kubernetes client and no Prometheus client.

These check which modules a real `python -m syncer` imports (`-X importtime` lists every one
on stderr), never how long it takes: timings belong to the benchmark (`make bench`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli import ROOT

HEAVY = frozenset({"pydantic", "pydantic_core", "yaml", "kubernetes", "prometheus_client",
                   "boto3", "botocore", "consul", "urllib3", "requests"})
"""Third-party packages that each take tens of milliseconds (the client: most of a second)."""


def imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`python -m syncer ARGS`, and the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "syncer", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    # Lines read "import time:   self |  cumulative | <indent>name".
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    assert "syncer.cli" in names, done.stderr[-2000:]  # the parsing above saw the imports
    return done, {n.split(".")[0] for n in names}


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    # `run --help` too: its metrics options come from syncer.metrics.
    done, packages = imported(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: endpoints-sync")
    assert packages & HEAVY == set()


def test_validate_contacts_nothing_so_imports_no_client() -> None:
    done, packages = imported("validate", "-c", "examples/ceph-rgw/config.yaml")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK: 1 source(s): rgw (static)" in done.stdout
    assert {"pydantic", "yaml"} <= packages  # it did read and validate the configuration
    assert packages & {"kubernetes", "urllib3", "prometheus_client", "boto3", "consul"} == set()
