"""linscan.signal against scipy.signal over random stable filters (hypothesis): lfilter,
sosfilt, filtfilt, sosfiltfilt and the _zi functions, orders 1 to 8, every axis, zi given or
not; and the float32 accuracy of the split matrix scan on filters with poles near the unit
circle."""

import numpy as np
import pytest
from helpers import assert_spreads_as
from hypothesis import given
from hypothesis import strategies as st

import linscan
from linscan import signal
from linscan.backends.cpu import plan

ss = pytest.importorskip("scipy.signal")

SPLIT = dict(threads=3, min_threaded=0, min_segment=4)


def _stable(rng, order, radius=0.95):
    """``b, a`` of a random real filter of ``order`` with poles and zeros inside ``radius``."""

    def roots(n):
        pairs, single = divmod(n, 2)
        r = radius * np.sqrt(rng.uniform(0, 1, pairs))
        z = r * np.exp(1j * rng.uniform(0, np.pi, pairs))
        return np.concatenate([z, z.conj(), rng.uniform(-radius, radius, single)])

    b = np.atleast_1d(np.real(np.poly(roots(rng.integers(0, order + 1)))))
    return b * rng.uniform(0.5, 2), np.real(np.poly(roots(order)))


@st.composite
def filter_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    order = draw(st.integers(1, 8), label="order")
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    shape = list(shape)
    shape[axis] = draw(st.integers(1, 60), label="T")
    x = rng.standard_normal(tuple(shape))
    return rng, order, x, axis


def _close(got, want, scale=1.0):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale)


@given(case=filter_cases(), with_zi=st.booleans())
def test_lfilter_as_scipy(case, with_zi):
    rng, order, x, axis = case
    b, a = _stable(rng, order)
    a = a * rng.uniform(0.5, 2)  # a[0] != 1: divided out
    if not with_zi:
        _close(signal.lfilter(b, a, x, axis=axis), ss.lfilter(b, a, x, axis=axis))
        return
    shape = list(x.shape)
    shape[axis] = max(len(a), len(b)) - 1
    zi = rng.standard_normal(shape)
    y, zf = signal.lfilter(b, a, x, axis=axis, zi=zi)
    want_y, want_zf = ss.lfilter(b, a, x, axis=axis, zi=zi)
    _close(y, want_y)
    _close(zf, want_zf)
    np.testing.assert_allclose(signal.lfilter_zi(b, a), ss.lfilter_zi(b, a), rtol=1e-9, atol=1e-12)


@given(case=filter_cases(), with_zi=st.booleans())
def test_sosfilt_as_scipy(case, with_zi):
    rng, order, x, axis = case
    sections = (order + 1) // 2
    sos = np.array([np.concatenate([np.pad(b, (0, 3 - len(b))), a]) for b, a in
                    (_stable(rng, 2) for _ in range(sections))])  # fmt: skip
    if not with_zi:
        _close(signal.sosfilt(sos, x, axis=axis), ss.sosfilt(sos, x, axis=axis))
        return
    shape = [sections] + list(x.shape)
    shape[1 + axis % x.ndim] = 2
    zi = rng.standard_normal(shape)
    y, zf = signal.sosfilt(sos, x, axis=axis, zi=zi)
    want_y, want_zf = ss.sosfilt(sos, x, axis=axis, zi=zi)
    _close(y, want_y)
    _close(zf, want_zf)
    np.testing.assert_allclose(signal.sosfilt_zi(sos), ss.sosfilt_zi(sos), rtol=1e-9, atol=1e-12)


@given(case=filter_cases(), padtype=st.sampled_from(["odd", "even", "constant", None]),
       padlen=st.sampled_from([None, 0, 3]))  # fmt: skip
def test_forward_backward_as_scipy(case, padtype, padlen):
    rng, order, x, axis = case
    b, a = _stable(rng, order, radius=0.9)
    sos = np.array([np.concatenate([np.pad(b2, (0, 3 - len(b2))), a2]) for b2, a2 in
                    (_stable(rng, 2, radius=0.9) for _ in range(2))])  # fmt: skip
    for ours, theirs, coefficients, taps in (
        (signal.filtfilt, ss.filtfilt, (b, a), max(len(a), len(b))),
        (signal.sosfiltfilt, ss.sosfiltfilt, (sos,), 5),
    ):
        edge = 0 if padtype is None else 3 * taps if padlen is None else padlen
        if x.shape[axis] <= edge:
            with pytest.raises(ValueError, match="padlen"):
                ours(*coefficients, x, axis=axis, padtype=padtype, padlen=padlen)
            with pytest.raises(ValueError):
                theirs(*coefficients, x, axis=axis, padtype=padtype, padlen=padlen)
            continue
        got = ours(*coefficients, x, axis=axis, padtype=padtype, padlen=padlen)
        want = theirs(*coefficients, x, axis=axis, padtype=padtype, padlen=padlen)
        _close(got, want, scale=float(np.abs(want).max(initial=1.0)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lanes", [1, 3, 40])
def test_long_signals_cut_into_pieces(lanes, dtype):
    """Few lanes of a long signal run as pieces in lockstep, whose entering delays are
    composed from the cascade matrix's powers; many lanes run whole. Forward, with zi, and
    forward-backward (the backward pass walks down)."""
    rng = np.random.default_rng(lanes)
    sos = ss.butter(6, 0.02, output="sos")
    x = rng.standard_normal((lanes, 5000)).astype(dtype)
    zi = rng.standard_normal((3, lanes, 2)).astype(dtype)
    eps = 1e-10 if dtype == np.float64 else 1e-4
    with plan.forced(threads=3, min_threaded=0, min_segment=64):
        y, zf = signal.sosfilt(sos, x, zi=zi)
        yy = signal.sosfiltfilt(sos, x)
        b, a = ss.butter(3, 0.1)
        y1 = signal.lfilter(b, a, x.T, axis=0)
    want_y, want_zf = ss.sosfilt(sos, x.astype(np.float64), zi=zi.astype(np.float64))

    def close(got, want):  # rounding relative to the signal's scale (zi makes it large)
        np.testing.assert_allclose(got, want, rtol=eps, atol=eps * np.abs(want).max())

    close(y, want_y)
    close(zf, want_zf)
    close(yy, ss.sosfiltfilt(sos, x.astype(np.float64)))
    close(y1, ss.lfilter(b, a, x.T.astype(np.float64), axis=0))


def test_single_precision_coefficients_divide_by_a0_as_scipy():
    """float32 (complex64) coefficients whose ``a[0]`` is not a power of two, with a float64
    (complex128, integer) signal: scipy divides by ``a[0]`` in the result's dtype, so must
    linscan (divided in float32, the result erred 3e-8 of scipy's; a helper's probe). Each
    function gives scipy's numbers to within the last bits."""
    b = np.array([1.0, 0.3, -0.2], np.float32)
    a = np.array([2.5, -1.0, 0.3], np.float32)
    for x in (np.linspace(-1, 1, 50), np.arange(50), np.linspace(-1, 1, 50) * (1 + 1j)):
        for coefficients in ((b, a), (b.astype(np.complex64), a)):
            got, want = signal.lfilter(*coefficients, x), ss.lfilter(*coefficients, x)
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
            got, want = signal.filtfilt(*coefficients, x), ss.filtfilt(*coefficients, x)
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    zi = signal.lfilter_zi(b, a)
    assert zi.dtype == ss.lfilter_zi(b, a).dtype == np.float32
    np.testing.assert_array_equal(zi, ss.lfilter_zi(b, a))


@pytest.mark.parametrize(
    "padtype, padlen", [("odd", None), ("odd", 0), ("even", None), (None, None)]
)
def test_boolean_signals_forward_backward_in_scipy_s_dtype(padtype, padlen):
    """scipy's odd extension turns a boolean signal into int64, which with float32
    coefficients gives a float64 result; the other paddings keep it boolean (float32)."""
    x = (np.arange(40) % 7).astype(bool)
    b, a = (v.astype(np.float32) for v in ss.butter(3, 0.2))
    sos = ss.butter(3, 0.2, output="sos").astype(np.float32)
    for ours, theirs, coefficients in (
        (signal.filtfilt, ss.filtfilt, (b, a)),
        (signal.sosfiltfilt, ss.sosfiltfilt, (sos,)),
    ):
        got = ours(*coefficients, x, padtype=padtype, padlen=padlen)
        want = theirs(*coefficients, x, padtype=padtype, padlen=padlen)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dtypes_as_scipy():
    b, a = ss.butter(2, 0.2)
    x32 = np.ones(8, np.float32)
    assert signal.lfilter(b, a, x32).dtype == ss.lfilter(b, a, x32).dtype == np.float64
    b32, a32 = b.astype(np.float32), a.astype(np.float32)
    assert signal.lfilter(b32, a32, x32).dtype == np.float32
    assert signal.lfilter(b, a, np.arange(8)).dtype == np.float64  # integers become floats
    xc = np.ones(8, np.complex128)
    _close(signal.lfilter(b, a, xc), ss.lfilter(b, a, xc))


@pytest.mark.parametrize(
    "form, order, cutoff", [("tf", 2, 0.001), ("tf", 4, 0.01), ("sos", 4, 0.001), ("sos", 8, 0.001)]
)
def test_split_scan_float32_error_no_worse_than_the_loop(form, order, cutoff):
    """Butterworth low-passes with poles near the unit circle (within 1e-3 of it at 0.001 of
    Nyquist), 1e6 samples in float32: the matrix scan split over time (segments reduced in
    float64, restarted from states rounded once) errs no more than twice the serial float32
    loop, both against the float64 loop. As one transfer function, order 4 at 0.003 of
    Nyquist is already unstable in float32 (the loop overflows), hence 0.01 there."""
    x = np.random.default_rng(order).standard_normal(10**6)
    if form == "tf":
        sections = [ss.butter(order, cutoff)]
    else:
        sections = [(s[:3], s[3:]) for s in ss.butter(order, cutoff, output="sos")]
    exact, serial, split = x, x.astype(np.float32), x.astype(np.float32)
    for b, a in sections:
        b, a, _ = signal._coefficients(b, a)
        A, B = signal._state_space(b, a, np.float64)

        def run(u, dtype, method):
            z = linscan.matscan(A.astype(dtype), np.outer(u, B).astype(dtype), method=method)
            prev = np.concatenate([np.zeros(1, dtype), z[:-1, 0]])
            return (b[0] * u + prev).astype(dtype)

        exact = run(exact, np.float64, "sequential")
        serial = run(serial, np.float32, "sequential")
        with plan.forced(threads=4, min_threaded=0, min_segment=1000):
            split = run(split, np.float32, "parallel")
    err_serial = np.abs(serial - exact).max()
    err_split = np.abs(split - exact).max()
    assert err_split <= 2 * err_serial, (err_split, err_serial)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: signal.lfilter([1.0], [0.0, 1.0], np.ones(3)), ValueError, r"a\[0\]"),
        (lambda: signal.lfilter([[1.0]], [1.0], np.ones(3)), ValueError, "b must be"),
        (lambda: signal.lfilter([1.0], [1.0, 0.5], np.ones(3), zi=np.ones(2)), ValueError,
         "zi must have shape"),
        (lambda: signal.lfilter([1.0], [1.0, 0.5], np.ones(3), axis=2),
         np.exceptions.AxisError, "axis"),
        (lambda: signal.lfilter([1.0], [1.0], 3.0), ValueError, "x must be an array"),
        (lambda: signal.lfilter([1.0], [1.0], np.array(["a"])), TypeError, "x must hold"),
        (lambda: signal.sosfilt(np.ones((2, 5)), np.ones(3)), ValueError, "sos must have"),
        (lambda: signal.sosfilt(np.ones((1, 6)), np.ones(3), zi=np.ones((2, 2))), ValueError,
         "zi must have shape"),
        (lambda: signal.filtfilt([1.0], [1.0, 0.5], np.ones(3)), ValueError, "padlen"),
        (lambda: signal.filtfilt([1.0], [1.0, 0.5], np.ones(30), method="gust"), ValueError,
         "method"),
        (lambda: signal.filtfilt([1.0], [1.0, 0.5], np.ones(30), padtype="x"), ValueError,
         "padtype"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_docstring_examples():
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(signal, "linscan.signal", globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5


@pytest.mark.parametrize("order", [4, 8])
@pytest.mark.parametrize(
    "form", [{"min_blocked": 10**12}, {}, {"filter_block": 64}], ids=["lockstep", "blocks", "short"]
)
def test_sosfilt_pieces_float32_error_no_worse_than_the_loop(order, form):
    """The filter kernels' pieces (entering delays composed in float64, rounded once), as
    lanes in lockstep or in blocks (pieces of a block of 2048 or 64 steps, their entering
    delays composed and their responses added in float64), on a Butterworth low-pass at
    0.001 of Nyquist, 1e6 samples of float32: no more than twice the error of the same
    kernel run whole as one lane, against float64."""
    sos = ss.butter(order, 0.001, output="sos").astype(np.float32)
    x = np.random.default_rng(order).standard_normal(10**6).astype(np.float32)
    exact = ss.sosfilt(sos.astype(np.float64), x.astype(np.float64))
    with plan.forced(threads=4, min_threaded=0, min_segment=10**9, min_blocked=10**12):
        whole = signal.sosfilt(sos, x)
    with plan.forced(threads=4, min_threaded=0, min_segment=1000, **form):
        pieces = signal.sosfilt(sos, x)
    assert whole.dtype == pieces.dtype == np.float32
    err_whole = np.abs(whole - exact).max()
    assert 0 < np.abs(pieces - exact).max() <= 2 * err_whole


@pytest.mark.parametrize("where", [5, 3000, 9000, -1])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_samples_in_pieces_as_scipy(where, value):
    """The first pass runs only each piece's last steps (a stable filter forgets older
    delays): an inf or NaN in the steps it leaves out still spreads as in the loop."""
    sos = ss.butter(4, 0.1, output="sos")
    x = np.random.default_rng(0).standard_normal(1 << 14)
    x[where] = value
    with plan.forced(threads=2, min_threaded=0, min_segment=1024):
        got = signal.sosfilt(sos, x)
    assert_spreads_as(got, ss.sosfilt(sos, x))


def test_a_loud_start_is_not_forgotten():
    """The first pass leaves out the start of a piece only where its inputs are no larger
    than those it runs: inputs 1e12 times louder at a piece's start must still reach its
    end as the loop carries them (decayed to about 1e-5 there)."""
    x = np.random.default_rng(1).standard_normal(40000)
    x[:3900] *= 1e12
    want = ss.lfilter([1.0], [1.0, -0.99], x)
    with plan.forced(threads=3, min_threaded=0, min_segment=8000):
        got = signal.lfilter([1.0], [1.0, -0.99], x)
    np.testing.assert_allclose(got[4000:], want[4000:], rtol=1e-12, atol=1e-12)


def test_no_floating_point_warnings_where_scipy_has_none():
    """The matrix powers of the split path underflow (stable filters) or overflow (unstable
    ones) on the way; that never reaches NumPy's error state or the warnings."""
    import warnings

    x = np.random.default_rng(0).standard_normal(90000)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        with plan.forced(threads=3, min_threaded=0, min_segment=1000):
            stable = signal.sosfilt(ss.butter(4, 0.2, output="sos"), x)
            unstable = signal.lfilter([1.0], [1.0, -1.5], x[:3000])
    np.testing.assert_allclose(stable, ss.sosfilt(ss.butter(4, 0.2, output="sos"), x),
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    want = ss.lfilter([1.0], [1.0, -1.5], x[:3000])
    np.testing.assert_array_equal(np.isinf(unstable), np.isinf(want))


def test_fir_filters_convolve_as_scipy():
    """With ``len(a) == 1`` scipy convolves: an inf or NaN reaches ``len(b)`` outputs, not
    all later ones; zi and zf as scipy's."""
    x = np.array([1.0, np.inf, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(signal.lfilter([1.0, 1.0], [1.0], x),
                                  ss.lfilter([1.0, 1.0], [1.0], x))  # fmt: skip
    x = np.r_[np.ones(10), np.nan, np.ones(10)]
    got, want = signal.filtfilt([0.5, 0.5], [1.0], x), ss.filtfilt([0.5, 0.5], [1.0], x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    rng = np.random.default_rng(0)
    b, x, zi = rng.standard_normal(5), rng.standard_normal((3, 50)), rng.standard_normal((3, 4))
    for ours, theirs in zip(signal.lfilter(b, [2.0], x, zi=zi), ss.lfilter(b, [2.0], x, zi=zi)):
        _close(ours, theirs)
    _close(signal.lfilter(b, [1.0], x.T, axis=0), ss.lfilter(b, [1.0], x.T, axis=0))


def test_scipy_s_edge_cases():
    assert signal.lfilter_zi([2.0], [1.0]).shape == (0,)  # no delays
    a = [0, 2, 1]  # scipy's lfilter_zi drops leading zeros of a
    np.testing.assert_allclose(signal.lfilter_zi([1, 2], a), ss.lfilter_zi([1, 2], a))
    x = np.arange(20.0)
    _close(signal.filtfilt([1.0], [1.0, -0.5], x, padlen=-1),
           ss.filtfilt([1.0], [1.0, -0.5], x, padlen=-1))  # fmt: skip
    with pytest.raises(TypeError, match="float128|longdouble"):
        signal.lfilter([1.0], [1.0, -0.5], np.ones(4, np.longdouble))
    with pytest.raises(TypeError, match="zi must hold numbers"):
        signal.lfilter([1.0], [1.0, -0.5], np.ones(4), zi=np.array(["a"]))
    with pytest.raises(ValueError, match="x must be an array with a time axis"):
        signal.lfilter([1.0], [1.0], np.float64(3.0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("shape", [(3000,), (4, 3000)])
def test_read_only_inputs(dtype, shape):
    """Read-only signals and coefficients (a memory map, a broadcast) filter as writable
    ones: the kernels never compile a store into the input."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    sos = ss.butter(4, 0.1, output="sos").astype(dtype if np.dtype(dtype).kind == "f" else float)
    with plan.forced(threads=2, min_threaded=0, min_segment=256):
        want = signal.sosfilt(sos, x)
        want_ff = signal.sosfiltfilt(sos, x)
        frozen_x, frozen_sos = x.copy(), sos.copy()
        frozen_x.setflags(write=False)
        frozen_sos.setflags(write=False)
        np.testing.assert_array_equal(signal.sosfilt(frozen_sos, frozen_x), want)
        np.testing.assert_array_equal(signal.sosfiltfilt(frozen_sos, frozen_x), want_ff)
