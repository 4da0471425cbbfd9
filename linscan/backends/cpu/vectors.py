"""Code in vector registers, written as LLVM IR: blocks of one row's steps, filter stages.

A single row is latency bound: one dependent multiply-add per step. The chained kernels of
``kernels`` break the chain into four chains per block, but they stay scalar (Numba's code
does not vectorize across chains, whose steps lie ``M`` elements apart): a float32 step cost
about 0.7 ns in cache on a Zen 4 and 1.5 out of cache, four times ``np.add``'s.

Here a block is ``VECTORS`` vectors of ``width`` consecutive steps. Within each vector the
steps are composed by doubling (Hillis-Steele): after ``log2(width)`` rounds of "shift the
vector by ``d`` lanes, compose" every lane holds the map ``h -> P * h + Q`` of the steps from
the vector's first step (in walk order) to its own, from which every lane's state follows
from the state entering the vector with one fused multiply-add. The vectors' rounds are
issued together, so that four independent shuffle-and-multiply-add chains are in flight (one
vector at a time ran no faster than the chains: each round waits for the one before).
The state passes from vector to vector as ``P_last * h + Q_last``: one multiply-add of
latency per vector on the critical path.

Accuracy, as in ``kernels``: the state carried between vectors and the decay products
returned are float64 (for float32 rows, ``P_last`` is recomputed as a float64 product of the
vector's decays, as a tree), so that no float32 product of many decays near 1, biased
downwards at every rounding, is applied again and again. Only the lanes' own maps, each
applied once to write a result, are in the row's dtype.

Non-finite values follow ``linscan._affine``: a block whose lanes' maps are not all finite,
that is entered with a non-finite state, or whose states are not all finite (a state that
overflows inside the block meets the next decays one at a time in the loop: ``0 * inf`` is
NaN there, a finite number here) reports that it cannot stand for its steps and writes
nothing; the caller walks it one step at a time.

Outputs may be exactly the inputs they replace, as the API allows (``h`` for ``a`` or ``x``,
``grad_x`` for ``grad_h``): a block loads all of its ``a`` and ``x`` before it stores anything,
and the backward block reads each vector's neighbours in ``h`` before it writes that vector.

Multiply-adds are ``llvm.fmuladd``: fused where the CPU has FMA, a multiply and an add where
it has not (``llvm.fma`` would call libm's ``fma`` there, as it did for Numba's generic
target: hundreds of calls in one kernel).

The IIR filter kernels (``filters``) use two more pieces of the same kind: a second-order
section over a tile of lanes in lockstep with the delays held in registers
(``second_order_lanes``), and the copies between a signal's lanes and the tile, a square of
a vector's lanes at a time through a transpose in registers (``lane_square``), the
response to entering delays added to a tile's lanes (``lane_responses``) and the largest
modulus of a tile (``largest_modulus``).

Time-major steps (the "cols" kernels: a step is a contiguous run of channels) are walked
here too, a step's channels as vectors (the last one masked), by ``cols_walk`` (forward
scans, final states, split mode's reductions) and ``cols_back`` (the backward pass): the
states of a box of one or two vectors in registers, those of wider boxes in L1, loaded and
stored at every step; no overlap checks; walking down, one descending run of addresses.

Real dtypes only (float32, float64); complex rows keep the chained kernels, complex steps
and steps with resets Numba's loops.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _host

#: Bits of a vector: AVX-512's registers where the CPU has them, else AVX2's. Wider vectors
#: than the registers would still compile (LLVM splits them) but need twice the registers.
BITS = 512 if _host.cpu()["vector"] == "AVX-512" else 256
#: Vectors of a block, issued round by round together (see the module docstring).
VECTORS = 4

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F64 = ir.DoubleType()


@njit(inline="always")
def steps(itemsize):
    """Steps of a block of ``itemsize``-byte elements (compiled: kernels call it)."""
    return VECTORS * BITS // (8 * itemsize)


@njit(inline="always")
def lanes(itemsize):
    """Lanes of one vector of ``itemsize``-byte elements (compiled: kernels call it)."""
    return BITS // (8 * itemsize)


def _fmuladd(builder, t):
    """``llvm.fmuladd`` for values of the LLVM type ``t`` (see the module docstring)."""

    def bits(scalar):
        return 64 if isinstance(scalar, ir.DoubleType) else 32

    name = f"v{t.count}f{bits(t.element)}" if isinstance(t, ir.VectorType) else f"f{bits(t)}"
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(t, [t, t, t]), f"llvm.fmuladd.{name}"
    )


def _data(context, builder, kind, value):
    """The data pointer of the Numba array ``value`` of type ``kind``."""
    return context.make_array(kind)(context, builder, value).data


def _splat(builder, value, vt):
    lane0 = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count)
    return builder.shuffle_vector(lane0, ir.Constant(vt, ir.Undefined), zeros)


def _not_finite(builder, v):
    """``v - v != 0``: true for inf and NaN (``linscan._affine.not_finite``)."""
    t = v.type
    if isinstance(t, ir.VectorType):
        zero = ir.Constant(t, [ir.Constant(t.element, 0.0)] * t.count)
    else:
        zero = ir.Constant(t, 0.0)
    return builder.fcmp_unordered("!=", builder.fsub(v, v), zero)


def _rounds(builder, fma, P, Q, width, down):
    """Doubling rounds over the vectors' maps (lists ``P``, ``Q``), all vectors per round: lane
    ``i`` composes with the lane ``d`` before it in walk order, where there is one."""
    d = 1
    while d < width:
        if down:  # walk order is descending lanes
            rot = [(i + d) % width for i in range(width)]
            keep = [int(i + d < width) for i in range(width)]
        else:
            rot = [(i - d) % width for i in range(width)]
            keep = [int(i >= d) for i in range(width)]
        # A rotation and a select, not a shift in of identities: LLVM made the shift in of
        # zeros a masked expand, twice as slow as the whole round on a Zen 4.
        rot = ir.Constant(ir.VectorType(_I32, width), rot)
        keep = ir.Constant(ir.VectorType(_I1, width), keep)
        for k in range(len(P)):
            Ps = builder.shuffle_vector(P[k], P[k], rot)
            Qs = builder.shuffle_vector(Q[k], Q[k], rot)
            Q[k] = builder.select(keep, builder.call(fma, [P[k], Qs, Q[k]]), Q[k])
            P[k] = builder.select(keep, builder.fmul(P[k], Ps), P[k])
        d *= 2


def _product64(builder, v, width):
    """The float64 product of ``v``'s lanes, as a tree."""
    if v.type.element != _F64:
        v = builder.fpext(v, ir.VectorType(_F64, width))
    n = width
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n)))
        )
        v = builder.fmul(lo, hi)
    return builder.extract_element(v, ir.Constant(_I32, 0))


class _Block:
    """The code of one block inside an intrinsic: pointers to its vectors, the maps of its
    lanes after the doubling rounds, whether they stand, and the float64 states entering
    each vector."""

    def __init__(self, context, builder, dtype, lo, a, x, s_in, down, back):
        """``a``, ``x``: ``(Numba array type, value)`` pairs; ``back``: the input of a step is
        ``a * x``."""
        self.context, self.builder, self.dtype = context, builder, dtype
        self.lo, self.down = lo, down
        self.width = width = BITS // dtype.bitwidth
        self.element = context.get_data_type(dtype)
        self.vt = ir.VectorType(self.element, width)
        self.align = dtype.bitwidth // 8
        self.fma = _fmuladd(builder, self.vt)
        av = [self.load(a, k) for k in range(VECTORS)]
        self.x = xv = [self.load(x, k) for k in range(VECTORS)]
        self.P = list(av)
        self.Q = [builder.fmul(av[k], xv[k]) for k in range(VECTORS)] if back else list(xv)
        _rounds(builder, self.fma, self.P, self.Q, width, down)

        fma64 = _fmuladd(builder, _F64)
        last = ir.Constant(_I32, 0 if down else width - 1)
        state, product, self.entering = s_in, ir.Constant(_F64, 1.0), []
        for k in reversed(range(VECTORS)) if down else range(VECTORS):
            self.entering.append((k, state))
            p = _product64(builder, av[k], width)
            q = builder.extract_element(self.Q[k], last)
            q = q if dtype.bitwidth == 64 else builder.fpext(q, _F64)
            state = builder.call(fma64, [p, state, q])
            product = builder.fmul(product, p)
        self.state, self.product = state, product
        # Every lane's state, in walk order of the vectors.
        self.lanes = [(k, self.states(k, state_k)) for k, state_k in self.entering]

        # The block stands for its steps only where its maps, the state entering it and the
        # states it reaches are all finite: a state that overflows inside the block meets
        # the next decays one at a time in the loop (0 * inf: NaN; inf * 0.5: inf) but as
        # one product here.
        finite_sum = builder.fadd(self.P[0], self.Q[0])  # inf and NaN survive (inf - inf: NaN)
        for k in range(1, VECTORS):
            finite_sum = builder.fadd(finite_sum, builder.fadd(self.P[k], self.Q[k]))
        for _, lane_states in self.lanes:
            finite_sum = builder.fadd(finite_sum, lane_states)
        any_lane = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_I1, [ir.VectorType(_I1, width)]),
            f"llvm.vector.reduce.or.v{width}i1",
        )
        bad = builder.call(any_lane, [_not_finite(builder, finite_sum)])
        bad = builder.or_(bad, _not_finite(builder, s_in))
        self.ok = builder.not_(builder.or_(bad, _not_finite(builder, state)))

    def pointer(self, array, k, offset=0):
        """Address of vector ``k`` of ``array`` (a ``(type, value)`` pair), ``offset``
        elements on."""
        builder = self.builder
        data = _data(self.context, builder, *array)
        index = builder.add(self.lo, ir.Constant(self.lo.type, k * self.width + offset))
        return builder.bitcast(builder.gep(data, [index]), self.vt.as_pointer())

    def load(self, array, k, offset=0):
        return self.builder.load(self.pointer(array, k, offset), align=self.align)

    def store(self, value, array, k):
        self.builder.store(value, self.pointer(array, k), align=self.align)

    def splat(self, state):
        """The float64 ``state`` in the row's dtype, in every lane."""
        c = state if self.dtype.bitwidth == 64 else self.builder.fptrunc(state, self.element)
        return _splat(self.builder, c, self.vt)

    def states(self, k, state):
        """Vector ``k``'s lanes' states, entered with the float64 ``state``."""
        return self.builder.call(self.fma, [self.P[k], self.splat(state), self.Q[k]])

    def entering_lanes(self, state, lane_states):
        """The state entering each lane of a vector entered with ``state`` whose lanes reach
        ``lane_states``: the lane before's, in walk order, and ``state`` for the first."""
        width = self.width
        if self.down:
            mask = [min(width, i + 1) for i in range(width)]
        else:
            mask = [i - 1 if i >= 1 else width for i in range(width)]
        mask = ir.Constant(ir.VectorType(_I32, width), mask)
        return self.builder.shuffle_vector(lane_states, self.splat(state), mask)


def real_rows(*arrays):
    """Whether Numba array types ``arrays`` (``None`` types allowed) are contiguous rows of
    one real dtype, which the blocks load and store whole (a decay constant in time is a view
    of stride 0: the kernels give it to the chains)."""
    present = [v for v in arrays if isinstance(v, types.Array)]
    dtype = present[0].dtype
    if dtype not in (types.float32, types.float64):
        return False
    return all(v.layout == "C" and v.ndim == 1 and v.dtype == dtype for v in present)


def _literals(*flags):
    return all(isinstance(v, types.BooleanLiteral) for v in flags)


@intrinsic
def block(typingctx, a, x, h, lo, s, down, back):
    """Scan the block of ``steps(a.itemsize)`` steps from index ``lo`` (its lowest) of the
    contiguous 1-D arrays ``a``, ``x`` of one real dtype, entered with the float64 state
    ``s``, walking downwards with ``down``; write the states to ``h`` (a third such array)
    unless it is ``None``.

    Returns ``(ok, state, product)``: whether the block's maps could stand for its steps
    (if not, nothing was written and the caller walks the block), the float64 state leaving
    it and the float64 product of its decays. With ``back`` the input of a step is
    ``a * x`` (the backward carry: see ``kernels._row_reduce``; real dtypes need no
    conjugate). ``down`` and ``back`` must be literal booleans."""
    if not (_literals(down, back) and real_rows(a, x, h)):
        return None
    write = isinstance(h, types.Array)
    sig = types.Tuple((types.boolean, types.float64, types.float64))(a, x, h, lo, s, down, back)

    def codegen(context, builder, signature, args):
        a_arg, x_arg, h_arg, lo_arg, s_in, _, _ = args
        kinds = signature.args
        b = _Block(context, builder, a.dtype, lo_arg, (kinds[0], a_arg), (kinds[1], x_arg), s_in,
                   down.literal_value, back.literal_value)  # fmt: skip
        if write:
            with builder.if_then(b.ok, likely=True):
                for k, lane_states in b.lanes:
                    b.store(lane_states, (kinds[2], h_arg), k)
        return context.make_tuple(builder, signature.return_type, [b.ok, b.state, b.product])

    return sig, codegen


@intrinsic
def back_block(typingctx, a, h, gh, gx, ga, lo, c, down):
    """The backward pass over the block of ``steps(a.itemsize)`` steps from index ``lo`` of
    contiguous rows of one real dtype (``kernels._row_back_serial``'s walk): entered with the
    float64 carry ``c``, each step's gradient is ``g = gh + carry``, written to ``gx``, and
    ``g * h[previous step]`` to ``ga``, and it passes on ``a * g``. The carry obeys
    ``c = a * c + a * gh``, which the block scans (``block``'s ``back``); a lane's gradient is
    ``gh`` plus the carry of the lane before it. Never reads the sequence's first forward
    step's neighbour: the caller keeps that step out of the block.

    Returns ``(ok, carry)``: whether the block stood for its steps (if not, nothing was
    written) and the float64 carry leaving it. ``down`` must be a literal boolean."""
    if not (_literals(down) and real_rows(a, h, gh, gx, ga)):
        return None
    sig = types.Tuple((types.boolean, types.float64))(a, h, gh, gx, ga, lo, c, down)

    def codegen(context, builder, signature, args):
        a_arg, h_arg, gh_arg, gx_arg, ga_arg, lo_arg, c_in, _ = args
        kinds = signature.args
        walk_down = down.literal_value
        b = _Block(context, builder, a.dtype, lo_arg, (kinds[0], a_arg), (kinds[2], gh_arg), c_in,
                   walk_down, True)  # fmt: skip
        with builder.if_then(b.ok, likely=True):
            for (k, carry), (_, lane_states) in zip(b.entering, b.lanes):
                previous = b.load((kinds[1], h_arg), k, -1 if walk_down else 1)
                g = builder.fadd(b.x[k], b.entering_lanes(carry, lane_states))
                b.store(g, (kinds[3], gx_arg), k)
                b.store(builder.fmul(g, previous), (kinds[4], ga_arg), k)
        return context.make_tuple(builder, signature.return_type, [b.ok, b.state])

    return sig, codegen


@intrinsic
def second_order_lanes(typingctx, buf, n, C, c0, z0, z1, coefficients, count):
    """A second-order section (transposed direct form II) over ``n`` steps of ``count``
    vectors of lanes run in lockstep: lane ``c`` of step ``s`` is ``buf[s * C + c]`` (1-D,
    contiguous), for the lanes from ``c0``, filtered in place; its delays ``z0[c]``,
    ``z1[c]`` are loaded once, held in registers through the steps and stored back.
    ``coefficients``: ``(b0, b1, b2, a1, a2)`` in ``buf``'s dtype; ``count`` a literal.

    Per step and lane: ``y = b0 u + z0``, ``z0 = (b1 u + z1) - a1 y``, ``z1 = b2 u - a2 y``,
    each a multiply-add, so that a step waits on two of them (``z0`` to ``y`` to
    ``z0``). With Numba's loops over lanes the delays went through memory at every step and
    LLVM checked at every step that the rows did not overlap."""
    if not isinstance(count, types.IntegerLiteral) or not real_rows(buf, z0, z1):
        return None
    dtype = buf.dtype
    if not (isinstance(coefficients, types.UniTuple) and coefficients.count == 5):
        return None
    width = BITS // dtype.bitwidth
    vectors = count.literal_value
    sig = types.none(buf, n, C, c0, z0, z1, coefficients, count)

    def codegen(context, builder, signature, args):
        buf_arg, n_arg, C_arg, c0_arg, z0_arg, z1_arg, coef_arg, _ = args
        kinds = signature.args
        element = context.get_data_type(dtype)
        vt = ir.VectorType(element, width)
        align = dtype.bitwidth // 8
        index_type = ir.IntType(64)

        def widen(value, kind):
            return context.cast(builder, value, kind, types.int64)

        n64, C64, c064 = widen(n_arg, kinds[1]), widen(C_arg, kinds[2]), widen(c0_arg, kinds[3])
        buf_data, z0_data, z1_data = (
            _data(context, builder, kinds[k], v)
            for k, v in ((0, buf_arg), (4, z0_arg), (5, z1_arg))
        )

        def at(base, index, j):
            index = builder.add(index, ir.Constant(index_type, j * width))
            return builder.bitcast(builder.gep(base, [index]), vt.as_pointer())

        coef = [
            context.cast(builder, builder.extract_value(coef_arg, e), kinds[6].dtype, dtype)
            for e in range(5)
        ]
        b0, b1, b2, a1, a2 = (_splat(builder, c, vt) for c in coef)
        na1, na2 = builder.fneg(a1), builder.fneg(a2)
        fma = _fmuladd(builder, vt)

        def mad(p, q, r):
            return builder.call(fma, [p, q, r])

        # The delays live in stack slots that LLVM promotes to registers.
        slots = []
        for j in range(vectors):
            pair = []
            for z_data in (z0_data, z1_data):
                slot = cgutils.alloca_once(builder, vt)
                builder.store(builder.load(at(z_data, c064, j), align=align), slot)
                pair.append(slot)
            slots.append(pair)
        with cgutils.for_range(builder, n64) as loop:
            row = builder.add(builder.mul(loop.index, C64), c064)
            for j, (s0, s1) in enumerate(slots):
                where = at(buf_data, row, j)
                u = builder.load(where, align=align)
                d0, d1 = builder.load(s0), builder.load(s1)
                y = mad(b0, u, d0)
                builder.store(mad(na1, y, mad(b1, u, d1)), s0)
                builder.store(mad(na2, y, builder.fmul(b2, u)), s1)
                builder.store(y, where, align=align)
        for j, (s0, s1) in enumerate(slots):
            builder.store(builder.load(s0), at(z0_data, c064, j), align=align)
            builder.store(builder.load(s1), at(z1_data, c064, j), align=align)
        return context.get_dummy_value()

    return sig, codegen


def _transpose(builder, rows, width):
    """The ``width`` vectors ``rows`` (a square of lanes) transposed: lane ``i`` of vector
    ``j`` becomes lane ``j`` of vector ``i``. Stages swap ever larger blocks between pairs
    of vectors (1, 2, 4... lanes), ``log2(width)`` shuffles per vector."""
    rows = list(rows)
    b = 1
    while b < width:
        low = [l if not l & b else width + l - b for l in range(width)]
        high = [l + b if not l & b else width + l for l in range(width)]
        low = ir.Constant(ir.VectorType(_I32, width), low)
        high = ir.Constant(ir.VectorType(_I32, width), high)
        for i in range(width):
            if i & b:
                continue
            j = i + b
            rows[i], rows[j] = (
                builder.shuffle_vector(rows[i], rows[j], low),
                builder.shuffle_vector(rows[i], rows[j], high),
            )
        b *= 2
    return rows


def _lane_types(signal, first, buf):
    return (
        real_rows(signal, buf)
        and isinstance(first, types.Array)
        and first.ndim == 1
        and first.layout == "C"
        and isinstance(first.dtype, types.Integer)
    )


@intrinsic
def lane_square(typingctx, signal, first, c0, t, buf, C, r, into):
    """Copy a square of a vector's lanes between a signal and a tile: for ``i``, ``j`` below
    the vector's lanes, element ``t + j`` of lane ``c0 + i`` (``signal[first[c0 + i] + t +
    j]``: lanes are runs of the signal) and ``buf[(r + j) * C + c0 + i]`` (a tile of steps of
    ``C`` lanes); into the tile with ``into``, out of it without (a literal). 1-D contiguous
    arrays of one real dtype: vector loads, a transpose in registers, vector stores. The
    scalar copy it replaces moved one element at a time."""
    if not (isinstance(into, types.BooleanLiteral) and _lane_types(signal, first, buf)):
        return None
    sig = types.none(signal, first, c0, t, buf, C, r, into)

    def codegen(context, builder, signature, args):
        signal_arg, first_arg, buf_arg = args[0], args[1], args[4]
        kinds = signature.args
        dtype = kinds[0].dtype
        width = BITS // dtype.bitwidth
        vt = ir.VectorType(context.get_data_type(dtype), width)
        align = dtype.bitwidth // 8
        i64 = ir.IntType(64)
        c0, t, C, r = (context.cast(builder, args[k], kinds[k], types.int64) for k in (2, 3, 5, 6))

        signal_data = _data(context, builder, kinds[0], signal_arg)
        buf_data = _data(context, builder, kinds[4], buf_arg)
        first_data = _data(context, builder, kinds[1], first_arg)

        def in_lane(i):  # lane c0 + i's steps from t
            at = builder.gep(first_data, [builder.add(c0, ir.Constant(i64, i))])
            start = context.cast(builder, builder.load(at), kinds[1].dtype, types.int64)
            return builder.bitcast(
                builder.gep(signal_data, [builder.add(start, t)]), vt.as_pointer()
            )

        def in_tile(j):  # step r + j's lanes from c0
            row = builder.mul(builder.add(r, ir.Constant(i64, j)), C)
            return builder.bitcast(builder.gep(buf_data, [builder.add(row, c0)]), vt.as_pointer())

        load_at, store_at = (in_lane, in_tile) if into.literal_value else (in_tile, in_lane)
        rows = [builder.load(load_at(k), align=align) for k in range(width)]
        for k, v in enumerate(_transpose(builder, rows, width)):
            builder.store(v, store_at(k), align=align)
        return context.get_dummy_value()

    return sig, codegen


# --- time-major steps ("cols"): a step is a contiguous run of channels -----------------------

#: Boxes of at most this many vectors of channels hold their states in registers through a
#: walk; wider ones load and store them at every step.
REGISTER_VECTORS = 2


@intrinsic
def lane_responses(typingctx, buf, n, C, c0, entering, response, D, count):
    """Add to ``count`` vectors of lanes (from ``c0``) of a tile the filter's response to
    their entering delays: ``buf[s * C + c] += sum_j response[s * D + j] * entering[j * C +
    c]`` for the steps ``s`` below ``n``, summed in float64 and rounded once (1-D
    contiguous arrays; ``buf`` of a real dtype, ``entering`` and ``response`` float64:
    float32 sums of large terms that cancel lost more than the loop does; ``count`` a
    literal). A step's lanes are loaded once and take ``D`` multiply-adds; Numba's loop over
    the lanes ran scalar (unrolled over a constant count of lanes, never vectorized)."""
    if not isinstance(count, types.IntegerLiteral) or not real_rows(buf):
        return None
    if not real_rows(entering, response) or entering.dtype != types.float64:
        return None
    dtype = buf.dtype
    width = BITS // dtype.bitwidth
    sig = types.none(buf, n, C, c0, entering, response, D, count)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        vt = ir.VectorType(context.get_data_type(dtype), width)
        wide = ir.VectorType(_F64, width)
        align = dtype.bitwidth // 8
        n64, C64, c064, D64 = (
            context.cast(builder, args[k], kinds[k], types.int64) for k in (1, 2, 3, 6)
        )
        buf_data, entering_data, response_data = (
            _data(context, builder, kinds[k], args[k]) for k in (0, 4, 5)
        )
        fma = _fmuladd(builder, wide)

        def at(base, index, v, t):
            index = builder.add(index, ir.Constant(_I64, v * width))
            return builder.bitcast(builder.gep(base, [index]), t.as_pointer())

        def widened(v):
            return v if vt == wide else builder.fpext(v, wide)

        # The sums live in stack slots that LLVM promotes to registers.
        sums = [cgutils.alloca_once(builder, wide) for _ in range(count.literal_value)]
        with cgutils.for_range(builder, n64) as step:
            row = builder.add(builder.mul(step.index, C64), c064)
            for v, slot in enumerate(sums):
                builder.store(widened(builder.load(at(buf_data, row, v, vt), align=align)), slot)
            terms = builder.mul(step.index, D64)
            with cgutils.for_range(builder, D64) as delay:
                g = builder.load(builder.gep(response_data, [builder.add(terms, delay.index)]))
                g = _splat(builder, g, wide)
                lanes_at = builder.add(builder.mul(delay.index, C64), c064)
                for v, slot in enumerate(sums):
                    e = builder.load(at(entering_data, lanes_at, v, wide), align=8)
                    builder.store(builder.call(fma, [g, e, builder.load(slot)]), slot)
            for v, slot in enumerate(sums):
                total = builder.load(slot)
                if vt != wide:
                    total = builder.fptrunc(total, vt)
                builder.store(total, at(buf_data, row, v, vt), align=align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def largest_modulus(typingctx, values, count):
    """The largest modulus of the whole vectors of ``values[:count]`` (1-D, contiguous, a
    real dtype; the caller takes the last ``count % width`` elements), a vector at a time
    (Numba's loop, with any fastmath flags, compared one element at a time). A NaN is
    passed over."""
    if not real_rows(values):
        return None
    dtype = values.dtype
    width = BITS // dtype.bitwidth
    sig = dtype(values, count)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        element = context.get_data_type(dtype)
        vt = ir.VectorType(element, width)
        name = f"v{width}f{dtype.bitwidth}"
        fabs = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vt, [vt]), f"llvm.fabs.{name}"
        )
        reduce = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(element, [vt]), f"llvm.vector.reduce.fmax.{name}"
        )
        data = builder.bitcast(_data(context, builder, kinds[0], args[0]), vt.as_pointer())
        vectors = builder.udiv(
            context.cast(builder, args[1], kinds[1], types.int64), ir.Constant(_I64, width)
        )
        zero = ir.Constant(vt, [ir.Constant(element, 0)] * width)
        peak = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, vectors) as loop:
            v = builder.call(fabs, [builder.load(builder.gep(data, [loop.index]), align=1)])
            old = builder.load(peak)
            # ``v > old ? v : old``, one max instruction (a NaN compares false: passed over)
            builder.store(builder.select(builder.fcmp_ordered(">", v, old), v, old), peak)
        return builder.call(reduce, [builder.load(peak)])

    return sig, codegen


def _present(*kinds):
    return [v for v in kinds if not isinstance(v, types.NoneType)]


def _real(*kinds):
    """Whether the Numba types ``kinds`` (``None`` types aside) are arrays of a real dtype.
    The walks load a step's channels as vectors: the caller also checks at run time that
    the arrays' channels are contiguous (``kernels._last``)."""
    return all(
        isinstance(v, types.Array) and v.dtype in (types.float32, types.float64)
        for v in _present(*kinds)
    )


def walk_types(a, x, h, s, p):
    """Whether ``cols_walk`` compiles for these Numba types (``h``, ``p`` may be ``None``)."""
    return (
        _real(a, x, h, s, p)
        and all(v.ndim == 3 for v in _present(a, x, h))
        and all(v.ndim == 2 for v in _present(s, p))
        and a.dtype == x.dtype
        # The arithmetic is in the states' (and products') dtype: never narrower than the
        # inputs, as Numba's promotion would have it.
        and all(v.dtype.bitwidth >= a.dtype.bitwidth for v in _present(s, p))
    )


def back_types(a, h, gh, gx, ga, c):
    """Whether ``cols_back`` compiles for these Numba types."""
    arrays = (a, h, gh, gx, ga, c)
    return (
        _real(*arrays)
        and all(v.ndim == 3 for v in arrays[:-1])
        and c.ndim == 2
        and len({v.dtype for v in arrays}) == 1
    )


class _Strided:
    """A Numba array inside an intrinsic: byte pointers from indices, vector loads and
    stores (masked or not) converted from and to a vector type of the same lanes."""

    def __init__(self, context, builder, kind, value, width):
        array = context.make_array(kind)(context, builder, value)
        self.builder, self.width = builder, width
        self.data = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        self.strides = cgutils.unpack_tuple(builder, array.strides, kind.ndim)
        self.element = context.get_data_type(kind.dtype)
        self.bits = kind.dtype.bitwidth
        self.vt = ir.VectorType(self.element, width)

    def row(self, *index):
        """Byte pointer to the element at ``index`` (int64 values, leading dimensions)."""
        builder, offset = self.builder, ir.Constant(_I64, 0)
        for i, stride in zip(index, self.strides):
            offset = builder.add(offset, builder.mul(i, stride))
        return builder.gep(self.data, [offset])

    def _pointer(self, row, j):
        step = ir.Constant(_I64, self.width * self.bits // 8)
        at = self.builder.gep(row, [self.builder.mul(j, step)])
        return self.builder.bitcast(at, self.vt.as_pointer())

    def _masked(self, op, returns, operands):
        fn = cgutils.get_or_insert_function(
            self.builder.module,
            ir.FunctionType(returns, [v.type for v in operands]),
            f"llvm.masked.{op}.v{self.width}f{self.bits}.p0",
        )
        return self.builder.call(fn, operands)

    def load(self, row, j, vt, mask=None):
        """Vector ``j`` (an int64) of the row at ``row`` as the vector type ``vt``; with
        ``mask`` only its lanes (the others zero)."""
        pointer, align = self._pointer(row, j), ir.Constant(_I32, self.bits // 8)
        if mask is None:
            v = self.builder.load(pointer, align=self.bits // 8)
        else:
            zero = ir.Constant(self.vt, [ir.Constant(self.element, 0.0)] * self.width)
            v = self._masked("load", self.vt, [pointer, align, mask, zero])
        return _convert(self.builder, v, vt)

    def store(self, value, row, j, mask=None):
        pointer, value = self._pointer(row, j), _convert(self.builder, value, self.vt)
        if mask is None:
            self.builder.store(value, pointer, align=self.bits // 8)
        else:
            align = ir.Constant(_I32, self.bits // 8)
            self._masked("store", ir.VoidType(), [value, pointer, align, mask])


def _convert(builder, v, vt):
    """The vector ``v`` as the vector type ``vt`` (same lanes; float32 <-> float64)."""
    if v.type == vt:
        return v
    if vt.element == _F64:
        return builder.fpext(v, vt)
    return builder.fptrunc(v, vt)


def _walk_steps(context, builder, kinds, args, width, state, step):
    """The loops of a "cols" walk. ``args[-6:]`` are ``o, i0, i1, t0, t1, down`` (``down`` a
    run-time boolean); the box's channels are cut into vectors of ``width`` lanes, the last
    one masked where they do not fill it (``mask`` ``None``: a full vector). ``state`` is a pair ``(load, store)``:
    ``load(o, i0, j, mask)`` returns vector ``j``'s state (a list of vectors) and
    ``store(o, i0, j, mask, values)`` writes it back; ``step(o, i0, t, j, mask, values)``
    emits vector ``j`` of step ``t`` and returns its new state.

    A box of at most ``REGISTER_VECTORS`` vectors holds its states in registers through the
    walk (through memory, a float32 state's multiply-add waited at every step on a store
    forwarded to the next load: 16 float32 channels ran at 1.7 times ``np.add``, not 1.0,
    on a Zen 4). Wider boxes load and store their states at every step; their vectors'
    chains overlap. Walking down, a step's vectors are walked from its last: the walk is then
    one descending run of addresses (ascending runs within descending steps left the
    prefetchers a step behind: 64 float64 channels walked down at 3.3 times ``np.add``)."""
    o, i0, i1, t0, t1 = (
        context.cast(builder, args[k], kinds[k], types.int64)
        for k in range(len(args) - 6, len(args) - 1)
    )
    down = args[-1]
    one, n = ir.Constant(_I64, 1), builder.sub(i1, i0)
    full = builder.udiv(n, ir.Constant(_I64, width))
    tail = builder.urem(n, ir.Constant(_I64, width))
    count = builder.add(
        full, builder.zext(builder.icmp_unsigned("!=", tail, ir.Constant(_I64, 0)), _I64)
    )
    lane = ir.Constant(ir.VectorType(_I64, width), list(range(width)))

    def mask(j):
        first = builder.mul(j, ir.Constant(_I64, width))
        return builder.icmp_unsigned("<", builder.add(lane, _splat(builder, first, lane.type)),
                                     _splat(builder, n, lane.type))  # fmt: skip

    def steps(emit):
        with cgutils.for_range(builder, builder.sub(t1, t0)) as loop:
            k = loop.index
            emit(builder.select(down, builder.sub(builder.sub(t1, one), k), builder.add(t0, k)))

    load, store = state
    few = builder.icmp_unsigned("<=", count, ir.Constant(_I64, REGISTER_VECTORS))
    partial = builder.icmp_unsigned("!=", tail, ir.Constant(_I64, 0))
    with builder.if_else(few) as (in_registers, in_memory):
        with in_registers:
            # One loop per count of vectors and whether the last is partial: full vectors
            # load and store unmasked (AVX2's masked stores are slow on some CPUs).
            for c, last_partial in ((c, p) for c in range(1, REGISTER_VECTORS + 1)
                                    for p in (False, True)):  # fmt: skip
                this = builder.icmp_unsigned("==", count, ir.Constant(_I64, c))
                this = builder.and_(this, partial if last_partial else builder.not_(partial))
                with builder.if_then(this):
                    js = [ir.Constant(_I64, j) for j in range(c)]
                    masks = [None] * (c - 1) + [mask(js[-1]) if last_partial else None]
                    # Stack slots that LLVM promotes to registers.
                    slots = []
                    for j, m in zip(js, masks):
                        values = load(o, i0, j, m)
                        slots.append([cgutils.alloca_once_value(builder, v) for v in values])

                    def emit(t, js=js, masks=masks, slots=slots):
                        for j, m, slot in zip(js, masks, slots):
                            values = step(o, i0, t, j, m, [builder.load(v) for v in slot])
                            for v, where in zip(values, slot):
                                builder.store(v, where)

                    steps(emit)
                    for j, m, slot in zip(js, masks, slots):
                        store(o, i0, j, m, [builder.load(v) for v in slot])
        with in_memory:
            last = mask(full)

            def vector(t, j, m):
                store(o, i0, j, m, step(o, i0, t, j, m, load(o, i0, j, m)))

            def emit(t):
                def tail_vector():
                    with builder.if_then(partial):
                        vector(t, full, last)

                with builder.if_then(down):
                    tail_vector()
                with cgutils.for_range(builder, full) as loop:
                    k = loop.index
                    vector(t, builder.select(down, builder.sub(builder.sub(full, one), k), k), None)
                with builder.if_then(builder.not_(down)):
                    tail_vector()

            steps(emit)


def _ftz_vector(builder, v):
    """``kernels._ftz`` of each lane of ``v``: zero below the smallest normal number."""
    vt = v.type
    bits = 64 if vt.element == _F64 else 32
    fabs = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vt, [vt]), f"llvm.fabs.v{vt.count}f{bits}"
    )
    tiny = np.finfo(np.float64 if bits == 64 else np.float32).tiny
    small = builder.fcmp_ordered(
        "<", builder.call(fabs, [v]), _splat(builder, ir.Constant(vt.element, tiny), vt)
    )
    return builder.select(small, builder.fsub(v, v), v)


def _arrays(context, builder, kinds, args, count, width):
    return [
        None if isinstance(kinds[k], types.NoneType)
        else _Strided(context, builder, kinds[k], args[k], width)
        for k in range(count)
    ]  # fmt: skip


@intrinsic
def cols_walk(typingctx, a, x, h, s, p, back, o, i0, i1, t0, t1, down):
    """Walk the channels ``[i0, i1)`` of outer row ``o`` of ``(O, T, I)`` arrays over the
    steps ``[t0, t1)``, downwards with ``down``: ``s[o, i] = a * s[o, i] + x`` per step and
    channel, writing each step's states to ``h`` unless it is ``None``, and with ``p`` (an
    ``(O, I)`` array, or ``None``) multiplying the decays into ``p[o, i]``, flushed to zero
    below the smallest normal number (``kernels._ftz``). With ``back`` (a literal) the input
    of a step is ``a * x`` (``kernels._row_reduce``'s backward carry). The arithmetic is in
    ``s``'s dtype, the products in ``p``'s, as in ``kernels.scan_cols`` and ``reduce_cols``.

    Numba's loops over channels needed an overlap check at every step of a downward walk,
    and held the states in memory (see ``_walk_steps``). The caller checks that every 3-D
    array's channels are contiguous."""
    if not (
        isinstance(back, types.BooleanLiteral)
        and isinstance(down, types.Boolean)
        and walk_types(a, x, h, s, p)
    ):
        return None
    sig = types.none(a, x, h, s, p, back, o, i0, i1, t0, t1, down)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        width = BITS // kinds[0].dtype.bitwidth
        A, X, H, S, P = _arrays(context, builder, kinds, args, 5, width)
        fma = _fmuladd(builder, S.vt)

        def load(o, i0, j, mask):
            values = [S.load(S.row(o, i0), j, S.vt, mask)]
            return values + ([] if P is None else [P.load(P.row(o, i0), j, P.vt, mask)])

        def store(o, i0, j, mask, values):
            S.store(values[0], S.row(o, i0), j, mask)
            if P is not None:
                P.store(values[1], P.row(o, i0), j, mask)

        def step(o, i0, t, j, mask, values):
            av = A.load(A.row(o, t, i0), j, A.vt, mask)
            xv = X.load(X.row(o, t, i0), j, X.vt, mask)
            if back.literal_value:
                xv = builder.fmul(av, xv)
            sv = builder.call(
                fma, [_convert(builder, av, S.vt), values[0], _convert(builder, xv, S.vt)]
            )
            if H is not None:
                H.store(sv, H.row(o, t, i0), j, mask)
            if P is None:
                return [sv]
            return [sv, _ftz_vector(builder, builder.fmul(values[1], _convert(builder, av, P.vt)))]

        _walk_steps(context, builder, kinds, args, width, (load, store), step)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cols_back(typingctx, a, h, gh, gx, ga, c, o, i0, i1, t0, t1, down):
    """The backward pass over the channels ``[i0, i1)`` of outer row ``o`` of ``(O, T, I)``
    arrays of one real dtype, over the steps ``[t0, t1)`` (``kernels.backward_cols``'s walk,
    without its edge step): per step and channel, ``g = gh + c``, written to ``gx``, ``g *
    h[previous step]`` to ``ga``, and the carry ``c[o, i]`` becomes ``a * g``. The previous
    step is ``t - 1`` walking down, ``t + 1`` up; the caller keeps the step without one out
    of ``[t0, t1)``. Every input of a step is loaded before its outputs are stored, so
    ``gx`` may be ``gh``. The caller checks that the 3-D arrays' channels are contiguous."""
    if not (isinstance(down, types.Boolean) and back_types(a, h, gh, gx, ga, c)):
        return None
    sig = types.none(a, h, gh, gx, ga, c, o, i0, i1, t0, t1, down)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        width = BITS // kinds[0].dtype.bitwidth
        A, H, GH, GX, GA, C = _arrays(context, builder, kinds, args, 6, width)
        down = args[-1]
        minus_one = ir.Constant(_I64, -1)

        def load(o, i0, j, mask):
            return [C.load(C.row(o, i0), j, C.vt, mask)]

        def store(o, i0, j, mask, values):
            C.store(values[0], C.row(o, i0), j, mask)

        def step(o, i0, t, j, mask, values):
            previous = builder.add(t, builder.select(down, minus_one, ir.Constant(_I64, 1)))
            av = A.load(A.row(o, t, i0), j, A.vt, mask)
            ghv = GH.load(GH.row(o, t, i0), j, A.vt, mask)
            hv = H.load(H.row(o, previous, i0), j, A.vt, mask)
            g = builder.fadd(ghv, values[0])
            GX.store(g, GX.row(o, t, i0), j, mask)
            GA.store(builder.fmul(g, hv), GA.row(o, t, i0), j, mask)
            return [builder.fmul(av, g)]

        _walk_steps(context, builder, kinds, args, width, (load, store), step)
        return context.get_dummy_value()

    return sig, codegen
