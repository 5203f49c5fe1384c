"""What is measured for one inventory size, against one server: the syncer's first, no-op and
10 % churn syncs, and its peers on the same objects (the read floor, `kubectl apply`)."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.inventory import inventory
from bench.measure import Run, Server, median, run

OWNER = NAMESPACE = "bench"
SYNCER = [sys.executable, "-m", "syncer"]
KINDS = "services,endpoints,endpointslices"


@dataclass(frozen=True)
class Inventories:
    """One size's files: the config reads inventory.yaml, a copy of `a` or `b` (10 % churn
    apart); `manifests` is `a` rendered by the syncer, for kubectl."""

    tmp: Path
    config: Path
    a: Path
    b: Path
    manifests: Path
    objects: int  # rendered from `a`
    changed: int  # objects that differ between `a` and `b` (changed, added or removed)

    def use(self, which: Path) -> None:
        shutil.copyfile(which, self.tmp / "inventory.yaml")


def prepare(tmp: Path, services: int, addresses: int) -> Inventories:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.yaml"
    config.write_text(f"owner: {OWNER}\nnamespace: {NAMESPACE}\nsources:\n"
                      "  - {name: inv, provider: static, path: inventory.yaml}\n")
    a, b = tmp / "inventory-a.yaml", tmp / "inventory-b.yaml"
    for path, churned in ((a, False), (b, True)):
        path.write_text(yaml.dump(inventory(services, addresses, churned),
                                  Dumper=yaml.CSafeDumper))
    rendered = []
    for path in (b, a):  # `a` last: the manifests file and inventory.yaml stay `a`
        shutil.copyfile(path, tmp / "inventory.yaml")
        out = tmp / f"{path.stem}.json"
        run([*SYNCER, "render", "-c", str(config), "-o", "json"], stdout=out)
        rendered.append(_by_key(json.loads(out.read_text())))
    run([*SYNCER, "render", "-c", str(config)], stdout=tmp / "manifests.yaml")
    in_b, in_a = rendered
    changed = sum(in_a.get(key) != in_b.get(key) for key in in_a.keys() | in_b.keys())
    return Inventories(tmp, config, a, b, tmp / "manifests.yaml", len(in_a), changed)


def _by_key(listing: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in listing["items"]}


def syncer_runs(inv: Inventories, server: Server, repeat: int) -> dict[str, Run]:
    """First sync (once: it needs an empty server), no-op, 10 % churn (a -> b -> a ...)."""
    sync = [*SYNCER, "run", "-c", str(inv.config), "--kubeconfig", str(server.kubeconfig)]
    inv.use(inv.a)
    first = run(sync, server)
    noop = median(lambda: run(sync, server), repeat)
    turns = iter([inv.b, inv.a] * repeat)

    def churn() -> Run:
        inv.use(next(turns))
        return run(sync, server)

    churned = median(churn, repeat)
    if repeat % 2:  # back to `a`, which the peers' manifests are
        inv.use(inv.a)
        run(sync, server)
    return {"first sync": first, "no-op sync": noop, "10% churn sync": churned}


def peer_runs(inv: Inventories, server: Server, repeat: int, *, apply: bool,
              server_side: bool = False) -> dict[str, Run]:
    """The read floor, and (`apply`) `kubectl apply -f` of the same objects as rendered: its
    first run over what the syncer wrote, then its no-op (one request per object)."""
    kubectl = ["kubectl", "--kubeconfig", str(server.kubeconfig),
               "--cache-dir", str(inv.tmp / "kubectl-cache")]
    run([*kubectl, "get", "namespaces"])  # discovery into the cache, untimed
    floor = [*kubectl, "get", KINDS, "-A", "-l", f"endpoints-sync.io/owner={OWNER}",
             "-o", "json"]
    runs = {"read floor (kubectl get)": median(lambda: run(floor, server), repeat)}
    if apply:
        # The test server serves no /openapi/v3 (client-side validation) nor apply patches
        # (server-side apply): there, client-side apply without validation.
        how = ["--server-side", "--force-conflicts"] if server_side else ["--validate=false"]
        cmd = [*kubectl, "apply", *how, "-f", str(inv.manifests)]
        runs["kubectl apply, first"] = run(cmd, server)
        runs["kubectl apply"] = run(cmd, server)  # once: ~1 request per object, steady
    return runs
