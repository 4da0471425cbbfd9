"""linscan.matscan, matscan_final_state and matscan_backward against the float64 serial loops
of linscan.reference (hypothesis), under every forced CPU plan; their algebra and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linscan
from linscan import reference
from linscan.backends.cpu import plan

from linscan.testing import (  # (_matrices, _vectors: the strategy's own random draws)
    _matrices,
    _vectors,
    assert_matscan_close,
    assert_matscan_final_state_close,
    matscan_cases,
)

from helpers import CONFIGS, METHODS, Unchanged, forced


def _bound(x, h0, axis, reverse, d):
    """Per element: the number of steps taken times a bound of the states so far (``|h0| +
    sum |x|``, the norms of ``A`` being at most 1)."""
    norms = np.linalg.norm(np.moveaxis(np.asarray(x, np.complex128), axis, 0), axis=-1)
    if reverse:
        norms = norms[::-1]
    start = 0.0 if h0 is None else float(np.max(np.abs(h0))) * d**0.5
    steps = np.arange(1, len(norms) + 1).reshape((-1,) + (1,) * (norms.ndim - 1))
    bound = (start + np.cumsum(norms, axis=0)) * steps
    if reverse:
        bound = bound[::-1]
    return np.moveaxis(bound, 0, axis)[..., None]


def _assert_close(got, want, bound, dtype, d):
    eps = float(np.finfo(dtype).eps)
    tol = 4 * (d + 1) * eps * bound + 1e-30
    err = np.abs(np.asarray(got, np.complex128) - want)
    worst = float(np.max(err / tol, initial=0.0))
    assert np.all(err <= tol), f"max error {err.max():.3g}, {worst:.3g} times the tolerance"


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("method", METHODS)
@given(case=matscan_cases())
def test_matscan_matches_the_loop(config, method, case):
    inputs = Unchanged(case.A, case.x, case.h0)
    with forced(config):
        h = linscan.matscan(case.A, case.x, case.h0, method=method, **case.kwargs)
    inputs.check()
    assert h.shape == case.shape and h.dtype == case.x.dtype
    assert_matscan_close(h, case.A, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("config", list(CONFIGS))
@given(case=matscan_cases(), method=st.sampled_from(METHODS))
def test_matscan_final_state_matches_the_loop(config, case, method):
    with forced(config):
        state = linscan.matscan_final_state(case.A, case.x, case.h0, method=method,
                                            **case.kwargs)  # fmt: skip
    axis = case.axis % (len(case.shape) - 1)
    assert state.shape == case.shape[:axis] + case.shape[axis + 1 :]
    assert state.dtype == case.x.dtype
    assert_matscan_final_state_close(state, case.A, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("config", list(CONFIGS))
@given(case=matscan_cases(), method=st.sampled_from(METHODS))
def test_matscan_backward_matches_the_loop(config, case, method):
    A, x, h0, kwargs = case.A, case.x, case.h0, case.kwargs
    h = linscan.matscan(A, x, h0, **kwargs)
    rng = np.random.default_rng(1)
    grad_h = _vectors(rng, h.shape, x.dtype)
    inputs = Unchanged(A, h, grad_h, h0)
    with forced(config):
        grad_A, grad_x, grad_h0 = linscan.matscan_backward(A, h, grad_h, h0, method=method,
                                                           **kwargs)  # fmt: skip
    inputs.check()
    # A Python number takes the call's dtype, as in linscan.scan_backward.
    as_given = np.asarray(h0, x.dtype) if isinstance(h0, float) else h0
    want_A, want_x, want_h0 = reference.matscan_backward(A, h, grad_h, as_given, **kwargs)
    assert grad_A.shape == A.shape and grad_A.dtype == A.dtype
    assert grad_x.shape == h.shape and grad_x.dtype == x.dtype
    axis = kwargs["axis"] % (x.ndim - 1)
    # g runs against the scan: its bound counts the steps from the other end.
    bound = _bound(grad_h, None, axis, not kwargs["reverse"], x.shape[-1])
    _assert_close(grad_x, want_x, bound, x.dtype, x.shape[-1])
    # grad_A sums products g h^H over the steps and lanes A stands for.
    scale = float(np.max(bound, initial=1.0)) * (1 + float(np.max(np.abs(h), initial=0.0)))
    _assert_close(grad_A, want_A, scale * max(1, h.size), x.dtype, x.shape[-1])
    if h0 is None:
        assert grad_h0 is None
    else:
        assert grad_h0.shape == np.shape(h0)
        _assert_close(grad_h0, want_h0, scale * max(1, h.size), x.dtype, x.shape[-1])


def test_backward_is_the_gradient():
    """<grad, v> against a central difference of <grad_h, matscan> along v, in float64, for
    A per step and per lane, h0, both directions."""
    rng = np.random.default_rng(0)
    d, T = 3, 30
    for reverse in (False, True):
        A = _matrices(rng, (T, 2), d, np.float64, 0.9)
        x = _vectors(rng, (T, 2, d), np.float64)
        h0 = _vectors(rng, (2, d), np.float64)
        grad_h = _vectors(rng, (T, 2, d), np.float64)
        dA, dx, dh0 = (rng.standard_normal(v.shape) for v in (A, x, h0))

        def loss(eps):
            h = linscan.matscan(A + eps * dA, x + eps * dx, h0 + eps * dh0, axis=0,
                                reverse=reverse)  # fmt: skip
            return float(np.sum(h * grad_h))

        h = linscan.matscan(A, x, h0, axis=0, reverse=reverse)
        gA, gx, gh0 = linscan.matscan_backward(A, h, grad_h, h0, axis=0, reverse=reverse)
        eps = 1e-6
        numeric = (loss(eps) - loss(-eps)) / (2 * eps)
        analytic = np.sum(gA * dA) + np.sum(gx * dx) + np.sum(gh0 * dh0)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))


def test_state_of_one_is_scan():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (3, 50))
    x = rng.standard_normal((3, 50))
    h = linscan.matscan(a[..., None, None], x[..., None], 0.25)
    np.testing.assert_allclose(h[..., 0], linscan.scan(a, x, 0.25), rtol=1e-13, atol=1e-13)


def test_split_time_with_a_constant_matrix_is_exact():
    """A matrix shared by every step is raised to a segment's length by squaring; the split
    plan agrees with the loop on a long lightly damped rotation (poles near the circle)."""
    c, s = np.cos(0.01), np.sin(0.01)
    A = 0.9999 * np.array([[c, -s], [s, c]])
    x = np.random.default_rng(3).standard_normal((20000, 2))
    want = reference.matscan(A, x)
    with plan.forced(threads=4, min_threaded=0, min_segment=100):
        for method in ("parallel", "auto"):
            h = linscan.matscan(A, x, method=method)
            np.testing.assert_allclose(h, want, rtol=0, atol=1e-10 * np.abs(want).max())
            h32 = linscan.matscan(A.astype(np.float32), x.astype(np.float32), method=method)
            serial32 = linscan.matscan(A.astype(np.float32), x.astype(np.float32),
                                       method="sequential")  # fmt: skip
            # Restarted from float64 states, the segments are no worse than the float32 loop.
            assert np.abs(h32 - want).max() <= 2 * np.abs(serial32 - want).max()


def test_split_time_backward_is_the_loops():
    """The backward walk split over time (each segment's carry map reduced and composed)
    agrees with the sequential walk: a constant rotation near the unit circle (its map by
    squaring) and a matrix per step (a product per step), with h0, both directions."""
    rng = np.random.default_rng(5)
    c, s = np.cos(0.01), np.sin(0.01)
    rotation = 0.9999 * np.array([[c, -s], [s, c]])
    for A in (rotation, _matrices(rng, (3000,), 2, np.complex128, 0.999)):
        dtype = np.result_type(A, np.float64)
        x = _vectors(rng, (3000, 2), dtype)
        h0 = _vectors(rng, (2,), dtype)
        grad_h = _vectors(rng, (3000, 2), dtype)
        for reverse in (False, True):
            h = linscan.matscan(A, x, h0, axis=0, reverse=reverse)
            want = linscan.matscan_backward(A, h, grad_h, h0, axis=0, reverse=reverse,
                                            method="sequential")  # fmt: skip
            with plan.forced(threads=4, min_threaded=0, min_segment=100):
                for method in ("parallel", "auto"):
                    got = linscan.matscan_backward(A, h, grad_h, h0, axis=0, reverse=reverse,
                                                   method=method)  # fmt: skip
                    for g, w in zip(got, want):
                        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10 * np.abs(w).max())


@pytest.mark.parametrize("poison", ["inf x", "nan x", "inf A", "inf grad_h", "nan grad_h"])
def test_non_finite_values_as_in_the_loop(poison):
    """Where a segment's map or a composed state (walking back: carry) is not finite, the
    split plan walks the segments in order: inf and NaN meet the same products as in the
    loop."""
    rng = np.random.default_rng(4)
    A = _matrices(rng, (64,), 2, np.float64, 0.9)
    x, grad_h = _vectors(rng, (64, 2), np.float64), _vectors(rng, (64, 2), np.float64)
    h0 = _vectors(rng, (2,), np.float64)
    value, name = poison.split()
    where = (20, 0, 1) if name == "A" else (20, int(value == "nan"))
    {"A": A, "x": x, "grad_h": grad_h}[name][where] = np.inf if value == "inf" else np.nan
    want = linscan.matscan(A, x, h0, axis=0, method="sequential")
    want_grads = linscan.matscan_backward(A, want, grad_h, h0, axis=0, method="sequential")

    def same(got, want):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12)

    with plan.forced(threads=3, min_threaded=0, min_segment=4):
        for method in ("parallel", "sequential"):
            same(linscan.matscan(A, x, h0, axis=0, method=method), want)
            same(linscan.matscan_final_state(A, x, h0, axis=0, method=method), want[-1])
            grads = linscan.matscan_backward(A, want, grad_h, h0, axis=0, method=method)
            for got, expected in zip(grads, want_grads):
                same(got, expected)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_inputs_accumulate_in_float32(dtype):
    from linscan import _dtypes

    dt = _dtypes.BFLOAT16 if dtype == "bfloat16" else _dtypes.FLOAT16
    rng = np.random.default_rng(5)
    A = _matrices(rng, (), 2, np.float32, 0.9).astype(dt)
    x = _vectors(rng, (100, 2), np.float32).astype(dt)
    h = linscan.matscan(A, x)
    assert h.dtype == dt
    want = reference.matscan(A.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(h.astype(np.float64), want.astype(dt).astype(np.float64),
                               rtol=2 * float(_dtypes.finfo(dt).eps), atol=1e-2)  # fmt: skip


def test_out_may_be_x_and_other_outs():
    rng = np.random.default_rng(6)
    A = _matrices(rng, (), 3, np.float64, 0.9)
    x = _vectors(rng, (40, 3), np.float64)
    want = linscan.matscan(A, x)
    y = x.copy()
    assert linscan.matscan(A, y, out=y) is y
    np.testing.assert_array_equal(y, want)
    buf = np.empty((80, 3))[::2]  # not contiguous: computed aside, then copied
    assert linscan.matscan(A, x, out=buf) is buf
    np.testing.assert_array_equal(buf, want)
    with pytest.raises(ValueError, match="out must have shape"):
        linscan.matscan(A, x, out=np.empty((40, 2)))
    with pytest.raises(TypeError, match="out must have dtype"):
        linscan.matscan(A, x, out=np.empty((40, 3), np.float32))


def test_empty_inputs():
    A = np.eye(2)
    assert linscan.matscan(A, np.empty((0, 2))).shape == (0, 2)
    np.testing.assert_array_equal(
        linscan.matscan_final_state(A, np.empty((3, 0, 2)), np.ones(2)), np.ones((3, 2))
    )
    gA, gx, gh0 = linscan.matscan_backward(A, np.empty((0, 2)), np.empty((0, 2)), np.ones(2))
    assert gA.shape == (2, 2) and not gA.any() and gx.shape == (0, 2) and not gh0.any()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: linscan.matscan(0.5, np.ones((3, 2))), TypeError, "A must be an array"),
        (lambda: linscan.matscan(np.eye(2), 1.0), TypeError, "x must be an array"),
        (lambda: linscan.matscan(np.eye(2), np.ones(2)), ValueError, "at least 2 dimensions"),
        (lambda: linscan.matscan(np.eye(9), np.ones((3, 9))), ValueError, "size 1 to 8"),
        (lambda: linscan.matscan(np.eye(3), np.ones((3, 2))), ValueError, r"end in two dim"),
        (lambda: linscan.matscan(np.ones((2, 3)), np.ones((3, 3))), ValueError, r"\(3, 3\)"),
        (lambda: linscan.matscan(np.ones((4, 2, 2)), np.ones((3, 2))), ValueError, "broadcast"),
        (lambda: linscan.matscan(np.eye(2, dtype=int), np.ones((3, 2))), TypeError, "dtype"),
        (lambda: linscan.matscan(np.eye(2), np.ones((3, 2)), axis=1), np.exceptions.AxisError,
         "axis"),
        (lambda: linscan.matscan(np.eye(2), np.ones((3, 2)), np.ones(3)), ValueError, "h0 must"),
        (lambda: linscan.matscan(np.eye(2), np.ones((3, 2)), reverse=1), TypeError, "reverse"),
        (lambda: linscan.matscan(np.eye(2), np.ones((3, 2)), method="x"), ValueError, "method"),
        (lambda: linscan.matscan_backward(np.eye(2), np.ones((3, 2)), np.ones((3, 3))),
         ValueError, "grad_h must broadcast"),
        (lambda: linscan.matscan_backward(np.ones((4, 2, 2)), np.ones((3, 2)), np.ones((3, 2))),
         ValueError, "A must broadcast"),
        (lambda: linscan.matscan_backward(np.eye(2), np.ones((3, 2)), None), TypeError,
         "grad_h must have a floating-point dtype"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_docstring_examples():
    import doctest

    for name in ("matscan", "matscan_final_state", "matscan_backward"):
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for test in doctest.DocTestFinder().find(getattr(linscan, name), name, globs={}):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0, name


def test_torch_tensors_through_dlpack():
    torch = pytest.importorskip("torch")
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    x = torch.zeros(3, 2, dtype=torch.float64)
    x[0, 0] = 1.0
    h = linscan.matscan(A, x)
    assert isinstance(h, torch.Tensor)
    np.testing.assert_array_equal(h.numpy(), [[1, 0], [0, 1], [-1, 0]])


def test_a_state_that_overflows_once_rounded_is_inf_as_in_the_loop():
    """float32 states past its range at the end of the first of three segments, back in
    range by the end of the second: composed in float64 the third segment's entering state
    is finite, but the loop's states are inf from the overflow on, and so must ours be (a
    review found the segment after it restarting finite)."""
    A = np.ones((64, 1, 1), np.float32)
    A[:21], A[21:42] = 1e3, 1e-3  # past float32's range from t = 12, back to 1 at t = 41
    x = np.zeros((64, 1), np.float32)
    h0 = np.ones(1, np.float32)
    expected = linscan.matscan(A, x, h0, axis=0, method="sequential")
    assert np.isinf(expected[12:]).all() and np.isfinite(expected[:12]).all()
    with forced("split3"):
        h = linscan.matscan(A, x, h0, axis=0, method="parallel")
    assert np.array_equal(np.isinf(h), np.isinf(expected))
    np.testing.assert_allclose(h[:12], expected[:12], rtol=1e-6)


def _kernels_matrices(monkeypatch, A, x, axis):
    """The canonical ``A`` the CPU kernels get from ``matscan`` run sequentially and split
    (each result checked against the loop)."""
    from linscan.backends.cpu import matrix

    seen = []
    scan = matrix.scan
    monkeypatch.setattr(matrix, "scan", lambda A5, *a, **k: seen.append(A5) or scan(A5, *a, **k))
    for method in ("sequential", "parallel"):
        with forced("split3"):
            h = linscan.matscan(A, x, axis=axis, method=method)
        assert_matscan_close(h, A, x, axis=axis)
    return seen


def test_a_matrix_constant_in_time_stays_one_step_of_matrices(monkeypatch):
    """``A`` broadcast over some outer rows and not others, the same at every step: the
    kernels get it with time stride 0 (one step's matrices, not a copy of every step's), so
    split mode raises it to a power instead of a product per step; results as before."""
    from linscan.backends.cpu import matrix

    rng = np.random.default_rng(8)
    d, T = 2, 50
    A = _matrices(rng, (2, 1, 1, 1), d, np.float64, 0.9)  # per outer row, constant in time
    x = _vectors(rng, (2, 3, T, 4, d), np.float64)
    seen = _kernels_matrices(monkeypatch, A, x, axis=2)
    assert all(A5.strides[1] == 0 and matrix._constant_in_time(A5) for A5 in seen)
    assert all(A5.shape == (6, T, 4, d, d) for A5 in seen)


def test_a_matrix_per_step_shared_by_channels_stays_one_matrix_per_step(monkeypatch):
    """``A`` of one matrix per step for every channel reaches the kernels as a view with
    channel stride 0 (through ``(O, T, I * d * d)`` it became a copy for every channel: 64
    times ``A``'s memory at 64 channels); results as before."""
    rng = np.random.default_rng(9)
    d, T, C = 3, 40, 5
    A = _matrices(rng, (T, 1), d, np.float64, 0.9)  # a matrix per step, shared by channels
    x = _vectors(rng, (T, C, d), np.float64)
    seen = _kernels_matrices(monkeypatch, A, x, axis=0)
    assert len(seen) == 2
    assert all(A5.shape == (1, T, C, d, d) and A5.strides[2] == 0 for A5 in seen)
    assert all(np.shares_memory(A5, A) for A5 in seen)
    constant = A[:1]  # the same for every step and channel: a view with strides 0 for both
    seen = _kernels_matrices(monkeypatch, constant, x, axis=0)
    assert all(A5.strides[1:3] == (0, 0) and np.shares_memory(A5, constant) for A5 in seen)


def test_the_oracle_multiplies_complex_numbers_as_the_loop_does():
    """An inf in a complex backward pass: ``linscan.reference`` puts NaN and inf where the
    library's loop does. Through ``matmul`` it did not in 32 of 200 draws (a helper's
    probe): its complex products take their own path."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        d, T = int(rng.integers(1, 4)), int(rng.integers(2, 25))
        A = (rng.standard_normal((T, 1, d, d)) + 0.3j * rng.standard_normal((T, 1, d, d))) * 0.4
        h = rng.standard_normal((T, 3, d))
        grad_h = rng.standard_normal((T, 3, d)) + 1j * rng.standard_normal((T, 3, d))
        grad_h[tuple(int(rng.integers(0, n)) for n in grad_h.shape)] = rng.choice([np.inf, -np.inf])
        with np.errstate(invalid="ignore"):  # inf * 0 in the oracle's products
            want = reference.matscan_backward(A, h, grad_h, axis=0)
        got = linscan.matscan_backward(A, h, grad_h, axis=0, method="sequential")
        for g, w in zip(got[:2], want[:2]):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)  # inf and NaN in place
