"""Every method and plan against the float64 serial oracle (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given

import linscan
from linscan.testing import (
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
    backward_cases,
    result_dtype,
    scan_cases,
)

from helpers import CONFIGS, METHODS, Unchanged, forced


def _result_dtype(case):
    return result_dtype(case.a, case.x, case.h0)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
@given(case=scan_cases())
def test_scan_matches_oracle(case, method, config):
    inputs = Unchanged(case.a, case.x, case.h0)
    with forced(config):
        h = linscan.scan(case.a, case.x, case.h0, method=method, **case.kwargs)
    inputs.check()
    assert h.shape == case.shape
    assert h.dtype == _result_dtype(case)
    assert_scan_close(h, case.a, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
@given(case=scan_cases())
def test_final_state_matches_oracle(case, method, config):
    inputs = Unchanged(case.a, case.x, case.h0)
    with forced(config):
        state = linscan.final_state(case.a, case.x, case.h0, method=method, **case.kwargs)
    inputs.check()
    axis = case.axis % len(case.shape)
    assert state.shape == case.shape[:axis] + case.shape[axis + 1 :]
    assert state.dtype == _result_dtype(case)
    assert_final_state_close(state, case.a, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
@given(case=backward_cases())
def test_scan_backward_matches_oracle(case, method, config):
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    inputs = Unchanged(case.a, h, case.grad_h, case.h0)
    with forced(config):
        grads = linscan.scan_backward(case.a, h, case.grad_h, case.h0, method=method, **case.kwargs)
    inputs.check()
    grad_a, grad_x, grad_h0 = grads
    assert grad_a.shape == np.shape(case.a)
    assert grad_x.shape == h.shape
    if case.h0 is None:
        assert grad_h0 is None
    else:
        assert grad_h0.shape == np.shape(case.h0)
    assert_scan_backward_close(grads, case.a, h, case.grad_h, case.h0, **case.kwargs)


@given(case=scan_cases(max_steps=200, views=False))
def test_out_is_filled_and_returned(case):
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    out = np.full(h.shape, np.nan, h.dtype)
    got = linscan.scan(case.a, case.x, case.h0, out=out, **case.kwargs)
    assert got is out
    np.testing.assert_array_equal(out, h)
