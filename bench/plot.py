"""bench/results.png from the results: wall time and peak RSS by N, and the 5 ms peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CI runner or a 2-core box

import matplotlib.pyplot as plt

from bench.report import Results

LINES = ("first sync", "no-op sync", "10% churn sync", "read floor (kubectl get)",
         "kubectl apply")


def draw(results: Results, path: Path) -> None:
    sizes = results["sizes"]
    panels = 4 if "watch" in results else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.6))
    times, rss, latency = axes[:3]
    if "watch" in results:
        _staleness(axes[3], results["watch"])
    for label in LINES:
        points = [(s["services"], s["runs"][label]["seconds"]) for s in sizes
                  if label in s["runs"]]
        if points:
            times.plot(*zip(*points, strict=True), marker="o", label=label)
    times.set(xscale="log", yscale="log", xlabel="Services (x 20 addresses)",
              ylabel="wall seconds (median)", title="one run, API test server")
    times.legend(fontsize=8)
    times.grid(True, which="both", alpha=0.3)
    for label in ("first sync", "no-op sync", "10% churn sync"):
        rss.plot([s["services"] for s in sizes], [s["runs"][label]["rss_mb"] for s in sizes],
                 marker="o", label=label)
    rss.axhline(300, color="red", linestyle="--", linewidth=1, label="target (300 MB)")
    rss.set(xscale="log", xlabel="Services (x 20 addresses)", ylabel="peak RSS, MB",
            title="the syncer's memory")
    rss.legend(fontsize=8)
    rss.grid(True, alpha=0.3)
    with_latency = [s for s in sizes if s.get("latency_runs")]
    width = 0.8 / 3
    for i, label in enumerate(("no-op sync", "read floor (kubectl get)", "kubectl apply")):
        xs = [j + (i - 1) * width for j in range(len(with_latency))]
        latency.bar(xs, [s["latency_runs"][label]["seconds"] for s in with_latency], width,
                    label=label)
    latency.set_xticks(range(len(with_latency)), [str(s["services"]) for s in with_latency])
    latency.set(xlabel="Services (x 20 addresses)", ylabel="wall seconds (median)",
                title=f"{results['latency_ms']:g} ms per request")
    latency.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"endpoints-sync bench, {m['date']}: {m['cpus']} CPUs ({m['cpu_model']}), "
                 f"Python {m['python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _staleness(ax: Any, watch: Results) -> None:
    """Issue 13: change -> EndpointSlice, median with p95 as the error bar, by mode."""
    kinds = ("consul staleness", "file staleness")
    width = 0.8 / len(watch["modes"])
    for i, (mode, m) in enumerate(watch["modes"].items()):
        xs = [j + (i - 0.5) * width for j in range(len(kinds))]
        medians = [m[k]["median_s"] for k in kinds]
        above = [m[k]["p95_s"] - m[k]["median_s"] for k in kinds]
        ax.bar(xs, medians, width, yerr=[[0] * len(kinds), above], capsize=3,
               label=f"run --{mode}")
    ax.set_xticks(range(len(kinds)), ["Consul deregistration", "inventory file edit"])
    ax.axhline(2, color="red", linestyle="--", linewidth=1, label="target median (2 s)")
    ax.set(ylabel="seconds to the EndpointSlice (median, p95)",
           title=f"staleness, {watch['changes']} changes")
    ax.legend(fontsize=8)
