"""Running the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120,
        stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m syncer ARGS`, `stdin` its standard input; the environment is ours minus
    anything that points at a cluster or a Consul agent, plus `env`."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG", "ENDPOINTS_SYNC_CONFIG")
            and not k.startswith(("CONSUL_", "AWS_"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "syncer", *map(str, args)],
                          capture_output=True, text=True, env=base, cwd=cwd,
                          timeout=timeout, check=False, input=stdin)


def run_sync(config: Path, kubeconfig: Path, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli("run", "-c", config, "--kubeconfig", kubeconfig, *extra, env=env)
