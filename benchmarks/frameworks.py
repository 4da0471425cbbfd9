"""linscan.torch against direct linscan and against PyTorch's own associative scan, on the CPU,
in one run (issue 18's bench line):

    python benchmarks/frameworks.py [--rounds 7] [--size 1048576]

1. Per-call overhead of a small call (4 x 256 float32 steps): ``linscan.scan`` on NumPy arrays
   (the baseline), on CPU tensors (DLPack in and out), ``linscan.torch.scan`` (the operator,
   eager), and forward + backward through ``linscan.torch.scan`` against ``linscan.scan`` +
   ``linscan.scan_backward`` on NumPy. Each a median of ``--calls`` calls, the rounds
   interleaved; reported as microseconds and as ratios to the baseline of the same round.
2. Speed on ``--size`` float32 elements, one row and 1024 time-major channels:
   ``linscan.torch.scan`` against ``torch._higher_order_ops.associative_scan`` (eager,
   ``combine_mode="generic"``) with the affine operator on the same tensors, results checked
   to agree first; forward only (PyTorch's scan has no backward rule for a generic combine).

The machine's CPU model is printed first: figures from different machines do not compare.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from functools import partial

import numpy as np


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _per_call(fn, calls: int) -> float:
    """Median seconds per call over ``calls`` calls, in 5 batches."""
    batch = max(1, calls // 5)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return float(np.median(times))


def main(argv=None) -> int:
    import torch

    import linscan
    import linscan.torch as lt
    from linscan._bench import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1 << 20)
    args = parser.parse_args(argv)
    print(f"CPU: {_cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    rng = np.random.default_rng(0)
    a = rng.uniform(0.9, 1.0, (4, 256)).astype(np.float32)
    x = rng.normal(size=(4, 256)).astype(np.float32)
    ta, tx = torch.from_numpy(a), torch.from_numpy(x)
    ga, gx = ta.clone().requires_grad_(), tx.clone().requires_grad_()
    g = np.ones_like(x)

    def numpy_both():
        h = linscan.scan(a, x)
        linscan.scan_backward(a, h, g)

    def torch_both():
        lt.scan(ga, gx).sum().backward()

    small = {
        "linscan.scan, NumPy arrays (baseline)": partial(linscan.scan, a, x),
        "linscan.scan, CPU tensors (DLPack)": partial(linscan.scan, ta, tx),
        "linscan.torch.scan (operator, eager)": partial(lt.scan, ta, tx),
        "linscan.scan + scan_backward, NumPy": numpy_both,
        "linscan.torch.scan forward + backward": torch_both,
    }
    for fn in small.values():  # warm-up (compilation, caches)
        fn()
    rounds = {name: [] for name in small}
    for _ in range(args.rounds):
        for name, fn in small.items():
            rounds[name].append(_per_call(fn, args.calls))
    base = rounds["linscan.scan, NumPy arrays (baseline)"]
    base_both = rounds["linscan.scan + scan_backward, NumPy"]
    print(f"\n1. Small calls, 4 x 256 float32, {args.rounds} interleaved rounds\n")
    print("| call | us per call (median) | ratio to its baseline (median of rounds) |")
    print("|---|---|---|")
    for name, times in rounds.items():
        ref = base_both if "backward" in name else base
        ratio = np.median([t / r for t, r in zip(times, ref)])
        print(f"| {name} | {np.median(times) * 1e6:.1f} | {ratio:.2f} |")

    from torch._higher_order_ops.associative_scan import associative_scan

    combine = partial(common.combine, mul=torch.mul, add=torch.add)
    print(f"\n2. {args.size} float32 elements, linscan.torch.scan vs torch associative_scan "
          f"(eager, generic), {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| layout | linscan.torch ms | associative_scan ms | associative_scan / linscan |")
    print("|---|---|---|---|")
    for label, shape, axis in (("one row", (1, args.size), 1),
                               ("1024 channels, time-major", (args.size // 1024, 1024), 0)):
        big_a = torch.from_numpy(rng.uniform(0.999, 1.0, shape).astype(np.float32))
        big_x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
        ours = partial(lt.scan, big_a, big_x, axis=axis)
        theirs = partial(lambda: associative_scan(combine, (big_a, big_x), dim=axis,
                                                  combine_mode="generic")[1])  # fmt: skip
        np.testing.assert_allclose(theirs().numpy(), ours().numpy(), rtol=2e-3, atol=2e-3)
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(common.median_time(ours, 1))
            t_theirs.append(common.median_time(theirs, 1))
        ratio = np.median([t / o for t, o in zip(t_theirs, t_ours)])
        print(f"| {label} {shape} | {np.median(t_ours) * 1e3:.2f} | "
              f"{np.median(t_theirs) * 1e3:.2f} | {ratio:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
