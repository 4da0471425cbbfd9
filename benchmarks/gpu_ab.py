"""The lean kernels (opt-in: row_scan for rows, chan_scan for time-major channels) against the
general tile kernel (tile_scan) on the same GPU in one run: correctness first, then time, both
as fractions of a device-to-device copy of the same bytes, interleaved in triples (copy,
tile_scan, the lean kernel), device events, medians: scan both ways, final_state and
scan_backward. Run from the source tree on a GPU machine:

    PYTHONPATH=. python benchmarks/gpu_ab.py [--size 67108864] [--repeat 15] [--json FILE]

Before any timing, each case is computed by the lean kernel on a smaller array of the same
layout (rows of 2^16-2^18 steps, or 2^12 steps of 1024 channels; the float64 oracle loops in
Python) and checked against the
serial oracle (``linscan.testing``); a case that fails is reported and not timed. At the
timed size, the largest difference between the two kernels' results relative to the
largest result is reported (not asserted: their rounding orders differ). Then the peers
on one float32 row of the same size, against the lean kernel: ``cupy.cumsum``, CUB's
single-pass scan with the affine operator through ``cuda.compute`` (package ``cuda-cccl``,
where installed: see ``gpu_check.sh``), JAX's and PyTorch's associative scans.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

import numpy as np


def main(argv=None) -> int:
    import cupy

    import linscan
    from linscan import _dtypes
    from linscan._bench import common, gpu
    from linscan.backends.cuda import plan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 26, help="elements per array")
    parser.add_argument("--repeat", type=int, default=15, help="triples behind each median")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    n = args.size
    # case: (shape, time axis, the smaller shape checked against the oracle first)
    shapes = {
        "one row": ((1, n), -1, (1, 1 << 18)),
        "1024 rows": ((1024, n // 1024), -1, (4, 1 << 16)),
        "time-major 1024 channels": ((n // 1024, 1024), 0, (1 << 12, 1024)),
    }
    dtypes = (np.float32, np.float16, np.float64)

    def kernels(fn):
        """``fn`` with the tile kernel, and with the lean kernel (plan.FAST switched per call)."""

        def run(fast):
            plan.FAST = fast
            try:
                return fn()
            finally:
                plan.FAST = False

        return partial(run, False), partial(run, True)

    rows, failures = [], []
    for case, (shape, axis, small) in shapes.items():
        for dtype in dtypes:
            a = gpu._typed(shape, dtype, 0.999, 1.0, seed=1)
            x = gpu._typed(shape, dtype, seed=2)
            h = cupy.empty(shape, dtype)
            gh, gx = gpu._typed(shape, dtype, seed=5), cupy.empty(shape, dtype)
            size = np.dtype(dtype).itemsize
            wide = _dtypes.accumulator(np.dtype(dtype)).itemsize  # grad_a, written unrounded
            ops = (
                ("scan", 3 * size, partial(linscan.scan, a, x, axis=axis, out=h)),
                ("scan reverse", 3 * size,
                 partial(linscan.scan, a, x, axis=axis, reverse=True, out=h)),
                ("final_state", 2 * size, partial(linscan.final_state, a, x, axis=axis)),
                # reads a, h, grad_h, writes grad_x and grad_a (h: the scan above's x, any
                # values serve the timing)
                ("scan_backward", 4 * size + wide,
                 partial(linscan.scan_backward, a, x, gh, axis=axis, out=(None, gx, None))),
            )  # fmt: skip
            a_small = gpu._typed(small, dtype, 0.999, 1.0, seed=3)
            x_small = gpu._typed(small, dtype, seed=4)
            for op, per, fn in ops:
                old, new = kernels(fn)
                name = f"{case} {np.dtype(dtype).name} {op}"
                try:
                    _check(kernels, a_small, x_small, op, dtype, axis)
                except AssertionError as exc:
                    failures.append(f"{name}: {exc}")
                    print(f"FAILED {name}: {str(exc)[:300]}", flush=True)
                    continue
                want, got = (_first(f()).astype(np.float64) for f in (old, new))
                differ = float(cupy.abs(got - want).max() / cupy.abs(want).max())
                times = _triples(old, new, per * a.size, args.repeat, gpu, common, cupy)
                rows.append(dict(case=case, shape=list(shape), dtype=np.dtype(dtype).name, op=op,
                                 bytes_per_elem=per, differ=differ, **times))  # fmt: skip
                print(f"{name:48s} tile {times['tile_of_copy']:.2f}  lean "
                      f"{times['lean_of_copy']:.2f} of copy  lean/tile speed "
                      f"{times['speedup']:.2f}x", flush=True)  # fmt: skip
    # The peers on one float32 row of the same size, against the lean kernel: cupy.cumsum,
    # CUB's scan with the affine operator (cuda.compute, where cuda-cccl is installed), JAX's
    # and PyTorch's associative scans (linscan._bench.gpu.peer_rows).
    plan.FAST = True
    try:
        peers = gpu.peer_rows(n, print, args.repeat)
    finally:
        plan.FAST = False
    print(_markdown(rows))
    print()
    print("| peer (one float32 row) | peer ms | lean kernel ms | peer / lean |")
    print("|---|---|---|---|")
    for p in peers:
        if "error" in p:
            print(f"| {p['peer']} | not measured: {p['error'][:120]} | | |")
        else:
            print(f"| {p['peer']} | {p['peer_ms']:.3f} | {p['ours_ms']:.3f} | "
                  f"{p['peer_over_ours']:.2f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as out:
            json.dump(dict(environment=gpu.environment(), rows=rows, peers=peers,
                           failures=failures), out, indent=1)  # fmt: skip
    return 1 if failures else 0


def _first(result):
    """A call's result, or the first of its results not ``None`` (scan_backward's grad_x
    when grad_a is not asked for), as a CuPy array."""
    import cupy

    if isinstance(result, tuple):
        result = next(r for r in result if r is not None)
    return cupy.asarray(result)


def _check(kernels, a, x, op, dtype, axis):
    """The lean kernel's ``op`` on ``a``, ``x`` against the serial float64 oracle (the
    backward pass: ``x`` taken as the forward states, ``x`` again as their gradient)."""
    import cupy

    import linscan
    from linscan.testing import (
        assert_final_state_close,
        assert_scan_backward_close,
        assert_scan_close,
    )

    reverse = op == "scan reverse"
    call = {"final_state": linscan.final_state, "scan_backward": linscan.scan_backward}.get(
        op, partial(linscan.scan, reverse=reverse)
    )
    args = [cupy.asnumpy(v).astype(np.float64) for v in (a, x)]
    if op == "scan_backward":
        _, lean = kernels(partial(call, a, x, x, axis=axis))
        got = tuple(None if g is None else cupy.asnumpy(g) for g in lean())
        assert_scan_backward_close(got, args[0], args[1], args[1], axis=axis, dtype=dtype)
        return
    _, lean = kernels(partial(call, a, x, axis=axis))
    got = cupy.asnumpy(lean())
    if op == "final_state":
        assert_final_state_close(got, *args, axis=axis, dtype=dtype)
    else:
        assert_scan_close(got, *args, axis=axis, reverse=reverse, dtype=dtype)


def _triples(old, new, moved, repeat, gpu, common, cupy):
    half = moved // 2
    src, dst = cupy.empty(half, np.uint8), cupy.empty(half, np.uint8)
    src.fill(1)
    copy = lambda: dst.data.copy_from_device_async(src.data, half)  # noqa: E731
    for fn in (copy, old, new, copy, old, new):  # warm-up
        fn()
    copies, olds, news = [], [], []
    for _ in range(repeat):
        copies.append(gpu._device_clock(copy))
        olds.append(gpu._device_clock(old))
        news.append(gpu._device_clock(new))
    return dict(
        tile_ms=common.median(olds) * 1e3, lean_ms=common.median(news) * 1e3,
        tile_of_copy=common.median([c / t for c, t in zip(copies, olds)]),
        lean_of_copy=common.median([c / t for c, t in zip(copies, news)]),
        speedup=common.median([t / u for t, u in zip(olds, news)]),
    )  # fmt: skip


def _markdown(rows) -> str:
    lines = ["| case | dtype | op | B/elem | tile_scan ms | lean ms | tile of copy | "
             "lean of copy | lean speedup | max rel. difference |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['case']} | {r['dtype']} | {r['op']} | {r['bytes_per_elem']} | "
                     f"{r['tile_ms']:.3f} | {r['lean_ms']:.3f} | {r['tile_of_copy']:.2f} | "
                     f"{r['lean_of_copy']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['differ']:.1e} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
