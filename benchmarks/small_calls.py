"""The Python path of a small GPU call, timed without a GPU (issue 17, item 2).

CuPy arrays over fake device memory (``tests/cuda/fake_gpu.py``), the kernel launch and the
memset stubbed out: what is left is what linscan's Python costs before a launch, on this
machine's CPU. Each case is timed against a peer in the same round, ``cupy.empty`` of the
result's shape over the same fake memory (what any wrapper pays to allocate a result), with
the cases and the peer interleaved over ``--rounds`` rounds of ``--calls`` calls; the table
gives the median microseconds per call and its ratio to the peer.

On a GPU the real allocation, the memset and CuPy's launch come on top: ``python -m linscan
bench --gpu`` measures those calls end to end (its "small calls" table).

    python benchmarks/small_calls.py [--calls 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests", "cuda"))


def cpu_name() -> str:
    """The CPU's model name and, where the name is generic (KVM guests say "AMD EPYC"), its
    family and model numbers."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def cases(fake, n: int) -> dict:
    import linscan

    a, x, h, g = (fake.empty((1, n), np.float32) for _ in range(4))
    channels = fake.empty((4096, 16), np.float32)
    return {
        "scan(a, x)": partial(linscan.scan, a, x),
        "scan(a, x, out=h)": partial(linscan.scan, a, x, out=h),
        "scan(0.9, x, out=h)": partial(linscan.scan, 0.9, x, out=h),
        "final_state(a, x)": partial(linscan.final_state, a, x),
        "scan_backward(a, h, g)": partial(linscan.scan_backward, a, h, g),
        "scan 2^12 x 16 ch, axis=0": partial(linscan.scan, 0.9, channels, axis=0),
    }


def per_call(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--size", type=int, default=1 << 16, help="steps of the one row")
    opts = parser.parse_args(argv)

    import cupy
    from fake_gpu import FakeGPU, install

    fake = install(setattr, lambda mapping, key, value: mapping.__setitem__(key, value),
                   FakeGPU(record=False))  # fmt: skip
    peer = partial(cupy.empty, (1, opts.size), np.float32)
    timed = dict(cases(fake, opts.size), **{"peer: cupy.empty": peer})
    for fn in timed.values():  # warm up: kernels looked up, plans cached
        per_call(fn, 50)
    times = {name: [] for name in timed}
    for _ in range(opts.rounds):
        for name, fn in timed.items():
            times[name].append(per_call(fn, opts.calls))
    peer_us = np.median(times["peer: cupy.empty"])
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
          f"CuPy {cupy.__version__}, NumPy {np.__version__}")  # fmt: skip
    print(f"{opts.rounds} rounds x {opts.calls} calls, interleaved; one row of {opts.size} "
          "float32 steps unless said\n")  # fmt: skip
    print("| call | us per call (median) | x peer | spread of rounds (us) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        mid = np.median(values)
        print(f"| `{name}` | {mid:.1f} | {mid / peer_us:.1f} | {min(values):.1f}-{max(values):.1f} |")


if __name__ == "__main__":
    main()
