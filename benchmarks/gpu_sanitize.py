"""A set of small calls covering every kernel, for compute-sanitizer (memcheck, racecheck,
synccheck, initcheck): every dtype, every mode (scan, final_state, scan_backward), both
methods, every channel width, one tile and many, time-contiguous and time-major, forward and
reverse, with and without resets, tiny and odd sizes (the 16-bit and complex dtypes on a
subset of the shapes, to keep racecheck's time in bounds); then inf, NaN and zero decays,
inf inputs and states and products that underflow or overflow (linscan.testing.poisoned),
which take the tile kernel's other paths: tiles that hold their map back, look-backs that wait
for a predecessor's prefix, threads that walk in turn. CuPy's memory pool is switched
off so that every array is its own allocation and an out-of-bounds access cannot land inside
a neighbour. Results are checked against the serial oracle too. Run from the source tree:

    compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize.py
"""

import sys

import cupy
import numpy as np

import linscan
from linscan._dtypes import BFLOAT16
from linscan.testing import (
    assert_final_state_close,
    assert_same_values,
    assert_scan_backward_close,
    assert_scan_close,
    poisoned,
)

cupy.cuda.set_allocator(None)  # every array its own cudaMalloc

# (shape, axis): I = 1 (CW 1) with one and many tiles; I = 2, 3, 5, 12, 20, 33, 64 (CW 2..32);
# rows strung along flat time; odd sizes.
SHAPES = [
    ((1,), 0), ((7,), 0), ((3000,), 0), ((5, 301), 1), ((301, 2), 0), ((97, 3), 0),
    ((2, 150, 5), 1), ((130, 12), 0), ((70, 20), 0), ((3, 40, 33), 1), ((45, 64), 0),
    ((2, 9000), 1),  # rows across many tiles (the row kernel's look-back, LINSCAN_FAST_KERNELS=1)
    ((2, 100, 128), 1), ((150, 107), 0),  # time-major channels (chan_scan, with idle lanes)
]  # fmt: skip


SUBSET = [SHAPES[k] for k in (2, 3, 4, 7, 9, 13)]
PLANS = [
    (np.float32, SHAPES, ("parallel", "sequential")),
    (np.float64, SHAPES, ("parallel", "sequential")),
    *((dtype, SUBSET, ("parallel",)) for dtype in (np.float16, BFLOAT16, np.complex64)),
    (np.complex128, SUBSET, ("parallel", "sequential")),
]


def draw(rng, shape, dtype, low=None, high=None):
    values = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
    if np.dtype(dtype).kind == "c":
        values = values * np.exp(1j * rng.uniform(-0.5, 0.5, shape))
    return values.astype(dtype)


def main() -> int:
    rng = np.random.default_rng(0)
    calls = 0
    for dtype, shapes, methods in PLANS:
        for shape, axis in shapes:
            for method in methods:
                for reverse in (False, True):
                    a = draw(rng, shape, dtype, 0.5, 1)
                    x = draw(rng, shape, dtype)
                    h0 = draw(rng, shape[:axis] + shape[axis + 1 :], dtype)
                    gh = draw(rng, shape, dtype)
                    # Resets on the reversed calls, per element (read through a byte mask).
                    resets = rng.random(shape) < 0.05 if reverse else None
                    kw = dict(axis=axis, reverse=reverse, method=method, resets=resets)
                    da, dx, dh0, dgh = (cupy.asarray(v) for v in (a, x, h0, gh))
                    on = dict(kw, resets=None if resets is None else cupy.asarray(resets))
                    h = linscan.scan(da, dx, dh0, **on)
                    state = linscan.final_state(da, dx, None, **on)
                    grads = linscan.scan_backward(da, h, dgh, dh0, **on)
                    # A decay per row and step, broadcast over channels (read by strides).
                    a_b = a[(slice(None),) * (axis + 1) + (slice(0, 1),) * (len(shape) - axis - 1)]
                    h_b = linscan.scan(cupy.asarray(a_b), dx, 0.5, **on)
                    calls += 4
                    kw.pop("method")
                    h_host = cupy.asnumpy(h)
                    assert_scan_close(h_host, a, x, h0, **kw)
                    assert_final_state_close(cupy.asnumpy(state), a, x, None, **kw)
                    assert_scan_backward_close(
                        tuple(cupy.asnumpy(g) for g in grads), a, h_host, gh, h0, **kw
                    )
                    assert_scan_close(cupy.asnumpy(h_b), a_b, x, 0.5, **kw)
    calls += non_finite(rng)
    cupy.cuda.Device().synchronize()
    print(f"gpu_sanitize: {calls} calls checked against the oracle")
    return 0


def non_finite(rng) -> int:
    """Poisoned calls (one tile and many, one channel and many) against the CPU's serial loop:
    inf and NaN in the same places. Returns the number of GPU calls."""
    calls = 0
    for dtype in (np.float32, np.float64):
        for shape in ((1, 3000, 1), (1, 20000, 1), (2, 301, 3), (3, 40, 33), (1, 200, 128)):
            for reverse in (False, True):
                a, x, h0, gh = poisoned(rng, shape, dtype, clean_first=reverse)
                serial = dict(axis=1, reverse=reverse, method="sequential")
                h = linscan.scan(a, x, h0, **serial)
                want = [h, *linscan.scan_backward(a, h, gh, h0, **serial)]
                da, dx, dh0, dh, dgh = (cupy.asarray(v) for v in (a, x, h0, h, gh))
                kw = dict(serial, method="parallel")
                got = [
                    linscan.scan(da, dx, dh0, **kw),
                    *linscan.scan_backward(da, dh, dgh, dh0, **kw),
                ]
                calls += 2
                for g, w in zip(got, want):
                    assert_same_values(cupy.asnumpy(g), w, dtype)
    return calls


if __name__ == "__main__":
    sys.exit(main())
