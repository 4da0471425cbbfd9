"""The CPU backend: runs a plan from ``_plan`` with the Numba kernels on the canonical layout.

The kernels are serial functions that release the GIL; parallelism comes from a small thread
pool owned by this module, so there is no Numba threading layer to configure, and calls from
several user threads at once are safe (their tasks share the pool). A call ends (returns, or
raises when interrupted) only once all of its tasks have; a forked child makes a pool of its
own; once the interpreter is shutting down (atexit handlers) the tasks run on the calling
thread.

Contract shared with every backend (arrays are ``(O, T, I)`` of one dtype; ``I == 1`` is
served by the row kernels; ``h0`` is an ``(O, I)`` array or ``None`` for zeros):

* ``storage(dtype)``: the dtype the arrays below are given in for a call of ``dtype``.
* ``empty(shape, dtype)``; ``decays(a, shape, axis, dtype)``, ``operand(arr, ...)`` and
  ``initial(h0, ...)``: an input in the form the kernels take (``a`` keeps its strides,
  other inputs C-contiguous, ``h0`` as ``(O, I)``).
* ``flags(resets, shape, axis)``: the resets as an ``(O, T, I)`` boolean view, or ``None``.
* ``scan(a, x, h, h0, reverse, method, resets)``: writes ``h``.
* ``final_state(a, x, h0, reverse, method, resets)``: returns the final state ``(O, I)``.
* ``backward(a, h, gh, h0, gx, ga, reverse, method, want_h0, resets)``: writes ``gx``,
  ``ga``; returns the gradient for ``h0`` (``None`` unless ``want_h0``).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from functools import partial

import numpy as np

from . import _affine, _dtypes, _layout, _plan

_pool = None
_pool_workers = 0
_pool_lock = threading.Lock()


xp = np  # the array module of this backend
storage = _dtypes.accumulator  # 16-bit inputs are widened to float32 before the kernels


def empty(shape, dtype):
    return np.empty(shape, dtype)


def _readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view, so that every input reaches the kernels with the same writeability
    (Numba compiles one version per combination of flags)."""
    view = arr.view()
    view.flags.writeable = False
    return view


def decays(a, shape, axis, dtype):
    return _readonly(_layout.view3(a, shape, axis, dtype))


def operand(arr, shape, axis, dtype):
    return _readonly(_layout.contiguous3(arr, shape, axis, dtype))


def flags(resets, shape, axis):
    """The resets as an ``(O, T, I)`` view read through its own strides, or ``None``."""
    return None if resets is None else _readonly(_layout.view3(resets, shape, axis, resets.dtype))


def initial(h0, shape, axis, dtype):
    """A fresh ``(O, I)`` array, which the kernels below run in place (or ``None``)."""
    return None if h0 is None else _layout.initial_state(h0, shape, axis, dtype)


def _start(h0, x) -> np.ndarray:
    return np.zeros((x.shape[0], x.shape[2]), x.dtype) if h0 is None else h0


def _kernels():
    from . import _cpu_kernels  # compiles lazily, on each kernel's first call

    return _cpu_kernels


def _get_pool(workers: int):
    """The shared pool, grown (never shrunk) to at least ``workers`` threads."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool_workers < workers:
            # A smaller old pool is left alone: another call may still be submitting to it.
            _pool = concurrent.futures.ThreadPoolExecutor(workers, "linscan")
            _pool_workers = workers
        return _pool


def _forget_pool_in_child() -> None:
    """After ``fork``: the child inherits the pool without its threads (a task submitted to it
    would never run), and the lock as it was, perhaps held by a parent thread that does not
    exist here. Start afresh."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)


class _Call:
    """One call's tasks on the shared pool. Once ``cancelled`` is set none of them starts and
    the task loops in ``_drive`` stop at their next piece; it is per call because calls from
    several user threads share the pool, and one being interrupted must not stop another."""

    def __init__(self):
        self.cancelled = False
        self._running = 0
        self._idle = None  # made by the first guard: most calls run on one thread alone

    def guard(self, task):
        """``task`` for the pool: skipped once the call is cancelled, else counted while it
        runs (``cancel`` waits on the count, not on futures: a task submitted by a ``submit``
        that an interrupt cut short has no future here, but it runs through this guard).
        Called on the calling thread, before the task is submitted."""
        if self._idle is None:
            self._idle = threading.Condition(threading.Lock())

        def guarded():
            with self._idle:
                if self.cancelled:
                    return
                self._running += 1
            try:
                task()
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        return guarded

    def cancel(self, futures) -> None:
        """Start no more tasks and return once the running ones have ended."""
        if self._idle is None:  # nothing was submitted
            self.cancelled = True
            return
        while True:
            try:
                with self._idle:
                    self.cancelled = True
                for future in futures:
                    future.cancel()  # unstarted tasks leave the shared queue now
                with self._idle:
                    while self._running:
                        self._idle.wait()
                return
            except BaseException:
                # A second Ctrl-C (or whatever a signal handler raises) while waiting: workers
                # still write the caller's arrays, so keep waiting; the caller re-raises the
                # first exception.
                pass


def _run(tasks, call: _Call | None = None) -> None:
    """Run zero-argument callables, the first on this thread; return when all have ended.

    If this thread fails or is interrupted (KeyboardInterrupt) meanwhile, the tasks not yet
    started never start and the exception is re-raised once the running ones have ended:
    nothing writes into the caller's arrays after the call is over. ``call`` is the ``_Call``
    whose ``cancelled`` the tasks check between pieces (a fresh one if not given)."""
    if len(tasks) == 1:
        tasks[0]()
        return
    call = _Call() if call is None else call
    futures, here = [], [tasks[0]]
    try:
        pool = _get_pool(len(tasks) - 1)
        for k, task in enumerate(tasks[1:], 1):
            try:
                futures.append(pool.submit(call.guard(task)))
            except RuntimeError:
                # The executor takes no new work once the interpreter has begun to shut down
                # (a call from an atexit handler): run the rest on this thread.
                here.extend(tasks[k:])
                break
        for task in here:
            task()
        concurrent.futures.wait(futures)
    except BaseException:
        call.cancel(futures)
        raise
    for future in futures:
        future.result()  # re-raises a worker's exception


def _drive(plan: _plan.Plan, shape: tuple, state: np.ndarray, walk, reduce, resets) -> None:
    """Run ``plan``.

    ``walk(box, t0, t1, st)`` processes lanes ``box`` over ``[t0, t1)`` starting from the
    states ``st`` (an ``(O, I)`` array, updated in place to the leaving states).
    ``reduce(box, t0, t1, p, f, st)`` does the same without writing results, and stores the
    decay products in ``p`` and (with ``resets``) whether a lane met a reset in ``f``. A pass
    without results passes ``walk=None``.
    """
    O, T, I = shape
    call = _Call()
    if not plan.split:
        if walk is None:
            p = np.empty_like(state)
            f = np.zeros(state.shape, bool) if resets is not None else None
            walk = lambda box, t0, t1, st: reduce(box, t0, t1, p, f, st)  # noqa: E731
        _run([partial(walk, box, 0, T, state) for box in plan.boxes], call)
        return
    everything = _plan.Box(0, O, 0, I)
    flat = [piece for task in plan.pieces for piece in task]
    # Products and partial states in float64 (complex128): see "Accuracy" in _cpu_kernels.
    prods = np.empty((len(flat),) + state.shape, np.promote_types(state.dtype, np.float64))
    parts = np.zeros_like(prods)
    flags = np.zeros(prods.shape, bool) if resets is not None else None
    tasks, first = [], 0
    for task in plan.pieces:
        ids = range(first, first + len(task))
        first += len(task)

        def reduce_task(ids=ids):
            for g in ids:
                if call.cancelled:
                    return
                f = None if flags is None else flags[g]
                reduce(everything, flat[g].t0, flat[g].t1, prods[g], f, parts[g])

        tasks.append(reduce_task)
    _run(tasks, call)
    starts = _segment_starts(flat, prods, parts, flags, state)
    if starts is None:
        # A piece's product cannot stand for its steps: walk the pieces one after the other
        # from their true entering states.
        if walk is None:
            scratch = np.empty_like(prods[0])
            marks = None if flags is None else np.zeros(state.shape, bool)
            for piece in flat:
                reduce(everything, piece.t0, piece.t1, scratch, marks, state)
        else:
            for t0, t1 in plan.segments:
                walk(everything, t0, t1, state)
        return
    if walk is not None:  # a pass without results has reduced every segment already
        _run(
            [
                partial(walk, everything, t0, t1, starts[k])
                for k, (t0, t1) in enumerate(plan.segments)
            ],
            call,
        )
    state[...] = starts[-1]


def _segment_starts(flat, prods, parts, flags, state):
    """The state entering each segment, and the state leaving the last, composed from the
    pieces' products and partial states in walk order (a piece with a reset in a lane ignores
    the state entering it there); ``None`` where a piece's map cannot stand for its steps
    (``_affine.unsafe``: an infinite decay, an overflow, or an underflow meeting an infinite
    state)."""
    starts, carry = [state.copy()], state.copy()
    for g, piece in enumerate(flat):
        resets = False if flags is None else flags[g]
        carry, exact = _affine.apply(_affine.Map(prods[g], parts[g], resets), carry)
        if not exact.all():
            return None
        if g + 1 == len(flat) or flat[g + 1].segment != piece.segment:
            with np.errstate(over="ignore"):  # an overflow is inf, as in the loop
                starts.append(carry.astype(state.dtype))  # rounded once per segment
    return starts


def decay_product(a, axis, dtype):
    """The product over ``axis`` of the decays ``a`` (in ``dtype``) as ``(mantissa,
    exponent)``: float64 (complex128) mantissas of magnitude in [0.5, 1) and int64 exponents,
    so that it neither underflows nor overflows (``linscan.dask`` composes chunks with it)."""
    a3 = decays(a, a.shape, axis, dtype)
    m = np.empty((a3.shape[0], a3.shape[2]), np.promote_types(dtype, np.float64))
    e = np.empty(m.shape, np.int64)
    _kernels().extended_product(a3, m, e)
    state = _layout.state_shape(a.shape, axis)
    return m.reshape(state), e.reshape(state)


def _rows(*arrays):
    """2-D ``(O, T)`` (or 1-D ``(O,)``) views of canonical arrays with ``I == 1`` (``None``
    stays ``None``)."""
    return [None if arr is None else arr[..., 0] for arr in arrays]


def _reducer(k, a, x, r, down: bool, plan: _plan.Plan, back: bool):
    """``reduce(box, t0, t1, p, f, st)`` for ``_drive``: forward states, or with ``back`` the
    backward carry (``x`` is then ``grad_h``)."""
    if x.shape[2] == 1:
        a2, x2, r2 = _rows(a, x, r)

        def reduce(box, t0, t1, p, f, st):
            k.reduce_rows(
                a2, x2, p[:, 0], st[:, 0], None if f is None else f[:, 0], r2, box.o0, box.o1,
                t0, t1, down, plan.tile, back,
            )  # fmt: skip

        return reduce

    def reduce(box, t0, t1, p, f, st):
        k.reduce_cols(a, x, p, st, f, r, box.o0, box.o1, box.i0, box.i1, t0, t1, down, back)

    return reduce


def scan(a, x, h, h0, reverse: bool, method: str, resets=None) -> None:
    s = _start(h0, x)
    k = _kernels()
    plan = _plan.make_plan(*x.shape, down=reverse, method=method)
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


def final_state(a, x, h0, reverse: bool, method: str, resets=None) -> np.ndarray:
    s = _start(h0, x)
    k = _kernels()
    plan = _plan.make_plan(*x.shape, down=reverse, method=method, writes=False)
    reduce = _reducer(k, a, x, resets, reverse, plan, back=False)
    _drive(plan, x.shape, s, None, reduce, resets)
    return s


def backward(a, h, gh, h0, gx, ga, reverse: bool, method: str, want_h0: bool, resets=None):
    hb = _start(h0, h)
    c = np.zeros_like(hb)
    k = _kernels()
    down = not reverse  # the backward pass walks against the forward scan
    plan = _plan.make_plan(*h.shape, down=down, method=method)
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
