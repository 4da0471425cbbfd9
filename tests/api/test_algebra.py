"""Algebraic properties of the recurrence, checked on linscan alone (hypothesis)."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import linscan
from linscan.testing import Oracle, scan_cases, scan_oracle

from helpers import CONFIGS, METHODS, forced


def _take(arr, axis, sl):
    index = [slice(None)] * np.ndim(arr)
    index[axis] = sl
    return arr[tuple(index)]


def _full(case):
    """``a`` and ``x`` as float arrays of the full shape (Python numbers broadcast)."""
    a, x = np.broadcast_arrays(np.asarray(case.a), case.x)
    dtype = np.result_type(case.a, case.x)
    return a.astype(dtype), x.astype(dtype)


@pytest.mark.parametrize("config", CONFIGS)
@given(case=scan_cases(max_steps=60, resets=False), data=st.data())
def test_prefix_is_causal(case, config, data):
    """The first k steps of a scan are the scan of the first k steps (last k for reverse)."""
    a, x = _full(case)
    axis = case.axis % a.ndim
    T = a.shape[axis]
    k = data.draw(st.integers(0, T))
    part = slice(0, k) if not case.reverse else slice(T - k, T)
    with forced(config):
        whole = linscan.scan(a, x, case.h0, **case.kwargs)
        prefix = linscan.scan(_take(a, axis, part), _take(x, axis, part), case.h0, **case.kwargs)
    scan_oracle(_take(a, axis, part), _take(x, axis, part), case.h0, **case.kwargs).check(
        "prefix of the whole", _take(whole, axis, part)
    )
    scan_oracle(_take(a, axis, part), _take(x, axis, part), case.h0, **case.kwargs).check(
        "scan of the prefix", prefix
    )


@pytest.mark.parametrize("method", METHODS)
@given(case=scan_cases(max_steps=60, resets=False), data=st.data())
def test_chunk_composition(case, method, data):
    """Scanning a concatenation equals scanning the second part from the first's final state."""
    a, x = _full(case)
    axis = case.axis % a.ndim
    T = a.shape[axis]
    k = data.draw(st.integers(0, T))
    first, second = (slice(0, k), slice(k, T)) if not case.reverse else (slice(k, T), slice(0, k))
    kw = dict(method=method, **case.kwargs)
    carry = linscan.final_state(_take(a, axis, first), _take(x, axis, first), case.h0, **kw)
    rest = linscan.scan(_take(a, axis, second), _take(x, axis, second), carry, **kw)
    whole = linscan.scan(a, x, case.h0, **kw)
    oracle = scan_oracle(a, x, case.h0, **case.kwargs)
    piece = Oracle(
        _take(oracle.expected, axis, second),
        _take(oracle.bound, axis, second),
        _take(np.broadcast_to(oracle.steps, a.shape), axis, second),
    )
    piece.check("second part scanned from the carried state", rest)
    piece.check("second part of the whole", _take(whole, axis, second))


@given(case=scan_cases())
def test_reverse_is_flip_scan_flip(case):
    a, x = _full(case)
    axis = case.axis % a.ndim
    backwards = linscan.scan(a, x, case.h0, axis=axis, reverse=True)
    flipped = np.flip(linscan.scan(np.flip(a, axis), np.flip(x, axis), case.h0, axis=axis), axis)
    oracle = scan_oracle(a, x, case.h0, axis=axis, reverse=True)
    oracle.check("reverse", backwards)
    oracle.check("flip-scan-flip", flipped)


@pytest.mark.parametrize("config", CONFIGS)
@given(case=scan_cases(max_steps=100))
def test_unit_decay_is_cumulative_sum(case, config):
    a, x = _full(case)
    axis = case.axis % a.ndim
    with forced(config):
        h = linscan.scan(1.0, x, axis=axis, reverse=case.reverse)
    xs = np.flip(x, axis) if case.reverse else x
    expected = np.cumsum(xs.astype(np.float64), axis=axis)
    expected = np.flip(expected, axis) if case.reverse else expected
    bound = scan_oracle(1.0, np.abs(x.astype(np.float64)), axis=axis, reverse=case.reverse)
    Oracle(expected, bound.expected, bound.steps).check("cumsum", h)


@pytest.mark.parametrize("config", CONFIGS)
@given(case=scan_cases(max_steps=100))
def test_zero_decay_is_identity(case, config):
    """With a = 0 every step forgets the past: h is x exactly (rounding cannot enter)."""
    _, x = _full(case)
    with forced(config):
        h = linscan.scan(np.zeros_like(x), x, case.h0, **case.kwargs)
    expected = np.broadcast_to(x, h.shape).astype(h.dtype)
    np.testing.assert_array_equal(h, expected)


@pytest.mark.parametrize("method", METHODS)
@given(case=scan_cases(max_steps=60, views=False), data=st.data())
def test_linear_in_x_and_h0(case, method, data):
    a, x1 = _full(case)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x2 = rng.uniform(-4, 4, x1.shape).astype(x1.dtype)
    axis = case.axis % a.ndim
    state_shape = a.shape[:axis] + a.shape[axis + 1 :]
    h01 = rng.uniform(-4, 4, state_shape).astype(x1.dtype)
    h02 = rng.uniform(-4, 4, state_shape).astype(x1.dtype)
    alpha, beta = 0.75, -1.25  # exact in binary floating point
    kw = dict(method=method, **case.kwargs)
    combined = linscan.scan(a, alpha * x1 + beta * x2, alpha * h01 + beta * h02, **kw)
    separate = alpha * linscan.scan(a, x1, h01, **kw) + beta * linscan.scan(a, x2, h02, **kw)
    bound = scan_oracle(
        np.abs(a), 2 * (np.abs(x1) + np.abs(x2)), 2 * (np.abs(h01) + np.abs(h02)), **case.kwargs
    )
    expected = scan_oracle(a, alpha * x1 + beta * x2, alpha * h01 + beta * h02, **case.kwargs)
    check = Oracle(expected.expected, bound.expected, expected.steps)
    check.check("scan of the combination", combined)
    check.check("combination of the scans", separate)


@given(case=scan_cases(max_steps=60, views=False), data=st.data())
def test_layout_invariance(case, data):
    """Moving the time axis elsewhere in memory gives the same result, moved."""
    a, x = _full(case)
    axis = case.axis % a.ndim
    assume(a.ndim > 1)
    dest = data.draw(st.integers(0, a.ndim - 1))
    h = linscan.scan(a, x, case.h0, axis=axis, reverse=case.reverse)
    # Moving only the time axis keeps the other axes in order, so h0 means the same.
    moved = linscan.scan(
        np.ascontiguousarray(np.moveaxis(a, axis, dest)),
        np.ascontiguousarray(np.moveaxis(x, axis, dest)),
        case.h0,
        axis=dest,
        reverse=case.reverse,
    )
    oracle = scan_oracle(a, x, case.h0, axis=axis, reverse=case.reverse)
    oracle.check("original layout", h)
    oracle.check("moved layout", np.moveaxis(moved, dest, axis))
