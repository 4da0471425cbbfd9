"""Every dtype (16-bit, 32/64-bit real, complex), their promotion and the complex gradient
convention, on the CPU backend (tests/cuda/test_gpu.py runs the same cases on a GPU)."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given

import linscan
from linscan import reference
from linscan.testing import (
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
    backward_cases,
    result_dtype,
    scan_cases,
)

from helpers import METHODS, Unchanged

BF16 = np.dtype(ml_dtypes.bfloat16)
ALL = (np.float16, BF16, np.float32, np.float64, np.complex64, np.complex128)


@pytest.mark.parametrize("method", METHODS)
@given(case=scan_cases(dtypes=ALL))
def test_scan_every_dtype_matches_oracle(case, method):
    inputs = Unchanged(case.a, case.x, case.h0)
    h = linscan.scan(case.a, case.x, case.h0, method=method, **case.kwargs)
    inputs.check()
    assert h.dtype == result_dtype(case.a, case.x, case.h0)
    assert_scan_close(h, case.a, case.x, case.h0, **case.kwargs)
    state = linscan.final_state(case.a, case.x, case.h0, method=method, **case.kwargs)
    assert state.dtype == h.dtype
    assert_final_state_close(state, case.a, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("method", METHODS)
@given(case=backward_cases(dtypes=ALL))
def test_backward_every_dtype_matches_oracle(case, method):
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    inputs = Unchanged(case.a, h, case.grad_h, case.h0)
    grads = linscan.scan_backward(case.a, h, case.grad_h, case.h0, method=method, **case.kwargs)
    inputs.check()
    grad_a, grad_x, grad_h0 = grads
    # Each gradient has its input's dtype; a Python number took the result's.
    assert grad_a.dtype == (result_dtype(case.a) if hasattr(case.a, "dtype") else h.dtype)
    assert grad_x.dtype == h.dtype
    if case.h0 is not None:
        assert grad_h0.dtype == (result_dtype(case.h0) if hasattr(case.h0, "dtype") else h.dtype)
    assert_scan_backward_close(grads, case.a, h, case.grad_h, case.h0, **case.kwargs)


@pytest.mark.parametrize(
    "a, x, expected",
    [
        (np.float32, np.complex64, np.complex64),
        (np.float64, np.complex64, np.complex128),
        (np.float16, np.float32, np.float32),
        (np.float16, BF16, np.float32),  # neither holds the other
        (BF16, BF16, BF16),
        (BF16, np.complex64, np.complex64),
        (np.float16, np.complex128, np.complex128),
        (0.5, BF16, BF16),  # Python numbers are weak
        (0.5 + 0.1j, np.float32, np.complex64),
        (0.5 + 0.1j, np.float64, np.complex128),
        (0.5 + 0.1j, BF16, np.complex64),
    ],
)
def test_promotion(a, x, expected):
    a = a if isinstance(a, (float, complex)) else np.full(4, 0.5, a)
    x = np.ones(4, x)
    assert linscan.scan(a, x).dtype == np.dtype(expected)
    assert result_dtype(a, x) == np.dtype(expected)


@pytest.mark.parametrize("dtype", [np.float16, BF16])
@pytest.mark.parametrize("method", METHODS)
def test_16_bit_accumulates_in_float32(dtype, method):
    """A long scan of 16-bit inputs is within the 16-bit rounding of the exact result; the same
    scan run in 16-bit arithmetic is not (so the tolerance tells the two apart)."""
    rng = np.random.default_rng(1)
    T = 4096
    a = np.full((4, T), 0.999, dtype)
    x = rng.uniform(0.5, 1.0, (4, T)).astype(dtype)
    h = linscan.scan(a, x, method=method)
    assert h.dtype == np.dtype(dtype)
    assert_scan_close(h, a, x)
    exact = reference.scan(a, x)
    ulp = np.abs(exact) * float(ml_dtypes.finfo(dtype).eps)
    assert np.max(np.abs(h.astype(np.float64) - exact) / ulp) <= 1.0
    running = np.empty_like(x)  # the same recurrence in 16-bit arithmetic
    s = np.zeros(4, dtype)
    for t in range(T):
        s = (a[:, t] * s + x[:, t]).astype(dtype)
        running[:, t] = s
    with pytest.raises(AssertionError):
        assert_scan_close(running, a, x)


def _numeric_gradient(f, z, eps=1e-6):
    """``dL/dRe(z) + i dL/dIm(z)`` by central differences."""
    grad = np.zeros_like(z)
    for k in np.ndindex(z.shape):
        for unit in (1.0, 1j):
            up, down = z.copy(), z.copy()
            up[k] += eps * unit
            down[k] -= eps * unit
            grad[k] += unit * (f(up) - f(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("reverse", [False, True])
def test_complex_gradient_convention(reverse):
    """Gradients of complex inputs are ``dL/dRe(z) + i dL/dIm(z)`` (PyTorch's convention):
    checked against finite differences, not against the oracle's formulas."""
    rng = np.random.default_rng(2)
    shape = (2, 5)

    def draw(*s):
        return rng.standard_normal(s) + 1j * rng.standard_normal(s)

    a, x, h0, w = 0.7 * draw(*shape), draw(*shape), draw(2), draw(*shape)
    h = linscan.scan(a, x, h0, reverse=reverse)
    grad_a, grad_x, grad_h0 = linscan.scan_backward(a, h, w, h0, reverse=reverse)
    rev = dict(reverse=reverse)
    ref = {
        "a": _numeric_gradient(lambda v: _loss_r(v, x, h0, w, rev), a),
        "x": _numeric_gradient(lambda v: _loss_r(a, v, h0, w, rev), x),
        "h0": _numeric_gradient(lambda v: _loss_r(a, x, v, w, rev), h0),
    }
    np.testing.assert_allclose(grad_a, ref["a"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_x, ref["x"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_h0, ref["h0"], rtol=1e-6, atol=1e-7)


def _loss_r(a, x, h0, w, rev):
    """A real loss of complex inputs: ``sum(Re(conj(w) * h))``."""
    return float(np.sum((np.conj(w) * reference.scan(a, x, h0, **rev)).real))


def test_real_decay_with_complex_input_gets_the_real_part():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.0, (3, 6))
    x = rng.standard_normal((3, 6)) + 1j * rng.standard_normal((3, 6))
    h = linscan.scan(a, x)
    w = rng.standard_normal((3, 6)) + 1j * rng.standard_normal((3, 6))
    grad_a, _, _ = linscan.scan_backward(a, h, w)
    assert grad_a.dtype == np.float64
    as_complex, _, _ = linscan.scan_backward(a.astype(np.complex128), h, w)
    np.testing.assert_allclose(grad_a, as_complex.real, rtol=1e-12)
    numeric = _numeric_gradient(lambda v: _loss_r(v, x, None, w, {}), a.astype(complex)).real
    np.testing.assert_allclose(grad_a, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.complex64])
def test_out_of_every_dtype(dtype):
    x = np.linspace(-1, 1, 24).reshape(2, 12).astype(dtype)
    out = np.zeros_like(x)
    got = linscan.scan(0.5, x, out=out)
    assert got is out
    np.testing.assert_array_equal(out, linscan.scan(0.5, x))
    grads = (np.zeros_like(x), np.zeros_like(x), None)
    got = linscan.scan_backward(np.full_like(x, 0.5), out, x, out=grads)
    assert got[0] is grads[0] and got[1] is grads[1]
    expected = linscan.scan_backward(np.full_like(x, 0.5), out, x)
    np.testing.assert_array_equal(grads[0], expected[0])
    np.testing.assert_array_equal(grads[1], expected[1])
