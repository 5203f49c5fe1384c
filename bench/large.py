"""The large-inventory scenario: one static inventory of about 50 MB (6,000 Services x 200
addresses, 1.2 million endpoints), as YAML and as JSON, read by `validate` and by `plan`
against an empty API test server (reading, checking, rendering and planning every object):
wall time and peak RSS of each, the figures behind the README's memory rule of thumb."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.inventory import IPV4_BASE, IPV4_SIZE, PORT_SETS
from bench.measure import Run, Server, run

SERVICES, ADDRESSES = 6000, 200
SYNCER = [sys.executable, "-m", "syncer"]


def large_inventory(services: int = SERVICES, addresses: int = ADDRESSES) -> dict[str, Any]:
    """`services` x `addresses` in 198.18.0.0/15: a million addresses do not fit in a /15,
    so Services share addresses (each Service's own are distinct), as pools behind several
    Services do."""
    out = []
    for s in range(services):
        first = (s * addresses) % (IPV4_SIZE - addresses)
        ports = PORT_SETS[s % len(PORT_SETS)]
        # Each endpoint names its target port(s): the fields a real inventory has.
        target: dict[str, Any] = ({"port": 8080} if len(ports) == 1 else
                                  {"ports": {p["name"]: 8000 + p["port"] for p in ports}})
        eps = [{"address": _ipv4(first + a), **target} for a in range(addresses)]
        out.append({"name": f"big-{s:05d}", "ports": ports, "endpoints": eps})
    return {"services": out}


def _ipv4(offset: int) -> str:
    n = IPV4_BASE + offset
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def prepare(tmp: Path, services: int = SERVICES, addresses: int = ADDRESSES) -> dict[str, Path]:
    """inventory.yaml and inventory.json of the same Services, and a config for each."""
    tmp.mkdir(parents=True, exist_ok=True)
    inv = large_inventory(services, addresses)
    (tmp / "inventory.yaml").write_text(yaml.dump(inv, Dumper=yaml.CSafeDumper))
    (tmp / "inventory.json").write_text(json.dumps(inv))
    configs = {}
    for fmt in ("yaml", "json"):
        config = tmp / f"config-{fmt}.yaml"
        config.write_text("owner: large\nnamespace: bench\nsources:\n"
                          f"  - {{name: inv, provider: static, path: inventory.{fmt}}}\n")
        configs[fmt] = config
    return configs


def runs(configs: dict[str, Path], server: Server) -> dict[str, dict[str, Any]]:
    """`validate` and `plan` of each format (one run each: tens of seconds)."""
    out: dict[str, dict[str, Any]] = {}
    for fmt, config in configs.items():
        validate = run([*SYNCER, "validate", "-c", str(config)])
        plan = run([*SYNCER, "plan", "-c", str(config), "--kubeconfig", str(server.kubeconfig)],
                   server, stdout=config.with_suffix(".plan.txt"))
        size = (config.parent / f"inventory.{fmt}").stat().st_size
        out[fmt] = {"bytes": size, "validate": _json(validate), "plan": _json(plan)}
    return out


def _json(r: Run) -> dict[str, Any]:
    return r.as_json()
