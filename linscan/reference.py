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

__all__ = [
    "scan",
    "final_state",
    "scan_backward",
    "matscan",
    "matscan_final_state",
    "matscan_backward",
]

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


# Matrix recurrences ``h[t] = A[t] @ h[t-1] + x[t]``: the state is the trailing dimension of
# size d, ``A`` has two trailing dimensions (d, d), and ``axis`` counts the other dimensions.


def _lanes_first(arr, lanes: tuple, axis: int, trail: tuple, dtype):
    """``arr`` broadcast to ``lanes + trail``, time axis first, as ``(T, n_lanes) + trail``."""
    full = np.broadcast_to(np.asarray(arr, dtype=dtype), lanes + trail)
    n = math.prod(lanes[:axis] + lanes[axis + 1 :])
    return np.moveaxis(full, axis, 0).reshape((lanes[axis], n) + trail)


def _matrix_call(A, x, h0, axis, dtype):
    """The wide dtype, the lanes' shape (time included), ``axis`` and the state size d."""
    dtype = _wide(dtype, A, x, h0)
    d = np.shape(x)[-1]
    lanes = np.broadcast_shapes(np.shape(A)[:-2], np.shape(x)[:-1])
    return dtype, lanes, axis % len(lanes), d


def _matrix_initial(h0, lanes, axis, d, dtype):
    state = lanes[:axis] + lanes[axis + 1 :] + (d,)
    if h0 is None:
        return np.zeros((math.prod(state[:-1]), d), dtype)
    return np.broadcast_to(np.asarray(h0, dtype=dtype), state).reshape(-1, d).copy()


def _matrix_restore(h3, lanes, axis, trail: tuple):
    moved = (lanes[axis],) + lanes[:axis] + lanes[axis + 1 :] + trail
    return np.moveaxis(h3.reshape(moved), 0, axis)


def _matvec(M, v):
    """``M @ v`` over stacks of matrices and vectors, as sums of products in order: ``matmul``
    multiplies complex numbers its own way, and an inf or NaN came out of it where the
    loop's plain products give other values (in 32 of 200 draws of a complex backward pass)."""
    out = M[..., :, 0] * v[..., 0, None]
    for k in range(1, M.shape[-1]):
        out = out + M[..., :, k] * v[..., k, None]
    return out


def matscan(A, x, h0=None, *, axis=-1, reverse=False, dtype=None):
    """``h[t] = A[t] @ h[t-1] + x[t]`` along ``axis`` by a serial loop, in ``dtype`` (default:
    float64, or complex128 for complex inputs).

    Same meaning as :func:`linscan.matscan`: ``x`` has the state as its last dimension (size
    d), ``A`` two trailing dimensions ``(d, d)``, and ``axis`` counts the dimensions before
    them; ``A[:-2]`` and ``x[:-1]`` broadcast together.
    """
    dtype, lanes, axis, d = _matrix_call(A, x, h0, axis, dtype)
    A3 = _lanes_first(A, lanes, axis, (d, d), dtype)
    x3 = _lanes_first(x, lanes, axis, (d,), dtype)
    s = _matrix_initial(h0, lanes, axis, d, dtype)
    h3 = np.empty_like(x3)
    for t in _order(lanes[axis], reverse):
        s = _matvec(A3[t], s) + x3[t]
        h3[t] = s
    return _matrix_restore(h3, lanes, axis, (d,))


def matscan_final_state(A, x, h0=None, *, axis=-1, reverse=False, dtype=None):
    """The last state of :func:`matscan` (``h0`` broadcast when the sequence is empty)."""
    dtype, lanes, axis, d = _matrix_call(A, x, h0, axis, dtype)
    state = lanes[:axis] + lanes[axis + 1 :] + (d,)
    if lanes[axis] == 0:
        return _matrix_initial(h0, lanes, axis, d, dtype).reshape(state)
    h = np.moveaxis(matscan(A, x, h0, axis=axis, reverse=reverse, dtype=dtype), axis, 0)
    return (h[0] if reverse else h[-1]).copy()


def matscan_backward(A, h, grad_h, h0=None, *, axis=-1, reverse=False, dtype=None):
    """Vector-Jacobian product of :func:`matscan` by the textbook serial loop, in ``dtype``.

    ``g[t] = grad_h[t] + A[t+1]^H g[t+1]``, ``grad_x = g``, ``grad_A[t] = g[t] h[t-1]^H``
    (an outer product; ``h[-1] = h0``), ``grad_h0 = A[0]^H g[0]``, mirrored in time for
    ``reverse`` (``^H``: the conjugate transpose; the complex convention of
    :func:`linscan.scan_backward`). Returns ``(grad_A, grad_x, grad_h0)`` shaped like ``A``,
    ``h`` and ``h0`` (``None`` without ``h0``); a real ``A`` or ``h0`` gets the real part.
    """
    dtype, lanes, axis, d = _matrix_call(A, h, h0, axis, _wide(dtype, A, h, grad_h, h0))
    T = lanes[axis]
    A3 = _lanes_first(A, lanes, axis, (d, d), dtype)
    h3 = _lanes_first(h, lanes, axis, (d,), dtype)
    gh3 = _lanes_first(grad_h, lanes, axis, (d,), dtype)
    first = _matrix_initial(h0, lanes, axis, d, dtype)
    g3, gA3 = np.empty_like(gh3), np.empty_like(A3)
    nxt = 1 if reverse else -1  # the forward scan's previous step is t + nxt
    g = np.zeros_like(first)
    for t in _order(T, not reverse):
        after = t - nxt
        if 0 <= after < T:
            g = gh3[t] + _matvec(np.conj(np.swapaxes(A3[after], -1, -2)), g)
        else:
            g = gh3[t].copy()
        g3[t] = g
        prev = t + nxt
        hp = h3[prev] if 0 <= prev < T else first
        gA3[t] = g[:, :, None] * np.conj(hp)[:, None, :]
    grad_A = _sum_to(_matrix_restore(gA3, lanes, axis, (d, d)), np.shape(A))
    grad_A = _real_if(grad_A, A)
    grad_h0 = None
    if h0 is not None:
        if T:
            start = T - 1 if reverse else 0
            back = _matvec(np.conj(np.swapaxes(A3[start], -1, -2)), g3[start])
        else:
            back = np.zeros_like(first)
        state = lanes[:axis] + lanes[axis + 1 :] + (d,)
        grad_h0 = _real_if(_sum_to(back.reshape(state), np.shape(h0)), h0)
    return grad_A, _matrix_restore(g3, lanes, axis, (d,)), grad_h0
