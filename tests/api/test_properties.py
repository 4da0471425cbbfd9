"""Every method and plan against the float64 serial oracle (hypothesis), on every backend
(the CPU under each forced plan, and the GPU where one is usable)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linscan
from linscan.testing import (
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
    backward_cases,
    result_dtype,
    scan_cases,
)

from helpers import DEVICE_CONFIGS, METHODS, Unchanged, forced


def _result_dtype(case):
    return result_dtype(case.a, case.x, case.h0)


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_scan_matches_oracle(device, config, method, data):
    case = data.draw(scan_cases(dtypes=device.dtypes), label="case")
    args = [device.put(v) for v in (case.a, case.x, case.h0)]
    inputs = Unchanged(*args, device=device)
    with forced(config):
        h = linscan.scan(*args, method=method, **device.puts(case.kwargs))
    inputs.check()
    assert isinstance(h, device.xp.ndarray)
    assert h.shape == case.shape
    assert h.dtype == _result_dtype(case)
    assert_scan_close(device.get(h), case.a, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_final_state_matches_oracle(device, config, method, data):
    case = data.draw(scan_cases(dtypes=device.dtypes), label="case")
    args = [device.put(v) for v in (case.a, case.x, case.h0)]
    inputs = Unchanged(*args, device=device)
    with forced(config):
        state = linscan.final_state(*args, method=method, **device.puts(case.kwargs))
    inputs.check()
    assert isinstance(state, device.xp.ndarray)
    axis = case.axis % len(case.shape)
    assert state.shape == case.shape[:axis] + case.shape[axis + 1 :]
    assert state.dtype == _result_dtype(case)
    assert_final_state_close(device.get(state), case.a, case.x, case.h0, **case.kwargs)


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_scan_backward_matches_oracle(device, config, method, data):
    case = data.draw(backward_cases(dtypes=device.dtypes), label="case")
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    args = [device.put(v) for v in (case.a, h, case.grad_h, case.h0)]
    inputs = Unchanged(*args, device=device)
    with forced(config):
        grads = linscan.scan_backward(*args, method=method, **device.puts(case.kwargs))
    inputs.check()
    grad_a, grad_x, grad_h0 = grads
    assert isinstance(grad_x, device.xp.ndarray) and isinstance(grad_a, device.xp.ndarray)
    assert grad_a.shape == np.shape(case.a)
    assert grad_x.shape == h.shape
    if case.h0 is None:
        assert grad_h0 is None
    else:
        assert grad_h0.shape == np.shape(case.h0)
    grads = device.get(grads)
    assert_scan_backward_close(grads, case.a, h, case.grad_h, case.h0, **case.kwargs)


@given(case=scan_cases(max_steps=200, views=False))
def test_out_is_filled_and_returned(case):
    h = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    out = np.full(h.shape, np.nan, h.dtype)
    got = linscan.scan(case.a, case.x, case.h0, out=out, **case.kwargs)
    assert got is out
    np.testing.assert_array_equal(out, h)
