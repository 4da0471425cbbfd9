"""Plain serial loops: the oracle that every linscan test compares against.

These functions share no code with the fast paths. They loop over time in Python, in float64
by default, and are meant to be obviously right rather than fast: use them to check results,
not to compute them. With few lanes the loop runs over Python floats (IEEE double, the same
arithmetic as float64 arrays), which is much faster than NumPy on one-element rows.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["scan", "final_state", "scan_backward"]

_FEW_LANES = 8


def _time_first(arr, shape, axis, dtype):
    """``arr`` broadcast to ``shape``, time axis first, as a 2-D ``(T, lanes)`` float array."""
    full = np.broadcast_to(np.asarray(arr, dtype=dtype), shape)
    lanes = math.prod(shape[:axis] + shape[axis + 1 :])
    return np.moveaxis(full, axis, 0).reshape(shape[axis], lanes)


def _restore(h2, shape, axis):
    moved = (shape[axis],) + shape[:axis] + shape[axis + 1 :]
    return np.moveaxis(h2.reshape(moved), 0, axis)


def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _loop(a2, x2, state, reverse):
    """``h[t] = a[t] * h[t-1] + x[t]`` over the rows of ``(T, lanes)`` arrays."""
    T, lanes = x2.shape
    h2 = np.empty_like(x2)
    if lanes <= _FEW_LANES:
        for lane in range(lanes):
            s = float(state[lane])
            a_l, x_l = a2[:, lane].tolist(), x2[:, lane].tolist()
            h_l = [0.0] * T
            for t in _order(T, reverse):
                s = a_l[t] * s + x_l[t]
                h_l[t] = s
            h2[:, lane] = h_l
        return h2
    s = state.copy()
    for t in _order(T, reverse):
        s = a2[t] * s + x2[t]
        h2[t] = s
    return h2


def _initial(h0, shape, axis, dtype):
    state_shape = shape[:axis] + shape[axis + 1 :]
    if h0 is None:
        return np.zeros(math.prod(state_shape), dtype)
    return np.broadcast_to(np.asarray(h0, dtype=dtype), state_shape).reshape(-1).copy()


def scan(a, x, h0=None, *, axis=-1, reverse=False, dtype=np.float64):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``axis`` by a serial loop, in ``dtype``.

    Same meaning as :func:`linscan.scan` (broadcasting, ``h0``, ``reverse``); returns an array
    of ``dtype``.
    """
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    axis = axis % len(shape)
    a2 = _time_first(a, shape, axis, dtype)
    x2 = _time_first(x, shape, axis, dtype)
    h2 = _loop(a2, x2, _initial(h0, shape, axis, dtype), reverse)
    return _restore(h2, shape, axis)


def final_state(a, x, h0=None, *, axis=-1, reverse=False, dtype=np.float64):
    """The last state of :func:`scan` (``h0`` broadcast when the sequence is empty)."""
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    axis = axis % len(shape)
    state_shape = shape[:axis] + shape[axis + 1 :]
    if shape[axis] == 0:
        return _initial(h0, shape, axis, dtype).reshape(state_shape)
    h = np.moveaxis(scan(a, x, h0, axis=axis, reverse=reverse, dtype=dtype), axis, 0)
    return (h[0] if reverse else h[-1]).copy()


def _sum_to(full, shape):
    """Sum over the axes that broadcasting ``shape`` to ``full.shape`` added."""
    lead = full.ndim - len(shape)
    total = full.sum(axis=tuple(range(lead))) if lead else full
    keep = tuple(k for k, n in enumerate(shape) if n == 1 and total.shape[k] != 1)
    return total.sum(axis=keep, keepdims=True).reshape(shape) if keep else total.reshape(shape)


def _loop_backward(a2, h2, gh2, first, reverse):
    """Textbook backward loop over ``(T, lanes)`` arrays; returns ``(g, grad_a, grad_h0)``."""
    T, lanes = gh2.shape
    g2, ga2 = np.empty_like(gh2), np.empty_like(gh2)
    steps = _order(T, not reverse)  # against the direction of the forward scan
    nxt = 1 if reverse else -1  # offset of the step walked before t
    if lanes <= _FEW_LANES:
        for lane in range(lanes):
            a_l, h_l, gh_l = a2[:, lane].tolist(), h2[:, lane].tolist(), gh2[:, lane].tolist()
            g_l, ga_l = [0.0] * T, [0.0] * T
            g_next = 0.0
            for t in steps:
                carry = a_l[t - nxt] * g_next if 0 <= t - nxt < T else 0.0
                g = gh_l[t] + carry
                prev = t + nxt  # the forward scan's previous step
                ga_l[t] = g * (h_l[prev] if 0 <= prev < T else float(first[lane]))
                g_l[t] = g_next = g
            g2[:, lane], ga2[:, lane] = g_l, ga_l
    else:
        g_next = np.zeros_like(first)
        for t in steps:
            carry = a2[t - nxt] * g_next if 0 <= t - nxt < T else np.zeros_like(first)
            g2[t] = gh2[t] + carry
            prev = t + nxt
            ga2[t] = g2[t] * (h2[prev] if 0 <= prev < T else first)
            g_next = g2[t]
    start = T - 1 if reverse else 0
    grad_first = a2[start] * g2[start] if T else np.zeros_like(first)
    return g2, ga2, grad_first


def scan_backward(a, h, grad_h, h0=None, *, axis=-1, reverse=False, dtype=np.float64):
    """Vector-Jacobian product of :func:`scan` by the textbook serial loop, in ``dtype``.

    ``g[t] = grad_h[t] + a[t+1] * g[t+1]``, ``grad_x = g``, ``grad_a[t] = g[t] * h[t-1]``,
    ``grad_h0 = a[0] * g[0]`` (mirrored in time for ``reverse``). Returns
    ``(grad_a, grad_x, grad_h0)`` shaped like ``a``, ``h`` and ``h0`` (``None`` without
    ``h0``).
    """
    shape = np.shape(h)
    axis = axis % len(shape)
    a2 = _time_first(a, shape, axis, dtype)
    h2 = _time_first(h, shape, axis, dtype)
    gh2 = _time_first(grad_h, shape, axis, dtype)
    g2, ga2, grad_first = _loop_backward(a2, h2, gh2, _initial(h0, shape, axis, dtype), reverse)
    grad_a = _sum_to(_restore(ga2, shape, axis), np.shape(a))
    grad_x = _restore(g2, shape, axis)
    grad_h0 = None
    if h0 is not None:
        state_shape = shape[:axis] + shape[axis + 1 :]
        grad_h0 = _sum_to(grad_first.reshape(state_shape), np.shape(h0))
    return grad_a, grad_x, grad_h0
