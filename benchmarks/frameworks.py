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


BASELINE = "linscan.scan, NumPy arrays (baseline)"
BASELINE_BOTH = "linscan.scan + scan_backward, NumPy"
LAYOUTS = (("one row", 1, 1), ("1024 channels, time-major", 1024, 0))  # (label, lanes, axis)


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
    _small_calls("1. Small calls", args, a, x, {
        "linscan.scan, CPU tensors (DLPack)": partial(linscan.scan, ta, tx),
        "linscan.torch.scan (operator, eager)": partial(lt.scan, ta, tx),
        "linscan.torch.scan forward + backward": lambda: lt.scan(ga, gx).sum().backward(),
    })  # fmt: skip

    from torch._higher_order_ops.associative_scan import associative_scan

    combine = partial(common.combine, mul=torch.mul, add=torch.add)

    def torch_pair(big_a, big_x, axis):
        big_a, big_x = torch.from_numpy(big_a), torch.from_numpy(big_x)
        ours = partial(lt.scan, big_a, big_x, axis=axis)
        theirs = partial(lambda: associative_scan(combine, (big_a, big_x), dim=axis,
                                                  combine_mode="generic")[1])  # fmt: skip
        return ours, theirs, lambda t: t.numpy()

    _against_peer(f"2. {args.size} float32 elements, linscan.torch.scan vs torch "
                  "associative_scan (eager, generic)", "linscan.torch", args, rng, common,
                  torch_pair, PEER_WARMUP)  # fmt: skip
    _jax(args, rng, common)
    return 0


def _small_calls(title, args, a, x, calls: dict) -> None:
    """Per-call times of ``calls`` beside linscan's forward (``BASELINE``) and forward +
    backward (``BASELINE_BOTH``) on the NumPy arrays ``a``, ``x``, interleaved in rounds; a
    call whose name says backward or grad is compared with the second."""
    import linscan

    g = np.ones_like(x)

    def numpy_both():
        linscan.scan_backward(a, linscan.scan(a, x), g)

    small = {BASELINE: partial(linscan.scan, a, x), BASELINE_BOTH: numpy_both, **calls}
    for fn in small.values():  # warm-up (compilation, caches)
        fn()
    rounds = {name: [] for name in small}
    for _ in range(args.rounds):
        for name, fn in small.items():
            rounds[name].append(_per_call(fn, args.calls))
    print(f"\n{title}, 4 x 256 float32, {args.rounds} interleaved rounds\n")
    print("| call | us per call (median) | ratio to its baseline (median of rounds) |")
    print("|---|---|---|")
    for name, times in rounds.items():
        ref = rounds[BASELINE_BOTH if ("backward" in name or "grad" in name) else BASELINE]
        ratio = np.median([t / r for t, r in zip(times, ref)])
        print(f"| {name} | {np.median(times) * 1e6:.1f} | {ratio:.2f} |")


def _against_peer(title, ours_name, args, rng, common, pair, warmup: int = 1) -> None:
    """linscan against a peer on ``--size`` elements of each of ``LAYOUTS``: ``pair(a, x,
    axis)`` gives (ours, theirs, to_numpy); results checked to agree, then interleaved
    rounds."""
    print(f"\n{title}, {args.rounds} interleaved rounds\n")
    print(f"| layout | {ours_name} ms | peer ms | peer / linscan |")
    print("|---|---|---|---|")
    for label, lanes, axis in LAYOUTS:
        shape = (1, args.size) if axis else (args.size // lanes, lanes)
        big_a = rng.uniform(0.999, 1.0, shape).astype(np.float32)
        big_x = rng.normal(size=shape).astype(np.float32)
        ours, theirs, to_numpy = pair(big_a, big_x, axis)
        np.testing.assert_allclose(to_numpy(theirs()), to_numpy(ours()), rtol=2e-3, atol=2e-3)
        for _ in range(warmup):
            theirs()
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(common.median_time(ours, 1))
            t_theirs.append(common.median_time(theirs, 1))
        ratio = np.median([t / o for t, o in zip(t_theirs, t_ours)])
        print(f"| {label} {shape} | {np.median(t_ours) * 1e3:.2f} | "
              f"{np.median(t_theirs) * 1e3:.2f} | {ratio:.1f} |")  # fmt: skip


def _jax(args, rng, common) -> None:
    import jax
    import jax.numpy as jnp

    import linscan.jax as lj

    a = rng.uniform(0.9, 1.0, (4, 256)).astype(np.float32)
    x = rng.normal(size=(4, 256)).astype(np.float32)
    ja, jx = jnp.asarray(a), jnp.asarray(x)
    jitted = jax.jit(lambda a, x: lj.scan(a, x))
    grad = jax.jit(jax.grad(lambda a, x: jnp.sum(lj.scan(a, x)), argnums=(0, 1)))
    _small_calls(f"3. JAX {jax.__version__} ({lj.CALLBACK}), small calls", args, a, x, {
        "linscan.jax.scan, eager": lambda: lj.scan(ja, jx).block_until_ready(),
        "linscan.jax.scan, jitted": lambda: jitted(ja, jx).block_until_ready(),
        "jax.grad through linscan.jax.scan, jitted": lambda: jax.block_until_ready(grad(ja, jx)),
    })  # fmt: skip

    def jax_pair(big_a, big_x, axis):
        big_a, big_x = jnp.asarray(big_a), jnp.asarray(big_x)
        ours_fn, theirs_fn = jax.jit(partial(lj.scan, axis=axis)), common.jax_scan(axis)
        return (lambda: ours_fn(big_a, big_x).block_until_ready(),
                lambda: theirs_fn(big_a, big_x).block_until_ready(), np.asarray)  # fmt: skip

    _against_peer(f"{args.size} float32 elements, linscan.jax.scan vs jax.lax.associative_scan "
                  "(both jitted)", "linscan.jax", args, rng, common, jax_pair)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
