"""linscan.testing used as a user would: only its public API, on someone else's recurrence
code, the way the README shows. The code under test here is what people have: float32 only,
the last axis only, no ``h0``, no ``reverse``, ``a`` of ``x``'s shape. The strategies must
draw only calls it supports, pass it where it is right, and find (and shrink to something
small) each of three classic mistakes."""

import numpy as np
from hypothesis import find, given, settings

from linscan.testing import (
    assert_scan_backward_close,
    assert_scan_close,
    backward_cases,
    scan_cases,
)

# What the implementations below support: float32 arrays of one shape, the last axis,
# forwards, no h0, no resets, no empty arrays.
SUPPORTED = dict(
    dtypes=(np.float32,), resets=False, axis=-1, reverse=False, decay_forms=("full",),
    x_forms=("full",), h0_forms=("none",), empty=False,
)  # fmt: skip


def my_scan(a, x, chunk=None, carry=True):
    """h[..., t] = a[..., t] * h[..., t-1] + x[..., t], in float32, chunk by chunk along the
    last axis (chunks of ``chunk`` steps, each started from the last one's final state, or
    from zero without ``carry``: the off-by-a-chunk mistake)."""
    assert a.dtype == x.dtype == np.float32 and a.shape == x.shape, "unsupported call"
    T = x.shape[-1]
    chunk = chunk or max(T, 1)
    h = np.empty_like(x)
    state = np.zeros(x.shape[:-1], np.float32)
    for start in range(0, T, chunk):
        if not carry:
            state = np.zeros_like(state)
        for t in range(start, min(start + chunk, T)):
            state = a[..., t] * state + x[..., t]
            h[..., t] = state
    return h


def my_scan_backward(a, h, grad_h, shift=1):
    """The gradients of ``sum(grad_h * my_scan(a, x))``: ``g`` runs backwards,
    ``g[t] = grad_h[t] + a[t+1] * g[t+1]``; ``grad_x = g``, ``grad_a[t] = g[t] * h[t-1]``
    (``shift=0`` uses ``h[t]``: the classic mistake)."""
    T = h.shape[-1]
    g = np.empty_like(grad_h)
    carry = np.zeros(h.shape[:-1], np.float32)
    for t in range(T - 1, -1, -1):
        carry = grad_h[..., t] + (a[..., t + 1] * carry if t + 1 < T else 0)
        g[..., t] = carry
    before = np.concatenate([np.zeros_like(h[..., :1]), h[..., :-1]], axis=-1) if shift else h
    return g * before, g, None


@settings(max_examples=100, deadline=None)
@given(case=scan_cases(**SUPPORTED))
def test_a_right_implementation_passes(case):
    assert_scan_close(my_scan(case.a, case.x), case.a, case.x)
    assert_scan_close(my_scan(case.a, case.x, chunk=4), case.a, case.x)


@settings(max_examples=100, deadline=None)
@given(case=backward_cases(**SUPPORTED))
def test_a_right_backward_passes(case):
    grads = my_scan_backward(case.a, case.h, case.grad_h)
    assert_scan_backward_close(grads, case.a, case.h, case.grad_h)


def _fails(check):
    """Whether ``check()`` raises the oracle's ``AssertionError``."""
    try:
        check()
    except AssertionError:
        return True
    return False


def test_a_lost_chunk_carry_is_found_and_shrunk():
    def wrong(case):
        return _fails(lambda: assert_scan_close(my_scan(case.a, case.x, chunk=4, carry=False),
                                                case.a, case.x))  # fmt: skip

    case = find(scan_cases(**SUPPORTED), wrong, settings=settings(database=None))
    # The smallest counterexample: one lane, the step just past the first chunk.
    assert case.x.size == 5, case


def test_grad_a_from_the_wrong_state_is_found_and_shrunk():
    def wrong(case):
        grads = my_scan_backward(case.a, case.h, case.grad_h, shift=0)
        return _fails(lambda: assert_scan_backward_close(grads, case.a, case.h, case.grad_h))

    case = find(backward_cases(**SUPPORTED), wrong, settings=settings(database=None))
    assert case.x.size == 1, case  # h[0] for h[-1] = 0 is wrong already at the first step


def test_a_wrong_initial_state_is_found_and_shrunk():
    def with_h0(a, x, h0):  # starts from h0 + 1: the "subtly wrong h0"
        h = np.empty_like(x)
        state = np.broadcast_to(np.asarray(h0, np.float32) + 1, x.shape[:-1])
        for t in range(x.shape[-1]):
            state = a[..., t] * state + x[..., t]
            h[..., t] = state
        return h

    options = dict(SUPPORTED, h0_forms=("full",))
    case = find(
        scan_cases(**options),
        lambda c: _fails(lambda: assert_scan_close(with_h0(c.a, c.x, c.h0), c.a, c.x, c.h0)),
        settings=settings(database=None),
    )
    assert case.x.size == 1, case
