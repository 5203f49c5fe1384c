"""`make bench`: where a sync run spends its time at scale, as ratios measured in one run.

1,000 Services x 20 addresses (198.18.0.0/15, the benchmarking range) from a static
inventory, against the Kubernetes API test server in its own process on 127.0.0.1.

Reports:
- whole-process wall times of `validate` (start-up + inventory), the first run (creates
  everything), a no-op run and a one-address change, each as a ratio of `validate`;
- the phases of a no-op run measured in-process (load, discover, render, read the
  cluster, plan), each as a share of that run;
- the requests each run made.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T = TypeVar("T")


def inventory(services: int, addresses: int) -> dict[str, object]:
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    out = []
    for s in range(services):
        eps = [{"address": str(ipaddress.IPv4Address(base + s * addresses + a))}
               for a in range(addresses)]
        out.append({"name": f"svc-{s:05d}", "ports": [{"name": "http", "port": 80}],
                    "endpoints": eps})
    return {"services": out}


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cli(*args: str) -> float:
    cmd = [sys.executable, "-m", "syncer", *args]
    seconds, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True,
                                                 check=False))
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--addresses", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="no-op runs to take the median of")
    parser.add_argument("--real", action="store_true",
                        help="also run against a real kube-apiserver + etcd from "
                             "$KUBEBUILDER_ASSETS, side by side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        inv = inventory(args.services, args.addresses)
        (tmp / "inventory.yaml").write_text(yaml.safe_dump(inv))
        (tmp / "inventory.json").write_text(json.dumps(inv))
        (tmp / "config-json.yaml").write_text(
            "owner: bench\nnamespace: bench\nsources:\n"
            "  - {name: inv, provider: static, path: inventory.json}\n")
        config = tmp / "config.yaml"
        config.write_text("owner: bench\nnamespace: bench\nsources:\n"
                          "  - {name: inv, provider: static, path: inventory.yaml}\n")
        kubeconfig = tmp / "kubeconfig"
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.kubeapi", "--kubeconfig", str(kubeconfig),
             "--namespace", "bench"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "listening": the kubeconfig is written
            figures = report(args, config, kubeconfig, tmp, "the API test server")
        finally:
            server.terminate()
            server.wait(10)
        if args.real:
            real = report_real(args, tmp)
            print("\nreal kube-apiserver / API test server, same run shape")
            for label, seconds in real.items():
                print(f"  {label:34} {seconds / figures[label]:6.2f}x")
        return 0


def report_real(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """The same runs against genuine etcd-backed storage (tests/realapi.py starts it)."""
    from tests.realapi import RealApiServer

    inv = inventory(args.services, args.addresses)
    (tmp / "inventory.yaml").write_text(yaml.safe_dump(inv))  # the first run creates all
    with RealApiServer() as api:
        api.json("POST", "/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig-real", namespace="bench")
        return report(args, tmp / "config.yaml", kubeconfig, tmp, "a real kube-apiserver")


def report(args: argparse.Namespace, config: Path, kubeconfig: Path, tmp: Path,
           server: str) -> dict[str, float]:
    run = ["run", "-c", str(config), "--kubeconfig", str(kubeconfig)]
    validate = statistics.median(cli("validate", "-c", str(config)) for _ in range(3))
    validate_json = statistics.median(
        cli("validate", "-c", str(tmp / "config-json.yaml")) for _ in range(3))
    first = cli(*run)
    noop = statistics.median(cli(*run) for _ in range(args.repeat))
    data = yaml.safe_load((tmp / "inventory.yaml").read_text())
    data["services"][0]["endpoints"].pop()
    (tmp / "inventory.yaml").write_text(yaml.safe_dump(data))
    change = cli(*run)

    phases = in_process_phases(config, kubeconfig)
    total = sum(phases.values())

    n, a = args.services, args.addresses
    print(f"endpoints-sync bench against {server}: {n} services x {a} addresses = "
          f"{n * a} endpoints, {n * 3} objects\n")
    figures = {"validate (start-up + inventory)": validate,
               "validate, the inventory as JSON": validate_json,
               "first run (creates everything)": first,
               "no-op run": noop, "one address removed": change}
    print("whole process (wall, median)        seconds   x validate")
    for label, seconds in figures.items():
        print(f"  {label:34} {seconds:7.2f}   {seconds / validate:6.1f}x")
    print(f"\nno-op run in-process, by phase (total {total:.2f} s)")
    for label, seconds in phases.items():
        print(f"  {label:34} {seconds:7.2f}   {seconds / total:6.1%}")
    print()
    return figures


def in_process_phases(config: Path, kubeconfig: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    from syncer.kube import connect
    from syncer.ownership import JSON
    from syncer.plan import PlanSettings, make_plan
    from syncer.render import render_all
    from syncer.run import discover, load, read_cluster, render_settings

    t_import = time.perf_counter() - t0
    t_load, loaded = timed(lambda: load(str(config)))
    t_discover, desired = timed(lambda: discover(loaded))
    t_render, rendered = timed(lambda: render_all(desired.specs,
                                                  render_settings(loaded.config)))
    kube = connect(str(kubeconfig))
    t_read, current = timed(lambda: read_cluster(kube, loaded.config, rendered))
    current_list: list[JSON] = current
    t_plan, plan = timed(lambda: make_plan(rendered, current_list,
                                           PlanSettings(owner=loaded.config.owner)))
    assert plan.empty, "the no-op run planned changes"
    return {"import the CLI and the client": t_import, "load the config": t_load,
            "discover (read the inventory)": t_discover, "render desired objects": t_render,
            "read the cluster (LIST x3)": t_read, "plan (diff)": t_plan}


if __name__ == "__main__":
    sys.exit(main())
