"""Numba kernels on the canonical layout (imported on first use: importing compiles nothing).

The canonical layout views every array as ``(O, T, I)``: ``O`` independent outer rows, ``T``
steps along the scanned axis, ``I`` channels that follow the time axis in memory. "Rows"
kernels handle ``I == 1`` (time contiguous, 2-D ``(O, T)`` views); "cols" kernels handle
``I > 1`` (time-major: each step is a contiguous vector of channels).

Every kernel works on a box of lanes over a time range ``[t0, t1)`` and walks it upwards or,
with ``down``, downwards. A kernel never reads outside its range except the neighbour ``h[t-1]``
(or ``h[t+1]``) that the backward pass needs. The running state lives in a small buffer
(``s``/``c``), never re-read from the output.

Conventions that the speed depends on (the measurements behind them:
``benchmarks/cpu-kernel-design-2026-11-26.md``):

* Indices are ``uint64``: NumPy-style negative-index wraparound, which Numba emits for signed
  indices, slowed the chained loops. Every constant in index arithmetic is
  therefore written ``_U(k)``, because ``uint64 - 1`` is typed as a signed int.
* A single row is latency bound (one dependent fused multiply-add per step). The
  "blocked" row kernels cut each block of ``_BLOCK`` steps into ``CHAINS`` chains of ``M``
  steps and run the chains in lockstep: a pass computes each chain's decay product and
  partial state, a carry pass composes them, and a second pass rescans the chains from their
  true start states. The block stays in L1 between the passes, so memory still sees each byte once.
  That is how complex rows walk; real rows in contiguous memory walk their blocks in vector
  registers instead (``vectors``: one float32 step in 0.55 ns against the chains' 1.5, out of
  cache on a Zen 4, one thread), and take the chains only for a decay constant in time.
* Rows in pairs: a thread that owns several rows and runs the plain loop scans two of them
  in lockstep (``_row_scan_pair``), so that two independent multiply-adds are in flight (16
  rows of 2^20 float32 steps on one thread of a Zen 3 took 1.45 times ``np.add`` instead of
  2.48). Not four: four rows are twelve streams, and rows whose length is a multiple of 4 KiB
  map to the same cache sets, which eight-way caches cannot hold (four ran slower than one).
  The backward pass pairs rows too (``_row_back_pair``), its second row running ahead so that
  its five streams fall in other sets than the first row's, and holds its carry as a
  product, so that each step's dependent work is one multiply-add (``_back_chain``). A final
  state walked lane by lane runs the same pairs without writing (``state_rows``).
* ``M`` is short so that chain products of decays do not creep through the subnormal range,
  where every multiply is a slow microcode assist.
* Walking downwards can be slow on its own: on the Xeon these kernels were designed on,
  descending store streams ran at 60% of the speed of ascending ones. The blocked row
  kernels that walk down, and the reducing ones, can therefore first touch each tile of
  ``tile`` steps (an argument) in ascending order, one load per 64 bytes of every array
  involved, the outputs included, then walk it down in cache. The touched values are summed
  and returned so that the compiler cannot drop the loads; callers ignore the sum. Whether
  it pays depends on the CPU's prefetchers: on a Zen 3 the walks down ran as fast as the
  walks up without it, and touching made them 1.1 to 1.8 times slower (its loads wait for
  memory that the prefetchers would have fetched while the walk computed). ``tile == 0``
  touches nothing; the calibration (``calibrate``) measures which tile a machine gets.
* The "cols" kernels walk real dtypes without resets in vector registers (``vectors``: a narrow
  box's states held in registers, no overlap checks, a walk down one descending run of
  addresses; 16 float32 channels walked down at 1.0 times ``np.add`` on one thread of a Zen 4,
  1.9 with the loops below, 1024 channels 1.0 against 1.9). Complex dtypes and resets keep
  Numba's loops, which rely on LLVM's loop vectorizer for their channel loop, behind a runtime
  check that the arrays do not overlap. LLVM hoists that check out of the time loop by bounding
  each array's accesses over the whole walk, which it can do only for a time stride it can
  prove non-negative: walking down, the hoisted check always fails and the scalar loop ran (a
  down walk of 16 float32 channels took 2.7 times as long as an up walk, in cache). A down walk
  of at least ``_WIDE`` channels therefore passes its step index through ``_opaque``, which the
  optimizer cannot see through: the check is then made at each step, for that step's rows, and
  passes (1.4 times the up walk). It costs some 40 instructions a step, so up walks and
  narrower down walks keep the plain index. ``backward_cols`` touches six arrays in a step,
  more than LLVM checks for overlap at all: it ran scalar either way until its step was split
  into two loops of fewer arrays (``_back_cols_split``: 16 float32 channels 0.5 times the time
  of the one loop, float64 0.8 times, walking down with ``_opaque`` as above).
* Running products of decays are flushed to zero below the smallest normal number: a
  product stuck at the smallest subnormal (``x * 0.9`` rounds back to it) would make every
  later multiply a slow assist. The flushed part is below ``tiny * |state|``, far
  under rounding; NaN is kept.

Accuracy. Products of decays are accumulated in float64 (complex128 for complex64) and
chains, blocks and pieces are composed in it; only the chain rescans, which write the
results, run in the input's dtype, from start states rounded once. In float32, a product of
decays near 1 is biased: ``(1 - d1) (1 - d2)`` lies ``d1 d2`` above the nearest float32 below
it, and for ``d`` around 1e-4 that is under half a unit of the last place, so every rounding
goes down. Composed float32 products made the parallel method 4 to 5 times less accurate than
the serial float32 loop over 10^5 to 10^6 steps with decays in [1 - 1e-3, 1 - 1e-6]; in float64
it is several times more accurate than that loop (``benchmarks/accuracy.py``).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ... import _affine
from . import vectors
from .cache import njit_cached

_U = np.uint64
#: Steps per chain; a block is ``CHAINS`` chains (``_BLOCK`` steps).
M = 32
#: Chains of a block, run in lockstep. Four, not eight: eight chains' products and states
#: (sixteen values) and their decays do not fit the sixteen vector registers of AVX2, and
#: the spilled chains ran slower than the plain loop on a Zen 3 (1.45 ns a float32 step in L2
#: against 1.3; four chains about 0.9).
CHAINS = 4
_BLOCK = CHAINS * M
#: Options of every kernel, cached on disk by ``njit_cached`` (which survives a corrupt file;
#: a kernel compiled from an older ``_affine``, whose rule it inlines, is a miss).
_JIT = dict(nogil=True, fastmath={"contract"}, error_model="numpy", depends=(_affine, vectors))


# --- 4-lane tuple helpers (inlined; the tuples live in registers) -----------------------------


@njit(inline="always")
def _load4(v, u, step):
    return (v[u], v[u + step], v[u + _U(2) * step], v[u + _U(3) * step])


@njit(inline="always")
def _store4(v, u, step, c):
    v[u] = c[0]
    v[u + step] = c[1]
    v[u + _U(2) * step] = c[2]
    v[u + _U(3) * step] = c[3]


@njit(inline="always")
def _fma4(p, q, r):
    return (p[0] * q[0] + r[0], p[1] * q[1] + r[1], p[2] * q[2] + r[2], p[3] * q[3] + r[3])


@njit(inline="always")
def _mul4(p, q):
    return (p[0] * q[0], p[1] * q[1], p[2] * q[2], p[3] * q[3])


@njit(inline="always")
def _add4(p, q):
    return (p[0] + q[0], p[1] + q[1], p[2] + q[2], p[3] + q[3])


@njit(inline="always")
def _conj4(p):
    return (np.conj(p[0]), np.conj(p[1]), np.conj(p[2]), np.conj(p[3]))


@njit(inline="always")
def _fill4(v):
    return (v, v, v, v)


@njit(inline="always")
def _rev4(t):
    return (t[3], t[2], t[1], t[0])


@njit(inline="always")
def _carry4_up(p, q, s):
    c0 = s
    c1 = p[0] * c0 + q[0]
    c2 = p[1] * c1 + q[1]
    c3 = p[2] * c2 + q[2]
    return (c0, c1, c2, c3), p[3] * c3 + q[3]


@njit(inline="always")
def _carry4(p, q, s, down):
    """Start states of the 4 chains, given the state ``s`` entering the block, and the state
    leaving it. Chain ``k`` maps a start state ``c`` to ``p[k] * c + q[k]``; chains run in
    address order upwards, in reverse order downwards."""
    if down:
        c, s = _carry4_up(_rev4(p), _rev4(q), s)
        return _rev4(c), s
    return _carry4_up(p, q, s)


@njit(inline="always")
def _finite4(p):
    return np.isfinite(p[0]) and np.isfinite(p[1]) and np.isfinite(p[2]) and np.isfinite(p[3])


_cannot_stand = njit(inline="always")(_affine.cannot_stand)


@njit(inline="always")
def _usable4(p, q, s):
    """Whether the 4 chains' maps ``p * c + q`` can stand for their steps, entered with state
    ``s``; if not, the block is walked one step at a time. The rule is ``linscan._affine``'s
    (``cannot_stand``), for every chain, taking the state entering it as non-finite unless
    ``s`` and every chain's ``q`` are finite."""
    h = s if _finite4(q) else s + np.inf
    return not (_cannot_stand(p[0], h) or _cannot_stand(p[1], h) or _cannot_stand(p[2], h)
                or _cannot_stand(p[3], h))  # fmt: skip


def _size(v):
    """The magnitude of a float64, or of a complex128's larger component (cheaper than
    ``abs``)."""


@overload(_size)
def _size_impl(v):
    if isinstance(v, types.Complex):
        return lambda v: max(abs(v.real), abs(v.imag))
    return lambda v: abs(v)


#: The least size of every partial product of a block that is folded in as one: above it a
#: product is a normal float64 (and a complex one's smaller component, even if subnormal, is
#: off by under 2**-70 of its size), so the plain product is the loop's to rounding. One that
#: passed through a subnormal has lost digits, although its end may be normal again.
_FLOOR = 2.0**-1000
#: The least size of a decay for which no partial product of a chain of ``M`` steps can fall
#: below ``_FLOOR`` (``_SAFE ** M == _FLOOR``): a block of the chained kernels whose decays are
#: all at least this large has chain products that are the loop's, to rounding.
_SAFE = _FLOOR ** (1.0 / M)


@njit(inline="always")
def _lower(low, v):
    """``min(low, size of v)`` as one compare and select (``min`` also orders NaN)."""
    z = _size(v)
    return z if z < low else low


@njit(inline="always")
def _least_size(v, lo, hi):
    """The least size of ``v[lo:hi]``, ``hi - lo`` a multiple of 8, in ``v``'s dtype (a NaN
    may be passed over: ``_chains_stand`` calls it only for finite values). Eight running
    minima, so that no step waits on the one before."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = _size(v[lo])
    for u in range(lo, hi, _U(8)):
        s0, s1 = _lower(s0, v[u]), _lower(s1, v[u + _U(1)])
        s2, s3 = _lower(s2, v[u + _U(2)]), _lower(s3, v[u + _U(3)])
        s4, s5 = _lower(s4, v[u + _U(4)]), _lower(s5, v[u + _U(5)])
        s6, s7 = _lower(s6, v[u + _U(6)]), _lower(s7, v[u + _U(7)])
    return min(min(min(s0, s1), min(s2, s3)), min(min(s4, s5), min(s6, s7)))


@njit(inline="always")
def _chains_stand(a, lo, p, q, s):
    """Whether the chains of the block at ``lo`` stand for their steps entered with state
    ``s`` *and* their products are the loop's (``summarize_rows``, whose product must be):
    ``_usable4``, and every decay of the block is at least ``_SAFE``, so that no chain
    product passed through a subnormal, losing digits, on its way to a normal end (1e-160,
    1e-160, 1e300). The scan kernels check ``_usable4`` alone and lose those digits (a known
    limit): the extra pass over the block cost float32 scans a quarter of their speed
    (``benchmarks/cpu-2core-summary-2026-12-05.md``)."""
    return _usable4(p, q, s) and _least_size(a, lo, lo + _U(_BLOCK)) >= _SAFE


@njit(inline="always")
def _narrow4(c, kind):
    return (kind(c[0]), kind(c[1]), kind(c[2]), kind(c[3]))


@njit(inline="always")
def _block_of(t0, t1, b, n, down):
    """Lowest index of the ``b``-th block of ``n`` steps in walk order."""
    if down:
        return t1 - (b + _U(1)) * n
    return t0 + b * n


@njit(inline="always")
def _leftover(t0, t1, blocks, n, down):
    """The range of ``[t0, t1)`` that ``blocks`` blocks of ``n`` steps in walk order leave:
    its last steps in walk order (the lowest ones walking down)."""
    rest = (t1 - t0) - blocks * n
    return (t0, t0 + rest) if down else (t1 - rest, t1)


@njit(inline="always")
def _block(t0, t1, b, down):
    """Lowest index of the ``b``-th block of ``_BLOCK`` steps in walk order."""
    return _block_of(t0, t1, b, _U(_BLOCK), down)


@njit(inline="always")
def _chain_pos(lo, j, down):
    """Index of step ``j`` of chain 0 in the block starting at ``lo``."""
    if down:
        return lo + (_U(M - 1) - j)
    return lo + j


@njit(inline="always")
def _walk(t0, t1, k, down):
    """Index of step ``k`` when walking ``[t0, t1)``."""
    if down:
        return t1 - _U(1) - k
    return t0 + k


@intrinsic
def _opaque(typingctx, v):
    """``v`` unchanged, through an empty inline assembly statement: the optimizer cannot tell
    how it depends on anything (see "cols" in the module docstring). Integers only (the
    ``"=r,0"`` constraint names a general-purpose register)."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(args[0].type, [args[0].type])
        return builder.asm(fnty, "", "=r,0", args, side_effect=False)

    return v(v), codegen


#: Channels from which a down walk of the "cols" kernels checks overlap per step
#: (``_opaque``); narrower steps stay scalar, where the check costs more than it saves (down
#: walks of 5 float32 or 8 float64 channels took 1.2 to 1.4 times as long with it).
_WIDE = 16


@njit(inline="always")
def _opaque_walk(down, n):
    """Whether a "cols" kernel walking steps of ``n`` channels passes its step index through
    ``_opaque`` (see "cols" in the module docstring)."""
    return down and n >= _U(_WIDE)


@njit(inline="always")
def _tile(t0, t1, b, down, n):
    """Range of the ``b``-th tile of ``n`` steps of ``[t0, t1)`` in walk order."""
    if down:
        hi = t1 - b * n
        return (hi - n if hi - t0 > n else t0), hi
    lo = t0 + b * n
    return lo, min(t1, lo + n)


@njit(inline="always")
def _ntiles(t0, t1, n):
    return (t1 - t0 + n - _U(1)) // n


@njit(inline="always")
def _touch(v, lo, hi):
    """Load one element per 64 bytes of ``v[lo:hi]``, ascending; return their sum."""
    acc = v.dtype.type(0)
    for u in range(lo, hi, _U(64 // v.itemsize)):
        acc += v[u]
    return acc


@njit(inline="always")
def _ftz(v):
    """``v``, or zero if it is below the smallest normal number (NaN passes)."""
    tiny = np.finfo(v).tiny
    return v - v if abs(v) < tiny else v


# --- segment resets ------------------------------------------------------------------------------
# ``r`` is a boolean array read like ``a`` (same indices), or ``None`` for a call without resets;
# the helpers below compile to nothing then. Where ``r[t]`` is true the state entering step t
# is dropped: a select, never a multiplication by zero, so that an inf or NaN state stays out
# of the next segment. The chained row kernels take no resets (rows with resets walk serially).
# The overloads are compiled functions that LLVM inlines, not ``inline="always"``: Numba 0.68's
# IR inliner lost the stores of ``gx[u], ga[u], c = _back_step(..., _reset1(r, u), ...)``.


def _row(r, o):
    """Row ``o`` of the resets (``None`` without resets)."""


@overload(_row)
def _row_impl(r, o):
    if isinstance(r, types.NoneType):
        return lambda r, o: None
    return lambda r, o: r[o]


def _reset1(r, u):
    """Whether row step ``u`` resets (``False`` without resets)."""


@overload(_reset1)
def _reset1_impl(r, u):
    if isinstance(r, types.NoneType):
        return lambda r, u: False
    return lambda r, u: r[u]


def _reset3(r, o, t, i):
    """Whether step ``(o, t, i)`` resets (``False`` without resets)."""


@overload(_reset3)
def _reset3_impl(r, o, t, i):
    if isinstance(r, types.NoneType):
        return lambda r, o, t, i: False
    return lambda r, o, t, i: r[o, t, i]


def _put(h, u, v):
    """``h[u] = v``, or nothing where ``h`` is ``None`` (a walk for its final state only)."""


@overload(_put)
def _put_impl(h, u, v):
    if isinstance(h, types.NoneType):
        return lambda h, u, v: None

    def put(h, u, v):
        h[u] = v

    return put


@njit
def _note(f, k, value):
    """``f[k] |= value`` where there are flags (``f`` is ``None`` without resets)."""
    if value:
        _put(f, k, True)


def _has(r):
    """Whether a call has resets, known when the kernel compiles."""


@overload(_has)
def _has_impl(r):
    flag = not isinstance(r, types.NoneType)
    return lambda r: flag


# --- forward: one row (I == 1) ---------------------------------------------------------------


@njit_cached(**_JIT)
def _row_scan_serial(a, x, h, s, r, t0, t1, down):
    """The plain loop over one row; ``h`` may be ``None`` (the state alone)."""
    for k in range(t1 - t0):
        u = _walk(t0, t1, k, down)
        s = x[u] if _reset1(r, u) else a[u] * s + x[u]
        _put(h, u, s)
    return s


@njit_cached(**_JIT)
def _row_scan_pair(a, x, h, s, r, o, t0, t1, down):
    """Rows ``o`` and ``o + 1`` of ``(O, T)`` arrays scanned in lockstep over ``[t0, t1)``:
    two independent multiply-add chains, so that each hides the other's latency (see "Rows
    in pairs" in the module docstring). Same operations per row as ``_row_scan_serial``."""
    p = o + _U(1)
    a_o, x_o, h_o, r_o, s_o = a[o], x[o], _row(h, o), _row(r, o), s[o]
    a_p, x_p, h_p, r_p, s_p = a[p], x[p], _row(h, p), _row(r, p), s[p]
    for k in range(t1 - t0):
        u = _walk(t0, t1, k, down)
        s_o = x_o[u] if _reset1(r_o, u) else a_o[u] * s_o + x_o[u]
        s_p = x_p[u] if _reset1(r_p, u) else a_p[u] * s_p + x_p[u]
        _put(h_o, u, s_o)
        _put(h_p, u, s_p)
    s[o], s[p] = s_o, s_p


@njit_cached(**_JIT)
def _row_chains(a, x, lo, down, back):
    """Decay product and partial state (from 0) of each of the chains of a block. With
    ``back`` the decay is ``conj(a)`` and the input of a step ``conj(a) * x`` (see
    ``_row_reduce``)."""
    one = a.dtype.type(1)
    p = _fill4(one + 0.0)  # float64 (complex128) products: see "Accuracy" above
    q = _fill4(one - one)
    for j in range(_U(M)):
        u = _chain_pos(lo, j, down)
        av = _conj4(_load4(a, u, _U(M))) if back else _load4(a, u, _U(M))
        p = _mul4(p, av)
        xv = _load4(x, u, _U(M))
        q = _fma4(av, q, _mul4(av, xv) if back else xv)
    return p, q


@njit(inline="always")
def _vector_walk(a, x, h, lo, s, down, back):
    """``vectors.block`` with ``down`` and ``back`` as the literals it needs."""
    if down:
        if back:
            return vectors.block(a, x, h, lo, s, True, True)
        return vectors.block(a, x, h, lo, s, True, False)
    if back:
        return vectors.block(a, x, h, lo, s, False, True)
    return vectors.block(a, x, h, lo, s, False, False)


def _row_scan_blocked(a, x, h, s, t0, t1, down):
    """Scan one row over ``[t0, t1)`` from state ``s`` in blocks (vectors or chains, by
    dtype); returns the leaving state (float64 or complex128)."""


@overload(_row_scan_blocked)
def _row_scan_blocked_impl(a, x, h, s, t0, t1, down):
    if vectors.real_rows(a, x, h):
        return lambda a, x, h, s, t0, t1, down: _row_scan_vectors(a, x, h, s, t0, t1, down)
    return lambda a, x, h, s, t0, t1, down: _row_scan_chains(a, x, h, s, t0, t1, down)


@njit_cached(**_JIT)
def _row_scan_vectors(a, x, h, s, t0, t1, down):
    s = s + 0.0  # the state between blocks: float64
    n = _U(vectors.steps(a.itemsize))
    nb = (t1 - t0) // n
    for b in range(nb):
        lo = _block_of(t0, t1, b, n, down)
        ok, leaving, _ = _vector_walk(a, x, h, lo, s, down, False)
        s = leaving if ok else _row_scan_serial(a, x, h, s, None, lo, lo + n, down)
    lo, hi = _leftover(t0, t1, nb, n, down)
    return _row_scan_serial(a, x, h, s, None, lo, hi, down)


@njit_cached(**_JIT)
def _row_scan_chains(a, x, h, s, t0, t1, down):
    s = s + 0.0  # the state between chains and blocks: float64 (complex128)
    nb = (t1 - t0) // _U(_BLOCK)
    for b in range(nb):
        lo = _block(t0, t1, b, down)
        p, q = _row_chains(a, x, lo, down, False)
        if not _usable4(p, q, s):
            s = _row_scan_serial(a, x, h, s, None, lo, lo + _U(_BLOCK), down)
            continue
        c, s = _carry4(p, q, s, down)  # s (so c) is float64: see "Accuracy" above
        c = _narrow4(c, a.dtype.type)
        for j in range(_U(M)):
            u = _chain_pos(lo, j, down)
            c = _fma4(_load4(a, u, _U(M)), c, _load4(x, u, _U(M)))
            _store4(h, u, _U(M), c)
    lo, hi = _leftover(t0, t1, nb, _U(_BLOCK), down)
    return _row_scan_serial(a, x, h, s, None, lo, hi, down)


@njit_cached(**_JIT)
def _row_reduce_serial(a, x, r, t0, t1, down, back, p_tot, s_tot, reset):
    zero = a.dtype.type(0) + 0.0  # float64 (complex128), like p_tot and s_tot
    for k in range(t1 - t0):
        u = _walk(t0, t1, k, down)
        av = np.conj(a[u]) if back else a[u]
        if _reset1(r, u):
            reset = True
            p_tot = zero
            s_tot = zero if back else x[u] + zero
        else:
            p_tot = _ftz(p_tot * av)
            s_tot = av * s_tot + (av * x[u] if back else x[u])
    return p_tot, s_tot, reset


def _row_reduce(a, x, r, t0, t1, down, back, s_tot):
    """``(P, S, R)`` of a time range entered with state ``s_tot``: ``S`` is the leaving state,
    ``P`` the product of the decays since the last reset, ``R`` whether there was one.

    With ``back``, ``x`` is ``grad_h`` and the state is the backward carry, which obeys
    ``c = conj(a) * c + conj(a) * grad_h``: the same recurrence with decay ``conj(a)`` and
    input ``conj(a) * grad_h`` (``conj`` does nothing to real numbers); a reset makes it 0.
    Blocks in vectors or chains, by dtype.
    """


@overload(_row_reduce)
def _row_reduce_impl(a, x, r, t0, t1, down, back, s_tot):
    if vectors.real_rows(a, x):
        return lambda a, x, r, t0, t1, down, back, s_tot: _row_reduce_vectors(
            a, x, r, t0, t1, down, back, s_tot
        )
    return lambda a, x, r, t0, t1, down, back, s_tot: _row_reduce_chains(
        a, x, r, t0, t1, down, back, s_tot
    )


@njit_cached(**_JIT)
def _row_reduce_vectors(a, x, r, t0, t1, down, back, s_tot):
    p_tot = 1.0
    s_tot = s_tot + 0.0
    reset = False
    n = _U(vectors.steps(a.itemsize))
    nb = (t1 - t0) // n
    if _has(r):
        nb = _U(0)  # the vector blocks take no resets
    for b in range(nb):
        lo = _block_of(t0, t1, b, n, down)
        ok, leaving, product = _vector_walk(a, x, None, lo, s_tot, down, back)
        if ok:
            s_tot = leaving
            p_tot = _ftz(p_tot * product)
        else:
            p_tot, s_tot, reset = _row_reduce_serial(a, x, r, lo, lo + n, down, back, p_tot,
                                                     s_tot, reset)  # fmt: skip
    lo, hi = _leftover(t0, t1, nb, n, down)
    return _row_reduce_serial(a, x, r, lo, hi, down, back, p_tot, s_tot, reset)


@njit_cached(**_JIT)
def _row_reduce_chains(a, x, r, t0, t1, down, back, s_tot):
    p_tot = a.dtype.type(1) + 0.0  # float64 (complex128), as in ``_row_chains``
    s_tot = s_tot + 0.0
    reset = False
    nb = (t1 - t0) // _U(_BLOCK)
    if _has(r):
        nb = _U(0)  # the chains take no resets
    for b in range(nb):
        lo = _block(t0, t1, b, down)
        p, q = _row_chains(a, x, lo, down, back)
        if not _usable4(p, q, s_tot):
            p_tot, s_tot, reset = _row_reduce_serial(a, x, r, lo, lo + _U(_BLOCK), down, back,
                                                     p_tot, s_tot, reset)  # fmt: skip
            continue
        _, s_tot = _carry4(p, q, s_tot, down)
        p_tot = _ftz(p_tot * p[0] * p[1] * p[2] * p[3])
    lo, hi = _leftover(t0, t1, nb, _U(_BLOCK), down)
    return _row_reduce_serial(a, x, r, lo, hi, down, back, p_tot, s_tot, reset)


@njit(inline="always")
def _plain_rows(a, x, h, s, r, r0, r1, t0, t1, down):
    """The plain loop over rows ``[r0, r1)``, two at a time; ``h`` may be ``None``."""
    first = _U(r0)
    while first + _U(1) < _U(r1):
        _row_scan_pair(a, x, h, s, r, first, _U(t0), _U(t1), down)
        first += _U(2)
    for o in range(first, _U(r1)):
        s[o] = _row_scan_serial(a[o], x[o], _row(h, o), s[o], _row(r, o), _U(t0), _U(t1), down)


@njit_cached(**_JIT)
def state_rows(a, x, s, r, r0, r1, t0, t1, down):
    """``scan_rows`` without results: the leaving states of rows ``[r0, r1)`` alone, for a
    final state walked lane by lane (no decay products, which only split mode composes)."""
    _plain_rows(a, x, None, s, r, r0, r1, t0, t1, down)


@njit_cached(**_JIT)
def scan_rows(a, x, h, s, r, r0, r1, t0, t1, down, blocked, tile):
    """Scan rows ``[r0, r1)`` of ``(O, T)`` arrays over ``[t0, t1)``; ``s[r]``: state in/out;
    ``r``: resets (``(O, T)``) or ``None``."""
    sink = a.dtype.type(0)
    if _has(r) or not blocked:
        _plain_rows(a, x, h, s, r, r0, r1, t0, t1, down)
        return sink
    for o in range(_U(r0), _U(r1)):
        ar, xr, hr, sr = a[o], x[o], h[o], s[o]
        if not down or tile == 0:
            sr = _row_scan_blocked(ar, xr, hr, sr, _U(t0), _U(t1), down)
        else:
            for b in range(_ntiles(_U(t0), _U(t1), _U(tile))):
                lo, hi = _tile(_U(t0), _U(t1), b, down, _U(tile))
                sink += _touch(ar, lo, hi) + _touch(xr, lo, hi) + _touch(hr, lo, hi)
                sr = _row_scan_blocked(ar, xr, hr, sr, lo, hi, down)
        s[o] = sr
    return sink


@njit_cached(**_JIT)
def reduce_rows(a, x, p, s, f, r, r0, r1, t0, t1, down, tile, back):
    """Like ``scan_rows`` without writing ``h``; also stores each row's decay product in ``p``
    and, where there are resets, whether one was met in ``f``. With ``back`` it composes the
    backward carry instead, ``x`` being ``grad_h``."""
    sink = a.dtype.type(0)
    for o in range(_U(r0), _U(r1)):
        ar, xr, rr = a[o], x[o], _row(r, o)
        p_r, s_r = a.dtype.type(1) + 0.0, s[o] + 0.0
        n = _U(tile) if tile else max(_U(t1) - _U(t0), _U(1))
        for b in range(_ntiles(_U(t0), _U(t1), n)):
            lo, hi = _tile(_U(t0), _U(t1), b, down, n)
            if down and tile:
                sink += _touch(ar, lo, hi) + _touch(xr, lo, hi)
            # Each tile starts from the state the last one left: never from zero.
            p_b, s_r, reset = _row_reduce(ar, xr, rr, lo, hi, down, back, s_r)
            if reset:
                p_r = p_b
                _note(f, o, True)
            else:
                p_r = _ftz(p_r * p_b)
        p[o], s[o] = p_r, s_r
    return sink


# --- forward: channels (I > 1) -----------------------------------------------------------------
# Real dtypes without resets, channels contiguous (the operands always are; a decay broadcast
# over channels is not): the vector walks of ``vectors`` (``_walk_cols``). Otherwise Numba's
# loops: direct 3-D indexing, no per-step row views (with few channels the per-step overhead
# is what costs). No touching ahead either way: the vector walks down ran at ``np.add``'s
# speed without it.


def _last(v):
    """Whether ``v``'s last axis is contiguous (``True`` for ``None``): the channels of a 3-D
    array, the lanes of a 2-D state (known at run time: a decay may be broadcast)."""


@overload(_last)
def _last_impl(v):
    if isinstance(v, types.NoneType):
        return lambda v: True
    return lambda v: v.strides[-1] == v.itemsize


def _walk_cols(a, x, h, s, p, back, r, o0, o1, i0, i1, t0, t1, down):
    """Walk the box ``[o0, o1) x [i0, i1)`` over ``[t0, t1)`` with ``vectors.cols_walk`` and
    return ``True``, or return ``False`` (having done nothing) where the vector walk does not
    apply: resets, complex dtypes, channels that are not contiguous, a ``down`` that is not a
    boolean."""


@overload(_walk_cols)
def _walk_cols_impl(a, x, h, s, p, back, r, o0, o1, i0, i1, t0, t1, down):
    if not (
        isinstance(r, types.NoneType)
        and isinstance(down, types.Boolean)
        and vectors.walk_types(a, x, h, s, p)
    ):
        return lambda a, x, h, s, p, back, r, o0, o1, i0, i1, t0, t1, down: False

    def walk(a, x, h, s, p, back, r, o0, o1, i0, i1, t0, t1, down):
        if not (_last(a) and _last(x) and _last(h) and _last(s) and _last(p)):
            return False
        for o in range(_U(o0), _U(o1)):
            if back:  # ``back`` as the literal that ``cols_walk`` needs
                vectors.cols_walk(a, x, h, s, p, True, o, i0, i1, t0, t1, down)
            else:
                vectors.cols_walk(a, x, h, s, p, False, o, i0, i1, t0, t1, down)
        return True

    return walk


@njit(inline="always")
def _scan_cols_step(a, x, h, s, r, o, t, i0, i1):
    for i in range(i0, i1):
        v = x[o, t, i] if _reset3(r, o, t, i) else a[o, t, i] * s[o, i] + x[o, t, i]
        s[o, i] = v
        _put(h, (o, t, i), v)


@njit_cached(**_JIT)
def scan_cols(a, x, h, s, r, o0, o1, i0, i1, t0, t1, down):
    """Scan the box ``[o0, o1) x [i0, i1)`` of ``(O, T, I)`` arrays over ``[t0, t1)``; ``h``
    may be ``None`` (the leaving states ``s`` alone)."""
    if _walk_cols(a, x, h, s, None, False, r, o0, o1, i0, i1, t0, t1, down):
        return
    i0, i1, t0, t1 = _U(i0), _U(i1), _U(t0), _U(t1)
    opaque = _opaque_walk(down, i1 - i0)
    for o in range(_U(o0), _U(o1)):
        # Two loops, so that the optimizer need not unswitch one to keep the plain walks'
        # hoisted overlap check.
        if opaque:
            for k in range(t1 - t0):
                _scan_cols_step(a, x, h, s, r, o, _opaque(_walk(t0, t1, k, down)), i0, i1)
        else:
            for k in range(t1 - t0):
                _scan_cols_step(a, x, h, s, r, o, _walk(t0, t1, k, down), i0, i1)


@njit(inline="always")
def _reduce_cols_step(a, x, p, s, f, r, o, t, i0, i1, back):
    zero = a.dtype.type(0)
    for i in range(i0, i1):
        av = np.conj(a[o, t, i]) if back else a[o, t, i]
        xv = av * x[o, t, i] if back else x[o, t, i]
        if _reset3(r, o, t, i):
            s[o, i] = zero if back else x[o, t, i]
            p[o, i] = zero
            _note(f, (o, i), True)
        else:
            s[o, i] = av * s[o, i] + xv
            p[o, i] = _ftz(p[o, i] * av)


@njit_cached(**_JIT)
def reduce_cols(a, x, p, s, f, r, o0, o1, i0, i1, t0, t1, down, back):
    """Like ``scan_cols`` without writing ``h``; ``p`` receives the decay products and ``f``
    (where there are resets) whether a reset was met. With ``back`` it composes the backward
    carry, ``x`` being ``grad_h`` (see ``_row_reduce``)."""
    i0, i1, t0, t1 = _U(i0), _U(i1), _U(t0), _U(t1)
    for o in range(_U(o0), _U(o1)):
        for i in range(i0, i1):
            p[o, i] = a.dtype.type(1)
    if _walk_cols(a, x, None, s, p, back, r, o0, o1, i0, i1, t0, t1, down):
        return
    opaque = _opaque_walk(down, i1 - i0)
    for o in range(_U(o0), _U(o1)):
        if opaque:  # two loops: see ``scan_cols``
            for k in range(t1 - t0):
                t = _opaque(_walk(t0, t1, k, down))
                _reduce_cols_step(a, x, p, s, f, r, o, t, i0, i1, back)
        else:
            for k in range(t1 - t0):
                _reduce_cols_step(a, x, p, s, f, r, o, _walk(t0, t1, k, down), i0, i1, back)


# --- backward ------------------------------------------------------------------------------------
# The vector-Jacobian product walks against the forward direction with a carry ``c`` (the
# gradient flowing into the step just walked from): ``g = gh[t] + c``, ``grad_x[t] = g``,
# ``grad_a[t] = g * h_prev[t]``, ``c = a[t] * g``. ``h_prev`` is the forward state before step
# ``t``: the neighbour ``h[t+1]`` when walking up (reverse scans), ``h[t-1]`` when walking down,
# and the initial state ``hb`` at the sequence's first forward step. ``c`` is itself a linear
# recurrence (``c = a * c + a * gh``), so the same chain/carry machinery applies. For complex
# numbers ``a`` and ``h_prev`` enter conjugated: the gradient of a real loss with respect to
# ``z`` is ``dL/dRe(z) + i dL/dIm(z)`` (PyTorch's convention), and for ``h = a * h_prev + x``
# that gives ``grad_a = g * conj(h_prev)`` and ``c = conj(a) * g``.


@njit(inline="always")
def _back_step(av, ghv, hpv, c, reset, zero):
    """``(grad_x, grad_a, carry)`` of one step; a step that resets takes nothing from ``a``
    and the state before it, so its ``grad_a`` and the carry it passes on are ``zero``."""
    g = ghv + c
    if reset:
        return g, zero, zero
    return g, g * np.conj(hpv), np.conj(av) * g


@njit(inline="always")
def _back_chain(av, ghv, hpv, c, reset, zero):
    """``_back_step`` returning the carry it passes on as a product ``d * g`` (the conjugated
    decay and the step's gradient; both ``zero`` at a reset, so that an infinite gradient
    does not reach the next step): ``(grad_x, grad_a, d, g)``. A walk that passes ``d * g``
    as the next step's ``c`` has the multiply and the add of the carry fused into one
    multiply-add (4 cycles a step instead of 6; the same value to rounding, except where
    ``d * g`` alone overflows: fused, ``-inf + huge`` stays ``-inf`` where the chained kernels,
    which round the product first, give NaN)."""
    g = ghv + c
    if reset:
        return g, zero, zero, zero
    return g, g * np.conj(hpv), np.conj(av), g


@njit(inline="always")
def _prev(h, u, down):
    """The forward state before step ``u``: its neighbour in the walk's past."""
    return h[u - _U(1)] if down else h[u + _U(1)]


@njit_cached(**_JIT)
def _row_back_serial(a, h, gh, gx, ga, c, r, t0, t1, down):
    if t1 <= t0:
        return c
    zero = a.dtype.type(0)
    u = _walk(t0, t1, _U(0), down)  # the first step takes the carry as it is
    gx[u], ga[u], d, g = _back_chain(a[u], gh[u], _prev(h, u, down), c, _reset1(r, u), zero)
    for k in range(_U(1), t1 - t0):
        u = _walk(t0, t1, k, down)
        gx[u], ga[u], d, g = _back_chain(a[u], gh[u], _prev(h, u, down), d * g, _reset1(r, u),
                                         zero)  # fmt: skip
    return d * g


#: Steps by which ``_row_back_pair`` runs its second row ahead of its first (see there).
_SKEW = 64


@njit(inline="always")
def _ahead(t0, t1, n, down):
    """``[t0, t1)`` without its first ``n`` steps in walk order."""
    return (t0, t1 - n) if down else (t0 + n, t1)


@njit(inline="always")
def _behind(t0, t1, n, down):
    """``[t0, t1)`` without its last ``n`` steps in walk order."""
    return (t0 + n, t1) if down else (t0, t1 - n)


@njit_cached(**_JIT)
def _row_back_pair(a, h, gh, gx, ga, c, r, o, t0, t1, down):
    """Rows ``o`` and ``o + 1`` of ``_row_back_serial`` in lockstep (see "Rows in pairs" in
    the module docstring); ``c[o]`` and ``c[o + 1]``: the carries in and out.

    Row ``o + 1`` runs ``_SKEW`` steps ahead. A step touches five arrays per row, and arrays
    of equal size (or rows a multiple of 4 KiB apart) often sit at the same offset modulo
    4 KiB, so that ten streams in step would share one set of the 8-way L1 cache: 16 float32
    rows of 2^20 steps ran at 3 times the floor on a Zen 3, rows of 2^20 + 16 steps at 1.1."""
    if t1 <= t0:
        return
    n = min(t1 - t0, _U(_SKEW))
    zero = a.dtype.type(0)
    p = o + _U(1)
    a_o, h_o, gh_o, gx_o, ga_o, r_o = a[o], h[o], gh[o], gx[o], ga[o], _row(r, o)
    a_p, h_p, gh_p, gx_p, ga_p, r_p = a[p], h[p], gh[p], gx[p], ga[p], _row(r, p)
    lo, hi = _behind(t0, t1, t1 - t0 - n, down)  # the first n steps in walk order
    c_p = _row_back_serial(a_p, h_p, gh_p, gx_p, ga_p, c[p], r_p, lo, hi, down)
    lo_o, hi_o = _behind(t0, t1, n, down)
    lo_p, hi_p = _ahead(t0, t1, n, down)
    if hi_o > lo_o:
        u = _walk(lo_o, hi_o, _U(0), down)
        v = _walk(lo_p, hi_p, _U(0), down)
        gx_o[u], ga_o[u], d_o, g_o = _back_chain(a_o[u], gh_o[u], _prev(h_o, u, down), c[o],
                                                 _reset1(r_o, u), zero)  # fmt: skip
        gx_p[v], ga_p[v], d_p, g_p = _back_chain(a_p[v], gh_p[v], _prev(h_p, v, down), c_p,
                                                 _reset1(r_p, v), zero)  # fmt: skip
        for k in range(_U(1), hi_o - lo_o):
            u = _walk(lo_o, hi_o, k, down)
            v = _walk(lo_p, hi_p, k, down)
            gx_o[u], ga_o[u], d_o, g_o = _back_chain(a_o[u], gh_o[u], _prev(h_o, u, down),
                                                     d_o * g_o, _reset1(r_o, u), zero)  # fmt: skip
            gx_p[v], ga_p[v], d_p, g_p = _back_chain(a_p[v], gh_p[v], _prev(h_p, v, down),
                                                     d_p * g_p, _reset1(r_p, v), zero)  # fmt: skip
        c_o, c_p = d_o * g_o, d_p * g_p
    else:
        c_o = c[o]
    lo, hi = _ahead(t0, t1, t1 - t0 - n, down)  # the last n steps in walk order
    c[o] = _row_back_serial(a_o, h_o, gh_o, gx_o, ga_o, c_o, r_o, lo, hi, down)
    c[p] = c_p


def _row_back_blocked(a, h, gh, gx, ga, c, t0, t1, down):
    """The backward pass of one row over ``[t0, t1)`` (without the sequence's first forward
    step) in blocks, vectors or chains by dtype (as ``_row_scan_blocked``); returns the
    leaving carry (float64 or complex128)."""


@overload(_row_back_blocked)
def _row_back_blocked_impl(a, h, gh, gx, ga, c, t0, t1, down):
    if vectors.real_rows(a, h, gh, gx, ga):
        return lambda a, h, gh, gx, ga, c, t0, t1, down: _row_back_vectors(
            a, h, gh, gx, ga, c, t0, t1, down
        )
    return lambda a, h, gh, gx, ga, c, t0, t1, down: _row_back_chains(
        a, h, gh, gx, ga, c, t0, t1, down
    )


@njit(inline="always")
def _back_vector_walk(a, h, gh, gx, ga, lo, c, down):
    """``vectors.back_block`` with ``down`` as the literal it needs."""
    if down:
        return vectors.back_block(a, h, gh, gx, ga, lo, c, True)
    return vectors.back_block(a, h, gh, gx, ga, lo, c, False)


@njit_cached(**_JIT)
def _row_back_vectors(a, h, gh, gx, ga, c, t0, t1, down):
    c = c + 0.0  # the carry between blocks: float64
    n = _U(vectors.steps(a.itemsize))
    nb = (t1 - t0) // n
    for b in range(nb):
        lo = _block_of(t0, t1, b, n, down)
        ok, leaving = _back_vector_walk(a, h, gh, gx, ga, lo, c, down)
        c = leaving if ok else _row_back_serial(a, h, gh, gx, ga, c, None, lo, lo + n, down)
    lo, hi = _leftover(t0, t1, nb, n, down)
    return _row_back_serial(a, h, gh, gx, ga, c, None, lo, hi, down)


@njit_cached(**_JIT)
def _row_back_chains(a, h, gh, gx, ga, c, t0, t1, down):
    c = c + 0.0  # the carry between chains and blocks: float64 (complex128)
    nb = (t1 - t0) // _U(_BLOCK)
    for b in range(nb):
        lo = _block(t0, t1, b, down)
        p, q = _row_chains(a, gh, lo, down, True)
        if not _usable4(p, q, c):
            c = _row_back_serial(a, h, gh, gx, ga, c, None, lo, lo + _U(_BLOCK), down)
            continue
        cc, c = _carry4(p, q, c, down)
        cc = _narrow4(cc, a.dtype.type)
        for j in range(_U(M)):
            u = _chain_pos(lo, j, down)
            g = _add4(_load4(gh, u, _U(M)), cc)
            hp = _load4(h, u - _U(1), _U(M)) if down else _load4(h, u + _U(1), _U(M))
            _store4(gx, u, _U(M), g)
            _store4(ga, u, _U(M), _mul4(g, _conj4(hp)))
            cc = _mul4(_conj4(_load4(a, u, _U(M))), g)
    lo, hi = _leftover(t0, t1, nb, _U(_BLOCK), down)
    return _row_back_serial(a, h, gh, gx, ga, c, None, lo, hi, down)


@njit(inline="always")
def _without_edge(t0, t1, T, down):
    """``[t0, t1)`` without the sequence's first forward step, and whether it was in it (that
    step reads ``hb`` instead of a neighbour and is walked last)."""
    if down and t0 == _U(0):
        return t0 + _U(1), t1, True
    if not down and t1 == T:
        return t0, t1 - _U(1), True
    return t0, t1, False


@njit_cached(**_JIT)
def backward_rows(a, h, gh, hb, gx, ga, c, r, r0, r1, t0, t1, down, blocked, tile):
    """Backward pass over rows ``[r0, r1)`` and ``[t0, t1)``; ``c[o]``: carry in/out; ``r``:
    resets or ``None``.

    ``down`` walks downwards (the forward scan ran upwards). The step at the sequence's first
    forward position reads ``hb[o]`` as its previous state and is walked last.
    """
    sink = zero = a.dtype.type(0)
    T = _U(h.shape[1])
    lo, hi, edge = _without_edge(_U(t0), _U(t1), T, down)
    paired = _U(r0)
    if _has(r) or not blocked:  # the plain loop, two rows at a time
        while paired + _U(1) < _U(r1):
            _row_back_pair(a, h, gh, gx, ga, c, r, paired, lo, hi, down)
            paired += _U(2)
    for o in range(_U(r0), _U(r1)):
        ar, hr, ghr, gxr, gar, cr, rr = a[o], h[o], gh[o], gx[o], ga[o], c[o], _row(r, o)
        if o < paired:
            pass  # walked in a pair: only the edge step is left
        elif _has(r) or not blocked:
            cr = _row_back_serial(ar, hr, ghr, gxr, gar, cr, rr, lo, hi, down)
        elif not down or tile == 0:
            cr = _row_back_blocked(ar, hr, ghr, gxr, gar, cr, lo, hi, down)
        else:
            for b in range(_ntiles(lo, hi, _U(tile))):
                tl, th = _tile(lo, hi, b, down, _U(tile))
                sink += _touch(ar, tl, th) + _touch(hr, tl, th) + _touch(ghr, tl, th)
                sink += _touch(gxr, tl, th) + _touch(gar, tl, th)
                cr = _row_back_blocked(ar, hr, ghr, gxr, gar, cr, tl, th, down)
        if edge:
            u = _U(0) if down else T - _U(1)
            gxr[u], gar[u], cr = _back_step(ar[u], ghr[u], hb[o], cr, _reset1(rr, u), zero)
        c[o] = cr
    return sink


#: Channels from which ``backward_cols`` runs a step as one loop again (see there).
_SPLIT_BELOW = 256


@njit(inline="always")
def _back_cols_fused(a, h, gh, gx, ga, c, r, o, t, tp, i0, i1, zero):
    """Step ``t`` of the backward pass over channels ``[i0, i1)``, in one loop."""
    for i in range(i0, i1):
        gx[o, t, i], ga[o, t, i], c[o, i] = _back_step(
            a[o, t, i], gh[o, t, i], h[o, tp, i], c[o, i], _reset3(r, o, t, i), zero
        )


@njit(inline="always")
def _back_cols_split(a, h, gh, gx, ga, c, r, o, t, tp, i0, i1, zero):
    """Step ``t`` of the backward pass over channels ``[i0, i1)``, in two loops: the carry
    (``grad_x = grad_h + carry``, then ``carry = conj(a) * grad_x``) and ``grad_a =
    grad_x * conj(h[tp])``, reading back the ``grad_x`` just written. ``zero`` at a reset."""
    for i in range(i0, i1):
        g = gh[o, t, i] + c[o, i]
        gx[o, t, i] = g
        c[o, i] = zero if _reset3(r, o, t, i) else np.conj(a[o, t, i]) * g
    for i in range(i0, i1):
        ga[o, t, i] = zero if _reset3(r, o, t, i) else gx[o, t, i] * np.conj(h[o, tp, i])


def _back_cols(a, h, gh, gx, ga, c, r, o0, o1, i0, i1, t0, t1, down):
    """The backward pass over the box ``[o0, o1) x [i0, i1)`` and the steps ``[t0, t1)``
    (without the edge step) with ``vectors.cols_back``, returning ``True``; or ``False``,
    having done nothing, where it does not apply (as ``_walk_cols``)."""


@overload(_back_cols)
def _back_cols_impl(a, h, gh, gx, ga, c, r, o0, o1, i0, i1, t0, t1, down):
    if not (
        isinstance(r, types.NoneType)
        and isinstance(down, types.Boolean)
        and vectors.back_types(a, h, gh, gx, ga, c)
    ):
        return lambda a, h, gh, gx, ga, c, r, o0, o1, i0, i1, t0, t1, down: False

    def walk(a, h, gh, gx, ga, c, r, o0, o1, i0, i1, t0, t1, down):
        if not (_last(a) and _last(h) and _last(gh) and _last(gx) and _last(ga) and _last(c)):
            return False
        for o in range(_U(o0), _U(o1)):
            vectors.cols_back(a, h, gh, gx, ga, c, o, i0, i1, t0, t1, down)
        return True

    return walk


@njit_cached(**_JIT)
def backward_cols(a, h, gh, hb, gx, ga, c, r, o0, o1, i0, i1, t0, t1, down):
    """Backward pass over the box ``[o0, o1) x [i0, i1)`` of ``(O, T, I)`` arrays.

    Steps of ``_WIDE`` to ``_SPLIT_BELOW`` channels run as two channel loops
    (``_back_cols_split``): one loop touching all six arrays needs more overlap checks than
    LLVM makes before vectorizing (see "cols" in the module docstring). Narrower steps keep
    the one loop (the second loop's overhead cost more than the vectors saved: 2x at 4
    channels), and so do wider ones (memory-bound: the second pass over ``grad_x`` cost up to
    1.2x at 256 to 1024 float64 channels)."""
    T = _U(h.shape[1])
    i0, i1 = _U(i0), _U(i1)
    zero = a.dtype.type(0)
    lo, hi, edge = _without_edge(_U(t0), _U(t1), T, down)
    wide = _U(_WIDE) <= i1 - i0 < _U(_SPLIT_BELOW)
    vector = _back_cols(a, h, gh, gx, ga, c, r, o0, o1, i0, i1, lo, hi, down)
    for o in range(_U(o0), _U(o1)):
        # Separate loops, so that the optimizer need not unswitch one (see ``scan_cols``).
        if vector:
            pass  # walked by ``_back_cols``; the edge step below
        elif wide and down:
            for k in range(hi - lo):
                t = _opaque(_walk(lo, hi, k, down))
                _back_cols_split(a, h, gh, gx, ga, c, r, o, t, t - _U(1), i0, i1, zero)
        elif wide:
            for k in range(hi - lo):
                t = lo + k
                _back_cols_split(a, h, gh, gx, ga, c, r, o, t, t + _U(1), i0, i1, zero)
        else:
            for k in range(hi - lo):
                t = _walk(lo, hi, k, down)
                tp = t - _U(1) if down else t + _U(1)
                _back_cols_fused(a, h, gh, gx, ga, c, r, o, t, tp, i0, i1, zero)
        if edge:
            t = _U(0) if down else T - _U(1)
            for i in range(i0, i1):
                gx[o, t, i], ga[o, t, i], c[o, i] = _back_step(
                    a[o, t, i], gh[o, t, i], hb[o, i], c[o, i], _reset3(r, o, t, i), zero
                )


# --- decay products that neither underflow nor overflow (linscan.dask) ------------------------


def _split1(v):
    """``(mantissa, exponent)`` of one float64 or complex128 value: ``v == mantissa *
    2**exponent``, the mantissa (its larger component, for a complex value) of magnitude in
    [0.5, 1); 0, inf and NaN are their own mantissa with exponent 0."""


@overload(_split1)
def _split1_impl(v):
    if isinstance(v, types.Complex):

        def split_complex(v):
            _, k = math.frexp(max(abs(v.real), abs(v.imag)))
            return complex(math.ldexp(v.real, -k), math.ldexp(v.imag, -k)), k

        return split_complex
    return lambda v: math.frexp(v)


#: Bounds of a running mantissa between renormalizations, and of a decay multiplied into it
#: as it is: their product stays a normal float64.
_RANGE = 2.0**400


@njit(inline="always")
def _moderate(v):
    return 1.0 / _RANGE < abs(v) < _RANGE


@njit(inline="always")
def _times1(mv, ev, x):
    """The running product ``mv * 2**ev`` times the decay ``x``, renormalized where it leaves
    the moderate range (see ``_lane_summary``)."""
    x = x * 1.0  # float64 or complex128
    if _moderate(x) or x == 0 or not np.isfinite(x):
        v = mv * x  # |mv| and |x| below 2**400: a normal product, or 0, inf or NaN
    else:  # a decay beyond 2**400 or below 2**-400: by its own exponent
        mx, kx = _split1(x)
        v = mv * mx
        ev += kx
    if not _moderate(v) and v != 0 and np.isfinite(v):
        v, k = _split1(v)
        ev += k
    return v, ev


#: Steps multiplied plainly before the product is checked.
_PLAIN = 32


@njit(inline="always")
def _decay(a, u, back):
    """The decay a walk uses at ``a[u]``: ``conj(a[u])`` with ``back`` (see ``_row_reduce``)."""
    return np.conj(a[u]) if back else a[u]


@njit_cached(**_JIT)
def _lane_summary(a, x, r, t0, t1, down, back, s, mv, ev, seen):
    """Walk one lane (1-D views; ``r`` its resets or ``None``) over ``[t0, t1)`` from state
    ``s`` and product ``mv * 2**ev``: return the state leaving it, the product times its
    decays, and whether a reset was met (or ``seen`` before).

    Blocks of ``_PLAIN`` steps are multiplied plainly beside the state and folded into the
    product where their product is moderate and no partial product on the way fell below
    ``_FLOOR``; other blocks are multiplied again one renormalized step at a time."""
    zero = s - s
    for c0 in range(_U(0), t1 - t0, _U(_PLAIN)):
        c1 = min(c0 + _U(_PLAIN), t1 - t0)
        p = mv - mv + 1.0
        least = 1.0
        for k in range(c0, c1):
            u = _walk(t0, t1, k, down)
            av = _decay(a, u, back)
            if _reset1(r, u):
                seen = True
                s = zero if back else x[u] + zero
            else:
                s = av * (s + x[u]) if back else av * s + x[u]  # the loops' own order
            p = p * av
            least = min(least, _size(p))
        if _moderate(p) and least >= _FLOOR:
            mv, ev = _times1(mv, ev, p)
        else:
            for k in range(c0, c1):
                mv, ev = _times1(mv, ev, _decay(a, _walk(t0, t1, k, down), back))
    return s, mv, ev, seen


@njit_cached(**_JIT)
def summarize_rows(a, x, m, e, s, f, r, r0, r1, down, back, blocked):
    """The summary of rows ``[r0, r1)`` of ``(O, T)`` arrays (``CPU.summary``): ``s[o]``
    (entering state in, leaving state out), ``m[o] * 2**e[o]`` the product of the decays
    walked (``conj(a)`` with ``back``), ``f[o]`` whether a reset was met (``f`` and ``r``
    are ``None`` without resets). With ``blocked`` the rows without resets run the chained
    blocks, whose chain products are folded in where every decay of the block is at least
    ``_SAFE`` (else the block is walked as one lane)."""
    T = _U(a.shape[1])
    for o in range(_U(r0), _U(r1)):
        ar, xr, rr = a[o], x[o], _row(r, o)
        st = s[o] + 0.0  # float64 (complex128), as in ``_row_reduce``
        mv, ev, seen = st - st + 1.0, 0, False
        nb = T // _U(_BLOCK) if blocked and not _has(r) else _U(0)
        for b in range(nb):
            lo = _block(_U(0), T, b, down)
            hi = lo + _U(_BLOCK)
            p, q = _row_chains(ar, xr, lo, down, back)
            if _chains_stand(ar, lo, p, q, st):
                _, st = _carry4(p, q, st, down)
                for pj in p:
                    mv, ev = _times1(mv, ev, pj)
            else:
                st, mv, ev, seen = _lane_summary(ar, xr, rr, lo, hi, down, back, st, mv, ev,
                                                 seen)  # fmt: skip
        lo, hi = _leftover(_U(0), T, nb, _U(_BLOCK), down)
        st, mv, ev, seen = _lane_summary(ar, xr, rr, lo, hi, down, back, st, mv, ev,
                                         seen)  # fmt: skip
        v, k = _split1(mv)
        m[o], e[o], s[o] = v, ev + k, st
        _note(f, o, seen)


@njit_cached(**_JIT)
def summarize_cols(a, x, m, e, s, f, r, o0, o1, i0, i1, down, back):
    """``summarize_rows`` for the box ``[o0, o1) x [i0, i1)`` of ``(O, T, I)`` arrays: steps
    walked one after the other, channels innermost; each channel's blocks of ``_PLAIN`` plain
    products are folded in as in ``_lane_summary``."""
    T = _U(a.shape[1])
    i0, i1 = _U(i0), _U(i1)
    n = i1 - i0
    st = np.empty(n, m.dtype)  # the states, products and exponents of the box's channels
    mv = np.empty(n, m.dtype)
    ev = np.empty(n, np.int64)
    p = np.empty(n, m.dtype)  # the plain products of the current block
    least = np.empty(n, np.float64)  # and the least size of their partial products
    zero = m.dtype.type(0)
    for o in range(_U(o0), _U(o1)):
        for j in range(n):
            st[j], mv[j], ev[j] = s[o, i0 + j], 1.0, 0
        for c0 in range(_U(0), T, _U(_PLAIN)):
            c1 = min(c0 + _U(_PLAIN), T)
            for j in range(n):
                p[j], least[j] = 1.0, 1.0
            for k in range(c0, c1):
                t = _walk(_U(0), T, k, down)
                for j in range(n):
                    i = i0 + j
                    av = np.conj(a[o, t, i]) if back else a[o, t, i]
                    if _reset3(r, o, t, i):
                        st[j] = zero if back else x[o, t, i]
                        _note(f, (o, i), True)
                    else:
                        st[j] = av * (st[j] + x[o, t, i]) if back else av * st[j] + x[o, t, i]
                    p[j] *= av
                    least[j] = min(least[j], _size(p[j]))
            for j in range(n):
                if _moderate(p[j]) and least[j] >= _FLOOR:
                    mv[j], ev[j] = _times1(mv[j], ev[j], p[j])
                else:
                    for k in range(c0, c1):
                        t = _walk(_U(0), T, k, down)
                        av = np.conj(a[o, t, i0 + j]) if back else a[o, t, i0 + j]
                        mv[j], ev[j] = _times1(mv[j], ev[j], av)
        for j in range(n):
            v, k = _split1(mv[j])
            m[o, i0 + j], e[o, i0 + j], s[o, i0 + j] = v, ev[j] + k, st[j]
