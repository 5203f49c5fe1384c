"""Providers at scale: the Consul provider against tests/consul_double.py, 500 services with
20 ms of latency per request, fetched with `concurrency` 8 (the default) and 1 side by side,
in this process (the double is an HTTP server on 127.0.0.1)."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from providers.consul import ConsulOptions, ConsulProvider
from syncer.plugin import CONFIG_DIR, Discovery, SourceContext
from tests.consul_double import ConsulDouble

SERVICES, LATENCY_S = 500, 0.020


def measure(repeat: int, services: int = SERVICES) -> dict[str, Any]:
    """Median seconds of one discovery (catalog mode: one catalog request, then one health
    request per service) at each concurrency, and their ratio."""
    double = ConsulDouble()
    double.add_node("node-a", "198.18.0.1")
    for s in range(services):
        double.register(f"svc-{s:03d}", "node-a", port=8000 + s % 1000)
    double.start()
    try:
        double.delay = LATENCY_S
        seconds = {c: _median(functools.partial(_discover, double, c, services), repeat)
                   for c in (8, 1)}
    finally:
        double.stop()
    return {"services": services, "latency_ms": LATENCY_S * 1000,
            "seconds": {str(c): s for c, s in seconds.items()},
            "speedup": seconds[1] / seconds[8]}


def _discover(double: ConsulDouble, concurrency: int, services: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        options = ConsulOptions.model_validate(
            {"url": double.url, "concurrency": concurrency}, context={CONFIG_DIR: Path(tmp)})
        provider = ConsulProvider(options, SourceContext(
            source="bench", config_file=f"{tmp}/config.yaml", field_path="sources[0]",
            config_dir=Path(tmp)))
        start = time.perf_counter()
        found = provider.discover()
        seconds = time.perf_counter() - start
    got = len(found.services) if isinstance(found, Discovery) else len(found)
    if got != services:
        raise SystemExit(f"consul bench: {got} services found, {services} registered")
    return seconds


def _median(one: Callable[[], float], repeat: int) -> float:
    return sorted(one() for _ in range(repeat))[(repeat - 1) // 2]
