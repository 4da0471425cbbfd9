"""Plain serial loops: the oracle that every linscan test compares against.

They share no code with the fast paths (the emulation of the GPU kernel, which runs the
kernel's algorithm in NumPy, lives beside the CUDA backend: ``linscan.backends.cuda.emulate``).
They loop over time in Python, in float64 by default, and are meant to be obviously right
rather than fast: use them to check results, not to compute them. With few lanes the loop
runs over Python floats (IEEE double, the same arithmetic as float64 arrays), which is much
faster than NumPy on one-element rows.
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


def _loop(a2, x2, state, reverse, r2):
    """``h[t] = a[t] * h[t-1] + x[t]`` (``x[t]`` where ``r[t]``) over the rows of
    ``(T, lanes)`` arrays."""
    T, lanes = x2.shape
    h2 = np.empty_like(x2)
    if lanes <= _FEW_LANES:
        for lane in range(lanes):
            s = state[lane].item()
            a_l, x_l, r_l = a2[:, lane].tolist(), x2[:, lane].tolist(), r2[:, lane].tolist()
            h_l = [0.0] * T
            for t in _order(T, reverse):
                s = x_l[t] if r_l[t] else a_l[t] * s + x_l[t]
                h_l[t] = s
            h2[:, lane] = h_l
        return h2
    s = state.copy()
    for t in _order(T, reverse):
        with np.errstate(invalid="ignore", over="ignore"):
            s = np.where(r2[t], x2[t], a2[t] * s + x2[t])
        h2[t] = s
    return h2


def _resets(resets, shape, axis):
    """The resets as a ``(T, lanes)`` boolean array (all false for ``None``)."""
    return _time_first(False if resets is None else resets, shape, axis, bool)


def _initial(h0, shape, axis, dtype):
    state_shape = shape[:axis] + shape[axis + 1 :]
    if h0 is None:
        return np.zeros(math.prod(state_shape), dtype)
    return np.broadcast_to(np.asarray(h0, dtype=dtype), state_shape).reshape(-1).copy()


def _wide(dtype, *values):
    """``dtype``, or by default complex128 if one of ``values`` is complex, else float64."""
    if dtype is not None:
        return dtype
    return np.complex128 if any(np.iscomplexobj(v) for v in values) else np.float64


def scan(a, x, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``axis`` by a serial loop, in ``dtype`` (default:
    float64, or complex128 for complex inputs).

    Same meaning as :func:`linscan.scan` (broadcasting, ``h0``, ``reverse``, ``resets``);
    returns an array of ``dtype``.
    """
    dtype = _wide(dtype, a, x, h0)
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    axis = axis % len(shape)
    a2 = _time_first(a, shape, axis, dtype)
    x2 = _time_first(x, shape, axis, dtype)
    h2 = _loop(a2, x2, _initial(h0, shape, axis, dtype), reverse, _resets(resets, shape, axis))
    return _restore(h2, shape, axis)


def final_state(a, x, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None):
    """The last state of :func:`scan` (``h0`` broadcast when the sequence is empty)."""
    dtype = _wide(dtype, a, x, h0)
    shape = np.broadcast_shapes(np.shape(a), np.shape(x))
    axis = axis % len(shape)
    state_shape = shape[:axis] + shape[axis + 1 :]
    if shape[axis] == 0:
        return _initial(h0, shape, axis, dtype).reshape(state_shape)
    h = scan(a, x, h0, axis=axis, reverse=reverse, resets=resets, dtype=dtype)
    h = np.moveaxis(h, axis, 0)
    return (h[0] if reverse else h[-1]).copy()


def _sum_to(full, shape):
    """Sum over the axes that broadcasting ``shape`` to ``full.shape`` added."""
    lead = full.ndim - len(shape)
    total = full.sum(axis=tuple(range(lead))) if lead else full
    keep = tuple(k for k, n in enumerate(shape) if n == 1 and total.shape[k] != 1)
    return total.sum(axis=keep, keepdims=True).reshape(shape) if keep else total.reshape(shape)


def _loop_backward(a2, h2, gh2, first, reverse, r2):
    """Textbook backward loop over ``(T, lanes)`` arrays; returns ``(g, grad_a, grad_h0)``.
    A step that resets (``r2``) passes no gradient to ``a`` or to the state before it."""
    T, lanes = gh2.shape
    g2, ga2 = np.empty_like(gh2), np.empty_like(gh2)
    steps = _order(T, not reverse)  # against the direction of the forward scan
    nxt = 1 if reverse else -1  # offset of the step walked before t
    if lanes <= _FEW_LANES:
        for lane in range(lanes):
            a_l, h_l, gh_l = a2[:, lane].tolist(), h2[:, lane].tolist(), gh2[:, lane].tolist()
            r_l = r2[:, lane].tolist()
            g_l, ga_l = [0.0] * T, [0.0] * T
            g_next = 0.0
            for t in steps:
                after = t - nxt  # the forward scan's next step
                carry = 0.0
                if 0 <= after < T and not r_l[after]:
                    carry = a_l[after].conjugate() * g_next
                g = gh_l[t] + carry
                prev = t + nxt  # the forward scan's previous step
                hp = h_l[prev] if 0 <= prev < T else first[lane].item()
                ga_l[t] = 0.0 if r_l[t] else g * hp.conjugate()
                g_l[t] = g_next = g
            g2[:, lane], ga2[:, lane] = g_l, ga_l
    else:
        g_next = np.zeros_like(first)
        zero = np.zeros_like(first)
        for t in steps:
            after = t - nxt
            carry = np.where(r2[after], 0, np.conj(a2[after]) * g_next) if 0 <= after < T else zero
            g2[t] = gh2[t] + carry
            prev = t + nxt
            ga2[t] = np.where(r2[t], 0, g2[t] * np.conj(h2[prev] if 0 <= prev < T else first))
            g_next = g2[t]
    start = T - 1 if reverse else 0
    grad_first = (
        np.where(r2[start], 0, np.conj(a2[start]) * g2[start]) if T else np.zeros_like(first)
    )
    return g2, ga2, grad_first


def scan_backward(a, h, grad_h, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None):
    """Vector-Jacobian product of :func:`scan` by the textbook serial loop, in ``dtype``
    (default: float64, or complex128 for complex inputs).

    ``g[t] = grad_h[t] + conj(a[t+1]) * g[t+1]``, ``grad_x = g``, ``grad_a[t] = g[t] *
    conj(h[t-1])``, ``grad_h0 = conj(a[0]) * g[0]`` (mirrored in time for ``reverse``;
    ``conj`` does nothing to real numbers, see :func:`linscan.scan_backward` for the complex
    convention). A step that resets passes nothing to ``a`` or to the state before it. A real
    ``a`` or ``h0`` gets the real part of its gradient. Returns
    ``(grad_a, grad_x, grad_h0)`` shaped like ``a``, ``h`` and ``h0`` (``None`` without
    ``h0``).
    """
    dtype = _wide(dtype, a, h, grad_h, h0)
    shape = np.shape(h)
    axis = axis % len(shape)
    a2 = _time_first(a, shape, axis, dtype)
    h2 = _time_first(h, shape, axis, dtype)
    gh2 = _time_first(grad_h, shape, axis, dtype)
    first = _initial(h0, shape, axis, dtype)
    r2 = _resets(resets, shape, axis)
    g2, ga2, grad_first = _loop_backward(a2, h2, gh2, first, reverse, r2)
    grad_a = _real_if(_sum_to(_restore(ga2, shape, axis), np.shape(a)), a)
    grad_x = _restore(g2, shape, axis)
    grad_h0 = None
    if h0 is not None:
        state_shape = shape[:axis] + shape[axis + 1 :]
        grad_h0 = _real_if(_sum_to(grad_first.reshape(state_shape), np.shape(h0)), h0)
    return grad_a, grad_x, grad_h0


def _real_if(grad, arg):
    """The gradient of a real ``arg``: the real part of ``grad``."""
    return grad if np.iscomplexobj(arg) else grad.real
