"""The block form of the IIR filter kernels (``filters.block_kernel``): runs of a signal read a
block at a time, the block's pieces run from zero delays and corrected by the response to
the delays entering them. Against scipy's loop in float64 over random stable filters of
orders 1-8 (first-order stages, second-order sections, one transfer function: of order 3 or
more it keeps to lanes in lockstep), lengths that take every size of block and the last steps
one at a time, with delays in and out, pieces split over threads; float64 accuracy on narrow
bands; the two vector intrinsics it adds; where it is taken and where not."""

import numpy as np
import pytest
import scipy.signal as ss
from helpers import assert_spreads_as
from hypothesis import given, settings
from hypothesis import strategies as st

from linscan import signal
from linscan.backends.cpu import filters, plan, vectors

TOL = {np.float32: 2e-4, np.float64: 1e-10}


def _stable(rng, order):
    """A stable filter of ``order`` as zeros, poles (inside radius 0.97) and gain."""
    poles = []
    while len(poles) < order:
        r, angle = rng.uniform(0.3, 0.97), rng.uniform(0, np.pi)
        pair = order - len(poles) > 1
        poles += [r * np.exp(1j * angle), r * np.exp(-1j * angle)] if pair else [r]
    return rng.uniform(-1, 1, order), np.array(poles), rng.uniform(0.5, 2.0)


@settings(max_examples=40, deadline=None)
@given(
    order=st.integers(1, 8),
    form=st.sampled_from(["sos", "tf"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    lanes=st.integers(1, 3),
    steps=st.integers(1, 3000),
    block=st.sampled_from([1, 2, 8, 16]),
    threads=st.integers(1, 3),
    with_zi=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_blocks_as_scipy(order, form, dtype, lanes, steps, block, threads, with_zi, seed):
    """Rows of ``steps`` samples in blocks of ``LANES`` pieces of ``block`` steps (and every
    shorter power of two), the last steps one at a time; one row on two or three threads
    in pieces; outputs and final delays as scipy's float64 loop within rounding."""
    rng = np.random.default_rng(seed)
    zpk = _stable(rng, order)
    sos = ss.zpk2sos(*zpk)
    x = rng.standard_normal((lanes, steps)).astype(dtype)
    forced = dict(threads=threads, min_threaded=0, min_segment=100, min_blocked=1,
                  filter_block=block)  # fmt: skip

    def both(zi):  # the delays in the dtype, and as scipy's float64 loop gets them
        return (None, None) if zi is None else (zi.astype(dtype), zi.astype(dtype).astype(float))

    if form == "sos":
        zi, wide = both(rng.standard_normal((sos.shape[0], lanes, 2)) if with_zi else None)
        with plan.forced(**forced):
            got = signal.sosfilt(sos.astype(dtype), x, zi=zi)
        want = ss.sosfilt(sos.astype(dtype).astype(float), x.astype(float), zi=wide)
    else:
        b, a = (v.astype(dtype) for v in ss.zpk2tf(*zpk))  # one stage of ``order``
        zi, wide = both(rng.standard_normal((lanes, order)) if with_zi else None)
        with plan.forced(**forced):
            got = signal.lfilter(b, a, x, zi=zi)
        want = ss.lfilter(b.astype(float), a.astype(float), x.astype(float), zi=wide)
    got, want = (got, want) if zi is not None else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        scale = max(1.0, float(np.abs(w).max(initial=0)))
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL[dtype] * scale)


def test_blocks_are_taken_for_long_runs_only(monkeypatch):
    """Real rows of at least ``MIN_BLOCKED`` steps go in blocks; shorter rows, time-major
    channels (stride > 1), a backward walk (stride -1) and complex rows as lanes in
    lockstep."""
    taken = []
    kernel = filters.block_kernel

    def spy(order):
        taken.append(order)
        return kernel(order)

    monkeypatch.setattr(filters, "block_kernel", spy)
    sos = ss.butter(4, 0.1, output="sos")
    n = filters.MIN_BLOCKED
    signal.sosfilt(sos, np.ones(n))
    assert taken == [2]
    for x, axis in [(np.ones(n - 1), -1), (np.ones((n, 2)), 0), (np.ones(n, np.complex128), -1)]:
        signal.sosfilt(sos, x, axis=axis)
    assert taken == [2]
    taken.clear()
    signal.sosfiltfilt(sos, np.ones(n))  # the forward pass only
    assert taken == [2]


def test_block_pieces_even_the_threads_work():
    cases = {(1, 2): 2, (3, 2): 2, (2, 2): 1, (1, 3): 3, (5, 3): 3, (8, 2): 1, (100, 3): 1}
    with plan.forced(min_segment=1000):
        for (lanes, threads), pieces in cases.items():
            assert filters._block_pieces(lanes, 10**6, threads) == pieces, (lanes, threads)
        assert filters._block_pieces(1, 2500, 4) == 2  # pieces of at least 1000 steps


@pytest.mark.parametrize("block", [4, 64])
@pytest.mark.parametrize("where", [0, 700, 2999, 5000, -1])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_samples_in_blocks_as_scipy(block, where, value):
    """An inf or NaN makes the delays of the block form non-finite: the run (or, split over
    threads, the whole signal) goes again in one go, so it spreads as in the loop."""
    sos = ss.butter(4, 0.1, output="sos")
    x = np.random.default_rng(0).standard_normal(6000)
    x[where] = value
    for threads in (1, 2):
        with plan.forced(threads=threads, min_threaded=0, min_segment=1000, min_blocked=1,
                         filter_block=block):  # fmt: skip
            got = signal.sosfilt(sos, x)
        assert_spreads_as(got, ss.sosfilt(sos, x))


@pytest.mark.parametrize("loud", [0, 1, 2])
def test_a_loud_piece_sends_the_pieces_after_it_again(loud):
    """Pieces after the first start from delays that leave out all but their predecessor's
    last 4096 steps; where the steps left out are louder than those run (3000 steps of
    piece ``loud`` 1e12 times louder just before its last 4096, whose delays reach the next
    piece decayed to about 1e-6, a million times its rounding), the pieces after it run
    again from the delays their predecessors ended with: the result is the loop's."""
    x = np.random.default_rng(loud).standard_normal(60000)
    end = (loud + 1) * 20000 - 4096
    x[end - 3000 : end] *= 1e12
    want = ss.lfilter([1.0], [1.0, -0.99], x)
    with plan.forced(threads=3, min_threaded=0, min_segment=8000, filter_block=64):
        got = signal.lfilter([1.0], [1.0, -0.99], x)
    scale = ss.lfilter([1.0], [1.0, -0.99], np.abs(x))  # what bounds the loop's states
    assert (np.abs(got - want) <= 1e-12 * scale).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_responses_add_each_lanes_response(dtype):
    """``vectors.lane_responses``: ``buf[s, c] += response[s] @ entering[:, c]`` for 1-4
    vectors of lanes from a lane offset, summed in float64; lanes outside left alone."""
    from numba import njit

    width = vectors.lanes(np.dtype(dtype).itemsize)

    @njit
    def add(buf, n, C, c0, entering, response, D, count):
        if count == 1:
            vectors.lane_responses(buf, n, C, c0, entering, response, D, 1)
        else:
            vectors.lane_responses(buf, n, C, c0, entering, response, D, 4)

    rng = np.random.default_rng(1)
    for count, D in [(1, 1), (1, 5), (4, 3)]:
        C, n = 6 * width, 7
        c0 = width
        buf = rng.standard_normal((n, C)).astype(dtype)
        entering = rng.standard_normal((D, C))
        response = rng.standard_normal((n, D))
        want = buf.astype(np.float64)
        lanes = slice(c0, c0 + count * width)
        want[:, lanes] += response @ entering[:, lanes]
        got = buf.copy()
        add(got.ravel(), n, C, c0, entering.ravel(), response.ravel(), D, count)
        # a float64 sum of D + 1 terms, rounded once to the dtype
        terms = np.abs(buf) + np.abs(response) @ np.abs(entering)
        bound = np.finfo(dtype).eps * np.abs(want) + 2 * (D + 1) * np.finfo(np.float64).eps * terms
        assert (np.abs(got - want) <= bound).all()
        outside = np.ones(C, bool)
        outside[lanes] = False
        assert (got[:, outside] == buf[:, outside]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_largest_modulus_of_whole_vectors(dtype):
    """``vectors.largest_modulus``: the largest ``|v|`` of the whole vectors of
    ``values[:count]`` (the rest is the caller's), wherever it lies and whatever its sign;
    a NaN passed over."""
    from numba import njit

    @njit
    def largest(values, count):
        return vectors.largest_modulus(values, count)

    width = vectors.lanes(np.dtype(dtype).itemsize)
    rng = np.random.default_rng(2)
    for count in (0, width - 1, width, 3 * width + 2):
        values = rng.uniform(-1, 1, count + 5).astype(dtype)
        whole = count // width * width
        assert largest(values, count) == np.abs(values[:whole]).max(initial=0)
        for at in range(whole):
            spiked = values.copy()
            spiked[at] = -3.0
            assert largest(spiked, count) == 3.0
            spiked[at] = np.nan
            assert largest(spiked, count) == np.abs(np.delete(values[:whole], at)).max(initial=0)


def _error(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.parametrize("order, cutoff", [(2, 0.0005), (4, 0.001), (8, 0.001)])
def test_narrow_band_sections_in_float64_within_a_few_times_the_loop(order, cutoff):
    """Narrow low-passes as sections in float64, one signal on two threads, against a long
    double loop: the blocks' split of each output into a run from zero delays and the
    response to the entering ones costs accuracy where large terms cancel (1.0-5.4x the
    float64 loop's error here; 60-600x with tables from products of matrix powers); bounded
    at 10x."""
    sos = ss.butter(order, cutoff, output="sos")
    x = np.random.default_rng(order).standard_normal(60000)
    exact = ss.sosfilt(sos.astype(np.longdouble), x.astype(np.longdouble)).astype(np.float64)
    with plan.forced(threads=2, min_threaded=0):
        got = signal.sosfilt(sos, x)
    assert _error(got, exact) <= 10 * max(_error(ss.sosfilt(sos, x), exact), 1e-15)


def test_transfer_functions_of_high_order_stay_as_accurate_as_the_loop():
    """A transfer function of order 6 in float64 keeps to lanes in lockstep, whose pieces run
    the recurrence itself from their entering delays: in blocks it erred 1e4 times the
    loop's error."""
    b, a = ss.butter(6, 0.05)
    x = np.random.default_rng(6).standard_normal(50000)
    exact = ss.lfilter(b.astype(np.longdouble), a.astype(np.longdouble), x.astype(np.longdouble))
    with plan.forced(threads=2, min_threaded=0):
        got = signal.lfilter(b, a, x)
    loop = _error(ss.lfilter(b, a, x), exact.astype(np.float64))
    assert _error(got, exact.astype(np.float64)) <= 2 * loop


@pytest.mark.parametrize("order, cutoff, shape", [(4, 0.002, (1 << 16,)), (3, 0.001, (1 << 16, 2))])
def test_long_transfer_functions_of_high_order_walk_whole_lanes(order, cutoff, shape):
    """A transfer function of order 3 or more over a long signal walks each lane whole, as
    accurate as the loop: cut into pieces, whose entering delays took powers of the
    companion matrix by repeated squaring, a 4th-order Butterworth at 0.002 of Nyquist gave
    1e200 from the second piece on, and order 3 at 0.001 erred 1e-3 (a helper's probe)."""
    b, a = ss.butter(order, cutoff)
    x = np.random.default_rng(order).standard_normal(shape)
    wide = [v.astype(np.longdouble) for v in (b, a, x)]
    exact = ss.lfilter(*wide, axis=0).astype(np.float64)
    with plan.forced(threads=2, min_threaded=0):
        got = signal.lfilter(b, a, x, axis=0)
    assert _error(got, exact) <= 2 * _error(ss.lfilter(b, a, x, axis=0), exact)
    assert filters._pieces(1, 1 << 20, 2, order) == 1
    assert filters._pieces(1, 1 << 20, 2, 2) > 1  # sections and first-order stages are cut


@pytest.mark.parametrize("order, cutoff, channels", [(4, 0.0005, 2), (8, 0.0003, 3)])
def test_time_major_sections_in_pieces_within_a_few_times_the_loop(order, cutoff, channels):
    """Narrow low-passes as sections over a few time-major channels, cut into pieces in
    lockstep, with delays in and out: the pieces' entering delays take ``F^L`` from running
    the stages from unit delays (``filters._Powers``). By repeated squaring they erred 5e-9
    to 6e-8 of the signal, 1000-4600 times the loop's error (a helper's probe)."""
    sos = ss.butter(order, cutoff, output="sos")
    rng = np.random.default_rng(order)
    x = rng.standard_normal((1 << 16, channels))
    zi = rng.standard_normal((sos.shape[0], 2, channels))
    wide = [v.astype(np.longdouble) for v in (sos, x, zi)]
    y_exact, zf_exact = (v.astype(np.float64) for v in ss.sosfilt(*wide[:2], axis=0, zi=wide[2]))
    with plan.forced(threads=2, min_threaded=0):
        y, zf = signal.sosfilt(sos, x, axis=0, zi=zi)
    y_loop, zf_loop = ss.sosfilt(sos, x, axis=0, zi=zi)
    assert _error(y, y_exact) <= 10 * max(_error(y_loop, y_exact), 1e-15)
    assert _error(zf, zf_exact) <= 10 * max(_error(zf_loop, zf_exact), 1e-15)


def test_powers_run_the_stages_and_far_ones_are_zero_once_forgotten():
    """``_Powers`` steps the stages from unit delays; ``_far_power`` is that power, or zeros
    where the horizon's norm raised to the pieces' length over it is below rounding."""
    b, a = np.array([[1.0, 0.5]]), np.array([[1.0, -0.5]])  # zero input: z <- 0.5 z
    powers = filters._Powers(b, a)
    np.testing.assert_allclose(powers(3), [[0.125]], rtol=1e-15)
    np.testing.assert_allclose(powers(40), [[0.5**40]], rtol=1e-15)
    memory, forgotten = filters._horizon(filters._Powers(b, a), np.float64, 1000)
    assert memory == 64 and forgotten == 0.5**64  # the first power of two below eps / 8
    far = filters._far_power(filters._Powers(b, a), 100, memory, forgotten, np.float64)
    assert far.shape == (1, 1) and not far.any()
    grows = filters._Powers(b, a)
    grows.largest = 1e4  # a power 1e4 times larger seen: 0.5^64 times it is not below rounding
    kept = filters._far_power(grows, 100, memory, forgotten, np.float64)
    np.testing.assert_allclose(kept, [[0.5**100]], rtol=1e-15)
    no_horizon = filters._far_power(filters._Powers(b, a), 50, None, None, np.float64)
    np.testing.assert_allclose(no_horizon, [[0.5**50]], rtol=1e-15)
    sos = ss.butter(4, 0.2, output="sos")
    powers = filters._Powers(np.ascontiguousarray(sos[:, :3]), np.ascontiguousarray(sos[:, 3:]))
    F = powers(1)
    np.testing.assert_allclose(powers(37), np.linalg.matrix_power(F, 37), rtol=1e-10, atol=1e-14)


def test_no_horizon_is_found_without_running_a_piece_s_length():
    """Poles on the unit circle (an integrator, an undamped resonator) never forget: the
    spectral radius says so before any power is run (running them to the limit cost a 2^24
    sample resonator 30 ms, a quarter of its call)."""
    for b, a in (([[1.0, 0.0]], [[1.0, -1.0]]), ([[1.0, 0.0, 0.0]], [[1.0, -1.9, 1.0]])):
        powers = filters._Powers(np.array(b), np.array(a))
        assert filters._horizon(powers, np.float64, 1 << 20) == (None, None)
        assert powers.steps == 1
    powers = filters._Powers(np.array([[1.0, 0.0]]), np.array([[1.0, -0.5]]))
    assert filters._horizon(powers, np.float64, 1 << 20) == (64, 0.5**64)


def test_two_pieces_from_zero_delays_need_no_far_power(monkeypatch):
    """One signal on two threads from zero delays: the second piece enters with the first's
    final delays alone, so ``F^body`` is never made; with ``zi`` it is."""
    made = []
    far_power = filters._far_power
    monkeypatch.setattr(filters, "_far_power", lambda *a: made.append(a[1]) or far_power(*a))
    sos = ss.butter(2, 0.01, output="sos")
    x = np.random.default_rng(2).standard_normal(1 << 16)
    with plan.forced(threads=2, min_threaded=0):
        y = signal.sosfilt(sos, x)
        assert not made
        y_zi, _ = signal.sosfilt(sos, x, zi=np.ones((1, 2)))
        assert made
    np.testing.assert_allclose(y, ss.sosfilt(sos, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_zi, ss.sosfilt(sos, x, zi=np.ones((1, 2)))[0], rtol=1e-10,
                               atol=1e-12)  # fmt: skip
