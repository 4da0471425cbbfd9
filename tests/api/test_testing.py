"""linscan.testing itself: the options that narrow its strategies, the oracle's promotion of
Python numbers, its failure messages, and ``BackwardCase.h``."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linscan
from linscan import reference, testing
from linscan.testing import backward_cases, scan_cases


def _is_number(v):
    return isinstance(v, (int, float, complex))


def _dtypes_of(case):
    return {np.asarray(v).dtype for v in (case.a, case.x, case.h0) if v is not None
            and not _is_number(v)}  # fmt: skip


# Each option, and what every case drawn with it must satisfy.
NARROWED = {
    "axis=-1": (dict(axis=-1), lambda c: c.axis == -1),
    "axis=1": (dict(axis=1), lambda c: c.axis == 1 and c.x.ndim >= 2),
    "axis=-2": (dict(axis=-2), lambda c: c.axis == -2 and c.x.ndim >= 2),
    "forwards": (dict(reverse=False), lambda c: c.reverse is False),
    "backwards": (dict(reverse=True), lambda c: c.reverse is True),
    "full decays": (
        dict(decay_forms=("full",)),
        lambda c: not _is_number(c.a) and np.shape(c.a) == c.shape,
    ),
    "number decays": (dict(decay_forms=("number",)), lambda c: _is_number(c.a)),
    "per-step decays": (
        dict(decay_forms="per-step"),
        lambda c: np.ndim(c.a) == c.x.ndim
        and all(n == 1 for k, n in enumerate(np.shape(c.a)) if k != c.axis % c.x.ndim),
    ),
    "full x": (dict(x_forms=("full",)), lambda c: c.x.shape == c.shape),
    "no h0": (dict(h0_forms=("none",)), lambda c: c.h0 is None),
    "full h0": (
        dict(h0_forms=("full",)),
        lambda c: np.shape(c.h0) == tuple(n for k, n in enumerate(c.shape)
                                          if k != c.axis % len(c.shape)),  # fmt: skip
    ),
    "one dtype": (
        dict(dtypes=(np.float32, np.float64), same_dtype=True),
        lambda c: len(_dtypes_of(c)) <= 1,
    ),
    "one dtype, numbers too": (
        dict(dtypes=(np.float32, np.complex64), same_dtype=True, decay_forms=("number",)),
        lambda c: _dtypes_of(c) <= {np.dtype(testing.result_dtype(c.a, c.x, c.h0))},
    ),
    "per-channel decays, time last": (
        dict(axis=-1, min_ndim=2, decay_forms=("per-channel",)),
        lambda c: np.shape(c.a) == c.shape[:-1] + (1,),
    ),
    "float32 only": (dict(dtypes=np.float32), lambda c: _dtypes_of(c) <= {np.dtype(np.float32)}),
    "no resets": (dict(resets=False), lambda c: c.resets is None),
    "not empty": (dict(empty=False), lambda c: c.x.size > 0 and np.size(c.a) > 0),
    "sizes": (
        dict(min_ndim=2, max_ndim=2, min_steps=3, max_steps=5),
        lambda c: c.x.ndim == 2 and 3 <= c.shape[c.axis] <= 50,
    ),
    "no views": (
        dict(views=False, decay_forms=("full",)),
        lambda c: c.x.flags.c_contiguous and c.a.flags.c_contiguous,
    ),
}


@pytest.mark.parametrize("name", NARROWED)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_each_option_narrows_what_is_drawn(name, data):
    options, holds = NARROWED[name]
    case = data.draw(scan_cases(**options))
    assert holds(case), case
    back = data.draw(backward_cases(**options))
    assert holds(back), back


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(axis=3), "max_ndim must allow"),
        (dict(axis=-4), "max_ndim must allow"),
        (dict(axis=1.0), "axis must be None"),
        (dict(reverse=1), "reverse must be None"),
        (dict(decay_forms=("ful",)), "decay_forms must be"),
        (dict(x_forms=()), "x_forms must be"),
        (dict(h0_forms=("zero",)), "h0_forms must be"),
        (dict(min_steps=50), "min_steps must be"),
        (dict(dtypes=()), "dtypes must name"),
    ],
)
def test_options_are_checked_when_the_strategy_is_made(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        scan_cases(**options)


def test_a_float64_result_of_a_python_number_decay_and_float32_inputs_passes():
    """linscan rounds the decay 1.6159868326465627 to float32 (the result dtype); a float64
    implementation that keeps it exact is right too, and a wrong result is still caught."""
    a, x = 1.6159868326465627, np.float32([1.0, 2.0, 3.0])
    exact = reference.scan(a, x)  # float64, the Python number unrounded
    testing.assert_scan_close(exact, a, x)
    testing.assert_scan_close(exact.astype(np.float32), a, x)
    linscan_like = reference.scan(np.float32(a), x)
    testing.assert_scan_close(linscan_like, a, x)
    with pytest.raises(AssertionError, match=r"rounded to it: a = 1\.6159868326465627 as float32"):
        testing.assert_scan_close(exact + [0.0, 1e-6, 0.0], a, x)


@settings(max_examples=60, deadline=None)
@given(case=scan_cases(dtypes=(np.float32, np.float16), decay_forms=("number",)))
def test_the_loop_on_unrounded_python_numbers_always_passes(case):
    """Never fail a result closer to the exact answer than the tolerance: the float64 loop
    on the inputs as given (Python numbers unrounded) passes whatever the result dtype."""
    exact = reference.scan(case.a, case.x, case.h0, **case.kwargs)
    testing.assert_scan_close(exact, case.a, case.x, case.h0, **case.kwargs)
    state = reference.final_state(case.a, case.x, case.h0, **case.kwargs)
    testing.assert_final_state_close(state, case.a, case.x, case.h0, **case.kwargs)
    grad_h = np.ones(exact.shape)
    grads = reference.scan_backward(case.a, exact, grad_h, case.h0, **case.kwargs)
    testing.assert_scan_backward_close(grads, case.a, exact, grad_h, case.h0, **case.kwargs)


def test_the_message_shows_the_worst_element_the_dtype_and_the_inputs():
    a = np.full((2, 6), 0.5, np.float32)
    x = np.ones((2, 6), np.float32)
    h = reference.scan(a, x).astype(np.float32)
    h[0, 1] += 1e-3
    h[1, 4] += 1e-1  # the worst
    with pytest.raises(AssertionError) as info:
        testing.assert_scan_close(h, a, x, axis=-1)
    message = str(info.value)
    assert "2 of 12 elements differ" in message
    assert "the worst at index (1, 4)" in message
    assert "times the tolerance" in message
    assert "float32 tolerance" in message and "result dtype float32" in message
    assert "x = float32 array of shape (2, 6)" in message and "h0 = None" in message


def test_a_misplaced_non_finite_value_is_the_worst():
    a, x = np.float64([0.5, 0.5, 0.5]), np.float64([1.0, 1.0, 1.0])
    h = reference.scan(a, x)
    h[0] += 1.0
    h[2] = np.inf
    with pytest.raises(AssertionError, match=r"the worst at index \(2,\): got inf, expected "
                       r"[0-9.]+: a non-finite value"):  # fmt: skip
        testing.assert_scan_close(h, a, x)
    h[2] = np.nan
    with pytest.raises(AssertionError, match=r"the worst at index \(2,\): got nan, expected "
                       r"[0-9.]+: a non-finite value"):  # fmt: skip
        testing.assert_scan_close(h, a, x)


@settings(max_examples=60, deadline=None)
@given(case=backward_cases(dtypes=(np.float16, np.float32, np.float64, np.complex64)))
def test_a_backward_case_carries_its_forward_result(case):
    assert case.h.dtype == testing.result_dtype(case.a, case.x, case.h0)
    assert case.h.shape == case.grad_h.shape == case.shape
    testing.assert_scan_close(case.h, case.a, case.x, case.h0, **case.kwargs)


def test_matscan_asserts_pass_right_results_and_catch_wrong_ones():
    from linscan.testing import (
        assert_matscan_close,
        assert_matscan_final_state_close,
        matscan_cases,
    )

    rng = np.random.default_rng(0)
    A = rng.uniform(-0.5, 0.5, (30, 3, 3)).astype(np.float32)
    x = rng.uniform(-1, 1, (30, 3)).astype(np.float32)
    h = linscan.matscan(A, x, axis=0)
    assert_matscan_close(h, A, x, axis=0)
    assert_matscan_final_state_close(h[-1], A, x, axis=0)
    transposed = linscan.matscan(np.swapaxes(A, -1, -2), x, axis=0)
    with pytest.raises(AssertionError, match="beyond the float32 tolerance"):
        assert_matscan_close(transposed, A, x, axis=0)
    late = h.copy()
    late[5:] = linscan.matscan(A[5:], x[5:], axis=0)  # a lost carry at step 5
    with pytest.raises(AssertionError, match="worst at index"):
        assert_matscan_close(late, A, x, axis=0)
    with pytest.raises(AssertionError):
        assert_matscan_final_state_close(h[-2], A, x, axis=0)

    @given(matscan_cases(dtypes=(np.float64,), axis=-1, reverse=False, h0=False))
    def drawn_as_asked(case):
        assert case.axis == -1 and not case.reverse and case.h0 is None
        assert case.x.dtype == np.float64 and case.A.shape[-2:] == (case.x.shape[-1],) * 2
        np.testing.assert_array_less(np.linalg.norm(case.A, 2, axis=(-2, -1)), 1 + 1e-9)

    drawn_as_asked()
    with pytest.raises(ValueError, match="matrix_forms"):
        matscan_cases(matrix_forms=("diagonal",))
