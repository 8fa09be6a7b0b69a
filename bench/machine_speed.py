"""How steady this machine's cores are: a fixed busy loop on each core at once, timed in slices.

Prints, per core, each second's speed relative to that core's median, the range, and how far the
two cores' speeds move together. Run it before trusting a benchmark ratio: a core that runs at 0.6
of its speed for a second decides any block that second falls in.

    python -m bench.machine_speed --seconds 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time


def _spin(core: int, start: float, seconds: float, slice_s: float, out) -> None:
    os.sched_setaffinity(0, {core})
    while time.time() < start:
        pass
    counts = []
    end = start + seconds
    while time.time() < end:
        began, n = time.perf_counter(), 0
        while time.perf_counter() - began < slice_s:
            for _ in range(1000):
                pass
            n += 1
        counts.append(n)
    out.put((core, counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--slice-ms", type=float, default=250)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    out: multiprocessing.Queue = multiprocessing.Queue()
    start = time.time() + 1
    workers = [
        multiprocessing.Process(target=_spin, args=(core, start, args.seconds, args.slice_ms / 1000, out))
        for core in cores
    ]
    for worker in workers:
        worker.start()
    speeds = {}
    for _ in workers:
        core, counts = out.get()
        median = statistics.median(counts)
        speeds[core] = [count / median for count in counts]
    for worker in workers:
        worker.join()
    per_second = max(1, round(1000 / args.slice_ms))
    for core, values in sorted(speeds.items()):
        seconds = [statistics.mean(values[i : i + per_second]) for i in range(0, len(values), per_second)]
        print(f"core {core}: per-second speed {min(seconds):.2f}-{max(seconds):.2f} of its median")
        print("   " + " ".join(f"{x:.2f}" for x in seconds))
    if len(speeds) >= 2:
        first, second = (speeds[c] for c in cores[:2])
        n = min(len(first), len(second))
        print(f"correlation of cores {cores[0]} and {cores[1]}: {statistics.correlation(first[:n], second[:n]):.2f}")


if __name__ == "__main__":
    main()
