"""The markdown table of one scenario of bench/scenarios.sh.

    scenarios_summary.py <scenario dir> <rounds>

The directory holds `configs` (one `name<TAB>proxy flags` a line, in the
order to show) and, per configuration and round, `<name>.r<round>.json`: the
report of `mcp-backpressure load --json --stream ...`. One row per
configuration and stream; with several rounds every number is the median
over the rounds.
"""

import json
import statistics
import sys
from pathlib import Path


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def num(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def counts(maps):
    """Median count per key over the rounds, as `key n, key n`."""
    keys = sorted({k for m in maps for k in m})
    if not keys:
        return "-"
    return ", ".join(f"{k} {median([m.get(k, 0) for m in maps]):g}" for k in keys)


def main() -> None:
    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    configs = [
        line.split("\t", 1)[0]
        for line in (directory / "configs").read_text().splitlines()
        if line.strip()
    ]
    print(
        "| configuration | stream | offered/s | goodput/s | success | ok p50 ms | ok p99 ms "
        "| rejected (by reason) | rejected (by scope) | reject p99 ms | other errors |"
    )
    print("|---|---|--:|--:|--:|--:|--:|---|---|--:|--:|")
    for config in configs:
        reports = []
        for r in range(1, rounds + 1):
            path = directory / f"{config}.r{r}.json"
            if path.exists():
                reports.append(json.loads(path.read_text()))
        if not reports:
            print(f"| {config} | (no report) | | | | | | | | | |")
            continue
        names = [s["stream"] for s in reports[0]["streams"]]
        for name in names:
            runs = [s for rep in reports for s in rep["streams"] if s["stream"] == name]
            success = median([s.get("success_rate") for s in runs])
            print(
                "| "
                + " | ".join(
                    [
                        config,
                        f"{name} (`{runs[0]['tool']}`)",
                        num(median([s["offered_rate"] for s in runs])),
                        num(median([s["goodput"] for s in runs])),
                        "-" if success is None else f"{success * 100:.1f}%",
                        num(median([s["latency_ms"]["ok"]["p50"] for s in runs])),
                        num(median([s["latency_ms"]["ok"]["p99"] for s in runs])),
                        counts([s["rejected"] for s in runs]),
                        counts([s.get("rejected_by_scope", {}) for s in runs]),
                        num(median([s["latency_ms"]["rejected"]["p99"] for s in runs])),
                        f"{median([s['errors_total'] for s in runs]):g}",
                    ]
                )
                + " |"
            )


if __name__ == "__main__":
    main()
