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


# --- affine.cuh and _affine agree ------------------------------------------------------------

# affine.cuh compiled for the host: its device qualifiers dropped, the number types it needs
# from numeric.cuh given in plain C++ (real types only), and a main that runs the table.
_HOST_SHIM = """
#include <cmath>
#include <cstdio>
#define __device__
#define __forceinline__ inline
namespace linscan {
using std::isfinite;
template <typename R>
struct Complex {  // declared only: the table is real
    R re, im;
};
}
"""
_HOST_MAIN = """
int main() {
    using linscan::Affine;
    double a0, b0, a1, b1, h;
    int f0, f1;
    while (std::scanf("%lf %lf %d %lf %lf %d %lf", &a0, &b0, &f0, &a1, &b1, &f1, &h) == 7) {
        const Affine<double> m0{a0, b0, f0}, m1{a1, b1, f1};
        const Affine<double> m = linscan::compose(m0, m1);
        std::printf("%.17g %.17g %d %.17g %d %d\\n", m.A, m.B, m.flags, linscan::apply(m1, h),
                    int(linscan::exact(m1, h)), int(linscan::unsafe(m1, h)));
    }
}
"""
VALUES = [0.0, -0.0, 0.5, -2.0, 3.0, 1e300, 1e-300, np.inf, -np.inf, np.nan]


def _host_affine(tmp_path):
    """The path of affine.cuh compiled with the host's C++ compiler (skips without one)."""
    import shutil
    import subprocess

    from linscan.backends.cuda import source

    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build affine.cuh for the host")
    header = (source.kernel_dir() / "affine.cuh").read_text()
    header = header.replace('#include "numeric.cuh"', "").replace("#pragma once", "")
    (tmp_path / "affine.cpp").write_text(_HOST_SHIM + header + _HOST_MAIN)
    binary = tmp_path / "affine"
    subprocess.run(
        [compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-o", str(binary),
         str(tmp_path / "affine.cpp")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return binary


def _same(p, q):
    return (np.isnan(p) and np.isnan(q)) or p == q


def test_the_python_algebra_agrees_with_affine_cuh(tmp_path):
    """compose, apply, exact and unsafe of ``kernels_cu/affine.cuh`` (built for the host)
    and of ``linscan._affine`` on a table of maps and states: zeros, signed zeros, values
    whose products overflow or underflow, infinities, NaN, and every flag combination."""
    import subprocess

    binary = _host_affine(tmp_path)
    rng = np.random.default_rng(3)
    cases = [
        (*rng.choice(VALUES, 2), f0, *rng.choice(VALUES, 2), f1, rng.choice(VALUES))
        for f0 in range(4) for f1 in range(4) for _ in range(150)
    ]  # fmt: skip
    text = "\n".join(" ".join(str(v) for v in case) for case in cases) + "\n"
    done = subprocess.run([str(binary)], input=text, capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases)
    for case, line in zip(cases, lines):
        a0, b0, f0, a1, b1, f1, h = case
        A, B, flags, applied, exact, unsafe = line.split()
        earlier = _affine.Map(np.float64(a0), np.float64(b0), bool(f0 & 1), bool(f0 & 2))
        later = _affine.Map(np.float64(a1), np.float64(b1), bool(f1 & 1), bool(f1 & 2))
        m = _affine.compose(earlier, later)
        assert _same(float(m.A), float(A)) and _same(float(m.B), float(B)), (case, line)
        assert int(bool(m.reset)) + 2 * int(bool(m.inexact)) == int(flags), (case, line)
        state, is_exact = _affine.apply(later, np.float64(h))
        assert _same(float(state), float(applied)) and bool(is_exact) == bool(int(exact))
        assert bool(_affine.unsafe(later.A, later.reset, np.float64(h))) == bool(int(unsafe))
