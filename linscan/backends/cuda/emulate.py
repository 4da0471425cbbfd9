"""The GPU kernel's algorithm in NumPy: ``kernels_cu/scan.cu``'s tile decomposition, block
combine and look-back, run with the CUDA backend's own launch plan, so that a wrong plan or
combine fails on machines without a GPU (``tests/cuda/test_cuda_emulation.py`` compares it
with the serial oracle of ``linscan.reference``). Plain NumPy: importing it imports no CuPy.
"""

from __future__ import annotations

import numpy as np

from ... import _affine  # the algebra the kernel mirrors (affine.cuh)
from . import plan

__all__ = ["run"]


def run(a, v, h0=None, *, mode="forward", down=False, hf=None, resets=None, steps=None,
          block=None, sms=132, rng=None, flat=False):  # fmt: skip
    """Run the GPU kernel's algorithm in NumPy, tile by tile, with the GPU's launch plan.

    ``flat``: the plan may take the lean ``row_scan`` (one channel, forward and final modes),
    whose look-back folds windows of 32 predecessors with the kernel's shuffle tree.

    ``a``, ``v`` (and ``hf``, ``resets``) are canonical ``(O, T, I)`` arrays, ``h0`` is
    ``(O, I)`` or ``None``. ``mode`` is ``"forward"`` (``v`` is ``x``; returns ``h``),
    ``"final"`` (returns the last states ``(O, I)``) or ``"backward"`` (``v`` is ``grad_h``
    and ``hf`` the forward states of a scan walked against ``down``; returns ``(grad_x,
    grad_a, grad_h0)``, with the complex convention of :func:`linscan.scan_backward`).

    The rows are strung along flat time with a reset at each row's first step (and at the
    caller's resets, channel by channel); flat time is cut into tiles of ``NS * S`` steps by
    ``CW`` channels (``plan``: ``steps`` forces S, ``block`` shrinks the block for small
    tests); each of the ``NS`` threads of a channel reduces its ``S`` steps to a
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
    code = {"forward": plan.FORWARD, "final": plan.FINAL, "backward": plan.BACKWARD}[mode]
    rng = np.random.default_rng(0) if rng is None else rng
    O, T, I = v.shape
    dtype = v.dtype
    itemsize = np.promote_types(dtype, np.float32).itemsize  # of the arithmetic type
    has_resets = resets is not None
    # (chan_scan's decomposition, tiles within a row, is not emulated: the host build of its
    # source runs it, tests/cuda/test_cuda_host.py)
    launch = plan.launch(O, T, I, itemsize, code, "parallel", sms, steps, has_resets,
                         flat and I == 1)  # fmt: skip
    CW, S = launch.cw, launch.steps
    NS = (launch.threads if block is None else block) // CW
    window = plan.WARP if launch.kernel == "row_scan" else 1  # predecessors read at once
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
            pj = jt - 1  # tile_scan reads NS of these at a time; the result is the same
            while True:
                entries = []  # nearest first
                for back in range(window):
                    if pj - back < 0:  # never reached: the first tile publishes its prefix
                        entries.append(ignoring(np.zeros(CW, dtype)))
                    else:
                        p_map, p_prefix = published[(pj - back) * groups + g]
                        done = p_map is None or rng.random() < 0.5
                        entries.append(ignoring(p_prefix) if done else p_map)
                acc = _affine.compose(_fold(entries), acc)
                pj -= window
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


def _fold(entries):
    """The map of ``entries`` (nearest first) applied farthest first, composed as row_scan's
    look-back warp does: lane l holds the l-th entry and takes in lane l + off's for off = 1,
    2, 4, ... (a single entry is itself)."""
    lanes = list(entries)
    off = 1
    while off < len(lanes):
        lanes = [
            _affine.compose(lanes[k + off], lanes[k]) if k + off < len(lanes) else lanes[k]
            for k in range(len(lanes))
        ]  # fmt: skip
        off <<= 1
    return lanes[0]
