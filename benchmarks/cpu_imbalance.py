"""How evenly the threads of a split-mode call finish: one long float32 row's forward scan,
timed call by call beside ``np.add`` on the same arrays, with each task of each phase timed on
its thread (wall clock and the thread's CPU time) and the CPU it ran on.

    python benchmarks/cpu_imbalance.py [--calls 200] [--size 2**24]

Prints, over the calls: the time / ``np.add`` ratio; the ratio of the slower to the faster
task of the second phase (equal work: one segment each); the least CPU time / wall time of a
task (1.0: never descheduled); and the calls split by that balance. With equal work, a
task slower than the other while it ran all the time means its CPU ran slower (on a shared
VM: another guest on the host), not that it waited.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from collections import Counter

import numpy as np

import linscan
from linscan import _host
from linscan.__main__ import parse_size, positive_int
from linscan.backends.cpu import pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=positive_int, default=200)
    parser.add_argument("--size", type=parse_size, default=1 << 24)
    args = parser.parse_args()
    libc = ctypes.CDLL(None)
    phases = []
    run = pool.run

    def timed_run(tasks, group=None):
        times = [None] * len(tasks)

        def timed(i, task):
            def call():
                cpu = libc.sched_getcpu()
                wall, used = time.perf_counter(), time.thread_time()
                task()
                times[i] = (time.perf_counter() - wall, time.thread_time() - used, cpu)

            return call

        run([timed(i, t) for i, t in enumerate(tasks)], group)
        phases.append(times)

    pool.run = timed_run
    rng = np.random.default_rng(0)
    a = rng.uniform(0.9, 1.0, args.size).astype(np.float32)
    x = rng.standard_normal(args.size).astype(np.float32)
    h = np.empty_like(x)
    linscan.scan(a, x, out=h)  # compile or load the kernels
    rows, slow_cpus = [], Counter()
    for _ in range(args.calls):
        phases.clear()
        t0 = time.perf_counter()
        linscan.scan(a, x, out=h)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.add(a, x, out=h)
        floor = time.perf_counter() - t0
        if len(phases) != 2 or len(phases[-1]) != 2:
            raise SystemExit("not split mode on two threads: nothing to compare")
        second = phases[-1]
        walls = [w for w, _, _ in second]
        busy = min(u / w for w, u, _ in second)
        rows.append((ours / floor, max(walls) / min(walls), busy))
        if max(walls) / min(walls) >= 1.3:
            slow_cpus[second[int(np.argmax(walls))][2]] += 1
    r = np.array(rows)
    even, uneven = r[r[:, 1] < 1.15], r[r[:, 1] >= 1.3]
    print(f"CPU: {_host.summary()}; {args.calls} calls of 1 x {args.size} float32")
    p90 = np.percentile(r[:, 0], 90)
    print(f"x np.add: median {np.median(r[:, 0]):.2f}, 90th percentile {p90:.2f}")
    print(
        f"second phase, slower / faster task: median {np.median(r[:, 1]):.2f}, "
        f"90th percentile {np.percentile(r[:, 1], 90):.2f}, largest {r[:, 1].max():.2f}"
    )
    print(f"least CPU time / wall time of a task: median {np.median(r[:, 2]):.3f}")
    for name, part in (("even (< 1.15)", even), ("uneven (>= 1.3)", uneven)):
        median = f"{np.median(part[:, 0]):.2f}" if len(part) else "-"
        print(f"calls {name}: {len(part)}, x np.add median {median}")
    print("the slower task ran on CPU:", dict(sorted(slow_cpus.items())))


if __name__ == "__main__":
    main()
