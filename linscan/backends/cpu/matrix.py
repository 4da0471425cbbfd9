"""Matrix recurrences ``h[t] = A[t] @ h[t-1] + x[t]`` on the CPU (``linscan.matscan``).

The canonical layout is the scalar one with the state last: ``x`` and ``h`` are ``(O, T, I,
d)``, ``A`` is ``(O, T, I, d, d)`` (a strided view: a matrix shared by steps or lanes keeps
its zero strides) and the state is ``(O, I, d)``. The kernels take d from the arrays'
shapes: one compiled kernel per dtype serves every state size (one per size, with the
loops over the matrix unrolled, made the tests compile 185 kernels, minutes of CI).

Plans are the scalar backend's (``plan``): lanes split over threads, or, with few lanes,
time split into segments. A segment is reduced to its affine map ``s -> M s + b`` in float64
(complex128): ``b`` walks the segment from zero; ``M`` is the product of its matrices, one
``d x d`` product per step, or, where ``A`` is the same at every step (a filter), ``A`` to the
segment's length by repeated squaring. The maps composed in order give each segment its
entering state, rounded once, and the segments are then walked in parallel. Where a map or a
composed state is not finite, an ``inf`` or NaN would not meet the same products as in the
loop: the segments are walked one after the other instead, as the loop does.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from numba import njit

from . import plan as _plan
from . import pool
from .backend import piece_tasks, private
from .cache import njit_cached

_JIT = dict(nogil=True, fastmath={"contract"}, error_model="numpy")


@njit_cached(**_JIT)
def _walk(A, x, h, s, o0, o1, i0, i1, t0, t1, down, write):
    """Steps ``[t0, t1)`` of lanes ``[o0, o1) x [i0, i1)`` from the states ``s``
    (updated in place to the leaving states), writing ``h`` if ``write``."""
    D = s.shape[2]
    n = np.empty(D, s.dtype)
    for o in range(o0, o1):
        for step in range(t1 - t0):
            t = t1 - 1 - step if down else t0 + step
            for i in range(i0, i1):
                for j in range(D):
                    acc = x[o, t, i, j]
                    for k in range(D):
                        acc += A[o, t, i, j, k] * s[o, i, k]
                    n[j] = acc
                for j in range(D):
                    s[o, i, j] = n[j]
                    if write:
                        h[o, t, i, j] = n[j]


@njit(inline="always")
def _entry(A, o, t, i, j, k, back):
    """Entry ``(j, k)`` of the matrix a walk applies at step ``t``: ``A[t]``, or with
    ``back`` its conjugate transpose."""
    return np.conj(A[o, t, i, k, j]) if back else A[o, t, i, j, k]


@njit_cached(**_JIT)
def _reduce(A, x, M, b, o0, o1, t0, t1, down, product, back):
    """The map of steps ``[t0, t1)`` of outer rows ``[o0, o1)``, all channels: ``b`` the
    state reached from zero and, with ``product``, ``M`` the product of the matrices
    (``M`` and ``b`` in the wide dtype they are given in).

    With ``back`` it is the map of ``_back``'s carry, ``x`` being ``grad_h``: a step takes
    ``c`` to ``A[t]^H (grad_h[t] + c)``, so the matrices are the conjugate transposes."""
    I = x.shape[2]
    D = b.shape[2]
    n = np.empty(D, b.dtype)
    P = np.empty((D, D), M.dtype)
    for o in range(o0, o1):
        for i in range(I):
            for j in range(D):
                b[o, i, j] = 0
                for k in range(D):
                    M[o, i, j, k] = 1 if j == k else 0
        for step in range(t1 - t0):
            t = t1 - 1 - step if down else t0 + step
            for i in range(I):
                for j in range(D):
                    if back:  # in _back's order: the sum over j of conj(A[j, k]) (gh + c)[j]
                        acc = _entry(A, o, t, i, j, 0, True) * (x[o, t, i, 0] + b[o, i, 0])
                        for k in range(1, D):
                            acc += _entry(A, o, t, i, j, k, True) * (x[o, t, i, k] + b[o, i, k])
                    else:
                        acc = A[o, t, i, j, 0] * b[o, i, 0] + x[o, t, i, j]  # in b's dtype
                        for k in range(1, D):
                            acc += A[o, t, i, j, k] * b[o, i, k]
                    n[j] = acc
                for j in range(D):
                    b[o, i, j] = n[j]
                if product:
                    for j in range(D):
                        for k in range(D):
                            acc = _entry(A, o, t, i, j, 0, back) * M[o, i, 0, k]
                            for m in range(1, D):
                                acc += _entry(A, o, t, i, j, m, back) * M[o, i, m, k]
                            P[j, k] = acc
                    for j in range(D):
                        for k in range(D):
                            M[o, i, j, k] = P[j, k]


@njit_cached(**_JIT)
def _back(A, h, gh, hb, gx, gA, c, o0, o1, i0, i1, t0, t1, down):
    """The backward walk over steps ``[t0, t1)`` (walked down when ``down``, against a
    forward scan that went up): ``g[t] = gh[t] + A[t']^H c`` where ``c`` is the ``g`` of
    the step walked before (zero at the start of the walk, then carried in ``c``) and
    ``t'`` that step; ``gx[t] = g[t]``, ``gA[t] = g[t] h[t-1]^H`` with ``h[t-1]`` the
    forward scan's previous state (``hb`` before the first step). ``c`` leaves holding
    ``A[t_last]^H g[t_last]``: the gradient passed on to the state before the walk."""
    T = h.shape[1]
    D = c.shape[2]
    n = np.empty(D, c.dtype)
    for o in range(o0, o1):
        for step in range(t1 - t0):
            t = t1 - 1 - step if down else t0 + step
            prev = t - 1 if down else t + 1  # the forward scan's previous step
            inside = 0 <= prev < T
            for i in range(i0, i1):
                for j in range(D):
                    g = gh[o, t, i, j] + c[o, i, j]
                    gx[o, t, i, j] = g
                    n[j] = g
                for j in range(D):
                    for k in range(D):
                        if inside:
                            hp = h[o, prev, i, k]
                        else:
                            hp = hb[o, i, k]
                        gA[o, t, i, j, k] = n[j] * np.conj(hp)
                for k in range(D):  # carry A[t]^H g[t] to the step before
                    acc = np.conj(A[o, t, i, 0, k]) * n[0]
                    for j in range(1, D):
                        acc += np.conj(A[o, t, i, j, k]) * n[j]
                    c[o, i, k] = acc


def _rounded(arr, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


def _maps(A, x, plan, down: bool, wide, group, back: bool = False):
    """Each first-phase piece's map ``(M, b)`` over all lanes, in ``wide`` (with ``back``,
    of the backward carry: ``_reduce``)."""
    O, _, I, d = x.shape
    flat = plan.flat_pieces
    M = [private((O, I, d, d), wide) for _ in flat]  # one each: updated at every step
    b = [private((O, I, d), wide) for _ in flat]
    constant = _constant_in_time(A)

    def reduce_piece(g, piece):
        _reduce(A, x, M[g], b[g], 0, O, piece.t0, piece.t1, down, not constant, back)

    pool.run(piece_tasks(plan, group, reduce_piece), group)
    if constant:
        with np.errstate(all="ignore"):
            A0 = A[:, 0].astype(wide)
            if back:
                A0 = np.conj(np.swapaxes(A0, -1, -2))
            for g, piece in enumerate(flat):
                M[g] = np.linalg.matrix_power(A0, piece.t1 - piece.t0)
    return flat, M, b


def _starts(flat, M, b, state):
    """The state entering each segment and leaving the last, composed in the wide dtype and
    rounded once per segment; ``None`` where a map or a state is not finite, or a state
    rounded overflows (float32: the loop's states are inf from there on)."""
    if not all(np.isfinite(m).all() and np.isfinite(v).all() for m, v in zip(M, b)):
        return None
    carry = state.astype(b[0].dtype)
    starts = [private(state.shape, state.dtype, state)]  # one each: updated at every step
    for g, piece in enumerate(flat):
        with np.errstate(all="ignore"):
            carry = (M[g] @ carry[..., None])[..., 0] + b[g]
        if not np.isfinite(carry).all():
            return None
        if g + 1 == len(flat) or flat[g + 1].segment != piece.segment:
            rounded = _rounded(carry, state.dtype)
            if not np.isfinite(rounded).all():
                return None
            starts.append(private(state.shape, state.dtype, rounded))
    return starts


def _constant_in_time(A) -> bool:
    """Whether the canonical ``A`` is the same matrix at every step (a broadcast view)."""
    return A.shape[1] == 1 or A.strides[1] == 0


def _method(method: str, O: int, I: int, A) -> str:
    """``"sequential"`` or ``"parallel"`` for ``method="auto"``: time is split only where the
    lanes cannot keep the threads busy and ``A`` is the same at every step (so that a segment's
    matrix product costs a few squarings, not a ``d x d`` product per step): each thread then
    walks its steps twice, which pays with more than two threads."""
    if method != "auto":
        return method
    constant = _constant_in_time(A)
    threads = _plan.num_threads()
    return "parallel" if constant and O * I < threads and threads > 2 else "sequential"


def scan(A, x, h, s, reverse: bool, method: str, write: bool = True) -> None:
    """``h`` (``(O, T, I, d)``) from ``A``, ``x`` and the entering states ``s`` (``(O, I, d)``,
    left holding the final states). Without ``write`` ``h`` is not touched (may be ``None``)."""
    O, T, I, d = x.shape
    if h is None:
        h = np.empty((1, 1, 1, d), x.dtype)  # never written
    op = "scan" if write else "final_state"
    method = _method(method, O, I, A)
    plan = _plan.make_plan(O, T, I, down=reverse, method=method, op=op, itemsize=x.itemsize)
    group = pool.TaskGroup()
    if not plan.split:
        pool.run(
            [
                partial(_walk, A, x, h, s, b.o0, b.o1, b.i0, b.i1, 0, T, reverse, write)
                for b in plan.boxes
            ],
            group,
        )
        return
    wide = np.promote_types(x.dtype, np.float64)
    flat, M, b = _maps(A, x, plan, reverse, wide, group)
    starts = _starts(flat, M, b, s)
    if starts is None:  # walk the segments in order from their true entering states
        for t0, t1 in plan.segments if write else [(0, T)]:
            _walk(A, x, h, s, 0, O, 0, I, t0, t1, reverse, write)
        return
    if write:
        tasks = [
            partial(_walk, A, x, h, starts[k], 0, O, 0, I, t0, t1, reverse, True)
            for k, (t0, t1) in enumerate(plan.segments)
        ]
        pool.run(tasks, group)
    s[...] = starts[-1]


def backward(A, h, gh, hb, gx, gA, reverse: bool, method: str):
    """The backward walk: fills ``gx`` and ``gA`` and returns ``A[first]^H g[first]`` per
    lane, the gradient of the entering state. Planned as ``scan`` plans the forward walk: in
    split mode each segment's carry map is reduced (``_reduce`` with ``back``) and composed
    from zero, and the segments are walked from their entering carries."""
    O, T, I, d = h.shape
    c = private((O, I, d), gx.dtype)
    down = not reverse
    method = _method(method, O, I, A)
    plan = _plan.make_plan(O, T, I, down=down, method=method, op="backward",
                           itemsize=h.itemsize)  # fmt: skip
    group = pool.TaskGroup()
    if not plan.split:
        pool.run(
            [
                partial(_back, A, h, gh, hb, gx, gA, c, b.o0, b.o1, b.i0, b.i1, 0, T, down)
                for b in plan.boxes
            ],
            group,
        )
        return c
    wide = np.promote_types(gx.dtype, np.float64)
    flat, M, b = _maps(A, gh, plan, down, wide, group, back=True)
    starts = _starts(flat, M, b, c)
    if starts is None:  # walk the segments in order from their true entering carries
        for t0, t1 in plan.segments:
            _back(A, h, gh, hb, gx, gA, c, 0, O, 0, I, t0, t1, down)
        return c
    tasks = [
        partial(_back, A, h, gh, hb, gx, gA, starts[k], 0, O, 0, I, t0, t1, down)
        for k, (t0, t1) in enumerate(plan.segments)
    ]
    pool.run(tasks, group)
    return starts[-1]
