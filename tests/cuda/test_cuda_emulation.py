"""The GPU kernels' tile decompositions and look-back combines (tile_scan's and row_scan's),
emulated in NumPy with the kernels' own launch plan (``linscan.backends.cuda.emulate``),
against the serial oracle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linscan.testing import POISONS, poison
from linscan import reference
from linscan.backends.cuda import emulate
from linscan.testing import (
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
)


@st.composite
def tiled_cases(draw):
    O = draw(st.integers(1, 4))
    T = draw(st.integers(1, 600))
    I = draw(st.sampled_from([1, 1, 2, 3, 5, 8, 9, 33]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (O, T, I))
    if draw(st.booleans()):
        a = np.broadcast_to(rng.uniform(0.9, 1, (1, T, 1)), (O, T, I))  # a decay per step
    x = rng.normal(size=(O, T, I))
    h0 = rng.normal(size=(O, I)) if draw(st.booleans()) else None
    if draw(st.booleans()):  # complex: a rotation in every decay
        a = a * np.exp(1j * rng.uniform(-np.pi, np.pi, a.shape))
        x = x + 1j * rng.normal(size=x.shape)
        h0 = None if h0 is None else h0 + 1j
    resets = None
    density = draw(st.sampled_from([None, 0.01, 0.3]))
    if density is not None:  # per element, or per step as packed rows would have them
        shape = (O, T, I) if draw(st.booleans()) else (O, T, 1)
        resets = np.broadcast_to(rng.random(shape) < density, (O, T, I))
    return dict(
        a=a, x=x, h0=h0, down=draw(st.booleans()), rng=rng, resets=resets,
        steps=draw(st.sampled_from([4, 8, 32])), block=draw(st.sampled_from([32, 64, 256])),
        flat=draw(st.booleans()),  # one channel, forward or final: the lean row_scan
    )  # fmt: skip


def _tiled(case, mode, v=None, hf=None):
    """``emulate.run`` on a drawn case (``v`` replaces ``x``, for the backward pass)."""
    v = case["x"] if v is None else v
    return emulate.run(
        case["a"], v, case["h0"], mode=mode, down=case["down"], hf=hf, resets=case["resets"],
        steps=case["steps"], block=case["block"], rng=case["rng"], flat=case["flat"],
    )  # fmt: skip


def _options(case, reverse):
    return dict(axis=1, reverse=reverse, resets=case["resets"])


@given(case=tiled_cases())
def test_forward_matches_oracle(case):
    h = _tiled(case, "forward")
    assert_scan_close(h, case["a"], case["x"], case["h0"], **_options(case, case["down"]))


@given(case=tiled_cases())
def test_final_state_matches_oracle(case):
    state = _tiled(case, "final")
    options = _options(case, case["down"])
    assert_final_state_close(state, case["a"], case["x"], case["h0"], **options)


@given(case=tiled_cases())
def test_backward_matches_oracle(case):
    a, h0, forward_reverse = case["a"], case["h0"], not case["down"]
    options = _options(case, forward_reverse)
    h = reference.scan(a, case["x"], h0, **options)
    grad_h = case["rng"].normal(size=h.shape) + (1j if np.iscomplexobj(h) else 0)
    grad_x, grad_a, grad_h0 = _tiled(case, "backward", v=grad_h, hf=h)
    grads = (grad_a, grad_x, None if h0 is None else grad_h0)
    full_a = np.ascontiguousarray(a)  # the kernel's grad_a is per element
    assert_scan_backward_close(grads, full_a, h, grad_h, h0, **options)


@st.composite
def poisoned_cases(draw):
    """Real float64 cases with infinite, NaN and zero decays, infinite inputs and initial
    states, and runs of decays whose products underflow or overflow."""
    case = draw(tiled_cases())
    rng = case["rng"]
    a, x = np.array(case["a"].real), np.array(case["x"].real)
    O, T, I = a.shape
    h0 = rng.normal(size=(O, I))
    h0[rng.random((O, I)) < 0.3] = np.inf
    h0[rng.random((O, I)) < 0.2] = 0.0
    for kind in draw(st.lists(st.sampled_from(POISONS), max_size=6)):
        poison(kind, a, x, rng)
    return dict(case, a=a, x=x, h0=h0 if draw(st.booleans()) else None)


@given(case=poisoned_cases())
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_values_follow_the_serial_loop(case):
    """A map whose product is infinite or NaN, or zero meeting an infinite state, cannot stand
    for its steps: those tiles walk their threads one after another from the true state, and
    the look-back waits for the predecessor's own prefix. Forward, final and backward."""
    a, x, h0, down = case["a"], case["x"], case["h0"], case["down"]
    options = _options(case, down)
    assert_scan_close(_tiled(case, "forward"), a, x, h0, **options)
    assert_final_state_close(_tiled(case, "final"), a, x, h0, **options)
    backward = _options(case, not down)
    h = reference.scan(a, x, h0, **backward)
    grad_h = case["rng"].normal(size=h.shape)
    grad_x, grad_a, grad_h0 = _tiled(case, "backward", v=grad_h, hf=h)
    grads = (grad_a, grad_x, None if h0 is None else grad_h0)
    assert_scan_backward_close(grads, a, h, grad_h, h0, **backward)


@pytest.mark.parametrize("shape", [(1, 5000, 1), (3, 1500, 2), (2, 400, 40)])
def test_many_tiles_with_the_kernels_block(shape):
    """The real block size (256 threads): several tiles, look-back over several windows."""
    rng = np.random.default_rng(7)
    a, x = rng.uniform(0.5, 1, shape), rng.normal(size=shape)
    h0 = rng.normal(size=(shape[0], shape[2]))
    for down in (False, True):
        h = emulate.run(a, x, h0, down=down, steps=4, rng=rng)
        assert_scan_close(h, a, x, h0, axis=1, reverse=down)


@pytest.mark.parametrize("poisoned", [False, True])
@pytest.mark.parametrize("shape", [(1, 30000, 1), (9, 3001, 1)])
def test_row_scan_looks_back_over_several_windows(shape, poisoned):
    """row_scan with one warp a block (256 float64 steps a tile): over 100 tiles, so look-backs
    fold several windows of 32 predecessors; decays near one keep the carry alive far back.
    Poisoned: infinite and zero decays make maps that cannot stand for their steps."""
    rng = np.random.default_rng(11)
    a, x = rng.uniform(0.999, 1, shape), rng.normal(size=shape)
    h0 = rng.normal(size=(shape[0], 1))
    if poisoned:
        for kind in POISONS:
            poison(kind, a, x, rng)
    for down in (False, True):
        with np.errstate(invalid="ignore", over="ignore"):
            h = emulate.run(a, x, h0, down=down, block=32, rng=rng, flat=True)
            state = emulate.run(a, x, h0, mode="final", down=down, block=32, rng=rng, flat=True)
        assert_scan_close(h, a, x, h0, axis=1, reverse=down)
        assert_final_state_close(state, a, x, h0, axis=1, reverse=down)
