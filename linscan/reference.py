"""Plain serial loops: the oracle that every linscan test compares against.

The serial loops share no code with the fast paths (``tiled``, the emulation of the GPU
kernel, runs the map algebra of ``linscan._affine`` that the kernel mirrors). They loop over
time in Python, in float64
by default, and are meant to be obviously right rather than fast: use them to check results,
not to compute them. With few lanes the loop runs over Python floats (IEEE double, the same
arithmetic as float64 arrays), which is much faster than NumPy on one-element rows.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["scan", "final_state", "scan_backward", "tiled"]

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


# --------------------------------------------------------------------------------------------
# A NumPy emulation of the GPU kernel's decomposition (kernels_cu/scan.cu, tile_scan)


def tiled(a, v, h0=None, *, mode="forward", down=False, hf=None, resets=None, steps=None,
          block=None, sms=132, rng=None):  # fmt: skip
    """Run the GPU kernel's algorithm in NumPy, tile by tile, with the GPU's launch plan.

    ``a``, ``v`` (and ``hf``, ``resets``) are canonical ``(O, T, I)`` arrays, ``h0`` is
    ``(O, I)`` or ``None``. ``mode`` is ``"forward"`` (``v`` is ``x``; returns ``h``),
    ``"final"`` (returns the last states ``(O, I)``) or ``"backward"`` (``v`` is ``grad_h``
    and ``hf`` the forward states of a scan walked against ``down``; returns ``(grad_x,
    grad_a, grad_h0)``, with the complex convention of :func:`linscan.scan_backward`).

    The rows are strung along flat time with a reset at each row's first step (and at the
    caller's resets, channel by channel); flat time is cut into tiles of ``NS * S`` steps by
    ``CW`` channels (``linscan._cuda.plan``: ``steps`` forces S, ``block`` shrinks the block
    for small tests); each of the ``NS`` threads of a channel reduces its ``S`` steps to a
    map, the block combines them, and the tile looks back over its predecessors, each of which
    has published either its own map or, where it has already finished (drawn from ``rng``;
    at once for tiles whose map ignores their input in every channel), its prefix, until
    every channel has met a map that ignores its input. Maps that cannot stand for their
    steps (``linscan._affine.unsafe``: an infinite or NaN product, or a zero one meeting an
    infinite state)
    are handled as the kernel does: such a tile publishes only its prefix, a look-back that
    composed one waits for its predecessor's prefix, and the threads walk their steps in turn.
    A wrong decomposition or combine gives wrong results here.
    """
    from . import _affine  # the algebra the kernel mirrors (affine.cuh)
    from ._cuda import plan  # plain Python: no CuPy

    code = {"forward": plan.FORWARD, "final": plan.FINAL, "backward": plan.BACKWARD}[mode]
    rng = np.random.default_rng(0) if rng is None else rng
    O, T, I = v.shape
    dtype = v.dtype
    itemsize = np.promote_types(dtype, np.float32).itemsize  # of the arithmetic type
    has_resets = resets is not None
    lp = plan.launch(O, T, I, itemsize, code, "parallel", sms, steps, has_resets)
    CW, S = lp.cw, lp.steps
    NS = (plan.BLOCK if block is None else block) // CW
    TT = NS * S
    N = O * T
    groups = -(-I // CW)
    tiles_t = -(-N // TT)
    backward = code == plan.BACKWARD

    # Logical order u: flat step n = u, or N - 1 - u walking down; rows restart the walk.
    n = np.arange(N)[::-1] if down else np.arange(N)
    o, t = n // T, n % T
    start = np.broadcast_to((t == (T - 1 if down else 0))[:, None], (N, I))
    end = t == (0 if down else T - 1)
    flat = lambda arr: np.broadcast_to(arr, v.shape).reshape(N, I)[n]  # noqa: E731
    init = np.zeros((N, I), dtype) if h0 is None else np.asarray(h0)[o]
    vv = flat(v)
    flat_resets = np.broadcast_to(resets if has_resets else False, v.shape).reshape(N, I)
    user = flat_resets[n]  # the caller's resets, in logical order
    if backward:
        prev_n = np.clip(n + (1 if down else -1), 0, N - 1)  # the logical step before
        next_n = np.clip(n - (1 if down else -1), 0, N - 1)  # and after
        d = np.where(start, 1, np.conj(np.broadcast_to(a, v.shape).reshape(N, I)[prev_n]))
        p = np.where(end[:, None], init, np.asarray(hf).reshape(N, I)[next_n])
        cut = start | flat_resets[prev_n]  # nothing flows back across a reset
        first = vv  # a step that ignores the carry in the backward walk: g = grad_h
    else:
        d = flat(a)
        cut = start | user
        with np.errstate(invalid="ignore", over="ignore"):
            first = np.where(user, vv, d * init + vv)

    def padded(arr, jt, g, fill):
        block_ = np.full((TT, CW), fill, dtype=arr.dtype)
        rows, cols = arr[jt * TT : (jt + 1) * TT, g * CW : (g + 1) * CW].shape
        block_[:rows, :cols] = arr[jt * TT : (jt + 1) * TT, g * CW : (g + 1) * CW]
        return block_.reshape(NS, S, CW)

    def identity(*shape):
        return (np.ones(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, bool),
                np.zeros(shape, bool))  # fmt: skip

    def ignoring(value):  # a map that ignores its input and gives ``value``: a prefix
        return (np.zeros(CW, dtype), value, np.ones(CW, bool), np.zeros(CW, bool))

    y = np.zeros((N, I), dtype)
    published = {}  # tile -> (map, prefix)
    for tile in range(tiles_t * groups):
        jt, g = divmod(tile, groups)
        td, tv, tf = (padded(arr, jt, g, fill) for arr, fill in ((d, 1), (vv, 0), (first, 0)))
        tc = padded(np.asarray(cut), jt, g, False)
        ts = padded(np.ascontiguousarray(start), jt, g, False)
        valid = np.arange(CW) < min(CW, I - g * CW)  # channels of the call, not padding
        # Each thread's map of its S steps, walked serially as the kernel does (from zero, or
        # from the step that ignores the state before it): never inexact itself.
        A, B, R = np.ones((NS, CW), dtype), np.zeros((NS, CW), dtype), np.zeros((NS, CW), bool)
        with np.errstate(invalid="ignore", over="ignore"):
            for s in range(S):
                A = np.where(tc[:, s], 0, A * td[:, s])
                B = np.where(tc[:, s], tf[:, s], td[:, s] * B + tv[:, s])
                R = R | tc[:, s]
        m = (A, B, R, np.zeros((NS, CW), bool))
        # Exclusive scan over the threads, and the tile's map.
        excl = [identity(CW)]
        for k in range(NS):
            excl.append(_affine.compose(excl[-1], tuple(part[k] for part in m)))
        agg = excl.pop()
        # An inexact map is held back: the tile publishes its prefix once it has walked.
        hold = bool(np.any(agg[3] & valid))
        absolute = not hold and (jt == 0 or bool(np.all(agg[2] | ~valid)))
        # The state entering the tile: none if its first step starts a row, else look back.
        if bool(ts[0, 0, 0]):
            carry = np.zeros(CW, dtype)
        else:
            acc = identity(CW)
            pj = jt - 1  # the kernel reads NS of these at a time; the result is the same
            while True:
                if pj < 0:  # never reached: the first tile publishes its prefix at once
                    entry = ignoring(np.zeros(CW, dtype))
                else:
                    p_map, p_prefix = published[pj * groups + g]
                    done = p_map is None or rng.random() < 0.5
                    entry = ignoring(p_prefix) if done else p_map
                acc = _affine.compose(entry, acc)
                pj -= 1
                if bool(np.all(acc[2] | ~valid)):
                    break
            # An inexact composition: wait for the predecessor's own prefix instead.
            carry = published[tile - groups][1] if np.any(acc[3] & valid) else acc[1]
        # The states entering each thread and leaving the tile; where a map cannot give the
        # loop's result, the threads walk their steps one after another instead.
        state, exact = _affine.apply(tuple(np.stack(part) for part in zip(*excl)), carry)
        prefix, exact_end = _affine.apply(agg, carry)
        if not (exact.all() and exact_end.all()):
            walked = carry
            with np.errstate(invalid="ignore", over="ignore"):
                for k in range(NS):
                    state[k] = walked
                    for s in range(S):
                        walked = np.where(tc[k, s], tf[k, s], td[k, s] * walked + tv[k, s])
            prefix = walked
        published[tile] = (None if absolute or hold else agg, agg[1] if absolute else prefix)
        # Walk again from the entering states, writing results.
        lo, hi = jt * TT, min((jt + 1) * TT, N)
        c0, c1 = g * CW, min((g + 1) * CW, I)
        out_y = np.zeros((NS, S, CW), dtype)
        for s in range(S):
            with np.errstate(invalid="ignore", over="ignore"):
                state = np.where(tc[:, s], tf[:, s], td[:, s] * state + tv[:, s])
            out_y[:, s] = state
        y[lo:hi, c0:c1] = out_y.reshape(TT, CW)[: hi - lo, : c1 - c0]

    rows_end = np.nonzero(end)[0]
    s_out = np.zeros((O, I), dtype)
    if code == plan.FINAL:
        s_out[o[rows_end]] = y[rows_end]
        return s_out
    unflat = np.empty_like(y)
    unflat[n] = y
    if not backward:
        return unflat.reshape(O, T, I)
    ga = np.where(user, 0, y * np.conj(p))
    grad_a = np.empty_like(ga)
    grad_a[n] = ga
    s_out[o[rows_end]] = np.where(user[rows_end], 0, np.conj(flat(a)[rows_end]) * y[rows_end])
    return unflat.reshape(O, T, I), grad_a.reshape(O, T, I), s_out
