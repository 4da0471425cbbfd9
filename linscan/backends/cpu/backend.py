"""The CPU backend: runs a plan from ``plan`` with the Numba kernels of ``kernels`` on the
canonical layout (the contract: ``linscan.backends.base``), its tasks on the shared thread
pool of ``pool``.

A plan either walks each box of lanes through all of time on its own thread, or splits time
into segments: each segment's pieces are first reduced to their maps (decay product and state
from zero), the maps composed in order give every segment its entering state, and the
segments are then walked in parallel. Where a piece's map cannot stand for its steps
(``linscan._affine``) the segments are walked one after the other instead.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from ... import _affine, _dtypes, _extended, _layout
from .. import base
from . import plan as _plan
from . import pool


#: Bytes of a cache line (64 on every x86 and most ARM cores; 128-byte lines would still
#: be shared by at most two buffers).
LINE = 64


def private(shape, dtype, like=None) -> np.ndarray:
    """A fresh array of ``shape`` (holding ``like`` broadcast, else zeros) that starts on a
    cache line and shares none of its lines with any other array.

    The "cols" kernels update their states, products and carries in memory at every step.
    Small NumPy arrays are 16-byte aligned and sit next to one another, so two threads each
    updating its own segment's state wrote the same cache lines at every step: 16 float32
    channels split over time between two threads ran 2.6 times slower than on one thread."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.zeros(nbytes + 2 * LINE, np.uint8)
    first = -raw.ctypes.data % LINE
    out = raw[first : first + nbytes].view(dtype).reshape(shape)
    if like is not None:
        out[...] = like
    return out


def _lane_states(shape, dtype, like=None) -> np.ndarray:
    """The ``(O, I)`` states of a call, which lanes mode's threads share box by box: on lines
    of their own (``private``), unless they fit in one line. Boxes of channels are 16
    channels or more (64 bytes or more), so such a state is one box of channels, or boxes of
    rows, whose kernels write a row's state once, at its end. (``private`` costs about 3 us,
    a small call about 50.)"""
    if math.prod(shape) * np.dtype(dtype).itemsize > LINE:
        return private(shape, dtype, like)
    out = np.zeros(shape, dtype)
    if like is not None:
        out[...] = like
    return out


def _start(h0, x) -> np.ndarray:
    """The states the kernels run in place: ``h0`` as ``CPU.initial`` made it, or zeros."""
    return _lane_states((x.shape[0], x.shape[2]), x.dtype) if h0 is None else h0


def _real(x) -> bool:
    """Whether ``x`` is float32 or float64 (``plan.make_plan``'s ``real``)."""
    return x.dtype.kind == "f"


def _kernels():
    from . import kernels  # compiles lazily, on each kernel's first call

    return kernels


def _drive(plan: _plan.Plan, shape: tuple, state: np.ndarray, walk, reduce, resets) -> None:
    """Run ``plan``.

    ``walk(box, t0, t1, st)`` processes lanes ``box`` over ``[t0, t1)`` starting from the
    states ``st`` (an ``(O, I)`` array, updated in place to the leaving states).
    ``reduce(box, t0, t1, p, f, st)`` does the same without writing results, and stores the
    decay products in ``p`` and (with ``resets``) whether a lane met a reset in ``f``; with
    ``p=None`` it keeps the states alone. A pass without results passes ``walk=None``.
    """
    O, T, I = shape
    group = pool.TaskGroup()
    if not plan.split:
        if walk is None:
            # The states alone (no products nor reset flags to keep), except where the plan
            # asks for the chained kernels (``method="parallel"``), which make products.
            p = np.empty_like(state) if plan.blocked else None
            f = np.zeros(state.shape, bool) if p is not None and resets is not None else None
            walk = lambda box, t0, t1, st: reduce(box, t0, t1, p, f, st)  # noqa: E731
        pool.run([partial(walk, box, 0, T, state) for box in plan.boxes], group)
        return
    everything = _plan.Box(0, O, 0, I)
    flat = plan.flat_pieces
    # Products and partial states in float64 (complex128): see "Accuracy" in ``kernels``.
    # One private buffer each, as the threads update them at every step.
    wide = np.promote_types(state.dtype, np.float64)
    prods = [private(state.shape, wide) for _ in flat]
    parts = [private(state.shape, wide) for _ in flat]
    flags = None if resets is None else [private(state.shape, bool) for _ in flat]

    def reduce_piece(g, piece):
        f = None if flags is None else flags[g]
        reduce(everything, piece.t0, piece.t1, prods[g], f, parts[g])

    pool.run(piece_tasks(plan, group, reduce_piece), group)
    starts = _segment_starts(flat, prods, parts, flags, state)
    if starts is None:
        # A piece's product cannot stand for its steps: walk the pieces one after the other
        # from their true entering states.
        if walk is None:
            scratch = private(state.shape, wide)
            marks = None if flags is None else np.zeros(state.shape, bool)
            for piece in flat:
                reduce(everything, piece.t0, piece.t1, scratch, marks, state)
        else:
            for t0, t1 in plan.segments:
                walk(everything, t0, t1, state)
        return
    if walk is not None:  # a pass without results has reduced every segment already
        pool.run(
            [
                partial(walk, everything, t0, t1, starts[k])
                for k, (t0, t1) in enumerate(plan.segments)
            ],
            group,
        )
    state[...] = starts[-1]


def piece_tasks(plan: _plan.Plan, group: pool.TaskGroup, reduce_piece) -> list:
    """The first phase of split mode as tasks for ``pool.run``: one per entry of
    ``plan.pieces``, calling ``reduce_piece(g, piece)`` for each of its pieces (``g``: the
    piece's index in ``plan.flat_pieces``) until ``group`` is cancelled."""
    tasks, first = [], 0
    for task in plan.pieces:
        ids = range(first, first + len(task))
        first += len(task)

        def run(ids=ids, task=task):
            for g, piece in zip(ids, task):
                if group.cancelled:
                    return
                reduce_piece(g, piece)

        tasks.append(run)
    return tasks


def _segment_starts(flat, prods, parts, flags, state):
    """The state entering each segment, and the state leaving the last, composed from the
    pieces' products and partial states in walk order (a piece with a reset in a lane ignores
    the state entering it there); ``None`` where a piece's map cannot stand for its steps
    (``_affine.unsafe``: an infinite decay, an overflow, or an underflow meeting an infinite
    state)."""
    starts, carry = [private(state.shape, state.dtype, state)], state.copy()
    for g, piece in enumerate(flat):
        resets = False if flags is None else flags[g]
        carry, exact = _affine.apply(_affine.Map(prods[g], parts[g], resets), carry)
        if not exact.all():
            return None
        if g + 1 == len(flat) or flat[g + 1].segment != piece.segment:
            with np.errstate(over="ignore"):  # an overflow is inf, as in the loop
                starts.append(private(state.shape, state.dtype, carry))  # rounded once
    return starts


def _rows(*arrays):
    """2-D ``(O, T)`` (or 1-D ``(O,)``) views of canonical arrays with ``I == 1`` (``None``
    stays ``None``)."""
    return [None if arr is None else arr[..., 0] for arr in arrays]


def _reducer(k, a, x, r, down: bool, plan: _plan.Plan, back: bool):
    """``reduce(box, t0, t1, p, f, st)`` for ``_drive``: forward states, or with ``back`` the
    backward carry (``x`` is then ``grad_h``). ``p=None`` (the states alone) is for forward
    states only: the plain loops walk the forward recurrence."""
    if x.shape[2] == 1:
        a2, x2, r2 = _rows(a, x, r)

        def reduce(box, t0, t1, p, f, st):
            if p is None:
                assert not back, "the states alone are forward states"
                k.state_rows(a2, x2, st[:, 0], r2, box.o0, box.o1, t0, t1, down)
                return
            k.reduce_rows(
                a2, x2, p[:, 0], st[:, 0], None if f is None else f[:, 0], r2, box.o0, box.o1,
                t0, t1, down, plan.tile, back,
            )  # fmt: skip

        return reduce

    def reduce(box, t0, t1, p, f, st):
        if p is None:
            assert not back, "the states alone are forward states"
            k.scan_cols(a, x, None, st, r, box.o0, box.o1, box.i0, box.i1, t0, t1, down)
            return
        k.reduce_cols(a, x, p, st, f, r, box.o0, box.o1, box.i0, box.i1, t0, t1, down, back)

    return reduce


class CPU(base.Backend):
    """The Numba kernels on NumPy arrays."""

    name = "cpu"
    xp = np

    def storage(self, dtype):
        return _dtypes.accumulator(dtype)  # 16-bit inputs are widened to float32

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def decays(self, a, shape, axis, dtype):
        return _layout.readonly(_layout.view3(a, shape, axis, dtype))

    def operand(self, arr, shape, axis, dtype):
        return _layout.readonly(_layout.contiguous3(arr, shape, axis, dtype))

    def initial(self, h0, shape, axis, dtype):
        """A fresh ``(O, I)`` array (``_lane_states``), which the kernels run in place (or
        ``None``)."""
        if h0 is None:
            return None
        state = _layout.initial_state(h0, shape, axis, dtype)
        return _lane_states(state.shape, dtype, state)

    def flags(self, resets, shape, axis):
        if resets is None:
            return None
        return _layout.readonly(_layout.view3(resets, shape, axis, resets.dtype))

    def scan(self, a, x, h, h0, reverse: bool, method: str, resets=None) -> None:
        s = _start(h0, x)
        k = _kernels()
        plan = _plan.make_plan(
            *x.shape, down=reverse, method=method, itemsize=x.itemsize, real=_real(x)
        )
        if x.shape[2] == 1:
            a2, x2, h2, r2 = _rows(a, x, h, resets)

            def walk(box, t0, t1, st):
                k.scan_rows(
                    a2, x2, h2, st[:, 0], r2, box.o0, box.o1, t0, t1, reverse, plan.blocked,
                    plan.tile,
                )  # fmt: skip
        else:

            def walk(box, t0, t1, st):
                k.scan_cols(a, x, h, st, resets, box.o0, box.o1, box.i0, box.i1, t0, t1, reverse)

        reduce = _reducer(k, a, x, resets, reverse, plan, back=False)
        _drive(plan, x.shape, s, walk, reduce, resets)

    def final_state(self, a, x, h0, reverse: bool, method: str, resets=None) -> np.ndarray:
        s = _start(h0, x)
        k = _kernels()
        plan = _plan.make_plan(
            *x.shape, down=reverse, method=method, op="final_state", itemsize=x.itemsize,
            real=_real(x),
        )  # fmt: skip
        reduce = _reducer(k, a, x, resets, reverse, plan, back=False)
        _drive(plan, x.shape, s, None, reduce, resets)
        return s

    def backward(self, a, h, gh, h0, gx, ga, reverse, method, want_h0, resets=None):
        hb = _start(h0, h)
        c = _lane_states(hb.shape, hb.dtype)
        k = _kernels()
        down = not reverse  # the backward pass walks against the forward scan
        plan = _plan.make_plan(
            *h.shape, down=down, method=method, op="backward", itemsize=h.itemsize,
            real=_real(h),
        )  # fmt: skip
        if h.shape[2] == 1:
            a2, h2, gh2, gx2, ga2, r2 = _rows(a, h, gh, gx, ga, resets)
            hb1 = hb[:, 0]

            def walk(box, t0, t1, st):
                k.backward_rows(
                    a2, h2, gh2, hb1, gx2, ga2, st[:, 0], r2, box.o0, box.o1, t0, t1, down,
                    plan.blocked, plan.tile,
                )  # fmt: skip
        else:

            def walk(box, t0, t1, st):
                k.backward_cols(
                    a, h, gh, hb, gx, ga, st, resets, box.o0, box.o1, box.i0, box.i1, t0, t1, down
                )

        reduce = _reducer(k, a, gh, resets, down, plan, back=True)
        _drive(plan, h.shape, c, walk, reduce, resets)
        return c if want_h0 else None

    def summary(self, a, x, reverse: bool, method: str, resets=None, back=False):
        """One pass over ``a``, ``x`` and ``resets``, lanes split over threads."""
        O, T, I = x.shape
        wide = np.promote_types(x.dtype, np.float64)
        m, e = np.empty((O, I), wide), np.empty((O, I), np.int64)
        s = np.zeros((O, I), x.dtype)
        f = None if resets is None else np.zeros((O, I), bool)
        down = reverse != back  # the backward carry walks against the forward scan
        # Lanes only: the runs that ``linscan.dask`` summarizes are its chunks, which run in
        # parallel already. The chained blocks as ``method='parallel'`` runs them (``plan``).
        plan = _plan.make_plan(O, T, I, down=down, method="sequential", op="final_state")
        blocked = I == 1 and (method == "parallel" or (method == "auto" and not down))
        k = _kernels()
        if I == 1:
            a2, x2, m2, e2, s2, f2, r2 = _rows(a, x, m, e, s, f, resets)

            def task(box):
                k.summarize_rows(a2, x2, m2, e2, s2, f2, r2, box.o0, box.o1, down, back, blocked)
        else:

            def task(box):
                k.summarize_cols(a, x, m, e, s, f, resets, box.o0, box.o1, box.i0, box.i1, down,
                                 back)  # fmt: skip

        pool.run([partial(task, box) for box in plan.boxes])
        return _extended.Summary(m, e, s, f)


backend = CPU()
