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
    for fmt, big in results.get("large", {}).items():
        rss = big["validate"]["rss_mb"]
        out.append((rss < 1024, f"{big['bytes'] / 1e6:.0f} MB {fmt} inventory: validate "
                    f"{big['validate']['seconds']:.1f} s, {rss:.0f} MB (< 1 GB); plan "
                    f"{big['plan']['seconds']:.1f} s, {big['plan']['rss_mb']:.0f} MB"))
    if "consul" in results:
        c = results["consul"]
        out.append((c["speedup"] >= 5, f"Consul, {c['services']} services, "
                    f"{c['latency_ms']:g} ms a request: concurrency 8 {c['seconds']['8']:.2f} s, "
                    f"1 {c['seconds']['1']:.2f} s: {c['speedup']:.1f}x (>= 5x)"))
    start = results["start-up"]
    out.append((start["--help"] < 0.3, f"endpoints-sync --help: {start['--help']:.2f} s (< 0.3 s)"))
    out.append((start["validate ceph-rgw"] < 0.5,
                f"validate examples/ceph-rgw: {start['validate ceph-rgw']:.2f} s (< 0.5 s)"))
    return out


def watch_table(watch: Results) -> list[str]:
    """bench/watch.py's figures: one line per mode."""
    lines = [f"watch figures: {watch['consul_services']} Consul services + "
             f"{watch['file_services']} from a file, {watch['changes']} changes, "
             f"{watch['idle_s']:g} s idle",
             f"{'mode':12} {'consul median/p95':>18} {'file median/p95':>16} "
             f"{'CPU s/h idle':>12} {'kube req/min':>12} {'consul req/min':>14} "
             f"{'storm writes/changed':>21}"]
    for mode, m in watch["modes"].items():
        c, f, idle, storm = (m["consul staleness"], m["file staleness"], m["idle"],
                             m["storm"])
        lines.append(f"{mode:12} {c['median_s']:8.2f}/{c['p95_s']:6.2f} s "
                     f"{f['median_s']:7.2f}/{f['p95_s']:5.2f} s {idle['cpu_s_per_hour']:12.1f} "
                     f"{idle['kube_requests_per_min']:12.1f} "
                     f"{idle['consul_requests_per_min']:14.1f} "
                     f"{storm['writes']:>12}/{storm['objects changed']}")
    return lines


def watch_targets(watch: Results) -> list[tuple[bool, str]]:
    """Each target of issue #13 the watch figures show."""
    w, loop = watch["modes"]["watch"], watch["modes"]["interval 10"]
    out = [(w[k]["median_s"] < 2, f"watch, {k}: median {w[k]['median_s']:.2f} s (< 2 s; "
            f"--interval 10: {loop[k]['median_s']:.2f} s)")
           for k in ("consul staleness", "file staleness")]
    ratio = loop["idle"]["cpu_s_per_hour"] / max(w["idle"]["cpu_s_per_hour"], 1e-9)
    out.append((ratio >= 10, f"idle CPU: watch {w['idle']['cpu_s_per_hour']:.1f} s/h, "
                f"--interval 10 {loop['idle']['cpu_s_per_hour']:.1f} s/h: {ratio:.0f}x less "
                "(>= 10x)"))
    storm = w["storm"]
    out.append((storm["writes"] <= storm["objects changed"],
                f"storm of {watch['storm']} deregistrations: {storm['writes']} writes for "
                f"{storm['objects changed']} changed objects (no more)"))
    out.append((all(m["exit code"] == 0 for m in watch["modes"].values()),
                "SIGTERM: both modes exit 0"))
    return out
