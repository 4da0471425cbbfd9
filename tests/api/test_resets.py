"""Segment resets: ``h[t] = x[t]`` where ``resets[t]``; packed batches of variable-length
sequences; nothing (not even inf or NaN, not a gradient) crosses a reset."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linscan

from helpers import CONFIGS, METHODS, Unchanged, forced


def _packed(lengths, channels, rng, dtype=np.float64):
    """Sequences of ``lengths`` one after another along axis 0, their starts marked."""
    T = sum(lengths)
    a = rng.uniform(0.5, 1.0, (T, channels)).astype(dtype)
    x = rng.standard_normal((T, channels)).astype(dtype)
    starts = np.zeros(T, bool)
    starts[np.cumsum([0] + list(lengths[:-1]))] = True
    return a, x, starts


def _pieces(arr, lengths):
    return np.split(arr, np.cumsum(lengths)[:-1], axis=0)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    channels=st.sampled_from([1, 3]),
    reverse=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_sequences_equal_separate_scans(lengths, channels, reverse, seed, method, config):
    """A packed batch scanned in one call is each sequence scanned on its own (bit for bit
    where both take the same path is not promised; within rounding is)."""
    rng = np.random.default_rng(seed)
    a, x, starts = _packed(lengths, channels, rng)
    resets = starts[:, None]
    if reverse:  # a reversed sequence starts at its last step
        resets = np.roll(starts, -1)[:, None]
    inputs = Unchanged(a, x, resets)
    with forced(config):
        h = linscan.scan(a, x, axis=0, reverse=reverse, resets=resets, method=method)
        state = linscan.final_state(a, x, axis=0, reverse=reverse, resets=resets, method=method)
    inputs.check()
    for a_k, x_k, h_k in zip(_pieces(a, lengths), _pieces(x, lengths), _pieces(h, lengths)):
        expected = linscan.scan(a_k, x_k, axis=0, reverse=reverse, method="sequential")
        np.testing.assert_allclose(h_k, expected, rtol=1e-12, atol=1e-12)
    last = _pieces(h, lengths)[0 if reverse else -1][0 if reverse else -1]
    np.testing.assert_allclose(state, last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_nonfinite_state_stays_behind_a_reset(bad, method, config):
    """A sequence that overflows does not spoil the next one in the pack."""
    rng = np.random.default_rng(0)
    lengths = [700, 900]
    a, x, starts = _packed(lengths, 2, rng)
    x[300] = bad
    with forced(config):
        h = linscan.scan(a, x, axis=0, resets=starts[:, None], method=method)
        grads = linscan.scan_backward(
            a, h, np.ones_like(h), axis=0, resets=starts[:, None], method=method
        )
    second = linscan.scan(a[700:], x[700:], axis=0, method="sequential")
    np.testing.assert_allclose(h[700:], second, rtol=1e-12)
    assert not np.isfinite(h[300:700]).all()
    # The gradient of the second sequence's loss does not reach the first sequence either.
    only_second = np.zeros_like(h)
    only_second[700:] = 1.0
    ga, gx, _ = linscan.scan_backward(
        a, h, only_second, axis=0, resets=starts[:, None], method=method
    )
    assert np.all(gx[:700] == 0)
    assert np.all(ga[:301] == 0)  # later, 0 * the nonfinite h[t-1] is NaN, as in any loop
    assert np.all(np.isfinite(grads[1][700:]))


@pytest.mark.parametrize("method", METHODS)
def test_gradients_stop_at_resets(method):
    """``grad_a`` is zero where a step resets (it ignores ``a`` there), and the gradient of a
    later output with respect to an earlier input vanishes across a reset."""
    rng = np.random.default_rng(1)
    a, x, _ = _packed([50], 4, rng)
    resets = rng.random(a.shape) < 0.1
    h0 = rng.standard_normal(4)
    h = linscan.scan(a, x, h0, axis=0, resets=resets)
    grad_h = rng.standard_normal(h.shape)
    ga, gx, gh0 = linscan.scan_backward(a, h, grad_h, h0, axis=0, resets=resets, method=method)
    assert np.all(ga[resets] == 0)
    # Finite differences: perturbing x[t, i] moves h only until the next reset of lane i.
    for t, i in [(0, 0), (10, 1), (25, 3)]:
        bumped = x.copy()
        bumped[t, i] += 1.0
        delta = linscan.scan(a, bumped, h0, axis=0, resets=resets) - h
        np.testing.assert_allclose(gx[t, i], np.sum(delta * grad_h), rtol=1e-9)
        later = np.flatnonzero(resets[t + 1 :, i])
        if later.size:
            assert np.all(delta[t + 1 + later[0] :, i] == 0)
    # h0 reaches nothing in a lane that resets at step 0.
    lanes = resets[0]
    assert np.all(gh0[lanes] == 0)


def test_resets_broadcast_and_mirror_for_reverse():
    x = np.arange(1.0, 7.0)
    resets = np.array([False, False, True, False, False, False])
    h = linscan.scan(1.0, x, resets=resets)
    np.testing.assert_array_equal(h, [1, 3, 3, 7, 12, 18])
    back = linscan.scan(1.0, x, reverse=True, resets=resets)
    np.testing.assert_array_equal(back, [6, 5, 3, 15, 11, 6])
    # A reset per step broadcast over channels; h0 is dropped where step 0 resets.
    xs = np.ones((3, 2))
    h = linscan.scan(0.5, xs, 10.0, axis=0, resets=np.array([[True], [False], [False]]))
    np.testing.assert_array_equal(h, [[1, 1], [1.5, 1.5], [1.75, 1.75]])


@pytest.mark.parametrize(
    "resets, error, fragment",
    [
        (np.ones(4, np.int8), TypeError, "boolean"),
        (np.ones(4), TypeError, "float64"),
        (np.ones(5, bool), ValueError, "(5,)"),
        (np.ones((2, 4), bool), ValueError, "(2, 4)"),
        ("yes", TypeError, "boolean"),
    ],
)
def test_bad_resets(resets, error, fragment):
    for call in (
        lambda: linscan.scan(0.5, np.ones(4), resets=resets),
        lambda: linscan.final_state(0.5, np.ones(4), resets=resets),
        lambda: linscan.scan_backward(0.5, np.ones(4), np.ones(4), resets=resets),
    ):
        with pytest.raises(error, match="resets") as info:
            call()
        assert fragment in str(info.value)
