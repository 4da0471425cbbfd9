"""linscan.torch and linscan.jax against direct linscan and against each framework's own
associative scan, on the CPU, in one run (issue 18's bench lines):

    python benchmarks/frameworks.py [--rounds 7] [--size 1048576]

1. Per-call overhead of a small call (4 x 256 float32 steps): ``linscan.scan`` on NumPy arrays
   (the baseline), on CPU tensors (DLPack in and out), ``linscan.torch.scan`` (the operator,
   eager), and forward + backward through ``linscan.torch.scan`` against ``linscan.scan`` +
   ``linscan.scan_backward`` on NumPy. Each a median of ``--calls`` calls, the rounds
   interleaved; reported as microseconds and as ratios to the baseline of the same round.
2. Speed on ``--size`` float32 elements, one row and 1024 time-major channels:
   ``linscan.torch.scan`` against ``torch._higher_order_ops.associative_scan`` (eager,
   ``combine_mode="generic"``) with the affine operator on the same tensors, results checked
   to agree first, the peer warmed up by ``PEER_WARMUP`` calls; forward only.

3. The same for JAX: ``linscan.jax.scan`` eager and jitted, and ``jax.grad`` through it
   (jitted) against linscan's forward and backward on NumPy; then ``--size`` elements against
   ``jax.lax.associative_scan`` (jitted) on the same arrays.

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


#: Calls of torch's associative_scan before it is timed: its first ten or so calls at 2^20
#: elements take 20-40 times longer than the later ones (seen on 2026-12-06, torch 2.13).
PEER_WARMUP = 20


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
        for _ in range(PEER_WARMUP):
            theirs()
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(common.median_time(ours, 1))
            t_theirs.append(common.median_time(theirs, 1))
        ratio = np.median([t / o for t, o in zip(t_theirs, t_ours)])
        print(f"| {label} {shape} | {np.median(t_ours) * 1e3:.2f} | "
              f"{np.median(t_theirs) * 1e3:.2f} | {ratio:.1f} |")  # fmt: skip
    _jax(args, rng, common)
    return 0


def _jax(args, rng, common) -> None:
    import jax
    import jax.numpy as jnp

    import linscan
    import linscan.jax as lj

    a = rng.uniform(0.9, 1.0, (4, 256)).astype(np.float32)
    x = rng.normal(size=(4, 256)).astype(np.float32)
    ja, jx = jnp.asarray(a), jnp.asarray(x)
    g = np.ones_like(x)
    jitted = jax.jit(lambda a, x: lj.scan(a, x))
    grad = jax.jit(jax.grad(lambda a, x: jnp.sum(lj.scan(a, x)), argnums=(0, 1)))

    def numpy_both():
        h = linscan.scan(a, x)
        linscan.scan_backward(a, h, g)

    small = {
        "linscan.scan, NumPy arrays (baseline)": partial(linscan.scan, a, x),
        "linscan.jax.scan, eager": lambda: lj.scan(ja, jx).block_until_ready(),
        "linscan.jax.scan, jitted": lambda: jitted(ja, jx).block_until_ready(),
        "linscan.scan + scan_backward, NumPy": numpy_both,
        "jax.grad through linscan.jax.scan, jitted": lambda: jax.block_until_ready(grad(ja, jx)),
    }
    for fn in small.values():
        fn()
    rounds = {name: [] for name in small}
    for _ in range(args.rounds):
        for name, fn in small.items():
            rounds[name].append(_per_call(fn, args.calls))
    base = rounds["linscan.scan, NumPy arrays (baseline)"]
    base_both = rounds["linscan.scan + scan_backward, NumPy"]
    print(f"\n3. JAX {jax.__version__} ({lj.CALLBACK}), small calls, 4 x 256 float32, "
          f"{args.rounds} interleaved rounds\n")  # fmt: skip
    print("| call | us per call (median) | ratio to its baseline (median of rounds) |")
    print("|---|---|---|")
    for name, times in rounds.items():
        ref = base_both if ("backward" in name or "grad" in name) else base
        ratio = np.median([t / r for t, r in zip(times, ref)])
        print(f"| {name} | {np.median(times) * 1e6:.1f} | {ratio:.2f} |")

    print(f"\n{args.size} float32 elements, linscan.jax.scan vs jax.lax.associative_scan "
          f"(both jitted), {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| layout | linscan.jax ms | associative_scan ms | associative_scan / linscan |")
    print("|---|---|---|---|")
    for label, shape, axis in (("one row", (1, args.size), 1),
                               ("1024 channels, time-major", (args.size // 1024, 1024), 0)):
        big_a = jnp.asarray(rng.uniform(0.999, 1.0, shape).astype(np.float32))
        big_x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        ours_fn = jax.jit(partial(lj.scan, axis=axis))
        theirs_fn = common.jax_scan(axis)
        ours = lambda: ours_fn(big_a, big_x).block_until_ready()  # noqa: E731
        theirs = lambda: theirs_fn(big_a, big_x).block_until_ready()  # noqa: E731
        np.testing.assert_allclose(np.asarray(theirs()), np.asarray(ours()), rtol=2e-3, atol=2e-3)
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(common.median_time(ours, 1))
            t_theirs.append(common.median_time(theirs, 1))
        ratio = np.median([t / o for t, o in zip(t_theirs, t_ours)])
        print(f"| {label} {shape} | {np.median(t_ours) * 1e3:.2f} | "
              f"{np.median(t_theirs) * 1e3:.2f} | {ratio:.1f} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
