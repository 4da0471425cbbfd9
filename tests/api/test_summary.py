"""A backend's summary of a run of steps (``linscan._api.summary``; ``linscan.dask`` summarizes
its chunks with it): the state from zero, or the gradient sent back, against the serial loop;
the product of the decays, as a mantissa and an exponent, against the sum of their logarithms;
the resets met. Each by the CPU backend's one-pass kernels and by the composed form of the GPU
backend (``linscan._extended.composed_summary``, run here on NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ALL_DTYPES, METHODS, SUMMARIES
from hypothesis import given
from hypothesis import strategies as st

from linscan import _api, _dtypes, testing
from linscan.testing import scan_cases

PATHS = list(SUMMARIES)


def _summary(path, a, x, **kwargs):
    with SUMMARIES[path]():
        return _api.summary(a, x, **kwargs)


def _expected_product(a, x, axis, back):
    """``(log2 |product|, phase)`` of the decays of a run, as the call sees them (a Python
    number in the call's dtype), summed in float64; ``phase`` is ``None`` for real decays."""
    dtype = testing.result_dtype(a, x)
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    seen = np.broadcast_to(np.asarray(a).astype(dtype), shape)
    wide = np.promote_types(_dtypes.accumulator(dtype), np.float64)
    seen = seen.astype(wide)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log2(np.abs(seen)).sum(axis=axis)
    phase = None
    if wide.kind == "c":
        phase = np.angle(seen).sum(axis=axis) * (-1 if back else 1)
    return logs, phase


def _check(found, a, x, *, axis, reverse, resets, back):
    """Assert that summary ``found`` is that of the run ``(a, x, resets)``."""
    dtype = testing.result_dtype(a, x)
    acc = _dtypes.accumulator(dtype)
    if not hasattr(a, "dtype"):  # a Python number: in the call's dtype, as the call sees it
        a = np.asarray(a).astype(dtype)
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    axis = axis % len(shape)
    state_shape = shape[:axis] + shape[axis + 1 :]
    assert found.state.dtype == acc and found.state.shape == state_shape
    assert found.mantissa.dtype == np.promote_types(acc, np.float64)
    assert found.exponent.dtype == np.int64 and found.mantissa.shape == state_shape
    if back:  # the gradient sent to the state before the run (it does not depend on h)
        zero = np.zeros(state_shape, acc)
        oracle = testing.backward_oracles(
            a, np.zeros(shape, dtype), x, zero, axis=axis, reverse=reverse, resets=resets
        )[2]
        oracle.check("gradient sent back", found.state)
    else:
        testing.assert_final_state_close(
            found.state, a, x, axis=axis, reverse=reverse, resets=resets
        )
    logs, phase = _expected_product(a, x, axis, back)
    mantissa, exponent = found.mantissa, found.exponent
    finite = np.isfinite(logs)
    with np.errstate(divide="ignore"):
        got = np.log2(np.abs(mantissa[finite])) + exponent[finite]
    # The GPU's plain product is the loop's: rounded in the accumulator at every step.
    rounding = 8 * (shape[axis] + 1) * float(_dtypes.finfo(acc).eps)
    np.testing.assert_allclose(got, logs[finite], rtol=1e-12, atol=max(rounding, 1e-9))
    size = np.maximum(abs(mantissa.real), abs(mantissa.imag))[finite]
    assert ((size >= 0.5) & (size < 1)).all()
    if phase is not None:
        turn = np.exp(1j * (np.angle(mantissa[finite]) - phase[finite]))
        np.testing.assert_allclose(turn, 1, atol=max(rounding, 1e-9 * (shape[axis] + 1)))
    if resets is None:
        assert found.reset is None
    else:
        want = np.broadcast_to(resets, shape).any(axis=axis)
        np.testing.assert_array_equal(found.reset, want, strict=True)


@given(
    case=scan_cases(dtypes=ALL_DTYPES),
    back=st.booleans(),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
)
def test_a_summary_is_that_of_the_serial_loop(case, back, method, path):
    """Any drawn run (every dtype and broadcast form, views, resets, up to 400 steps, so
    across the 128-step blocks of the chained kernels)."""
    kwargs = dict(axis=case.axis, reverse=case.reverse, resets=case.resets)
    found = _summary(path, case.a, case.x, method=method, back=back, **kwargs)
    _check(found, case.a, case.x, back=back, **kwargs)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("back", [False, True], ids=["forward", "back"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape, axis", [((3, 1100), 1), ((1100, 3), 0), ((2, 600, 17), 1)])
def test_long_runs_with_and_without_resets(shape, axis, reverse, back, method, path):
    """Runs of several 128-step blocks, each row walked through the chained kernels (or
    not, by method) and the channels together, with sparse resets in some lanes."""
    rng = np.random.default_rng(sum(shape) + 2 * reverse + back)
    a = rng.uniform(0.95, 1.0, shape)
    x = rng.standard_normal(shape)
    resets = rng.random(shape) < 0.002
    for r in (None, resets):
        found = _summary(path, a, x, axis=axis, reverse=reverse, method=method, resets=r,
                         back=back)  # fmt: skip
        _check(found, a, x, axis=axis, reverse=reverse, resets=r, back=back)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("shape, axis", [((3, 2500), 1), ((2500, 3), 0), ((2, 2500, 3), 1)])
def test_products_neither_underflow_nor_overflow(dtype, shape, axis, path):
    """Zeros, infinities and extreme decays, whose plain products lie far beyond any float:
    the product is the sum of the decays' logarithms, and it is 0, inf or NaN where a zero,
    infinite or NaN decay makes a plain product so."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0.01, 1.0, shape)
    if np.dtype(dtype).kind == "c":
        a = a * np.exp(1j * rng.uniform(-3, 3, shape))
    lanes = np.moveaxis(a, axis, 0)  # (T, ...): a view
    big = {2: 1e4, 4: 1e30, 8: 1e300, 16: 1e300}[np.dtype(dtype).itemsize]
    lanes[10, 0] = 0.0
    lanes[20, -1] = np.inf
    lanes[30:40, ...][:, 1] = 1 / big  # extreme decays, and products far beyond any float
    lanes[50:60, ...][:, 1] = big
    with np.errstate(over="ignore"):  # (NumPy warns casting a complex inf)
        a = a.astype(dtype)
    x = np.zeros(shape, dtype)
    for back in (False, True):
        for method in METHODS:
            found = _summary(path, a, x, axis=axis, method=method, back=back)
            logs, _ = _expected_product(a, x, axis, back)
            finite = np.isfinite(logs)
            m, e = found.mantissa, found.exponent
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(np.log2(np.abs(m[finite])) + e[finite], logs[finite],
                                           rtol=1e-12, atol=1e-9)  # fmt: skip
            np.testing.assert_array_equal(~np.isfinite(m), ~np.isfinite(a).all(axis=axis))
            zero = (a == 0).any(axis=axis) & np.isfinite(a).all(axis=axis)
            np.testing.assert_array_equal(m == 0, zero)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("shape, axis", [((600,), 0), ((600, 3), 0), ((2, 600), 1)])
def test_products_exact_through_a_subnormal_partial_product(dtype, shape, axis, path):
    """Decays 1e-160, 1e-160, 1e300 in one chain of a 128-step block (steps 70, 74 and 78;
    and in consecutive steps 130 to 132): a plain product passes through a subnormal (1e-320,
    with only a few digits) although its end (1e-20) is normal. Every path gives the product
    of the loop multiplying one decay at a time: the chained kernels fold a chain's product
    in only where every decay of its block is large enough."""
    a = np.ones(shape, dtype)
    lanes = np.moveaxis(a, axis, 0)  # (T, ...): a view
    for k, (step, decay) in enumerate(((0, 1e-160), (4, 1e-160), (8, 1e300))):
        lanes[70 + step] = decay
        lanes[130 + k] = decay
    for method in METHODS:
        for back in (False, True):
            found = _summary(path, a, np.zeros(shape), axis=axis, method=method, back=back)
            product = found.mantissa * 2.0**found.exponent  # 1e-40, within a rounding or two
            np.testing.assert_allclose(product, np.full(product.shape, 1e-40), rtol=1e-14)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape, axis", [((0,), 0), ((3, 0), 1), ((0, 4), 1), ((2, 0, 3), 0)])
def test_a_run_of_no_steps_or_no_lanes(shape, axis, path):
    """Nothing walked: the product is 1, the state 0, and no lane met a reset."""
    x = np.zeros(shape, np.float32)
    for resets in (None, np.zeros(shape, bool)):
        found = _summary(path, 0.5, x, axis=axis, resets=resets)
        _check(found, 0.5, x, axis=axis, reverse=False, resets=resets, back=False)


def test_a_plain_product_is_exact_only_while_every_partial_product_is_normal():
    """The GPU's composed summary takes a plain product only where it is the loop's."""
    from linscan import _extended

    a = np.ones((2, 600))
    a[:, [70, 74, 78]] = 1e-160, 1e-160, 1e300  # partial products through 1e-320
    assert not _extended.plain_product_is_exact(a, np, axis=1, acc=np.dtype(np.float64))
    moderate = np.full((2, 600), 0.5)  # 2**-600: every partial product normal
    assert _extended.plain_product_is_exact(moderate, np, axis=1, acc=np.dtype(np.float64))
    assert not _extended.plain_product_is_exact(moderate, np, axis=1, acc=np.dtype(np.float32))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("back", [False, True], ids=["forward", "back"])
def test_a_wider_dtype_is_the_dtype_of_the_computation(back, path):
    """A chunk of float32 values in a sequence that a float64 ``h0`` makes float64 is
    summarized in float64, not rounded to float32 first."""
    rng = np.random.default_rng(5)
    a = rng.uniform(0.5, 1.0, (3, 300)).astype(np.float32)
    x = rng.standard_normal((3, 300)).astype(np.float32)
    found = _summary(path, a, x, axis=1, back=back, dtype=np.float64)
    assert found.state.dtype == np.float64 and found.mantissa.dtype == np.float64
    _check(found, a.astype(np.float64), x.astype(np.float64), axis=1, reverse=False, resets=None,
           back=back)  # fmt: skip
