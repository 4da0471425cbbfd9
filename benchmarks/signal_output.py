"""What a fresh output costs ``linscan.signal.sosfilt`` on one long signal: the block kernel
(``filters._in_blocks``, a private function: the public ``sosfilt`` always writes a fresh
array) timed writing into a reused array and into a fresh one, on one and on two threads,
beside the cost of faulting a fresh array in alone (a store every 4 KiB) and of
``np.copyto`` into a fresh and into a reused array. Interleaved rounds, medians.

    python benchmarks/signal_output.py [--size 2**24] [--rounds 7] [--dtype float64]

Prints ms and ns per sample, the fresh array's page faults, and the CPU.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from linscan import _host
from linscan.__main__ import parse_size, positive_int
from linscan.backends.cpu import filters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 24)
    parser.add_argument("--rounds", type=positive_int, default=7)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    args = parser.parse_args()
    n, dtype = args.size, np.dtype(args.dtype)
    # A 4th-order Butterworth low-pass at 0.01 of Nyquist as two sections (scipy's butter(4,
    # 0.01, output="sos"), written out so that scipy is not needed).
    b = np.array([[5.8451424331445e-08, 1.1690284866289e-07, 5.8451424331445e-08], [1, 2, 1]])
    a = np.array([[1, -1.9426382305401, 0.94359727847037], [1, -1.9752696348519, 0.97624479235944]])
    b, a = b.astype(dtype), a.astype(dtype)
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    cascade, first = filters.kernel(2), np.zeros(1, np.int64)

    def filt(y, threads):
        filters._in_blocks(cascade, x, y, first, n, b, a, np.zeros((2, 2, 1), dtype), threads)

    reused = np.empty_like(x)
    cases = {
        "sosfilt blocks, 1 thread": lambda y: filt(y, 1),
        "sosfilt blocks, 2 threads": lambda y: filt(y, 2),
        "np.copyto": lambda y: np.copyto(y, x),
        "a store every 4 KiB": lambda y: y.reshape(-1)[:: 4096 // dtype.itemsize].fill(0),
    }
    times = {(name, fresh): [] for name in cases for fresh in (False, True)}
    faults = {}
    for call in cases.values():  # compile, and fault the reused array in
        call(reused)
    for _ in range(args.rounds):
        for name, call in cases.items():
            for fresh in (False, True):
                y = np.empty_like(x) if fresh else reused
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                call(y)
                times[name, fresh].append(time.perf_counter() - t0)
                faults[name, fresh] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
                del y
    print(f"CPU: {_host.summary()}; one signal of {n} {dtype.name} samples, {args.rounds} rounds")
    print("| case | output | ms | ns/sample | page faults |")
    print("|---|---|---|---|---|")
    for (name, fresh), ts in times.items():
        ms = float(np.median(ts)) * 1e3
        row = f"| {name} | {'fresh' if fresh else 'reused'} | {ms:.1f} | {ms * 1e6 / n:.2f} |"
        print(f"{row} {faults[name, fresh]} |")


if __name__ == "__main__":
    main()
