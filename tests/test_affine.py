"""linscan._affine: where it says a map stands for its steps, the map gives the serial loop's
result, inf and NaN included; and it says so for the maps that matter (not everything
refused). A table of troublesome runs of steps against every kind of entering state."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from linscan import _affine

TINY, HUGE = 1e-200, 1e200  # two of them under- or overflow float64

RUNS = {  # (decays, inputs) of a run of steps
    "plain": ([0.5, 0.9, 0.8], [1.0, -2.0, 0.5]),
    "zero decay": ([0.5, 0.0, 0.8], [1.0, 2.0, 0.5]),
    "inf decay": ([0.5, np.inf, 0.8], [1.0, 2.0, 0.5]),
    "-inf decay": ([0.5, -np.inf, 0.8], [1.0, 0.0, 0.5]),
    "NaN decay": ([0.5, np.nan, 0.8], [1.0, 2.0, 0.5]),
    "zero then inf": ([0.0, np.inf, 0.8], [1.0, 2.0, 0.5]),
    "underflow": ([TINY, TINY, 0.5], [1.0, 2.0, 0.5]),
    "overflow": ([HUGE, HUGE, 0.5], [1.0, 2.0, 0.5]),
    "overflow then zero": ([HUGE, HUGE, 0.0], [1.0, 2.0, 0.5]),
    "inf input": ([0.5, 0.9, 0.8], [1.0, np.inf, 0.5]),
    "-inf input": ([0.5, 0.9, 0.8], [1.0, -np.inf, 0.5]),
    "NaN input": ([0.5, 0.9, 0.8], [1.0, np.nan, 0.5]),
    "negative decays": ([-0.5, 0.9, -0.8], [1.0, -2.0, 0.5]),
    "state overflows": ([HUGE, HUGE, HUGE], [1e300, -1e300, 1e300]),
}
STATES = [0.0, -0.0, 1.5, -3.0, 1e300, np.inf, -np.inf, np.nan]


def loop(decays, inputs, h):
    for a, x in zip(decays, inputs):
        with np.errstate(all="ignore"):
            h = np.float64(a) * h + x
    return np.float64(h)


def overflows(decays, inputs, h):
    """Whether the loop from ``h`` turns a finite state into an infinite one from finite
    values: the documented difference (README, Guarantees: a state that overflows in the loop
    may be finite, or NaN where it meets a zero, by a parallel method)."""
    for a, x in zip(decays, inputs):
        with np.errstate(all="ignore"):
            after = np.float64(a) * h + x
        if np.isfinite([a, x, h]).all() and not np.isfinite(after):
            return True
        h = after
    return False


def run_map(decays, inputs):
    with np.errstate(all="ignore"):
        return _affine.Map(np.prod(np.float64(decays)), loop(decays, inputs, 0.0))


def same(got, want):
    if np.isnan(want):
        return bool(np.isnan(got))
    if np.isinf(want):
        return got == want
    return np.isfinite(got) and abs(got - want) <= 1e-12 * max(1.0, abs(want))


CASES = list(itertools.product(RUNS, STATES))


@pytest.mark.parametrize("run, h", CASES)
def test_a_map_that_stands_gives_the_loops_result(run, h):
    decays, inputs = RUNS[run]
    state, exact = _affine.apply(run_map(decays, inputs), np.float64(h))
    if exact and not overflows(decays, inputs, h):
        assert same(state, loop(decays, inputs, h)), (state, loop(decays, inputs, h))
    assert bool(_affine.unsafe(run_map(decays, inputs).A, False, h)) == (not exact)


@pytest.mark.parametrize("run, h", CASES)
def test_a_reset_stands_whatever_enters(run, h):
    decays, inputs = RUNS[run]
    m = run_map(decays, inputs)._replace(reset=np.True_)
    state, exact = _affine.apply(m, np.float64(h))
    assert exact and same(state, m.B)


def test_the_rule_refuses_what_it_must_and_no_more():
    """Refused: inf/NaN products and underflows meeting inf; followed: the rest."""
    refused = {(run, h) for run, h in CASES
               if not _affine.apply(run_map(*RUNS[run]), np.float64(h))[1]}  # fmt: skip
    for run in ("inf decay", "-inf decay", "NaN decay", "zero then inf", "overflow",
                "overflow then zero", "state overflows"):  # fmt: skip
        assert {(run, h) for h in (1.5, np.inf)} <= refused, run
    assert {("underflow", np.inf), ("underflow", -np.inf), ("zero decay", np.inf)} <= refused
    for run in ("plain", "inf input", "-inf input", "NaN input", "negative decays"):
        assert not any((run, h) in refused for h in STATES), run
    for run in RUNS:  # a zero state is refused only where the product is not finite
        with np.errstate(all="ignore"):
            finite = np.isfinite(np.prod(RUNS[run][0]))
        assert (run, 0.0) not in refused or not finite


@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("run, h", CASES)
def test_composed_maps_mark_what_they_cannot_stand_for(run, h, split):
    """compose(first, second) applied to h: the loop's result wherever apply says exact (the
    INEXACT flag carries a composition that applied a map where it could not stand)."""
    decays, inputs = RUNS[run]
    m = _affine.compose(run_map(decays[:split], inputs[:split]),
                        run_map(decays[split:], inputs[split:]))  # fmt: skip
    m = _affine.Map(*(np.asarray(v) for v in m))
    state, exact = _affine.apply(m, np.float64(h))
    if exact and not overflows(decays, inputs, h):
        assert same(state, loop(decays, inputs, h))


def extended(decays):
    mantissas, exponents = np.frexp(np.float64(decays))
    with np.errstate(all="ignore"):
        mantissa, more = np.frexp(np.prod(mantissas))
    return mantissa, int(exponents.sum()) + int(more)


@pytest.mark.parametrize("run, h", CASES)
def test_extended_products_stand_where_the_rule_says(run, h):
    """unsafe_extended, for a product kept with its own exponent (linscan.dask): where it says
    the map stands, A * h + B is the loop's result; underflows meeting inf stand now."""
    decays, inputs = RUNS[run]
    mantissa, exponent = extended(decays)
    B = loop(decays, inputs, 0.0)
    with np.errstate(all="ignore"):
        Ah = np.ldexp(mantissa * np.float64(h), exponent)
        beyond = exponent > np.finfo(np.float64).maxexp
        A = np.inf if beyond else mantissa
        state = B if h == 0 else Ah + B
    bad = _affine.unsafe_extended(np.float64(A), np.float64(B), False, np.float64(Ah))
    if not bad and not overflows(decays, inputs, h):
        assert same(state, loop(decays, inputs, h)), (state, loop(decays, inputs, h))
    if run == "underflow":
        assert not bad
