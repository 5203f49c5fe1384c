"""The printed table and the issue's targets, from the results (bench/results.json's shape)."""

from __future__ import annotations

from typing import Any

Results = dict[str, Any]
SYNCS = ("first sync", "no-op sync", "10% churn sync")


def _verbs(requests: dict[str, int]) -> str:
    return " ".join(f"{verb} {n}" for verb, n in sorted(requests.items())) or "-"


def table(results: Results) -> list[str]:
    lines = [f"{'N':>5} {'objects':>7}  {'run':28} {'seconds':>8} {'RSS MB':>7}  requests"]
    for size in results["sizes"]:
        for server, runs in (("", size["runs"]),
                             (f" +{results['latency_ms']:g} ms", size.get("latency_runs", {}))):
            for label, r in runs.items():
                lines.append(f"{size['services']:>5} {size['objects']:>7}  "
                             f"{label + server:28} {r['seconds']:8.2f} {r['rss_mb']:7.0f}  "
                             f"{_verbs(r['requests'])}")
    return lines


def targets(results: Results) -> list[tuple[bool, str]]:
    """Each target of issue #9 the benchmark shows, with its figure."""
    out: list[tuple[bool, str]] = []
    sizes = {s["services"]: s for s in results["sizes"]}
    for n, size in sizes.items():
        noop = size["runs"]["no-op sync"]["requests"]
        only_lists = set(noop) <= {"LIST"}
        out.append((only_lists, f"N={n} no-op: requests {_verbs(noop)} (LIST only, no writes)"))
        churn = size["runs"]["10% churn sync"]
        out.append((churn["writes"] == size["changed"],
                    f"N={n} churn: {churn['writes']} writes for {size['changed']} changed "
                    "objects"))
    if 1000 in sizes:
        s = sizes[1000]
        floor = s["runs"]["read floor (kubectl get)"]["seconds"]
        ratio = s["runs"]["no-op sync"]["seconds"] / floor
        out.append((ratio <= 1.5, f"N=1000 no-op: {ratio:.2f}x the read floor (<= 1.5x)"))
        lat = s.get("latency_runs", {})
        if "kubectl apply" in lat:
            speedup = lat["kubectl apply"]["seconds"] / lat["no-op sync"]["seconds"]
            out.append((speedup >= 10, f"N=1000, {results['latency_ms']:g} ms per request: "
                        f"no-op {speedup:.1f}x faster than kubectl apply (>= 10x)"))
    if 5000 in sizes:
        rss = max(sizes[5000]["runs"][label]["rss_mb"] for label in SYNCS)
        out.append((rss < 300, f"N=5000: syncer peak RSS {rss:.0f} MB (< 300 MB)"))
        if 1000 in sizes:
            growth = (sizes[5000]["runs"]["no-op sync"]["seconds"]
                      / sizes[1000]["runs"]["no-op sync"]["seconds"])
            out.append((growth <= 5, f"no-op time N=1000 -> 5000: {growth:.1f}x (<= 5x, linear)"))
    start = results["start-up"]
    out.append((start["--help"] < 0.3, f"endpoints-sync --help: {start['--help']:.2f} s (< 0.3 s)"))
    out.append((start["validate ceph-rgw"] < 0.5,
                f"validate examples/ceph-rgw: {start['validate ceph-rgw']:.2f} s (< 0.5 s)"))
    return out
