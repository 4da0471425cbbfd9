"""A set of small calls covering every kernel, for compute-sanitizer (memcheck, racecheck,
synccheck, initcheck): both dtypes, every mode (scan, final_state, scan_backward), both
methods, every channel width, one tile and many, time-contiguous and time-major, forward and
reverse, tiny and odd sizes. CuPy's memory pool is switched off so that every array is its own
allocation and an out-of-bounds access cannot land inside a neighbour. Results are checked
against the serial oracle too. Run from the source tree:

    compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize.py
"""

import sys

import cupy
import numpy as np

import linscan
from linscan.testing import assert_final_state_close, assert_scan_backward_close, assert_scan_close

cupy.cuda.set_allocator(None)  # every array its own cudaMalloc

# (shape, axis): I = 1 (CW 1) with one and many tiles; I = 2, 3, 5, 12, 20, 33, 64 (CW 2..32);
# rows strung along flat time; odd sizes.
SHAPES = [
    ((1,), 0), ((7,), 0), ((3000,), 0), ((5, 301), 1), ((301, 2), 0), ((97, 3), 0),
    ((2, 150, 5), 1), ((130, 12), 0), ((70, 20), 0), ((3, 40, 33), 1), ((45, 64), 0),
]  # fmt: skip


def main() -> int:
    rng = np.random.default_rng(0)
    calls = 0
    for dtype in (np.float32, np.float64):
        for shape, axis in SHAPES:
            for method in ("parallel", "sequential"):
                for reverse in (False, True):
                    a = rng.uniform(0.5, 1, shape).astype(dtype)
                    x = rng.standard_normal(shape).astype(dtype)
                    h0 = rng.standard_normal(shape[:axis] + shape[axis + 1 :]).astype(dtype)
                    gh = rng.standard_normal(shape).astype(dtype)
                    kw = dict(axis=axis, reverse=reverse, method=method)
                    da, dx, dh0, dgh = (cupy.asarray(v) for v in (a, x, h0, gh))
                    h = linscan.scan(da, dx, dh0, **kw)
                    state = linscan.final_state(da, dx, None, **kw)
                    grads = linscan.scan_backward(da, h, dgh, dh0, **kw)
                    # A decay per row and step, broadcast over channels (read by strides).
                    a_b = a[(slice(None),) * (axis + 1) + (slice(0, 1),) * (len(shape) - axis - 1)]
                    h_b = linscan.scan(cupy.asarray(a_b), dx, 0.5, **kw)
                    calls += 4
                    kw.pop("method")
                    h_host = cupy.asnumpy(h)
                    assert_scan_close(h_host, a, x, h0, **kw)
                    assert_final_state_close(cupy.asnumpy(state), a, x, None, **kw)
                    assert_scan_backward_close(
                        tuple(cupy.asnumpy(g) for g in grads), a, h_host, gh, h0, **kw
                    )
                    assert_scan_close(cupy.asnumpy(h_b), a_b, x, 0.5, **kw)
    cupy.cuda.Device().synchronize()
    print(f"gpu_sanitize: {calls} calls checked against the oracle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
