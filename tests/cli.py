"""Running the real CLI, as a user would: its entry point with a command line, an
environment and standard streams."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120,
        stdin: str | None = None, cwd: Path = ROOT,
        subprocess_only: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI with ARGS, `stdin` its standard input; the environment is ours minus anything
    that points at a cluster or a Consul agent, plus `env`.

    It runs `syncer.cli.main(ARGS)` in this process, as `python -m syncer` would (the same
    entry point, environment, working directory and standard streams), which saves the
    interpreter start and the Kubernetes client's import (about a second of CPU) per call.
    It runs in a subprocess when the environment changes what Python itself imports
    (PYTHON* variables: fake plugin distributions) or when `subprocess_only` asks for it
    (tests of `python -m syncer` itself)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG", "ENDPOINTS_SYNC_CONFIG")
            and not k.startswith(("CONSUL_", "AWS_"))}
    base.update(env or {})
    argv = [str(a) for a in args]
    if subprocess_only or any(k.startswith("PYTHON") for k in env or {}):
        return subprocess.run([sys.executable, "-m", "syncer", *argv],
                              capture_output=True, text=True, env=base, cwd=cwd,
                              timeout=timeout, check=False, input=stdin)
    return _in_process(argv, base, stdin, cwd)


def _in_process(argv: list[str], env: dict[str, str], stdin: str | None,
                cwd: Path) -> subprocess.CompletedProcess[str]:
    from syncer.cli import main

    out, err = io.StringIO(), io.StringIO()
    streams = (sys.stdin, sys.stdout, sys.stderr)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode()), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(["endpoints-sync", *argv], code, out.getvalue(),
                                       err.getvalue())


def run_sync(config: Path, kubeconfig: Path, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli("run", "-c", config, "--kubeconfig", kubeconfig, *extra, env=env)


def exited(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert the exit code (showing all output when it differs); the stderr."""
    assert result.returncode == code, result.stdout + result.stderr
    return result.stderr


class Loop:
    """`endpoints-sync run --interval 60 EXTRA...` (loop or watch mode) in a subprocess:
    SIGTERM is a signal to a process. Its stderr lines as they come; retries after 0.2 s
    ($ENDPOINTS_SYNC_RETRY_BACKOFF), and 60 s is far longer than any test waits, so a second
    run before it is a retry (EXTRA may give another --interval: the last one counts)."""

    def __init__(self, config: Path, kubeconfig: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG", "ENDPOINTS_SYNC_CONFIG")
               and not k.startswith(("CONSUL_", "AWS_"))}
        env["ENDPOINTS_SYNC_RETRY_BACKOFF"] = "0.2"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncer", "run", "-c", str(config), "--kubeconfig",
             str(kubeconfig), "--interval", "60", *extra],
            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition: Callable[[], object], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, self.log
            assert self.proc.poll() is None, self.log
            time.sleep(0.02)

    def stop(self) -> float:
        """SIGTERM; returns how long the process took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
