"""Vector blocks: a run of steps of one row scanned inside vector registers, written as LLVM IR.

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

Non-finite values follow ``linscan._affine``: a block whose lanes' maps are not all finite, or
that is entered with a non-finite state, reports that it cannot stand for its steps and
writes nothing; the caller walks it one step at a time.

Real dtypes only (float32, float64); complex rows keep the chained kernels.
"""

from __future__ import annotations

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
_F64 = ir.DoubleType()


@njit(inline="always")
def steps(itemsize):
    """Steps of a block of ``itemsize``-byte elements (compiled: kernels call it)."""
    return VECTORS * BITS // (8 * itemsize)


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
    if not all(isinstance(v, types.BooleanLiteral) for v in (down, back)):
        return None
    if a.dtype not in (types.float32, types.float64):
        return None
    arrays = [v for v in (a, x, h) if isinstance(v, types.Array)]
    if any(v.layout != "C" or v.ndim != 1 or v.dtype != a.dtype for v in arrays):
        return None  # the vectors are loaded and stored whole
    dtype = a.dtype
    width = BITS // dtype.bitwidth
    walk_down, backward = down.literal_value, back.literal_value
    write = not isinstance(h, (types.NoneType, types.Omitted))
    sig = types.Tuple((types.boolean, types.float64, types.float64))(a, x, h, lo, s, down, back)

    def codegen(context, builder, signature, args):
        a_arg, x_arg, h_arg, lo_arg, s_in, _, _ = args
        element = context.get_data_type(dtype)
        vt = ir.VectorType(element, width)
        align = dtype.bitwidth // 8

        def pointer(array_type, array, k):
            data = context.make_array(array_type)(context, builder, array).data
            index = builder.add(lo_arg, ir.Constant(lo_arg.type, k * width))
            return builder.bitcast(builder.gep(data, [index]), vt.as_pointer())

        av = [
            builder.load(pointer(signature.args[0], a_arg, k), align=align) for k in range(VECTORS)
        ]
        xv = [
            builder.load(pointer(signature.args[1], x_arg, k), align=align) for k in range(VECTORS)
        ]
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{width}f{dtype.bitwidth}"
        )
        P = list(av)
        Q = [builder.fmul(av[k], xv[k]) for k in range(VECTORS)] if backward else list(xv)
        _rounds(builder, fma, P, Q, width, walk_down)

        finite_sum = builder.fadd(P[0], Q[0])  # inf and NaN survive the sum (inf - inf: NaN)
        for k in range(1, VECTORS):
            finite_sum = builder.fadd(finite_sum, builder.fadd(P[k], Q[k]))
        any_lane = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_I1, [ir.VectorType(_I1, width)]),
            f"llvm.vector.reduce.or.v{width}i1",
        )
        bad = builder.or_(
            builder.call(any_lane, [_not_finite(builder, finite_sum)]), _not_finite(builder, s_in)
        )
        ok = builder.not_(bad)

        fma64 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_F64, [_F64] * 3), "llvm.fma.f64"
        )
        last = ir.Constant(_I32, 0 if walk_down else width - 1)
        state, product, entering = s_in, ir.Constant(_F64, 1.0), []
        for k in reversed(range(VECTORS)) if walk_down else range(VECTORS):
            entering.append((k, state))
            p = _product64(builder, av[k], width)
            q = builder.extract_element(Q[k], last)
            q = q if dtype.bitwidth == 64 else builder.fpext(q, _F64)
            state = builder.call(fma64, [p, state, q])
            product = builder.fmul(product, p)
        if write:
            with builder.if_then(ok, likely=True):
                for k, state_k in entering:
                    c = state_k if dtype.bitwidth == 64 else builder.fptrunc(state_k, element)
                    hv = builder.call(fma, [P[k], _splat(builder, c, vt), Q[k]])
                    builder.store(hv, pointer(signature.args[2], h_arg, k), align=align)
        return context.make_tuple(builder, signature.return_type, [ok, state, product])

    return sig, codegen
