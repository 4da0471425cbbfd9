"""scan_backward against finite differences, the adjoint identity and broadcast reductions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linscan
from linscan.testing import backward_cases

from helpers import CONFIGS, METHODS, forced


def _loss(a, x, h0, w, kwargs):
    return float(np.sum(w * linscan.scan(a, x, h0, **kwargs)))


@pytest.mark.parametrize("config", CONFIGS)
@given(case=backward_cases(dtypes=(np.float64,), max_steps=30), seed=st.integers(0, 2**32 - 1))
def test_matches_finite_differences(case, config, seed):
    """<grad, v> equals the central difference of <w, scan> along a random direction v."""
    rng = np.random.default_rng(seed)
    a = np.asarray(case.a, np.float64)
    x = np.asarray(case.x, np.float64)
    h0 = rng.uniform(-2, 2, np.shape(case.h0)) if case.h0 is not None else None
    w = case.grad_h
    da, dx = rng.standard_normal(a.shape), rng.standard_normal(x.shape)
    dh0 = rng.standard_normal(h0.shape) if h0 is not None else None
    with forced(config):
        h = linscan.scan(a, x, h0, **case.kwargs)
        grad_a, grad_x, grad_h0 = linscan.scan_backward(a, h, w, h0, **case.kwargs)
    # x may have been broadcast: its gradient sums over the broadcast copies.
    grad_x = linscan._layout.sum_to_shape(grad_x, x.shape, np.dtype(np.float64))
    predicted = np.sum(grad_a * da) + np.sum(grad_x * dx)
    if h0 is not None:
        predicted += np.sum(grad_h0 * dh0)
    eps = 1e-6

    def shifted(s):
        return _loss(a + s * da, x + s * dx, None if h0 is None else h0 + s * dh0, w, case.kwargs)

    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    # Central differences: truncation O(eps^2 * f''') plus cancellation O(ulp(f) / eps); bound
    # both by the magnitude of the terms involved.
    scale = 1.0 + _loss(
        np.abs(a) + np.abs(da), np.abs(x) + np.abs(dx), None, np.abs(w), case.kwargs
    )
    assert abs(predicted - numeric) <= 1e-6 * scale * (1 + h.shape[case.axis]), (predicted, numeric)


@pytest.mark.parametrize("method", METHODS)
@given(case=backward_cases(max_steps=60), seed=st.integers(0, 2**32 - 1))
def test_adjoint_identity(case, method, seed):
    """For fixed a the scan is linear in (x, h0): <g, J(v, u)> = <J^T g, (v, u)>."""
    rng = np.random.default_rng(seed)
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    dtype = h.dtype
    v = rng.standard_normal(h.shape).astype(dtype)
    axis = case.axis % h.ndim
    u = rng.standard_normal(h.shape[:axis] + h.shape[axis + 1 :]).astype(dtype)
    forward = linscan.scan(case.a, v, u, method=method, **case.kwargs)
    _, grad_x, grad_h0 = linscan.scan_backward(
        case.a, h, case.grad_h, u, method=method, **case.kwargs
    )
    lhs = np.sum(case.grad_h.astype(np.float64) * forward)
    rhs = np.sum(grad_x.astype(np.float64) * v) + np.sum(grad_h0.astype(np.float64) * u)
    magnitude = np.sum(
        np.abs(case.grad_h) * linscan.scan(np.abs(case.a), np.abs(v), np.abs(u), **case.kwargs)
    )
    steps = h.size + 2
    assert abs(lhs - rhs) <= 4 * np.finfo(dtype).eps * steps * (magnitude + 1e-30)


@pytest.mark.parametrize("form", ["number", "per-channel", "per-step", "scalar-array"])
@given(case=backward_cases(max_steps=50, views=False))
def test_broadcast_grad_a_is_the_sum_of_full_grad_a(case, form):
    shape = case.shape
    axis = case.axis % len(shape)
    x = np.broadcast_to(case.x, shape)  # the full shape whatever a is
    rng = np.random.default_rng(0)
    dtype = case.grad_h.dtype
    if form == "number":
        a_small = 0.5
    elif form == "scalar-array":
        a_small = np.asarray(0.5, dtype)
    elif form == "per-channel":
        a_small = rng.uniform(
            -1, 1, tuple(1 if k == axis else n for k, n in enumerate(shape))[axis:]
        ).astype(dtype)
    else:
        a_small = rng.uniform(
            -1, 1, tuple(n if k == axis else 1 for k, n in enumerate(shape))
        ).astype(dtype)
    h = linscan.scan(a_small, x, case.h0, **case.kwargs)
    a_full = np.broadcast_to(np.asarray(a_small, dtype), shape).copy()
    small = linscan.scan_backward(a_small, h, case.grad_h, case.h0, **case.kwargs)[0]
    full = linscan.scan_backward(a_full, h, case.grad_h, case.h0, **case.kwargs)[0]
    assert small.shape == np.shape(a_small)
    expected = linscan._layout.sum_to_shape(
        full.astype(np.float64), np.shape(a_small), np.dtype(np.float64)
    )
    magnitude = linscan._layout.sum_to_shape(
        np.abs(full.astype(np.float64)), np.shape(a_small), np.dtype(np.float64)
    )
    tol = 4 * np.finfo(small.dtype).eps * (magnitude * (1 + h.size)) + np.finfo(small.dtype).tiny
    assert np.all(np.abs(small - expected) <= tol)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("rows", [2, 3])
def test_backward_row_pairs_at_their_edges(rows, reverse, dtype):
    """The plain backward walk runs rows in pairs, the second ``_SKEW`` (64) steps ahead:
    lengths around the skew (the lockstep part empty, one step, many), resets on the first
    and last steps and where the second row's lone steps end, an odd row left alone, and an
    infinite initial state, against the serial float64 loops."""
    from linscan.backends.cpu import plan as _plan
    from linscan.testing import assert_scan_backward_close

    rng = np.random.default_rng(rows + 2 * reverse)
    for steps in (1, 2, 63, 64, 65, 66, 129):
        shape = (rows, steps)
        a = rng.uniform(0.5, 1.0, shape).astype(dtype)
        gh = rng.standard_normal(shape).astype(dtype)
        h = rng.standard_normal(shape).astype(dtype)
        h0 = rng.standard_normal(rows).astype(dtype)
        h0[-1] = np.inf
        if dtype == np.complex64:
            a = a * np.exp(1j * rng.uniform(-0.3, 0.3, shape)).astype(dtype)
            gh = gh + 1j * rng.standard_normal(shape).astype(np.float32)
        resets = np.zeros(shape, bool)
        walk = np.arange(steps)[::-1] if not reverse else np.arange(steps)  # backward order
        for k in {0, steps - 1, min(63, steps - 1), min(64, steps - 1)}:
            resets[k % rows, walk[k]] = True
        for r in (None, resets):
            with _plan.forced(threads=1):
                grads = linscan.scan_backward(
                    a, h, gh, h0, reverse=reverse, resets=r, method="sequential"
                )
            assert_scan_backward_close(grads, a, h, gh, h0, reverse=reverse, resets=r)
