"""The vector blocks of one row (``linscan.backends.cpu.vectors``) against the serial loop,
through the row kernels that use them: lengths around the block, both directions, the
reducing kernel forward and backward, and every kind of non-finite value at every lane of a
block (the blocks must then be walked one step at a time, as the loop walks them)."""

import numpy as np
import pytest

from linscan.backends.cpu import kernels, vectors

U = np.uint64
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-13}


def _serial(a, x, s, down):
    """The loop, in float64 from the row's values, with its leaving state (the blocked walks
    carry float64 states between blocks: a float32 row's state can pass float32's range
    there without becoming inf)."""
    h = np.empty(a.shape, np.float64)
    steps = range(a.size - 1, -1, -1) if down else range(a.size)
    for t in steps:
        s = a[t] * np.float64(s) + x[t]
        h[t] = s
    return h, s


def _scan(a, x, s, down):
    """``scan_rows`` over one row in blocks (``blocked=True``), as split mode's second phase
    runs it."""
    h = np.full_like(a, -7.0)
    state = np.array([s], a.dtype)
    kernels.scan_rows(a[None], x[None], h[None], state, None, 0, 1, 0, a.size, down, True, 0)
    return h, state[0]


def _row(dtype, steps, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.0, steps).astype(dtype)
    x = rng.standard_normal(steps).astype(dtype)
    return a, x


def _block(dtype):
    return vectors.steps(np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
def test_rows_of_every_length_around_a_block_match_the_loop(dtype, down):
    n = _block(dtype)
    for steps in sorted({0, 1, n - 1, n, n + 1, 2 * n - 1, 3 * n + 5, 7 * n}):
        a, x = _row(dtype, steps, steps)
        h, state = _scan(a, x, 0.25, down)
        want, want_state = _serial(a, x, 0.25, down)
        scale = np.abs(want).max(initial=1.0)
        np.testing.assert_allclose(h, want, rtol=0, atol=TOL[dtype] * scale, err_msg=str(steps))
        np.testing.assert_allclose(state, want_state, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("back", [False, True])
def test_the_reducing_kernel_matches_the_loop(dtype, down, back):
    n = _block(dtype)
    a, x = _row(dtype, 5 * n + 3, 1)
    p, s = np.zeros(1), np.array([0.5])
    kernels.reduce_rows(a[None], x[None], p, s, None, None, 0, 1, 0, a.size, down, 0, back)
    # Backward, the carry obeys c = a * c + a * grad_h (``kernels._row_reduce``).
    inputs = a.astype(np.float64) * x if back else x
    _, want = _serial(a, inputs, 0.5, down)
    np.testing.assert_allclose(s[0], want, rtol=TOL[dtype] * 10)
    np.testing.assert_allclose(p[0], np.prod(a.astype(np.float64)), rtol=1e-12)


POISONS = {
    "a=inf": ("a", np.inf),
    "a=-inf": ("a", -np.inf),
    "a=nan": ("a", np.nan),
    "x=inf": ("x", np.inf),
    "x=nan": ("x", np.nan),
    "a=0": ("a", 0.0),  # beside an infinite input: 0 * inf in the loop
}


def _assert_like_the_loop(h, want, dtype, label):
    assert np.array_equal(np.isnan(h), np.isnan(want)), f"{label}: NaN where the loop has none"
    assert np.array_equal(np.isposinf(h), np.isposinf(want)), f"{label}: +inf differs"
    assert np.array_equal(np.isneginf(h), np.isneginf(want)), f"{label}: -inf differs"
    finite = np.isfinite(want)
    scale = np.abs(want[finite]).max(initial=1.0)
    np.testing.assert_allclose(h[finite], want[finite], rtol=0, atol=TOL[dtype] * scale,
                               err_msg=label)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("poison", POISONS)
def test_a_non_finite_value_at_any_lane_is_walked_as_the_loop_walks_it(dtype, down, poison):
    n = _block(dtype)
    lanes = vectors.BITS // (8 * np.dtype(dtype).itemsize)
    which, value = POISONS[poison]
    for at in range(n, 2 * n):  # every lane of every vector of the second block
        a, x = _row(dtype, 3 * n, at)
        (a if which == "a" else x)[at] = value
        if poison == "a=0":  # an infinite input just before: 0 * inf in the loop
            x[at + (1 if down else -1)] = np.inf
        h, _ = _scan(a, x, 0.0, down)
        want, _ = _serial(a, x, 0.0, down)
        _assert_like_the_loop(h, want.astype(dtype), dtype, f"{poison} at {at} ({lanes} lanes)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entering", [np.inf, -np.inf, np.nan])
def test_a_non_finite_entering_state_is_walked(dtype, entering):
    n = _block(dtype)
    a, x = _row(dtype, 3 * n, 7)
    # Two tiny decays: the loop keeps inf * tiny * tiny = inf, the block's product of them
    # underflows to 0, and 0 * inf would be NaN.
    a[n // 2 : n // 2 + 2] = 1e-30 if dtype == np.float32 else 1e-200
    for down in (False, True):
        h, state = _scan(a, x, entering, down)
        want, want_state = _serial(a, x, entering, down)
        _assert_like_the_loop(h, want.astype(dtype), dtype, f"entering {entering}")
        _assert_like_the_loop(np.array([state]), np.array([want_state]), dtype, "state")


def test_a_decay_constant_in_time_takes_the_chains():
    """A decay broadcast along time is a view of stride 0: the vectors, which load whole
    lines, must not read it (the chains do)."""
    n = _block(np.float32)
    x = np.ones(3 * n, np.float32)
    a = np.broadcast_to(np.float32(0.5), x.shape)
    h = np.empty_like(x)
    state = np.zeros(1, np.float32)
    kernels.scan_rows(a[None], x[None], h[None], state, None, 0, 1, 0, x.size, False, True, 0)
    want, _ = _serial(np.full(x.shape, 0.5, np.float32), x, 0.0, False)
    np.testing.assert_allclose(h, want, rtol=1e-6)


def _serial_backward(a, h, gh, hb, down):
    """The backward loop in float64: ``g[t] = gh[t] + a[t'] * g[t']`` with ``t'`` the step
    walked before ``t``, ``grad_a[t] = g[t] * h[previous forward step]`` (``hb`` at the edge)."""
    T = a.size
    gx, ga = np.empty(T), np.empty(T)
    carry = np.float64(0.0)  # float64 arithmetic for float32 rows too, as the blocked walks
    for t in range(T - 1, -1, -1) if down else range(T):
        g = gh[t] + carry
        gx[t] = g
        ga[t] = g * (h[t - 1] if down and t > 0 else h[t + 1] if not down and t < T - 1 else hb)
        carry = a[t] * g
    return gx, ga, carry


def _backward(a, h, gh, hb, down):
    gx, ga = np.full_like(a, -7.0), np.full_like(a, -7.0)
    c = np.zeros(1, a.dtype)
    kernels.backward_rows(a[None], h[None], gh[None], np.array([hb], a.dtype), gx[None], ga[None],
                          c, None, 0, 1, 0, a.size, down, True, 0)  # fmt: skip
    return gx, ga, c[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
def test_the_backward_blocks_match_the_loop(dtype, down):
    n = _block(dtype)
    for steps in sorted({1, n, n + 1, n + 2, 3 * n - 1, 6 * n + 5}):
        a, gh = _row(dtype, steps, steps)
        h = np.random.default_rng(steps + 1).standard_normal(steps).astype(dtype)
        got = _backward(a, h, gh, 0.75, down)
        want = _serial_backward(a, h, gh, 0.75, down)
        for g, w, name in zip(got, want, ("grad_x", "grad_a", "carry")):
            scale = np.abs(w).max(initial=1.0)
            np.testing.assert_allclose(g, w, rtol=0, atol=TOL[dtype] * scale, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("poison", ["a=inf", "a=nan", "x=inf", "x=nan", "h=inf"])
def test_a_non_finite_value_in_a_backward_block_is_walked_as_the_loop_walks_it(dtype, down, poison):
    n = _block(dtype)
    which, value = poison.split("=")
    for at in range(n + 1, 2 * n + 1):
        a, gh = _row(dtype, 3 * n + 2, at)
        h = np.random.default_rng(at).standard_normal(a.size).astype(dtype)
        {"a": a, "x": gh, "h": h}[which][at] = float(value)
        got = _backward(a, h, gh, 0.75, down)
        want = _serial_backward(a, h, gh, 0.75, down)
        for g, w, name in zip(got, want, ("grad_x", "grad_a", "carry")):
            _assert_like_the_loop(np.atleast_1d(g), np.atleast_1d(w).astype(dtype), dtype,
                                  f"{poison} at {at}: {name}")  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_stages_in_vectors_match_the_loop(dtype):
    """The filter kernels' second-order stages (``vectors.second_order_lanes`` for the lanes
    that fill vectors, four at a time, the loop for the rest) against the transposed direct
    form II loop, for lane counts around the vector, with delays in and out."""
    from linscan.backends.cpu import filters

    cascade = filters.kernel(2)
    width = vectors.lanes(np.dtype(dtype).itemsize)
    b = np.array([[0.2, 0.3, 0.1], [1.0, -0.5, 0.25]], dtype)
    a = np.array([[1.0, -1.2, 0.5], [1.0, 0.3, 0.2]], dtype)
    steps = 300
    lane_counts = {1, width - 1, width, width + 1, 4 * width, 5 * width + 3, 6 * width}
    for C in sorted(lane_counts | {7 * width + 1, 9 * width}):  # 1, 2 and 3 vectors left over
        rng = np.random.default_rng(C)
        x = rng.standard_normal(C * steps).astype(dtype)
        z = rng.standard_normal((2, 2, C)).astype(dtype)
        first = np.arange(C, dtype=np.int64) * steps  # lane c: x[c * steps:(c + 1) * steps]
        y = np.full_like(x, -7.0)
        got_z = z.copy()
        cascade(x, y, first, 1, 0, steps, b, a, got_z, True)
        want, want_z = x.astype(np.float64).reshape(C, steps), z.astype(np.float64)
        for k in range(2):
            out = np.empty_like(want)
            for t in range(steps):
                u = want[:, t]
                out[:, t] = b[k, 0] * u + want_z[k, 0]
                want_z[k, 0] = b[k, 1] * u - a[k, 1] * out[:, t] + want_z[k, 1]
                want_z[k, 1] = b[k, 2] * u - a[k, 2] * out[:, t]
            want = out
        np.testing.assert_allclose(y.reshape(C, steps), want, rtol=0, atol=TOL[dtype] * 50,
                                   err_msg=f"{C} lanes")  # fmt: skip
        np.testing.assert_allclose(got_z, want_z, rtol=0, atol=TOL[dtype] * 50)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_copied_in_squares_land_where_the_loop_puts_them(dtype):
    """The filter kernels' tile copies (``vectors.lane_square`` both ways for squares of a
    vector's lanes, the loop for the rest): lanes that are runs of a signal at uneven
    starts, lane counts and tile lengths around the vector, through a stage that mixes
    each lane's neighbouring steps (a swapped step or lane changes the result); nothing
    outside the lanes may be written."""
    from linscan.backends.cpu import filters

    cascade = filters.kernel(2)
    width = vectors.lanes(np.dtype(dtype).itemsize)
    b = np.array([[1.0, 0.5, 0.25]], dtype)  # y[t] = u[t] + u[t-1] / 2 + u[t-2] / 4
    a = np.array([[1.0, 0.0, 0.0]], dtype)
    for C in sorted({1, width - 1, width, width + 3, 3 * width}):
        for steps in sorted({1, width - 1, width, 2 * width + 5, 1000}):
            gaps = np.random.default_rng(C * steps).integers(0, 9, C)
            first = np.cumsum(np.r_[3, gaps[:-1] + steps]).astype(np.int64)
            x = np.random.default_rng(C).standard_normal(first[-1] + steps + 4).astype(dtype)
            y = np.full_like(x, -1.0)
            cascade(x, y, first, 1, 0, steps, b, a, np.zeros((1, 2, C), dtype), True)
            inside = np.zeros(x.size, bool)
            for f in first:
                inside[f : f + steps] = True
                u = x[f : f + steps].astype(np.float64)
                want = u.copy()
                want[1:] += u[:-1] / 2
                want[2:] += u[:-2] / 4
                np.testing.assert_allclose(y[f : f + steps], want, rtol=0,
                                           atol=TOL[dtype] * np.abs(want).max(),
                                           err_msg=f"{C} lanes, {steps} steps")  # fmt: skip
            assert (y[~inside] == -1).all(), f"{C} lanes, {steps} steps: written outside"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("down", [False, True])
def test_a_state_that_overflows_inside_a_block_is_walked(dtype, down):
    """A finite state entering a block can overflow inside it; the loop then meets the next
    decays one at a time (a zero: 0 * inf = NaN; a half: inf stays inf), the block's maps
    all at once (finite results). Such blocks must be walked, forward and backward."""
    n = _block(dtype)
    big = np.finfo(dtype).max
    for at in (n + 1, 2 * n - 3):
        for second in (0.0, 0.5):
            a, x = _row(dtype, 3 * n, at)
            x[:] = 0
            a[:] = 1  # the state stays at half the largest number until `at`
            a[[at, at + (-1 if down else 1)]] = 4.0, second  # walk order: at, then its neighbour
            h, state = _scan(a, x, big / 2, down)
            want, want_state = _serial(a, x, big / 2, down)
            label = f"decay {second} after an overflow at {at}"
            _assert_like_the_loop(h, want.astype(dtype), dtype, label)
            gh = np.zeros_like(a)
            gh[at + (1 if down else -1)] = big / 2  # the carry overflows at `at`
            hs = np.random.default_rng(at).standard_normal(a.size).astype(dtype)
            got = _backward(a, hs, gh, 0.75, down)
            want_back = _serial_backward(a, hs, gh, 0.75, down)
            for g, w, name in zip(got, want_back, ("grad_x", "grad_a", "carry")):
                _assert_like_the_loop(np.atleast_1d(g), np.atleast_1d(w).astype(dtype), dtype,
                                      f"{label}: {name}")  # fmt: skip
