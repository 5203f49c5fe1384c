"""`make bench`: the syncer at N Services x M addresses, beside its peers, in one run.

For each N (`--sizes`, default 100,1000,5000; M = `--addresses`, default 20) against a fresh
Kubernetes API test server in its own process (tests/kubeapi, on 127.0.0.1): the first,
no-op and 10 % churn syncs (wall time, peak RSS, the server's requests by verb), the read
floor (`kubectl get` of the same objects) and `kubectl apply -f` of the rendered objects;
for N <= `--peer-max`, the same again with 5 ms injected per request. Medians of
`--repeat` runs (the first sync and kubectl apply: one run each). Prints a table and the
issue's targets, writes bench/results.json and bench/results.png. `--sizes 100,1000` is a
quick run; `--real` adds a real kube-apiserver. Then a 50 MB inventory's `validate` and
`plan` (bench/large.py; `--no-large` leaves it out) and the Consul provider at concurrency 8
vs 1 (bench/consul_scale.py; `--no-providers`). `--watch` adds the watch figures (issue 13,
bench/watch.py: about 5 minutes); `--watch-only` measures those alone and keeps the other
figures of results.json as they are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report, scenarios  # noqa: E402
from bench.measure import Run, Server, median, run, test_server  # noqa: E402

LATENCY_MS = 5.0
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000",
                        help="numbers of Services, comma-separated (default: %(default)s)")
    parser.add_argument("--addresses", type=int, default=20, help="addresses per Service")
    parser.add_argument("--repeat", type=int, default=3, help="runs to take the median of")
    parser.add_argument("--peer-max", type=int, default=1000,
                        help="largest N to run kubectl apply and the 5 ms runs at "
                             "(one request per object: slow at 5,000)")
    parser.add_argument("--output", type=Path, default=HERE,
                        help="where results.json and results.png go (default: bench/)")
    parser.add_argument("--real", action="store_true",
                        help="also run against a real kube-apiserver + etcd from "
                             "$KUBEBUILDER_ASSETS")
    parser.add_argument("--no-large", dest="large", action="store_false",
                        help="leave out the 50 MB inventory (bench/large.py: about 3 minutes)")
    parser.add_argument("--no-providers", dest="providers", action="store_false",
                        help="leave out Consul at concurrency 8 vs 1 (bench/consul_scale.py)")
    parser.add_argument("--watch", action="store_true",
                        help="also measure run --watch against run --interval 10 "
                             "(bench/watch.py, about 5 minutes)")
    parser.add_argument("--watch-only", action="store_true",
                        help="measure the watch figures only; keep results.json's others")
    parser.add_argument("--watch-idle", type=float, default=60.0,
                        help="seconds of idle measured per mode (default: %(default)s)")
    args = parser.parse_args()
    if args.watch_only:
        return watch_only(args)
    sizes = [int(n) for n in args.sizes.split(",")]

    results: dict[str, Any] = {"machine": machine(), "addresses": args.addresses,
                               "repeat": args.repeat, "latency_ms": LATENCY_MS,
                               "start-up": start_up(args.repeat), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        for n in sizes:
            print(f"N = {n} ...", file=sys.stderr, flush=True)
            inv = scenarios.prepare(Path(tmp_dir) / str(n), n, args.addresses)
            size: dict[str, Any] = {"services": n, "objects": inv.objects,
                                    "changed": inv.changed}
            with test_server(inv.tmp, scenarios.NAMESPACE) as server:
                runs = measure(inv, server, args.repeat, apply=n <= args.peer_max)
            size["runs"] = as_json(runs)
            if n <= args.peer_max:
                with test_server(inv.tmp, scenarios.NAMESPACE, LATENCY_MS) as server:
                    size["latency_runs"] = as_json(measure(inv, server, args.repeat,
                                                           apply=True))
            results["sizes"].append(size)
        if args.real:
            results["real"] = real(Path(tmp_dir) / "real", sizes, args)
        if args.large:
            from bench import large

            print("the 50 MB inventory ...", file=sys.stderr, flush=True)
            configs = large.prepare(Path(tmp_dir) / "large")
            with test_server(Path(tmp_dir) / "large", scenarios.NAMESPACE) as server:
                results["large"] = large.runs(configs, server)
    if args.providers:
        from bench import consul_scale

        print("Consul, concurrency 8 vs 1 ...", file=sys.stderr, flush=True)
        results["consul"] = consul_scale.measure(args.repeat)
    if args.watch:
        from bench import watch

        results["watch"] = watch.measure(args.watch_idle)

    print("\n".join(report.table(results)))
    print(f"\nstart-up: {results['start-up']}")
    print("\ntargets (issue #9):")
    for met, text in report.targets(results):
        print(f"  [{'met' if met else 'NOT MET'}] {text}")
    if "watch" in results:
        _print_watch(results["watch"])
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from bench import plot  # matplotlib: only once there is something to draw

    plot.draw(results, args.output / "results.png")
    print(f"\nwrote {args.output / 'results.json'} and {args.output / 'results.png'}")
    return 0


def _print_watch(watch: dict[str, Any]) -> None:
    print("\n" + "\n".join(report.watch_table(watch)))
    print("\ntargets (issue #13):")
    for met, text in report.watch_targets(watch):
        print(f"  [{'met' if met else 'NOT MET'}] {text}")


def watch_only(args: argparse.Namespace) -> int:
    """The watch figures into the existing results.json (and its plot)."""
    from bench import plot, watch

    path = args.output / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {
        "machine": machine(), "sizes": []}
    results["watch"] = {**watch.measure(args.watch_idle), "machine": machine()}
    _print_watch(results["watch"])
    args.output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    plot.draw(results, args.output / "results.png")
    print(f"\nwrote {path} and {args.output / 'results.png'}")
    return 0


def measure(inv: scenarios.Inventories, server: Server, repeat: int, *, apply: bool,
            server_side: bool = False) -> dict[str, Run]:
    return {**scenarios.syncer_runs(inv, server, repeat),
            **scenarios.peer_runs(inv, server, repeat, apply=apply, server_side=server_side)}


def as_json(runs: dict[str, Run]) -> dict[str, Any]:
    return {label: r.as_json() for label, r in runs.items()}


def start_up(repeat: int) -> dict[str, float]:
    script = Path(sys.executable).with_name("endpoints-sync")
    cli = [str(script)] if script.exists() else scenarios.SYNCER
    ceph = ["validate", "-c", str(ROOT / "examples/ceph-rgw/config.yaml")]
    return {"--help": median(lambda: run([*cli, "--help"]), repeat).seconds,
            "validate ceph-rgw": median(lambda: run([*cli, *ceph]), repeat).seconds}


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.date.today().isoformat()}


def real(tmp: Path, sizes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same runs against genuine etcd-backed storage (tests/realapi.py starts it);
    no request counters there, and kubectl apply is server-side, as the issue's peer."""
    from tests.realapi import RealApiServer

    out = []
    for n in sizes:
        inv = scenarios.prepare(tmp / str(n), n, args.addresses)
        with RealApiServer() as api:
            api.json("POST", "/api/v1/namespaces",
                     {"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": scenarios.NAMESPACE}})
            kubeconfig = api.write_kubeconfig(inv.tmp / "kubeconfig-real",
                                              namespace=scenarios.NAMESPACE)
            runs = measure(inv, Server(kubeconfig, None), args.repeat,
                           apply=n <= args.peer_max, server_side=True)
        out.append({"services": n, "objects": inv.objects, "runs": as_json(runs)})
        for label, r in runs.items():
            print(f"real kube-apiserver N={n}: {label:28} {r.seconds:8.2f} s "
                  f"{r.rss_mb:6.0f} MB")
    return out


if __name__ == "__main__":
    sys.exit(main())
