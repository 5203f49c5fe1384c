"""One measured child process (wall time, peak RSS, the server's requests by verb), and the
Kubernetes API test server in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_mb: float  # the command's peak resident set (wait4's ru_maxrss, see _TIMED)
    requests: dict[str, int] = field(default_factory=dict)  # by verb; {} when not counted

    @property
    def writes(self) -> int:
        return sum(self.requests.get(verb, 0) for verb in WRITES)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "writes": self.writes}


class Server:
    """Where the runs go: a kubeconfig, and the URL of the request counters if any."""

    def __init__(self, kubeconfig: Path, counters: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.counters = counters

    def counts(self) -> dict[str, int]:
        if self.counters is None:
            return {}
        with urllib.request.urlopen(self.counters, timeout=10) as answer:
            counts: dict[str, int] = json.load(answer)
            return counts


# A child's peak RSS (ru_maxrss) includes the process it was forked from until it execs,
# and the bench grows large (it builds and renders the inventories): a small Python forks
# the measured command instead, and reports that child's wall time and peak.
_TIMED = """import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as report:
    report.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(cmd: list[str], server: Server | None = None, *, stdout: Path | None = None) -> Run:
    """Run `cmd` to its end; exit the bench if it fails (a figure of a failed run is noise)."""
    before = server.counts() if server else {}
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report, \
            (stdout.open("wb") if stdout else tempfile.TemporaryFile()) as out:
        code = subprocess.call([sys.executable, "-c", _TIMED, report.name, *cmd],
                               stdout=out, stderr=err, cwd=ROOT)
        if code != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed ({code}):\n"
                     f"{err.read().decode(errors='replace')[-2000:]}")
        seconds, max_rss_kb = report.read().split()
    after = server.counts() if server else {}
    delta = {verb: after[verb] - before.get(verb, 0) for verb in after
             if after[verb] != before.get(verb, 0)}
    return Run(float(seconds), int(max_rss_kb) / 1024, delta)


def median(runs: Callable[[], Run], repeat: int) -> Run:
    """The run of median wall time among `repeat` (its RSS and requests come with it)."""
    ordered = sorted((runs() for _ in range(repeat)), key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


@contextmanager
def test_server(tmp: Path, namespace: str, latency_ms: float = 0.0) -> Iterator[Server]:
    """A fresh Kubernetes API test server (`python -m tests.kubeapi`) in its own process."""
    kubeconfig = tmp / f"kubeconfig-{latency_ms:g}ms"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kubeapi", "--kubeconfig", str(kubeconfig),
         "--namespace", namespace, "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "... listening on URL": the kubeconfig is written
        if "listening on " not in line:
            sys.exit(f"the API test server did not start: {line!r}")
        yield Server(kubeconfig, line.split("listening on ")[1].strip() + "/debug/requests")
    finally:
        proc.terminate()
        proc.wait(10)
