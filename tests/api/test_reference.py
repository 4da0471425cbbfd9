"""The oracle itself: a hand-computed case, its two loops agreeing, its broadcasting."""

import numpy as np
from hypothesis import given

from linscan import reference
from linscan.testing import scan_cases


def test_hand_computed():
    a = np.array([0.5, 2.0, -1.0])
    x = np.array([1.0, 1.0, 3.0])
    np.testing.assert_array_equal(reference.scan(a, x, 2.0), [2.0, 5.0, -2.0])
    np.testing.assert_array_equal(reference.scan(a, x, 2.0, reverse=True), [2.5, 3.0, 1.0])
    assert reference.final_state(a, x, 2.0) == -2.0
    # L = sum(h): g = [1 + 2*(1 - 1), 1 - 1, 1] = [1, 0, 1]
    ga, gx, gh0 = reference.scan_backward(a, reference.scan(a, x, 2.0), np.ones(3), 2.0)
    np.testing.assert_array_equal(gx, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(ga, [1.0 * 2.0, 0.0 * 2.0, 1.0 * 5.0])
    assert gh0 == 0.5


@given(case=scan_cases(max_side=12))
def test_few_and_many_lane_loops_agree(case):
    """The Python-float loop (few lanes) and the NumPy loop (many lanes) compute the same
    float64 operations, so they agree exactly."""
    original = reference._FEW_LANES
    try:
        reference._FEW_LANES = 10**9
        floats = reference.scan(case.a, case.x, case.h0, **case.kwargs)
        ones = np.ones(floats.shape)
        grads_f = reference.scan_backward(case.a, floats, ones, case.h0, **case.kwargs)
        reference._FEW_LANES = -1
        arrays = reference.scan(case.a, case.x, case.h0, **case.kwargs)
        grads_a = reference.scan_backward(case.a, floats, ones, case.h0, **case.kwargs)
    finally:
        reference._FEW_LANES = original
    np.testing.assert_array_equal(floats, arrays)
    for f, a in zip(grads_f, grads_a):
        if f is None:
            assert a is None
        else:
            np.testing.assert_array_equal(f, a)


def test_the_overflow_rule_rounds_as_the_dtype_does():
    """float16 holds 65512 as 65504 (round to nearest; inf only from 65520): the checks of
    linscan.testing expect inf only where the float64 result rounds to inf."""
    import pytest

    from linscan.testing import assert_scan_close

    a, x = np.ones(2, np.float16), np.array([65504, 8], np.float16)  # float64: 65504, 65512
    assert_scan_close(np.array([65504, 65504], np.float16), a, x)
    x = np.array([65504, 32], np.float16)  # 65536: inf in float16
    assert_scan_close(np.array([65504, np.inf], np.float16), a, x)
    with pytest.raises(AssertionError):
        assert_scan_close(np.array([65504, 65504], np.float16), a, x)


def test_matrix_loops_hand_computed_and_against_scan():
    A = np.array([[[0.0, 1.0], [1.0, 0.0]], [[2.0, 0.0], [0.0, 0.5]]])  # a swap, a scaling
    x = np.array([[1.0, 2.0], [1.0, 1.0]])
    h0 = np.array([3.0, 4.0])
    # h[0] = swap(h0) + x[0] = [5, 5]; h[1] = [10, 2.5] + [1, 1]
    np.testing.assert_array_equal(reference.matscan(A, x, h0, axis=0), [[5, 5], [11, 3.5]])
    np.testing.assert_array_equal(reference.matscan_final_state(A, x, h0, axis=0), [11, 3.5])
    # reverse: h[1] = diag(2, 0.5) h0 + x[1] = [7, 3]; h[0] = swap([7, 3]) + x[0] = [4, 9]
    np.testing.assert_array_equal(reference.matscan(A, x, h0, axis=0, reverse=True),
                                  [[4, 9], [7, 3]])  # fmt: skip
    # L = sum(h): g[1] = [1, 1], g[0] = [1, 1] + diag(2, 0.5) [1, 1] = [3, 1.5]
    h = reference.matscan(A, x, h0, axis=0)
    gA, gx, gh0 = reference.matscan_backward(A, h, np.ones((2, 2)), h0, axis=0)
    np.testing.assert_array_equal(gx, [[3, 1.5], [1, 1]])
    np.testing.assert_array_equal(gA[1], np.outer([1, 1], [5, 5]))
    np.testing.assert_array_equal(gA[0], np.outer([3, 1.5], [3, 4]))
    np.testing.assert_array_equal(gh0, [1.5, 3])  # swap^T [3, 1.5]


@given(case=scan_cases(max_side=8, dtypes=(np.float64, np.complex128), resets=False))
def test_matrix_loops_of_one_state_are_the_scalar_loops(case):
    a = np.asarray(case.a)[..., None, None]
    x = np.asarray(case.x)[..., None]
    h0 = None if case.h0 is None else np.asarray(case.h0)[..., None]
    h = reference.matscan(a, x, h0, axis=case.axis, reverse=case.reverse)
    want = reference.scan(case.a, case.x, case.h0, axis=case.axis, reverse=case.reverse)
    # The two loops round each step differently (a 1x1 matrix product, a multiply): their
    # difference is bounded by the rounding of every term met, which the loop over the
    # moduli sums; an element that cancels down to far below its terms may differ by more
    # than 1e-12 of itself (1.02e-12 after 81 complex steps in one CI draw).
    moduli = reference.scan(np.abs(case.a), np.abs(case.x),
                            None if case.h0 is None else np.abs(case.h0),
                            axis=case.axis, reverse=case.reverse)  # fmt: skip
    steps = np.shape(want)[case.axis]
    bound = 8 * np.finfo(np.float64).eps * (steps + 1) * moduli
    assert (np.abs(h[..., 0] - want) <= bound).all()
