"""PNG chart of a bench.compare JSON result: latency distribution and throughput per configuration.

python -m bench.chart bench/results/compare.json bench/results/compare.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter


def main(source: Path, target: Path) -> None:
    data = json.loads(source.read_text())
    samples: dict[str, list[float]] = data["latency_samples_ms"]
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(13, 5))
    for label, values in sorted(samples.items()):
        ordered = sorted(values)
        latency.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=label)
    latency.set(xscale="log", xlabel="latency (ms, log)", ylabel="share of requests", title="Latency distribution")
    latency.xaxis.set_major_formatter(ScalarFormatter())  # 10, 100, 1000 rather than 10^n
    latency.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a log axis
    latency.legend(fontsize=7)
    rows = data["results"]
    labels = [f"{r['variant']}\nc={r['concurrency']}" for r in rows]
    throughput.bar(
        range(len(rows)),
        [r["rps"] for r in rows],
        color=["#999" if r["variant"].startswith("stock") else "#2a7" for r in rows],
    )
    throughput.set_xticks(range(len(rows)), labels, fontsize=7)
    throughput.set(ylabel="requests/s (median over rounds)", title="Throughput per configuration")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
