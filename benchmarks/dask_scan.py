"""When is Dask worth it? ``linscan.dask.scan`` against the in-memory ``linscan.scan``.

    python benchmarks/dask_scan.py [--steps 2**24] [--rows 16] [--repeat 3]

One float32 array of ``rows x steps`` (time-contiguous), decay 0.999, scanned along time:

* in memory: ``linscan.scan(a, x)`` on a NumPy array, into fresh memory (the yardstick;
  its ratio to ``np.add(a, x)``, the memory floor of the same arrays, is printed too);
* Dask, threaded scheduler (one process, both cores), and a ``dask.distributed.LocalCluster``
  of 1 and of 2 single-threaded worker processes, chunked along time into 4 to 1024 chunks.

Every run starts from the array in memory (for the cluster: already in the workers' memory,
``persist`` before timing) and leaves its result in memory (``persist``), so that no run pays
for moving the array between processes. Every figure is a ratio to the in-memory scan's time
in the same run (median of ``--repeat``), and the overhead per chunk is the slope of the time
against the number of chunks.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import dask
import dask.array as da
import distributed
import numpy as np

import linscan
import linscan.dask as ld
from linscan._bench.common import median_time  # a warm-up call, then the median of `repeat`

DECAY = np.float32(0.999)


def in_memory(x, repeat):
    scan = median_time(lambda: linscan.scan(DECAY, x), repeat)  # warms up first
    floor = median_time(lambda: np.add(DECAY, x), repeat)
    return scan, floor


def dask_time(x, chunks, repeat, client=None):
    rows, steps = x.shape
    lazy = da.from_array(x, chunks=(rows, -(-steps // chunks)))
    ready = lazy if client is None else client.persist(lazy)
    if client is not None:
        distributed.wait(ready)
    runs = iter(range(repeat + 1))

    def run():
        # A new h0 each run: new keys, so that no run finds the last one's result.
        h0 = np.full(rows, next(runs), np.float32)
        h = ld.scan(DECAY, ready, h0)
        if client is None:
            h.persist(scheduler="threads")
        else:
            result = client.persist(h)
            distributed.wait(result)
            del result

    return median_time(run, repeat)  # the warm-up run: workers import linscan, load the kernels


def slope(xs, ys):
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=lambda s: int(eval(s)), default=2**24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    args = parser.parse_args(argv)
    rows, steps = args.rows, args.steps
    elements = rows * steps
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    machine = platform.processor() or platform.machine()
    print(f"# linscan.dask, {rows} x {steps} float32 ({elements * 4 / 2**30:.2f} GiB), "
          f"{time.strftime('%Y-%m-%d')}, commit {commit}, {machine}, "
          f"dask {dask.__version__}\n")  # fmt: skip
    x = np.random.default_rng(0).standard_normal((rows, steps), np.float32)
    base, floor = in_memory(x, args.repeat)
    print(f"in-memory linscan.scan: {elements / base / 1e6:.0f} M elements/s "
          f"({floor / base:.2f} of np.add's speed on the same arrays)\n")  # fmt: skip
    results = {}
    results["threads (1 process, 2 threads)"] = [dask_time(x, k, args.repeat) for k in args.chunks]
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:  # fmt: skip
            with distributed.Client(cluster) as client:
                results[f"distributed, {workers} worker{'s' * (workers > 1)}"] = [
                    dask_time(x, k, args.repeat, client) for k in args.chunks
                ]
    head = " | ".join(f"{k} chunks" for k in args.chunks)
    print(f"| scheduler | {head} | overhead per chunk |")
    print("|---" * (len(args.chunks) + 2) + "|")
    for name, times in results.items():
        cells = " | ".join(f"{base / t:.2f}x" for t in times)
        per_chunk = slope(args.chunks, times)
        print(f"| {name} | {cells} | {per_chunk * 1e3:.2f} ms |")
    print("\nCells: the speed of the Dask scan as a multiple of the in-memory scan's "
          "(elements per second, same array, same run); above 1 is faster.")  # fmt: skip


if __name__ == "__main__":
    main()
