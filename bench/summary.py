#!/usr/bin/env python3
"""Summaries of the bench/ runs: medians over rounds and side-by-side ratios.

    summary.py core <target/criterion>
    summary.py transparency <dir> [a/b ...]
    summary.py overload <dir> [--capacity N --service-ms N --queue-timeout-ms N] [a/b ...]

Run files are <dir>/<transport>-<kind>-<round>.json, as written by
`mcp-backpressure load --json`. A ratio a/b is computed round by round (the
two ran next to each other) and the median of those is reported.
"""

import glob
import json
import os
import re
import statistics
import sys
from collections import defaultdict


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def runs(directory):
    """{transport: {kind: {round: report}}}"""
    out = defaultdict(lambda: defaultdict(dict))
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        m = re.fullmatch(r"(stdio|http)-(.+)-(\d+)\.json", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            out[m[1]][m[2]][int(m[3])] = json.load(f)
    return out


def ratio_rounds(by_kind, a, b, metric):
    ratios = []
    for r, ra in by_kind.get(a, {}).items():
        rb = by_kind.get(b, {}).get(r)
        if rb is None:
            continue
        va, vb = metric(ra), metric(rb)
        if va is not None and vb:
            ratios.append(va / vb)
    return ratios


def ratio(x):
    """0.938, or 1/1234 for small ratios."""
    return f"{x:.3f}" if x >= 0.1 else f"1/{1 / x:.0f}"


def ratio_cell(ratios):
    if not ratios:
        return "-"
    return f"{ratio(statistics.median(ratios))} (rounds: {' '.join(ratio(x) for x in ratios)})"


def lat(report, outcome, p):
    return report["latency_ms"][outcome][p]


def transparency(directory, pairs):
    data = runs(directory)
    for transport, by_kind in data.items():
        print(f"\ntransparency over {transport}: echo, closed loop (median of {len(next(iter(by_kind.values())))} rounds)")
        print(f"  {'server':<14} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'rejected':>9} {'peak RSS MB':>12}")
        for kind, rounds_ in sorted(by_kind.items()):
            reports = list(rounds_.values())
            rss = median([(r.get("server") or {}).get("peak_rss_kb") for r in reports])
            print(
                f"  {kind:<14} {fmt(median([r['goodput'] for r in reports]), 1):>10}"
                f" {fmt(median([lat(r, 'ok', 'p50') for r in reports])):>8}"
                f" {fmt(median([lat(r, 'ok', 'p99') for r in reports])):>8}"
                f" {sum(r['errors_total'] for r in reports):>7}"
                f" {sum(r['rejected_total'] for r in reports):>9}"
                f" {fmt(rss / 1024 if rss else None, 1):>12}"
            )
        for pair in pairs:
            a, b = pair.split("/")
            print(f"  throughput {a} / {b}: {ratio_cell(ratio_rounds(by_kind, a, b, lambda r: r['goodput']))}")
            print(f"  p50 latency {a} / {b}: {ratio_cell(ratio_rounds(by_kind, a, b, lambda r: lat(r, 'ok', 'p50')))}")


def overload(directory, capacity, service_ms, timeout_ms, pairs):
    data = runs(directory)
    for transport, by_kind in data.items():
        print(f"\n10x overload over {transport} (median of {len(next(iter(by_kind.values())))} rounds; capacity {capacity}/s)")
        print(
            f"  {'server':<14} {'offered/s':>9} {'goodput/s':>9} {'of cap.':>8} {'ok p50':>8} {'ok p99':>9}"
            f" {'ok max':>9} {'rej p50':>8} {'rej p99':>8} {'ok':>6} {'rejected (by reason)':<44} {'err':>4}"
            f" {'RSS MB: peak':>12} {'at 1 s':>7} {'at end':>7}"
        )
        for kind, rounds_ in sorted(by_kind.items()):
            reports = list(rounds_.values())
            goodput = median([r["goodput"] for r in reports])
            reasons = defaultdict(list)
            for r in reports:
                for reason, n in r["rejected"].items():
                    reasons[reason].append(n)
            reasons_cell = " ".join(f"{k}={int(statistics.median(v))}" for k, v in sorted(reasons.items())) or "-"
            servers = [r.get("server") or {} for r in reports]
            peak = median([s.get("peak_rss_kb") for s in servers])
            samples = [s.get("rss_kb_samples") or [] for s in servers]
            interval = next((s.get("sample_interval_s") for s in servers if s), 0.5) or 0.5
            at_1s = median([x[min(len(x) - 1, int(1 / interval))] for x in samples if x])
            at_end = median([x[-1] for x in samples if x])
            mb = lambda kb: fmt(kb / 1024 if kb else None, 1)  # noqa: E731
            print(
                f"  {kind:<14} {fmt(median([r['offered_rate'] for r in reports]), 1):>9} {fmt(goodput, 1):>9}"
                f" {fmt(100 * goodput / capacity if goodput is not None else None, 1) + '%':>8}"
                f" {fmt(median([lat(r, 'ok', 'p50') for r in reports]), 1):>8}"
                f" {fmt(median([lat(r, 'ok', 'p99') for r in reports]), 1):>9}"
                f" {fmt(median([lat(r, 'ok', 'max') for r in reports]), 1):>9}"
                f" {fmt(median([lat(r, 'rejected', 'p50') for r in reports])):>8}"
                f" {fmt(median([lat(r, 'rejected', 'p99') for r in reports])):>8}"
                f" {int(median([r['ok'] for r in reports])):>6} {reasons_cell:<44}"
                f" {int(median([r['errors_total'] for r in reports])):>4}"
                f" {mb(peak):>12} {mb(at_1s):>7} {mb(at_end):>7}"
            )
            if kind.endswith("wrapped"):
                bound = service_ms + timeout_ms
                p99s = [lat(r, "ok", "p99") for r in reports]
                rej = [lat(r, "rejected", "p99") for r in reports]
                print(
                    f"    targets: goodput >= 95% of capacity: {fmt(100 * goodput / capacity, 1)}%;"
                    f" admitted p99 <= {bound} ms: {fmt(median(p99s), 1)} ms;"
                    f" p99 time-to-reject < 2 ms: {fmt(median(rej))} ms"
                )
        for pair in pairs:
            a, b = pair.split("/")
            print(f"  goodput {a} / {b}: {ratio_cell(ratio_rounds(by_kind, a, b, lambda r: r['goodput']))}")
            print(f"  admitted p99 {a} / {b}: {ratio_cell(ratio_rounds(by_kind, a, b, lambda r: lat(r, 'ok', 'p99')))}")
            print(f"  reject p99 {a} / {b}: {ratio_cell(ratio_rounds(by_kind, a, b, lambda r: lat(r, 'rejected', 'p99')))}")
            print(
                f"  peak RSS {a} / {b}: "
                f"{ratio_cell(ratio_rounds(by_kind, a, b, lambda r: (r.get('server') or {}).get('peak_rss_kb')))}"
            )


def core(criterion_dir):
    def ns(group, name):
        path = os.path.join(criterion_dir, group, name, "new", "estimates.json")
        try:
            with open(path) as f:
                return json.load(f)["median"]["point_estimate"]
        except OSError:
            return None

    rows = {
        "uncontended": [
            "tokio_semaphore",
            "tokio_semaphore_owned",
            "mcp_backpressure",
            "tower_concurrency_limit",
            "two_clock_reads",
        ],
        "reject": [
            "tokio_semaphore_try_acquire",
            "tower_load_shed",
            "mcp_backpressure_admit",
            "mcp_backpressure_concurrency_limit",
            "mcp_backpressure_queue_full",
        ],
        "contended": ["tokio_semaphore", "tokio_semaphore_timeout", "mcp_backpressure", "tower_concurrency_limit"],
    }
    print("\ncriterion medians (ns per operation)")
    for group, names in rows.items():
        for name in names:
            print(f"  {group + '/' + name:<48} {fmt(ns(group, name), 1):>10}")

    def r(a, b):
        va, vb = ns(*a), ns(*b)
        return "-" if va is None or not vb else f"{va / vb:.2f}x"

    print("\nratios (lower is better for the numerator)")
    print(f"  uncontended: mcp_backpressure / tokio Semaphore      {r(('uncontended', 'mcp_backpressure'), ('uncontended', 'tokio_semaphore'))}  (target <= 1.5x)")
    print(f"  uncontended: mcp_backpressure / tokio acquire_owned  {r(('uncontended', 'mcp_backpressure'), ('uncontended', 'tokio_semaphore_owned'))}")
    print(f"  uncontended: mcp_backpressure / tower ConcurrencyLimit {r(('uncontended', 'mcp_backpressure'), ('uncontended', 'tower_concurrency_limit'))}")
    print(f"  reject: concurrency_limit / admit                     {r(('reject', 'mcp_backpressure_concurrency_limit'), ('reject', 'mcp_backpressure_admit'))}  (target <= 1x)")
    print(f"  reject: queue_full / admit                            {r(('reject', 'mcp_backpressure_queue_full'), ('reject', 'mcp_backpressure_admit'))}  (target <= 1x)")
    print(f"  reject: concurrency_limit / tower LoadShed            {r(('reject', 'mcp_backpressure_concurrency_limit'), ('reject', 'tower_load_shed'))}")
    print(f"  reject: concurrency_limit / Semaphore::try_acquire    {r(('reject', 'mcp_backpressure_concurrency_limit'), ('reject', 'tokio_semaphore_try_acquire'))}")
    print(f"  contended: mcp_backpressure / tokio Semaphore         {r(('contended', 'mcp_backpressure'), ('contended', 'tokio_semaphore'))}")
    print(f"  contended: mcp_backpressure / tokio timeout(Semaphore) {r(('contended', 'mcp_backpressure'), ('contended', 'tokio_semaphore_timeout'))}")
    print(f"  contended: mcp_backpressure / tower ConcurrencyLimit  {r(('contended', 'mcp_backpressure'), ('contended', 'tower_concurrency_limit'))}")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    what, directory, rest = argv[0], argv[1], argv[2:]
    if what == "core":
        core(directory)
    elif what == "transparency":
        transparency(directory, rest)
    elif what == "overload":
        opts = {"--capacity": 100.0, "--service-ms": 50.0, "--queue-timeout-ms": 1000.0}
        pairs = []
        i = 0
        while i < len(rest):
            if rest[i] in opts:
                opts[rest[i]] = float(rest[i + 1])
                i += 2
            else:
                pairs.append(rest[i])
                i += 1
        overload(directory, opts["--capacity"], opts["--service-ms"], opts["--queue-timeout-ms"], pairs)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
