"""IIR filters on the CPU: cascades of transposed-direct-form-II stages, many lanes at once
(``linscan.signal``).

A stage of order N turns its input ``u`` into ``y = b[0] u + z[0]`` and updates its delays
``z[j] = b[j+1] u - a[j+1] y + z[j+1]`` (``z[N] = 0``); a cascade feeds each stage's output to
the next (second-order sections: N = 2; one transfer function: one stage). Each lane is a
latency-bound chain of dependent multiply-adds, so the kernel runs many lanes in lockstep:
it copies a tile of ``TILE`` steps of ``C`` lanes into a small buffer, steps by steps, with
the lanes contiguous, runs every stage over the tile with the loop over lanes innermost, and
copies the outputs back. Lanes are given by their first element and a time stride, so the
same kernel takes rows, time-major channels, and the pieces of one long signal. For real
dtypes two parts run in vector registers (``vectors``): second-order stages, whose delays
stay in registers through the tile (Numba's loop, which LLVM vectorizes, stored them at
every step), and the copies of lanes that are runs of a signal, a square of a vector's lanes
at a time through a transpose (the loop moved one element at a time).

One long signal is cut into pieces that run as lanes (first-order stages and second-order
sections; higher orders walk whole lanes, ``_pieces``). A first pass runs every piece but the
last from zero delays and keeps only its final delays; the cascade is linear, so the delays
entering piece ``k + 1`` are ``F^L s_k + f_k`` (``F`` the cascade's state matrix, ``L`` the
piece's length, ``f_k`` piece ``k``'s final delays from zero), composed in float64 (``F^L``
by running the stages from unit delays, ``_Powers``, or zero once the filter has forgotten);
a second pass runs every piece from its true delays, rounded once, and writes the output.

Long runs of real dtypes through first-order stages or second-order sections (rows, and
one signal cut into a piece per thread) go in blocks instead (``block_kernel``): the same
composition inside each block of ``LANES`` consecutive pieces, whose outputs from zero
delays then take the response to their true entering delays (float64: up to about 5x the
loop's error on narrow-band sections; a transfer function of higher order lost up to 1e4x,
so it stays in lockstep). A thread then reads and writes one stretch of memory at a time,
where lanes that are pieces of a row were ``2 * LANES`` strided streams. On a Zen 4 (2
threads), one signal of 2^24 samples went from 2.2-2.6x scipy's speed to 4.3x in float64,
from 2.6-2.8x to 5.5-6.1x in float32 (``python -m linscan bench --signal``, two runs each).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import plan as _plan
from . import pool, vectors
from .cache import njit_cached

#: Bytes of one tile (``TILE`` steps of the lanes run in lockstep): it stays in L1 while
#: every stage runs over it.
TILE_BYTES = 8192
#: Lanes a kernel call runs in lockstep (a multiple of every vector width): enough
#: independent chains to hide the latency of a step.
LANES = 32
#: Bytes of a block's tile where runs of a signal go in blocks (``block_kernel``): ``LANES``
#: consecutive pieces of a block, each ``BLOCK_BYTES / (LANES * itemsize)`` steps, in L2.
BLOCK_BYTES = 1 << 18
#: Runs go in blocks from this many steps (shorter ones as lanes in lockstep).
MIN_BLOCKED = 1 << 14

_JIT = dict(nogil=True, fastmath={"contract"}, error_model="numpy", depends=(vectors,))
_U = np.uint64


# The stages of orders 1 and 2 (first-order filters and second-order sections) are written
# out with their coefficients in locals and each delay a row of its own: the generic loop
# over delays, whose coefficients the compiler reloads at every lane, ran 5 times slower.


@njit(inline="always")
def _first_order(buf, n, bk, ak, zk):
    b0, b1, a1 = bk[0], bk[1], ak[1]
    z0 = zk[0]
    C = buf.shape[1]
    for s in range(n):
        row = buf[s]
        for c in range(C):
            u = row[c]
            out = b0 * u + z0[c]
            z0[c] = b1 * u - a1 * out
            row[c] = out


@njit(inline="always")
def _second_order(buf, n, bk, ak, zk, first_lane=0):
    b0, b1, b2, a1, a2 = bk[0], bk[1], bk[2], ak[1], ak[2]
    z0, z1 = zk[0], zk[1]
    C = buf.shape[1]
    for s in range(n):
        row = buf[s]
        for c in range(first_lane, C):
            u = row[c]
            out = b0 * u + z0[c]
            z0[c] = b1 * u - a1 * out + z1[c]
            z1[c] = b2 * u - a2 * out
            row[c] = out


def _second_order_stage(buf, n, bk, ak, zk):
    """A second-order stage over the tile: in vector registers for real dtypes
    (``_second_order_vectors``), else the loop over lanes."""


@overload(_second_order_stage)
def _second_order_stage_impl(buf, n, bk, ak, zk):
    if buf.dtype in (types.float32, types.float64):
        return lambda buf, n, bk, ak, zk: _second_order_vectors(buf, n, bk, ak, zk)
    return lambda buf, n, bk, ak, zk: _second_order(buf, n, bk, ak, zk)


@njit(inline="always")
def _second_order_vectors(buf, n, bk, ak, zk):
    """``_second_order`` with the lanes that fill whole vectors run by
    ``vectors.second_order_lanes``, four vectors at a time (their delays held in registers
    through the tile); the lanes left over by the loop."""
    C = buf.shape[1]
    width = vectors.lanes(buf.itemsize)
    whole = C // width
    flat = buf.reshape(buf.size)
    coefficients = (bk[0], bk[1], bk[2], ak[1], ak[2])
    z0, z1 = zk[0], zk[1]
    v = 0
    while v + 4 <= whole:
        vectors.second_order_lanes(flat, n, C, v * width, z0, z1, coefficients, 4)
        v += 4
    left = whole - v
    if left == 3:
        vectors.second_order_lanes(flat, n, C, v * width, z0, z1, coefficients, 3)
    elif left == 2:
        vectors.second_order_lanes(flat, n, C, v * width, z0, z1, coefficients, 2)
    elif left == 1:
        vectors.second_order_lanes(flat, n, C, v * width, z0, z1, coefficients, 1)
    if whole * width < C:
        _second_order(buf, n, bk, ak, zk, whole * width)


@njit(inline="always")
def _any_order(buf, n, bk, ak, zk, N):
    C = buf.shape[1]
    for s in range(n):
        row = buf[s]
        for c in range(C):
            u = row[c]
            out = bk[0] * u + zk[0, c]
            for j in range(N - 1):
                zk[j, c] = bk[j + 1] * u - ak[j + 1] * out + zk[j + 1, c]
            zk[N - 1, c] = bk[N] * u - ak[N] * out
            row[c] = out


@njit(inline="always")
def _into_tile(signal, i, buf, s, c):
    buf[s, c] = signal[i]


@njit(inline="always")
def _out_of_tile(signal, i, buf, s, c):
    signal[i] = buf[s, c]


def _lanes(signal, first, s0, n, step, buf, into):
    """Copy steps ``[s0, s0 + n)`` of the lanes between the signal (lane ``c`` at
    ``signal[first[c] + s * step]``) and the tile ``buf`` (``(tile, lanes)``), into the tile
    with ``into`` (a literal: the copy out of the tile is not compiled for a read-only
    input). For real dtypes and lanes that are runs of the signal (``step`` 1), squares of a
    vector's lanes go by ``vectors.lane_square``, the rest one element at a time (offsets
    uint64: a negative stride wraps around and back; signed indices cost a wraparound check
    per element, which made the copies twice as slow)."""


@overload(_lanes)
def _lanes_impl(signal, first, s0, n, step, buf, into):
    if not isinstance(into, types.BooleanLiteral):
        return None
    transfer = _into_tile if into.literal_value else _out_of_tile
    direction = into.literal_value
    real = buf.dtype in (types.float32, types.float64)

    def copy(signal, first, s0, n, step, buf, into):
        C = buf.shape[1]
        lanes = 0
        if real:  # a constant: complex tiles never compile the vector copies
            if step == 1:
                width = vectors.lanes(buf.itemsize)
                lanes = C // width * width
                steps = n // width * width
                flat = buf.reshape(buf.size)
                for c0 in range(0, lanes, width):
                    for s in range(0, steps, width):
                        vectors.lane_square(signal, first, c0, s0 + s, flat, C, s, direction)
                    for c in range(c0, c0 + width):
                        for s in range(steps, n):
                            transfer(signal, first[c] + s0 + s, buf, s, c)
        for c in range(lanes, C):
            at = _U(first[c]) + _U(s0) * step
            for s in range(n):
                transfer(signal, at + _U(s) * step, buf, s, c)

    return copy


@functools.cache
def kernel(order: int):
    """The cascade kernel for stages of ``order`` (a compile-time constant). Its closure
    holds ``order`` only: Numba's disk cache keys a closure by the pickle of what it holds,
    and a function object there pickled differently in every process (a recompile each
    time)."""
    N = order

    @njit_cached(**_JIT)
    def cascade(x, y, first, stride, t0, t1, b, a, z, write):
        """Lanes ``c`` start at ``x[first[c]]`` and step by ``stride``: run steps ``[t0, t1)``
        of every lane through the stages ``b``, ``a`` (``(K, N + 1)``, ``a[:, 0]`` unused)
        from the delays ``z`` (``(K, N, C)``, updated in place); with ``write`` store the
        outputs in ``y`` at the same places."""
        C = first.size
        tile = max(1, TILE_BYTES // (C * z.itemsize))
        buf = np.empty((tile, C), z.dtype)
        # Consecutive lanes (time-major channels) are copied a step at a time, each a
        # contiguous run; the pieces of a row a lane at a time (``_lanes``).
        consecutive = first[C - 1] - first[0] == C - 1
        # Offsets are uint64 (see ``_lanes``).
        step = _U(stride)
        for s0 in range(t0, t1, tile):
            n = min(tile, t1 - s0)
            if consecutive:
                for s in range(n):
                    at = _U(first[0]) + _U(s0 + s) * step
                    for c in range(C):
                        buf[s, c] = x[at + _U(c)]
            else:
                _lanes(x, first, s0, n, step, buf, True)
            _stages(buf, n, b, a, z, N)
            if write:
                if consecutive:
                    for s in range(n):
                        at = _U(first[0]) + _U(s0 + s) * step
                        for c in range(C):
                            y[at + _U(c)] = buf[s, c]
                else:
                    _lanes(y, first, s0, n, step, buf, False)

    return cascade


@njit(inline="always")
def _stages(buf, n, b, a, z, N):
    """Every stage over the tile's ``n`` steps, from (and updating) the delays ``z`` (``(K,
    N, C)``)."""
    for k in range(b.shape[0]):
        if N == 1:  # (N is a constant: the other branches are never compiled)
            _first_order(buf, n, b[k], a[k], z[k])
        elif N == 2:
            _second_order_stage(buf, n, b[k], a[k], z[k])
        else:
            _any_order(buf, n, b[k], a[k], z[k], N)


@njit(inline="always")
def _largest(values, count):
    """The largest modulus of ``values[:count]`` (what a NaN gives is left open)."""
    peak = vectors.largest_modulus(values, count)
    for i in range(count - count % vectors.lanes(values.itemsize), count):
        peak = max(peak, abs(values[i]))
    return peak


@njit(inline="always")
def _add_responses(buf, n, entering, response, D):
    """``buf[s, c] += response[s] @ entering[:, c]`` over the tile's ``n`` steps, in vectors
    (``vectors.lane_responses``; the tile's lanes fill whole vectors)."""
    C = buf.shape[1]
    width = vectors.lanes(buf.itemsize)
    flat, lanes_in = buf.reshape(buf.size), entering.reshape(entering.size)
    rows = response.reshape(response.size)
    c0 = 0
    while c0 + 4 * width <= C:
        vectors.lane_responses(flat, n, C, c0, lanes_in, rows, D, 4)
        c0 += 4 * width
    while c0 < C:
        vectors.lane_responses(flat, n, C, c0, lanes_in, rows, D, 1)
        c0 += width


@njit(inline="always")
def _out_with_responses(y, first, m, buf, entering, response, D):
    """``_add_responses`` and the copy of the tile out to the runs ``first`` (``_lanes``)
    in one pass, a square of a vector's lanes at a time, each square's responses added just
    before it leaves (in L1; ``m`` a multiple of the vector's lanes, as ``C`` is): two
    passes over the tile, which lives in L2, cost float32 blocks 13% more time (one thread,
    Zen 4)."""
    C = buf.shape[1]
    width = vectors.lanes(buf.itemsize)
    flat, lanes_in = buf.reshape(buf.size), entering.reshape(entering.size)
    rows = response.reshape(response.size)
    for c0 in range(0, C, width):
        for s in range(0, m, width):
            vectors.lane_responses(flat[s * C :], width, C, c0, lanes_in, rows[s * D :], D, 1)
            vectors.lane_square(y, first, c0, s, flat, C, s, False)


@functools.cache
def block_kernel(order: int):
    """The kernel that filters runs of a signal (stride 1) in blocks, for stages of
    ``order``: the rows of a signal and the pieces of one long one, which as lanes in
    lockstep were ``LANES`` strided streams in and out per thread, a pattern the hardware
    prefetchers do not follow out of cache (3-6x a copy). A block is ``LANES`` consecutive
    pieces of ``m`` steps, read as one stretch of memory and run as lanes from zero delays;
    the delays entering each piece follow from the one before it, ``s <- F^m s + f`` (``f``
    the piece's final delays from zero, in float64), and the outputs take the response to
    them, ``h F^t s`` (the cascade is linear), before the block is written back."""
    N = order

    @njit(inline="always")
    def block(x, y, first, m, buf, z, b, a, s, power, response, entering, after, peak, watch):
        """One block of pieces of ``m`` steps from ``first`` (``LANES`` starts), with
        ``watch`` ``peak[0]`` raised to its largest input modulus: False, leaving ``y``
        unwritten, where the delays after it are not finite."""
        C, D = first.size, s.size
        _lanes(x, first, 0, m, _U(1), buf, True)
        if watch:
            peak[0] = max(peak[0], _largest(buf.reshape(buf.size), m * C))
        z[...] = 0
        _stages(buf, m, b, a, z, N)
        finals = z.reshape(D, C)
        for c in range(C):
            for i in range(D):
                entering[i, c] = s[i]
                total = np.float64(finals[i, c])
                for j in range(D):
                    total += power[i, j] * s[j]
                after[i] = total
            s[:] = after
        for i in range(D):
            if not np.isfinite(s[i]):
                return False
        if m % vectors.lanes(buf.itemsize) == 0:
            _out_with_responses(y, first, m, buf, entering, response, D)
        else:  # the short pieces of a run's last blocks
            _add_responses(buf, m, entering, response, D)
            _lanes(y, first, 0, m, _U(1), buf, False)
        return True

    @njit_cached(**_JIT)
    def runs(x, y, starts, lengths, b, a, states, powers, response, done, peaks, watch):
        """Filter the runs ``x[starts[r] : starts[r] + lengths[r]]`` into ``y`` from the
        delays ``states[r]`` (float64, ``K * N``, left holding the final ones): blocks of
        pieces of ``n = 2^L`` steps (``powers[k]`` = ``F^(2^k)`` for ``k <= L``,
        ``response[t, j]``: the cascade's output ``t`` steps on from unit delay ``j``,
        float64), then one block each of ever shorter pieces, the last steps (fewer than
        ``LANES``) one at a time. ``done[r]``: False where the delays stopped being finite,
        the run left part undone (an inf or NaN spreads differently here than in the loop:
        the caller runs it again in one go); with ``watch``, ``peaks[r]``: the run's largest
        input modulus (what a NaN gives is left open: the delays catch it)."""
        C = LANES
        K = b.shape[0]
        D = K * N
        top = powers.shape[0] - 1
        buf = np.empty((1 << top, C), y.dtype)
        z = np.empty((K, N, C), y.dtype)
        entering = np.empty((D, C))
        after = np.empty(D)
        first = np.empty(C, np.int64)
        single = np.empty((C, 1), y.dtype)
        z1 = np.empty((K, N, 1), y.dtype)
        peak = np.zeros(1)
        for r in range(starts.size):
            s = states[r]
            at, left = starts[r], lengths[r]
            ok = True
            peak[0] = 0
            for level in range(top, -1, -1):
                m = 1 << level
                while ok and left >= C * m:
                    for c in range(C):
                        first[c] = at + c * m
                    ok = block(x, y, first, m, buf, z, b, a, s, powers[level], response,
                               entering, after, peak, watch)  # fmt: skip
                    at += C * m
                    left -= C * m
            done[r] = ok
            if ok and left:
                for t in range(left):
                    single[t, 0] = x[at + t]
                    peak[0] = max(peak[0], abs(single[t, 0]))
                for i in range(D):
                    z1.ravel()[i] = s[i]
                _stages(single, left, b, a, z1, N)
                for t in range(left):
                    y[at + t] = single[t, 0]
                for i in range(D):
                    s[i] = z1.ravel()[i]
            peaks[r] = peak[0]

    return runs


class _Powers:
    """Powers of the cascade's state matrix ``F`` (its delays after one step of zero input as a
    function of the delays before), by running the stages themselves from each unit delay
    over zero input: column ``j`` of ``F^n`` holds the delays ``n`` steps after unit delay
    ``j`` (float64, or complex128). Products of powers err by about eps times the product of
    their factors' norms: a transfer function's companion matrix with poles near 1 has
    powers of 1e19 whose true products are small, and repeated squaring
    (``numpy.linalg.matrix_power``) gave the pieces of 2^16 samples entering delays of 1e200
    (a 4th-order Butterworth low-pass at 0.002 of Nyquist) and time-major second-order
    sections errors of 1e-8 of the signal, 1000 times the loop's."""

    def __init__(self, b, a):
        K, N = b.shape[0], b.shape[1] - 1
        self.size = K * N
        wide = np.result_type(b, a, np.float64)
        self.b, self.a = b.astype(wide), a.astype(wide)
        self.delays = np.zeros((K, N, self.size), wide)
        self.delays.reshape(self.size, self.size)[...] = np.eye(self.size)
        self.steps = 0
        self.largest = 1.0  # the largest max row sum of the powers returned so far
        self.cascade = kernel(N)
        self._zero, self._first = np.zeros(1, wide), np.zeros(self.size, np.int64)

    def __call__(self, n: int) -> np.ndarray:
        """``F^n`` (``n`` no smaller than at the call before)."""
        if n > self.steps:  # every lane reads the one zero (stride 0); nothing is written
            self.cascade(self._zero, self._zero, self._first, 0, self.steps, n, self.b, self.a,
                         self.delays, False)  # fmt: skip
            self.steps = n
        power = self.delays.reshape(self.size, self.size).copy()
        with np.errstate(all="ignore"):
            self.largest = max(self.largest, np.abs(power).sum(axis=1).max())
        return power


def run(x, y, first, stride, steps, b, a, z):
    """Filter every lane (``first``: each lane's first element in the flat arrays ``x`` and
    ``y``, ``stride``: between steps) over ``steps`` steps from the delays ``z`` (``(K, N,
    lanes)``, left holding the final delays). Lanes are spread over threads in groups of
    ``LANES``; with fewer lanes than that and a long signal, each lane is cut into pieces."""
    cascade = kernel(b.shape[1] - 1)
    lanes = first.size
    threads = _plan.num_threads()
    if _blocked(x.dtype, b.shape[1] - 1, stride, steps):
        _in_blocks(cascade, x, y, first, steps, b, a, z, threads)
        return
    pieces = _pieces(lanes, steps, threads, b.shape[1] - 1)
    if pieces == 1:
        busy = threads if lanes * steps >= _plan._setting("min_threaded", _plan.MIN_THREADED) else 1
        _lockstep(cascade, x, y, first, stride, steps, b, a, z, busy, write=True)
        return
    _split_run(cascade, x, y, first, stride, steps, b, a, z, pieces, threads)


def _pieces(lanes: int, steps: int, threads: int, order: int) -> int:
    """Pieces per lane: enough lanes in lockstep for every thread, each piece long enough
    (``plan.MIN_SEGMENT`` steps) that the second pass pays. None for stages of order 3 or
    more, whose companion matrices are far from normal: the delays entering a piece, composed
    from the pieces before with exact powers, made the output err up to 17 times as much as
    the loop (a 6th-order Butterworth at 0.005 of Nyquist, 2^16 samples, against a
    long-double loop, where scipy's errs 1.3e-5 of the signal), and with powers by repeated
    squaring 1e200 times the signal. Whole lanes round as the loop does."""
    if order > 2:
        return 1
    if lanes >= LANES or lanes * steps < _plan._setting("min_threaded", _plan.MIN_THREADED):
        return 1
    want = -(-LANES * threads // lanes)
    return max(1, min(want, steps // _plan._setting("min_segment", _plan.MIN_SEGMENT)))


def _even_groups(groups, parts: int):
    parts = max(1, min(parts, len(groups)))
    return [groups[k::parts] for k in range(parts)]


def _horizon(powers, dtype, limit: int):
    """The fewest steps ``M`` (a power of two below ``limit``) after which the delays are
    forgotten to within rounding, ``max row sum |F^M| <= eps / 8`` of ``dtype`` (``F^M`` from
    ``powers``, a ``_Powers``), and that norm; ``(None, None)`` if there are none (poles on or
    near the unit circle, or an unstable filter)."""
    target = _forgettable(dtype)
    # The spectral radius bounds the horizon from below (transients only lengthen it): where
    # even that is not below ``limit``, running the powers to find out would cost a piece.
    with np.errstate(all="ignore"):
        radius = np.abs(np.linalg.eigvals(powers(1))).max()
        if not radius < 1 or np.log(target) / np.log(radius) >= limit:
            return None, None
    steps = 1
    while steps < limit:
        with np.errstate(all="ignore"):
            norm = np.abs(powers(steps)).sum(axis=1).max()
        if norm <= target:
            return steps, float(norm)
        if not np.isfinite(norm):  # an unstable filter's powers overflow
            break
        steps *= 2
    return None, None


def _far_power(powers, body: int, memory, forgotten, dtype) -> np.ndarray:
    """``F^body`` (``powers``, a ``_Powers``), run exactly, or zeros where it is below
    rounding: with ``body = q M + r`` (``M`` the horizon, ``memory``), ``F^body = F^r
    (F^M)^q``, whose norm is at most the largest power seen times ``forgotten^q``. (Running
    ``body`` steps costs as much as a piece.)"""
    if memory is not None:
        with np.errstate(under="ignore"):
            bound = powers.largest * forgotten ** (body // memory)
        if bound <= _forgettable(dtype):
            return np.zeros((powers.size, powers.size), powers.delays.dtype)
    return powers(body)


@njit_cached(**_JIT)
def _peaks(x, first, stride, n, out):
    """``out[c]``: the largest modulus of lane ``c``'s ``n`` steps (inf for an inf or NaN)."""
    step = _U(stride)
    for c in range(first.size):
        at = _U(first[c])
        peak = 0.0
        for s in range(n):
            v = abs(x[at + _U(s) * step])
            if not v <= peak:  # larger, or NaN
                peak = v if v == v else np.inf
        out[c] = peak


def _groups(lanes: int) -> list:
    """``range(lanes)`` in slices of ``LANES``: the lanes one kernel call runs in lockstep."""
    return [slice(lo, min(lanes, lo + LANES)) for lo in range(0, lanes, LANES)]


def _peaks_of(x, starts, stride, n, threads):
    out = np.empty(starts.size)
    parts = _even_groups(_groups(starts.size), threads)

    def task(part):
        for g in part:
            _peaks(x, starts[g], stride, n, out[g])

    pool.run([functools.partial(task, part) for part in parts])
    return out


def _split_run(cascade, x, y, first, stride, steps, b, a, z, pieces, threads):
    lanes = first.size
    entered = _entering(cascade, x, y, first, stride, steps, b, a, z, pieces, threads, True)
    if entered is None:
        _whole(cascade, x, y, first, stride, steps, b, a, z, threads)
        return
    starts, body, entering, _ = entered
    with np.errstate(over="ignore", invalid="ignore"):
        delays = entering.astype(z.dtype)
    # Second pass: every piece from its true delays; the last pieces end in the lanes' final
    # delays.
    last = slice((pieces - 1) * lanes, pieces * lanes)
    body_delays, rest = delays[:, :, : last.start], steps - body * (pieces - 1)
    _lockstep(cascade, x, y, starts[: last.start], stride, body, b, a, body_delays, threads,
              write=True, more=(starts[last], rest, delays[:, :, last]))  # fmt: skip
    z[...] = delays[:, :, last]


def _entering(cascade, x, y, first, stride, steps, b, a, z, pieces, threads, check):
    """Each lane cut into ``pieces``, every one but the last ``body`` steps long (the last
    takes the rest): their starts (piece-major: piece ``p`` of lane ``l`` at ``p * lanes +
    l``), ``body``, the delays entering each (``(K, N, pieces * lanes)``, float64 or
    complex128) from a first pass over the pieces (``_first_pass``) and a composition, and
    what is left to check: ``None``, or with ``check`` false, ``(forgotten, peaks)`` of
    ``_first_pass``. ``None`` in place of all that where the delays are not all finite (an
    inf or NaN meets different products in pieces than in the loop)."""
    K, N = b.shape[0], b.shape[1] - 1
    lanes = first.size
    body = steps // pieces
    # Virtual lanes, piece-major: piece p of lane l starts at first[l] + p * body * stride.
    starts = (first[None, :] + (np.arange(pieces) * body * stride)[:, None]).ravel()
    wide = np.promote_types(z.dtype, np.float64)
    powers = _Powers(b, a)
    memory, forgotten = _horizon(powers, z.dtype, body)
    finals = np.zeros((K, N, (pieces - 1) * lanes), z.dtype)
    left = _first_pass(cascade, x, y, starts[: finals.shape[2]], stride, body, b, a,
                       (memory, forgotten), finals, threads, check)  # fmt: skip
    finals = finals.reshape(K * N, pieces - 1, lanes).astype(wide)
    entering = np.empty((K * N, pieces, lanes), wide)
    entering[:, 0] = z.reshape(K * N, lanes)
    step = None  # F^body, made where a piece enters with delays (two pieces from zero: never)
    with np.errstate(all="ignore"):  # what overflows or is not finite is caught just below
        for p in range(pieces - 1):
            entering[:, p + 1] = finals[:, p]
            if entering[:, p].any():
                if step is None:
                    step = _far_power(powers, body, memory, forgotten, z.dtype)
                entering[:, p + 1] += step @ entering[:, p]
    if not np.isfinite(entering).all():
        return None
    return starts, body, entering.reshape(K, N, pieces * lanes), left


def _blocked(dtype, order: int, stride: int, steps: int) -> bool:
    """Whether lanes go in blocks (``block_kernel``): runs of a real dtype, long enough,
    through stages of order 1 or 2. A transfer function of higher order stays in lockstep:
    its outputs, split into a run from zero delays and the response to the entering ones,
    lost up to 1e4 times the loop's accuracy in float64 (a companion matrix is far from
    normal: large terms that cancel)."""
    real = dtype in (np.float32, np.float64)
    long = steps >= _plan._setting("min_blocked", MIN_BLOCKED)
    return real and order <= 2 and stride == 1 and long


class _Tables:
    """The block form's tables for one cascade, in float64: pieces of up to ``2^L`` steps
    (``BLOCK_BYTES``, or the ``filter_block`` test knob), ``powers[k]`` = ``F^(2^k)`` for
    ``k <= L``, ``response[t, j]`` = the output ``t`` steps on from unit delay ``j``. Both
    come from running the stages themselves over zero input from each unit delay, in float64:
    products of matrix powers (doubling) erred up to 15% on a companion matrix and made
    narrow-band sections 600 times less accurate than the loop."""

    def __init__(self, b, a, itemsize: int):
        steps = _plan._setting("filter_block", BLOCK_BYTES // (LANES * itemsize))
        K, N = b.shape[0], b.shape[1] - 1
        D = K * N
        span = 1 << max(0, int(steps - 1).bit_length())
        b, a = b.astype(np.float64), a.astype(np.float64)
        delays = np.zeros((K, N, D))
        delays.reshape(D, D)[...] = np.eye(D)  # lane j starts from unit delay j
        zero, outputs = np.zeros(D * span), np.empty(D * span)
        first = np.arange(D, dtype=np.int64) * span
        cascade, powers, done = kernel(N), [], 0
        while done < span:
            upto = 2 * done if done else 1
            cascade(zero, outputs, first, 1, done, upto, b, a, delays, True)
            powers.append(delays.reshape(D, D).copy())  # column j: F^upto e_j
            done = upto
        self.powers = np.ascontiguousarray(powers)
        self.response = np.ascontiguousarray(outputs.reshape(D, span).T)


def _block_pieces(lanes: int, steps: int, threads: int) -> int:
    """Pieces per lane in the block form: enough that every thread gets as many runs (one
    signal on two threads: two halves; three rows: six pieces), none where the rows already
    spread over the threads within a quarter (a cut costs a first pass over each piece's
    last steps, as many as all of a short row's); each piece at least ``plan.MIN_SEGMENT``
    steps."""
    if lanes >= 4 * threads:
        return 1
    segment = _plan._setting("min_segment", _plan.MIN_SEGMENT)
    return max(1, min(threads // math.gcd(lanes, threads), steps // segment))


def _in_blocks(cascade, x, y, first, steps, b, a, z, threads):
    """The lanes (runs, ``_blocked``) in blocks, spread over the threads; each cut into
    pieces where that evens the threads' work (one signal on two threads: two halves).

    The pieces' entering delays come from ``_entering`` without its check of the steps its
    first pass leaves out, which would read every piece once more: the block form finds
    each piece's largest input as it runs it, and a piece whose predecessor fails the check
    runs again from the delays that predecessor ended with, as do the lane's pieces after
    it."""
    lanes = first.size
    if lanes * steps < _plan._setting("min_threaded", _plan.MIN_THREADED):
        threads = 1
    pieces = _block_pieces(lanes, steps, threads)
    K, N = b.shape[0], b.shape[1] - 1
    check = None
    if pieces > 1:
        entered = _entering(cascade, x, y, first, 1, steps, b, a, z, pieces, threads, False)
        if entered is None:
            _whole(cascade, x, y, first, 1, steps, b, a, z, threads)
            return
        starts, body, delays, check = entered
        lengths = np.full(starts.size, body)
        lengths[-lanes:] = steps - body * (pieces - 1)
    else:
        starts, lengths, delays = first, np.full(lanes, steps), z
    runs = block_kernel(N)
    tables = _Tables(b, a, y.itemsize)
    entering = np.ascontiguousarray(delays.reshape(K * N, -1).T, np.float64)
    states = entering.copy()
    done = np.ones(starts.size, np.bool_)
    peaks = np.zeros(starts.size)

    def task(part):  # a slice: what the kernel writes goes through views
        runs(x, y, starts[part], lengths[part], b, a, states[part], tables.powers,
             tables.response, done[part], peaks[part], check is not None)  # fmt: skip

    cuts = np.linspace(0, starts.size, min(threads, starts.size) + 1).astype(int)
    pool.run([functools.partial(task, slice(lo, hi)) for lo, hi in zip(cuts[:-1], cuts[1:])])
    if check is not None:
        forgotten, run = check
        for lane in range(lanes):
            again = False
            for j in range(lane + lanes, starts.size, lanes):
                before = j - lanes
                if not (done[before] and np.isfinite(states[before]).all()):
                    _whole(cascade, x, y, first, 1, steps, b, a, z, threads)
                    return
                again = (
                    again or not peaks[before] * forgotten <= _forgettable(y.dtype) * run[before]
                )
                if again:
                    entering[j] = states[before]
                    states[j] = entering[j]
                    part = slice(j, j + 1)
                    task(part)
    with np.errstate(over="ignore", invalid="ignore"):
        finals = states.T.reshape(K, N, -1).astype(z.dtype)
        starting = entering.T.reshape(K, N, -1).astype(z.dtype)
    for r in np.flatnonzero(~done):  # in one go from the delays it entered with
        d = np.ascontiguousarray(starting[:, :, r : r + 1])
        cascade(x, y, starts[r : r + 1], 1, 0, lengths[r], b, a, d, True)
        finals[:, :, r] = d[:, :, 0]
    z[...] = finals[:, :, -lanes:]


def _first_pass(cascade, x, y, starts, stride, body, b, a, horizon, finals, threads, check=True):
    """The final delays of the pieces ``starts`` (``body`` steps each) from zero delays.

    A stable filter forgets: the delays ``M`` steps before a piece's end reach its final
    delays scaled by ``F^M``, whose norm ``_horizon`` makes ``eps / 8`` (``horizon``: its
    ``(M, norm)``, or ``(None, None)``); only the last ``M`` steps are run (a few thousand
    of a piece of a hundred thousand or more). That is within
    rounding where the steps left out are no larger than those run: the states they leave
    are bounded by the same sum of the impulse response's moduli times their largest input.
    A piece whose left-out steps hold larger inputs (a loud start, an inf or a NaN) is run
    whole. Without ``check`` that is left to the caller, which gets ``(forgotten, peaks)``:
    ``F^M``'s norm and the largest modulus of each piece's last ``M`` steps (the block form
    finds the largest of the whole piece as it runs it; ``None`` where every piece was run
    whole: no horizon)."""
    memory, forgotten = horizon
    if memory is None:
        _lockstep(cascade, x, y, starts, stride, body, b, a, finals, threads, write=False)
        return None
    skip = (body - memory) * stride
    run = _peaks_of(x, starts + skip, stride, memory, threads)
    _lockstep(cascade, x, y, starts + skip, stride, memory, b, a, finals, threads, write=False)
    if not check:
        return forgotten, run
    left_out = _peaks_of(x, starts, stride, body - memory, threads)
    whole = np.flatnonzero(~(left_out * forgotten <= _forgettable(finals.dtype) * run))
    if whole.size:
        again = np.zeros(finals.shape[:2] + (whole.size,), finals.dtype)
        _lockstep(cascade, x, y, starts[whole], stride, body, b, a, again, threads,
                  write=False)  # fmt: skip
        finals[:, :, whole] = again
    return None


def _forgettable(dtype) -> float:
    """What a piece's left-out steps may leave in its final delays, relative to the largest
    input it runs: ``eps / 8`` of ``dtype``."""
    return float(np.finfo(dtype).eps) / 8


def _whole(cascade, x, y, first, stride, steps, b, a, z, threads):
    """Each lane through all of time in one go: where an inf or NaN would not meet the same
    products in pieces as in the loop."""
    _lockstep(cascade, x, y, first, stride, steps, b, a, z, threads, write=True)


def _lockstep(cascade, x, y, starts, stride, steps, b, a, delays, threads, write, more=None):
    """Run the lanes ``starts`` over ``steps`` steps in groups of ``LANES``, spread over the
    threads, from (and leaving) the delays ``delays`` (``(K, N, lanes)``); ``more``: another
    ``(starts, steps, delays)`` to run in the same tasks."""
    jobs = [(starts, steps, delays)] + ([more] if more is not None else [])
    parts = _even_groups([(job, g) for job in jobs for g in _groups(job[0].size)], threads)

    def task(part):
        for (first, n, d), g in part:
            sub = np.ascontiguousarray(d[:, :, g])
            cascade(x, y, first[g], stride, 0, n, b, a, sub, write)
            d[:, :, g] = sub

    pool.run([functools.partial(task, part) for part in parts])
