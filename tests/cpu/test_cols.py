"""The time-major walks in vector registers (``vectors.cols_walk``, ``vectors.cols_back``)
through the "cols" kernels that use them, against loops in NumPy: boxes of channels that fill
a vector, leave a masked tail, fit the registers or not; both directions; parts of the time
axis and of the outer rows; outputs that are their inputs; and nothing written outside the
box."""

import numpy as np
import pytest
from numba import njit

from linscan.backends.cpu import kernels, vectors

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-13}
SENTINEL = -7.0


def _boxes(dtype):
    """``(I, i0, i1)``: channel boxes of 1 to 5 vectors, full or with a tail, at offsets (each
    count of vectors held in registers, full and partial, and boxes walked through memory)."""
    w = vectors.lanes(np.dtype(dtype).itemsize)
    return [
        (3, 0, 3),  # less than a vector
        (w, 0, w),  # one vector, in registers
        (2 * w + 8, 3, 2 * w - 1),  # two vectors, the second masked
        (2 * w, 0, 2 * w),  # two full vectors
        (3 * w, 0, 3 * w),  # three full vectors, in memory
        (6 * w, w + 2, 6 * w - 3),  # five vectors and a tail
    ]


def _arrays(dtype, shape, seed, count):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.0, 1.0, shape).astype(dtype)
    return [a] + [rng.standard_normal(shape).astype(dtype) for _ in range(count - 1)]


def _steps(t0, t1, down):
    return range(t1 - 1, t0 - 1, -1) if down else range(t0, t1)


def _scan_loop(a, x, s, box, down):
    o0, o1, i0, i1, t0, t1 = box
    h = np.full(a.shape, SENTINEL)
    s = s.astype(np.float64)
    for t in _steps(t0, t1, down):
        s[o0:o1, i0:i1] = a[o0:o1, t, i0:i1] * s[o0:o1, i0:i1] + x[o0:o1, t, i0:i1]
        h[o0:o1, t, i0:i1] = s[o0:o1, i0:i1]
    return h, s


def _close(got, want, dtype, what):
    scale = np.abs(want).max(initial=1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
def test_scans_of_every_box_match_the_loop_and_write_only_the_box(dtype, down):
    for I, i0, i1 in _boxes(dtype):
        box = (1, 3, i0, i1, 2, 37)
        a, x, s0 = _arrays(dtype, (3, 40, I), I, 3)
        s0 = s0[:, 0, :].copy()
        h = np.full_like(a, SENTINEL)
        s = s0.copy()
        kernels.scan_cols(a, x, h, s, None, *box, down)
        want_h, want_s = _scan_loop(a, x, s0, box, down)
        _close(h, want_h, dtype, f"h, box {box}")  # the sentinel outside the box included
        _close(s, np.where(np.arange(3)[:, None] >= 1, want_s, s0), dtype, f"s, box {box}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_scan_in_place_of_its_input_matches_one_into_a_new_array(dtype):
    for I, i0, i1 in _boxes(dtype):
        a, x = _arrays(dtype, (1, 30, I), I, 2)
        h = np.empty_like(x)
        s = np.zeros((1, I), dtype)
        kernels.scan_cols(a, x, h, s, None, 0, 1, i0, i1, 0, 30, True)
        inplace = x.copy()
        s2 = np.zeros((1, I), dtype)
        kernels.scan_cols(a, inplace, inplace, s2, None, 0, 1, i0, i1, 0, 30, True)
        np.testing.assert_array_equal(inplace[..., i0:i1], h[..., i0:i1])
        np.testing.assert_array_equal(inplace[..., :i0], x[..., :i0])
        np.testing.assert_array_equal(s2, s)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("back", [False, True])
def test_the_reducing_walk_matches_the_loop(dtype, down, back):
    for I, i0, i1 in _boxes(dtype):
        a, x = _arrays(dtype, (2, 50, I), I, 2)
        a[1, 10:20] = 1e-30  # products that fall below the smallest normal are flushed
        p = np.full((2, I), SENTINEL)
        s = np.full((2, I), 0.5)
        kernels.reduce_cols(a, x, p, s, None, None, 0, 2, i0, i1, 0, 50, down, back)
        want_p, want_s = np.full((2, I), SENTINEL), np.full((2, I), 0.5)
        want_p[:, i0:i1] = 1.0
        tiny = np.finfo(np.float64).tiny
        for t in _steps(0, 50, down):
            av = a[:, t, i0:i1].astype(np.float64)
            xv = (a[:, t, i0:i1] * x[:, t, i0:i1] if back else x[:, t, i0:i1]).astype(np.float64)
            want_s[:, i0:i1] = av * want_s[:, i0:i1] + xv
            pv = want_p[:, i0:i1] * av
            want_p[:, i0:i1] = np.where(np.abs(pv) < tiny, 0.0, pv)
        _close(s, want_s, dtype, f"s, channels {i0}:{i1} of {I}")
        np.testing.assert_allclose(p, want_p, rtol=1e-6 if dtype == np.float32 else 1e-13)
        assert (p[1, i0:i1] == 0).all()


def _back_loop(a, h, gh, hb, c, box, down):
    o0, o1, i0, i1, t0, t1 = box
    T = a.shape[1]
    gx, ga = np.full(a.shape, SENTINEL), np.full(a.shape, SENTINEL)
    c = c.astype(np.float64)
    rows, cols = slice(o0, o1), slice(i0, i1)
    for t in _steps(t0, t1, down):
        tp = t - 1 if down else t + 1
        previous = hb[rows, cols] if not 0 <= tp < T else h[rows, tp, cols]
        g = gh[rows, t, cols] + c[rows, cols]
        gx[rows, t, cols], ga[rows, t, cols] = g, g * previous
        c[rows, cols] = a[rows, t, cols] * g
    return gx, ga, c


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
def test_the_backward_walk_matches_the_loop_with_and_without_the_edge_step(dtype, down):
    for I, i0, i1 in _boxes(dtype):
        for t0, t1 in ((0, 40), (5, 33)):  # the first with the step beside the initial state
            box = (0, 2, i0, i1, t0, t1)
            a, h, gh, hb, c0 = _arrays(dtype, (2, 40, I), I + t0, 5)
            hb, c0 = hb[:, 0, :].copy(), c0[:, 0, :].copy()
            gx, ga = np.full_like(a, SENTINEL), np.full_like(a, SENTINEL)
            c = c0.copy()
            kernels.backward_cols(a, h, gh, hb, gx, ga, c, None, *box, down)
            want_gx, want_ga, want_c = _back_loop(a, h, gh, hb, c0, box, down)
            what = f"box {box}"
            _close(gx, want_gx, dtype, what)
            _close(ga, want_ga, dtype, what)
            _close(c[:, i0:i1], want_c[:, i0:i1], dtype, what)
            np.testing.assert_array_equal(c[:, :i0], c0[:, :i0])

            inplace, c2 = gh.copy(), c0.copy()  # grad_x written over grad_h
            kernels.backward_cols(a, h, inplace, hb, inplace, ga, c2, None, *box, down)
            np.testing.assert_array_equal(inplace[:, t0:t1, i0:i1], gx[:, t0:t1, i0:i1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_decay_broadcast_over_channels_takes_numbas_loops(dtype):
    """Channels of stride 0 cannot be loaded as vectors: the run-time check sends them to
    the loops, which give the same states as the vector walk on the decay made whole."""
    I = 3 * vectors.lanes(np.dtype(dtype).itemsize) + 1
    a_col, x = _arrays(dtype, (1, 25, I), 1, 2)
    a = np.broadcast_to(a_col[..., :1], x.shape)
    assert a.strides[2] == 0
    for down in (False, True):
        h1, h2 = np.empty_like(x), np.empty_like(x)
        s1, s2 = np.zeros((1, I), dtype), np.zeros((1, I), dtype)
        kernels.scan_cols(a, x, h1, s1, None, 0, 1, 0, I, 0, 25, down)
        kernels.scan_cols(np.ascontiguousarray(a), x, h2, s2, None, 0, 1, 0, I, 0, 25, down)
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(s1, s2)


@njit
def _routes(a, x, h, s, gx, ga, down):
    """Whether the "cols" kernels take the vector walks for these arrays (forward, backward)."""
    o0, o1, i0, i1, t0, t1 = 0, a.shape[0], 0, a.shape[2], 1, a.shape[1]
    walked = kernels._walk_cols(a, x, h, s, None, False, None, o0, o1, i0, i1, t0, t1, down)
    back = kernels._back_cols(a, h, x, gx, ga, s, None, o0, o1, i0, i1, t0, t1 - 1, down)
    return walked, back


def test_contiguous_real_channels_take_the_vector_walks_and_others_the_loops():
    """The tests above pass with either path: here the routing itself (a check that always
    failed would send everything to the loops unseen)."""
    for dtype in DTYPES:
        a, x = _arrays(dtype, (2, 9, 20), 0, 2)
        out = [np.zeros_like(a) for _ in range(3)]
        s = np.zeros((2, 20), dtype)
        for down in (False, True):
            assert _routes(a, x, out[0], s, out[1], out[2], down) == (True, True)
        broadcast = np.broadcast_to(a[..., :1], a.shape)  # channels of stride 0
        assert _routes(broadcast, x, out[0], s, out[1], out[2], True) == (False, False)
        every_other = np.zeros((2, 9, 40), dtype)[..., ::2]  # channels of stride 2
        assert _routes(a, every_other, out[0], s, out[1], out[2], False) == (False, False)
    z = np.zeros((2, 9, 20), np.complex64)
    assert _routes(z, z, z, np.zeros((2, 20), np.complex64), z, z, False) == (False, False)
