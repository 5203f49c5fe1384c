"""Run the Kubernetes API test server in the foreground (used by `make demo`).

    python -m tests.kubeapi [--port N] [--kubeconfig PATH] [--namespace NS ...] [--pid-file P]
                            [--latency-ms MS]

GET /debug/requests answers the requests so far by verb (bench/bench.py reads it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from tests.kubeapi.server import KubeApiServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the server here")
    parser.add_argument("--namespace", action="append", dest="namespaces", metavar="NS",
                        help="a namespace to create (repeatable; default: default)")
    parser.add_argument("--pid-file", type=Path, help="write this process's id here")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay every request by this much (a remote cluster's round trip)")
    args = parser.parse_args(argv)

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    server = KubeApiServer(args.namespaces or ["default"]).start(port=args.port)
    if args.latency_ms > 0:  # a delay-only fault that never runs out
        server.inject_fault("*", "", delay=args.latency_ms / 1000, times=sys.maxsize)
    try:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        if args.pid_file:
            args.pid_file.write_text(f"{os.getpid()}\n")
        print(f"kube API test server listening on {server.url}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
