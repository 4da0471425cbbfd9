r"""linscan on Dask arrays: :func:`scan`, :func:`final_state` and :func:`scan_backward`, lazily.

Install with ``pip install "linscan[dask]"``. Each function takes the arguments of the
in-memory function of the same name (``out`` excepted: the result is a new lazy array) and
means the same; any input may be a Dask array, chunked along any axes, the time axis
included, with NumPy or CuPy chunks. The result is a lazy Dask array chunked like the inputs
(like ``x``, or ``h`` for :func:`scan_backward`; where the inputs are chunked differently
along an axis, chunked like the first that is not broadcast along it).

How a scan is split along time. With ``k`` chunks along the time axis:

1. *Summaries.* Each chunk computes, with the in-memory functions, its local final state
   ``B`` (from a zero state), the product ``A`` of its decays (with a separate exponent, so
   that it neither underflows nor overflows) and whether it resets: a chunk maps an incoming
   state ``s`` to ``A * s + B`` (to ``B`` where it resets).
2. *Carries.* The ``k`` maps compose associatively. A tree of compositions gives every
   chunk its true incoming state, so the graph's depth grows with ``log2(k)``, not ``k``;
   these are arrays of the size of one time step.
3. *Scans.* Each chunk scans again from its true incoming state.

inf and NaN land where the serial loop puts them. Where a map cannot stand for its steps
(``linscan._affine``: an infinite decay, a product beyond the dtype's range, an infinite state
meeting the inf of an overflow) its chunk keeps its inputs in its summary, and step 2 walks it
from its true incoming state with the in-memory function, as the in-memory functions walk
such stretches. Such chunks (rare: infinite decays or inputs, growth beyond the dtype's range)
stay in memory until the carries are known.

:func:`scan_backward` runs the same three steps backwards in time on the gradient.

Memory and reads. Steps 1 and 3 read the inputs separately: step 3's copies of the inputs
(``dask.graph_manipulation.bind``) load only once every carry is known, so no chunk waits in
memory for its carry and the peak memory is that of a few chunks per worker, whatever the
array's size. The price is that every input chunk is loaded (read from its store, or
computed by its graph) twice: once per step. In memory, :func:`scan` reads ``a`` three
times (twice in step 1: for ``A`` and ``B``) and ``x`` twice, and writes ``h`` once;
:func:`final_state` loads its inputs once (step 1 only) and writes one step;
:func:`scan_backward` loads ``a``, ``grad_h`` and ``resets`` twice and ``h`` twice in step 3
(once as a chunk, once for the boundary step that the next chunk needs as its ``h0``). With
one chunk along time there is only step 3, and every input is loaded once.

16-bit inputs carry their states in float32 from chunk to chunk, as the in-memory scan
accumulates them, and round once per chunk of the result.
"""

from __future__ import annotations

import itertools
import math
import operator
from functools import partial
from typing import NamedTuple

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask._task_spec import Alias, Task, TaskRef, convert_legacy_graph
from dask.highlevelgraph import HighLevelGraph

from .. import _affine, _api, _dtypes, _layout, _validate

__all__ = ["scan", "final_state", "scan_backward"]


# --- the functions ----------------------------------------------------------------------------


def scan(a, x, h0=None, *, axis=-1, reverse=False, method="auto", resets=None):
    """:func:`linscan.scan` of Dask arrays (see the module docstring).

    Parameters
    ----------
    a, x, h0, axis, reverse, method, resets
        As for :func:`linscan.scan`; each array may be a Dask array (chunked along any axes,
        NumPy or CuPy chunks), a NumPy or CuPy array or, for ``a`` and ``h0``, a number.

    Returns
    -------
    dask.array.Array
        The states, lazily: the in-memory result's shape and dtype, chunked like ``x``.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`linscan.scan`, when called (before anything is computed).

    Examples
    --------
    >>> import dask.array as da, numpy as np, linscan.dask
    >>> x = da.ones(6, chunks=2)
    >>> linscan.dask.scan(0.5, x).compute()
    array([1.     , 1.5    , 1.75   , 1.875  , 1.9375 , 1.96875])
    """
    call = _forward_call(a, x, h0, axis, reverse, method, resets, "scan")
    inputs, carries = call.inputs, None
    if call.steps > 1:
        carries = call.carries(_summary, inputs, call.order[:-1])
        inputs = _bound(inputs, carries)
    return call.blockwise(_scan_chunk, inputs, carries, call.dtype)


def final_state(a, x, h0=None, *, axis=-1, reverse=False, method="auto", resets=None):
    """:func:`linscan.final_state` of Dask arrays (see the module docstring). Loads each input
    chunk once.

    Parameters
    ----------
    a, x, h0, axis, reverse, method, resets
        As for :func:`scan`.

    Returns
    -------
    dask.array.Array
        The last state, lazily: the shape of one time step, chunked like ``x`` along the
        other axes.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`linscan.final_state`, when called.

    Examples
    --------
    >>> import dask.array as da, numpy as np, linscan.dask
    >>> float(linscan.dask.final_state(0.5, da.arange(6.0, chunks=2)).compute())
    8.0625
    """
    call = _forward_call(a, x, h0, axis, reverse, method, resets, "final_state")
    if call.shape[call.axis] == 0:
        state = da.broadcast_to(call.h0, call.state_shape) if call.h0 is not None else None
        if state is None:
            state = da.zeros(call.state_shape, call.dtype, chunks=call.state_chunks)
        return state.astype(call.dtype)
    return call.total(_summary, call.inputs, call.order)


def scan_backward(a, h, grad_h, h0=None, *, axis=-1, reverse=False, method="auto", resets=None):
    """:func:`linscan.scan_backward` of Dask arrays (see the module docstring).

    Parameters
    ----------
    a, h, grad_h, h0, axis, reverse, method, resets
        As for :func:`linscan.scan_backward`; each array may be a Dask array.

    Returns
    -------
    grad_a, grad_x, grad_h0 : dask.array.Array
        Lazily: ``grad_x`` chunked like ``h``; ``grad_a`` and ``grad_h0`` in the shapes and
        dtypes of ``a`` and ``h0`` (sums over their broadcast copies); ``grad_h0`` is
        ``None`` without ``h0``.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`linscan.scan_backward`, when called.

    Examples
    --------
    >>> import dask.array as da, numpy as np, linscan.dask
    >>> a, x = da.full(4, 0.5, chunks=2), da.ones(4, chunks=2)
    >>> h = linscan.dask.scan(a, x)
    >>> ga, gx, gh0 = linscan.dask.scan_backward(a, h, da.ones(4, chunks=2), h0=0.0)
    >>> gx.compute()
    array([1.875, 1.75 , 1.5  , 1.   ])
    """
    proxies = _stand_ins(a=a, h=h, grad_h=grad_h, h0=h0)
    args = _validate.backward_args(*proxies, axis, reverse, _stand_in(resets, "resets"))
    named = (("a", a), ("h", h), ("grad_h", grad_h), ("resets", resets))
    call = _Call(args, method, named, h0, ("h", "grad_h", "a", "resets"), "scan_backward")
    backwards = call.order[::-1]
    inputs, carries = call.inputs, None
    if call.steps > 1:
        a_in, _, grad_in, r_in = inputs
        carries = call.carries(_gradient_summary, (a_in, grad_in, r_in), backwards[:-1], False)
        inputs = _bound(inputs, carries)
    # The state before each chunk: the last step of the chunk before it, h0 for the first.
    before = call.boundaries(inputs[1], call.h0)
    parts = call.blockwise(_backward_chunk, inputs, carries, None, backwards, extra=before)
    grad_x = call.part(parts, 1, call.chunks, call.dtype)
    grad_a = call.reduced(parts, 0, call.operands["a"], args.a, None)
    grad_h0 = None
    if args.h0 is not None:
        grad_h0 = call.reduced(parts, 2, call.h0, args.h0, call.order[0])
    return grad_a, grad_x, grad_h0


# --- the work of one chunk (plain functions: they travel to Dask's workers) ---------------------


class _Map(NamedTuple):
    """What a chunk, or a run of chunks, does to the state entering it: ``h -> A * h + B``
    (``B`` where it resets), the algebra of ``linscan._affine``.

    ``A``, the product of the decays, is kept as ``mantissa * 2**exponent`` (``exponent`` an
    int64 array): it neither underflows nor overflows however long the run, so that ``A * h``
    is what the loop multiplying one decay at a time gives, an infinite ``h`` and a product
    below the smallest float included; ``A`` is zero only for a zero decay, and infinite or
    NaN only for an infinite or NaN decay. ``B`` is the loop's result from a zero state, in the
    accumulator dtype. ``reset`` says where the run resets (``None``: nowhere).

    Where ``A`` is infinite (an infinite decay: ``B`` holds ``inf * 0`` where the loop holds
    ``inf * h``), or beyond the accumulator's range, the map cannot stand for its steps
    (:func:`_unsafe`). A chunk holding such a lane keeps ``walk`` (its inputs, and the function
    that walks them from a given state); a run of chunks holding such a lane keeps ``pieces``,
    the runs it is made of in order, each a map that stands or a chunk that walks. Applying
    the map walks them there (:func:`_applied`)."""

    mantissa: object
    exponent: object
    B: object
    reset: object = None
    walk: object = None
    pieces: tuple = ()


def _split(value, xp):
    """``value`` as ``(mantissa, exponent)``: ``value == mantissa * 2**exponent``, the mantissa
    float64 (complex128 for complex values) of magnitude in [0.5, 1) (its larger component
    for a complex value); 0, inf and NaN are their own mantissa with exponent 0."""
    wide = np.promote_types(value.dtype, np.float64)
    value = value.astype(wide, copy=False)
    if wide.kind != "c":
        mantissa, exponent = xp.frexp(value)
        return mantissa, exponent.astype(np.int64)
    _, exponent = xp.frexp(xp.maximum(abs(value.real), abs(value.imag)))
    exponent = exponent.astype(np.int64)
    return _scaled(value, -exponent, xp), exponent


def _scaled(value, exponent, xp):
    """``value * 2**exponent`` without an intermediate overflow or underflow (complex values
    component by component)."""
    with np.errstate(over="ignore"):
        if value.dtype.kind != "c":
            return xp.ldexp(value, exponent)
        real, imag = xp.ldexp(value.real, exponent), xp.ldexp(value.imag, exponent)
        return real + 1j * imag


def _times(first, second, xp):
    """The product of two ``(mantissa, exponent)`` pairs, normalized."""
    with np.errstate(invalid="ignore", over="ignore"):
        mantissa, exponent = _split(first[0] * second[0], xp)
    return mantissa, exponent + first[1] + second[1]


#: Mantissas of magnitude at least 0.5 (at most sqrt(2) for complex ones): a product of this
#: many stays a normal float64.
_BLOCK = 1000


def _product(a, steps, xp, *, axis, method, acc):
    """The product over time of the decays ``a`` of a chunk of ``steps`` steps (a decay
    broadcast along time counts once per step) as ``(mantissa, exponent)`` (see
    :func:`_split`)."""
    if a.shape[axis] == 1 and steps > 1:  # one decay for every step: its power, by squaring
        base, power = _split(a.take(0, axis=axis), xp), steps
        total = (xp.ones_like(base[0]), xp.zeros_like(base[1]))
        while power:
            if power & 1:
                total = _times(total, base, xp)
            base, power = _times(base, base, xp), power >> 1
        return total
    if xp is np:
        from .. import _cpu

        return _cpu.decay_product(a, axis, acc)  # one pass of a kernel
    # CuPy chunks: the plain product where it neither overflows nor underflows (below the
    # smallest normal number it has lost digits), else array operations on the device.
    zero = xp.zeros((), acc)
    plain = _api.final_state(a, zero, zero + 1, axis=axis, method=method)
    normal = _dtypes.finfo(acc).smallest_normal
    with np.errstate(invalid="ignore"):
        if bool(xp.all(xp.isfinite(plain) & (abs(plain) >= normal))):
            return _split(plain, xp)
    return _array_product(a.astype(acc, copy=False), xp, axis=axis)


def _array_product(a, xp, *, axis):
    """:func:`_product` of decays ``a`` of one per step, by array operations."""
    mantissas, exponents = _split(a, xp)
    total = (xp.ones_like(mantissas.take(0, axis=axis)), exponents.sum(axis=axis))
    for lo in range(0, a.shape[axis], _BLOCK):
        block = mantissas.take(xp.arange(lo, min(lo + _BLOCK, a.shape[axis])), axis=axis)
        with np.errstate(invalid="ignore", over="ignore"):
            total = _times(total, (block.prod(axis=axis), 0), xp)
    return total


def _leaf(mantissa, exponent, B, reset, walk):
    """A chunk's map (:class:`_Map`), keeping ``walk`` only where some lane cannot stand."""
    chunk = _Map(mantissa, exponent, B, reset)
    if not bool(_unsafe(chunk).any()):
        return chunk
    chunk = chunk._replace(walk=walk)
    return chunk._replace(pieces=(chunk,))


def _unsafe(m, Ah=None):
    """Where map ``m`` cannot stand for its steps, given ``Ah``, its ``A`` times the entering
    state (``None``: for some state): ``linscan._affine.unsafe_extended``, ``A`` taken as
    infinite beyond the accumulator's range, as the in-memory product overflows there."""
    xp = _layout.xp_of(m.B)
    beyond = m.exponent > _dtypes.finfo(m.B.dtype).maxexp
    A = xp.where(beyond, np.inf, m.mantissa) if bool(beyond.any()) else m.mantissa
    return _affine.unsafe_extended(A, m.B, False if m.reset is None else m.reset, Ah)


def _summary(a, x, r, *, axis, reverse, method, acc):
    """The map of one chunk (:class:`_Map`)."""
    xp = _layout.xp_of(x)
    B = _api.final_state(
        a, x, xp.zeros((), acc), axis=axis, reverse=reverse, method=method, resets=r
    )
    steps = max(a.shape[axis], x.shape[axis])
    mantissa, exponent = _product(a, steps, xp, axis=axis, method=method, acc=acc)
    walk = partial(_walk_states, a, x, r, axis=axis, reverse=reverse, method=method)
    return _leaf(mantissa, exponent, B, None if r is None else r.any(axis=axis), walk)


def _walk_states(a, x, r, state, *, axis, reverse, method):
    """The state leaving a chunk entered with ``state``, by the in-memory function (which
    walks what cannot be composed)."""
    return _api.final_state(a, x, state, axis=axis, reverse=reverse, method=method, resets=r)


def _gradient_summary(a, grad_h, r, *, axis, reverse, method, acc):
    """The map of one chunk for the backward pass: the gradient it sends to the state before
    it is ``G + conj(A) * c`` for a gradient ``c`` arriving at its end (``G`` where it
    resets). Reads no ``h``: the gradient sent back does not depend on it."""
    xp = _layout.xp_of(grad_h)
    shape = _layout.broadcast_shapes(a.shape, grad_h.shape, () if r is None else r.shape)
    sent = _walk_gradients(a, grad_h, r, None, axis=axis, reverse=reverse, method=method,
                           acc=acc)  # fmt: skip
    mantissa, exponent = _product(a, shape[axis], xp, axis=axis, method=method, acc=acc)
    if mantissa.dtype.kind == "c":
        mantissa = xp.conj(mantissa)
    walk = partial(_walk_gradients, a, grad_h, r, axis=axis, reverse=reverse, method=method,
                   acc=acc)  # fmt: skip
    return _leaf(mantissa, exponent, sent, None if r is None else r.any(axis=axis), walk)


def _walk_gradients(a, grad_h, r, gradient, *, axis, reverse, method, acc):
    """The gradient a chunk sends to the state before it when ``gradient`` arrives at its
    end (``None``: nothing), by the in-memory function."""
    xp = _layout.xp_of(grad_h)
    shape = _layout.broadcast_shapes(a.shape, grad_h.shape, () if r is None else r.shape)
    grad_h = _seeded(xp.broadcast_to(grad_h, shape), gradient, axis=axis, reverse=reverse)
    before = xp.zeros(_layout.state_shape(shape, axis), acc)
    return _api.scan_backward(
        a, grad_h, grad_h, before, axis=axis, reverse=reverse, method=method, resets=r
    )[2]


def _seeded(grad_h, gradient, *, axis, reverse):
    """``grad_h`` of a chunk with ``gradient`` (from the chunks after it; ``None``: nothing)
    added to its last step in the backward walk (its first with ``reverse``)."""
    if gradient is None:
        return grad_h
    xp = _layout.xp_of(grad_h)
    seeded = xp.array(grad_h, dtype=_dtypes.promote([grad_h.dtype, gradient.dtype]))
    end = [slice(None)] * grad_h.ndim
    end[axis] = 0 if reverse else -1
    seeded[tuple(end)] += gradient
    return seeded


def _runs(m):
    return m.pieces or (m,)


def _compose(first, second):
    """The map of ``first`` followed by ``second``."""
    combined = _combined(first, second)
    if not (first.pieces or second.pieces or bool(_unsafe(combined).any())):
        return combined
    # The runs in order (a product of runs that stand may itself exceed the range), with
    # neighbours composed into one where that stands.
    pieces = []
    for run in _runs(first) + _runs(second):
        if pieces and run.walk is None and pieces[-1].walk is None:
            merged = _combined(pieces[-1], run)
            if not bool(_unsafe(merged).any()):
                pieces[-1] = merged
                continue
        pieces.append(run)
    return combined._replace(pieces=tuple(pieces))


def _combined(first, second):
    """The map of ``first`` followed by ``second``, without pieces."""
    xp = _layout.xp_of(first.B)
    mantissa, exponent = _times((first.mantissa, first.exponent),
                                (second.mantissa, second.exponent), xp)  # fmt: skip
    r1, r2 = first.reset, second.reset
    reset = r1 if r2 is None else r2 if r1 is None else r1 | r2
    return _Map(mantissa, exponent, _applied(second, first.B), reset)


def _apply(summary, state, shape):
    """The state after a chunk of map ``summary`` entered with ``state`` (``None``: zero), as
    a fresh array of the full ``shape`` of one step of the chunk."""
    result = summary.B if state is None else _applied(summary, state)
    xp = _layout.xp_of(result)
    return xp.array(xp.broadcast_to(result, shape))  # a copy (ascontiguousarray makes 0-d 1-d)


def _applied(m, state):
    """The state leaving the run of map ``m`` entered with ``state``: the serial loop's
    result. ``A * state + B`` (``B`` for a zero state, or where the run resets), except where
    the map cannot stand for its steps: there the run's pieces are walked from ``state``."""
    xp = _layout.xp_of(m.B)
    reset = False if m.reset is None else m.reset
    with np.errstate(invalid="ignore", over="ignore"):
        live = state != 0  # NaN included: it stays NaN
        times = _scaled(m.mantissa * state, m.exponent, xp)
        result = xp.where(live & ~xp.asarray(reset), times + m.B, m.B).astype(m.B.dtype)
    if m.pieces:
        walk = live & _unsafe(m, times)
        if bool(walk.any()):
            walked = state
            for run in m.pieces:
                walked = run.walk(walked) if run.walk is not None else _applied(run, walked)
            result = xp.where(walk, walked, result)
    return result


def _final(summary, state, shape, dtype):
    """The state after a chunk (see :func:`_apply`), in the result's ``dtype``."""
    return _layout.cast(_apply(summary, state, shape), dtype)


def _scan_chunk(a, x, r, state, *, axis, reverse, method, dtype):
    h = _api.scan(a, x, state, axis=axis, reverse=reverse, method=method, resets=r)
    return _layout.cast(h, dtype)


def _boundary(h, *, axis, index):
    """Step ``index`` of chunk ``h`` (its last, or first for ``reverse``): the next chunk's
    ``h0``."""
    return _layout.xp_of(h).array(h.take(index, axis=axis))


def _backward_chunk(a, h, grad_h, r, gradient, before, *, axis, reverse, method, dtype):
    """``scan_backward`` of one chunk whose last step (first with ``reverse``) also receives
    ``gradient`` from the chunks after it (``None``: nothing), and whose state before it was
    ``before``. Returns ``(grad_a, grad_x, grad_h0)``, ``grad_a`` summed to ``a``'s shape.

    ``grad_a`` and ``grad_h0`` come back unrounded (float32 for 16-bit ``a`` and ``h0``): the
    blocks' parts are summed first and rounded once, as the in-memory sum is."""
    a = _layout.cast(a, _dtypes.accumulator(a.dtype.newbyteorder("=")))
    before = (
        None
        if before is None
        else _layout.cast(before, _dtypes.accumulator(before.dtype.newbyteorder("=")))
    )
    if gradient is not None:
        grad_h = _layout.xp_of(h).broadcast_to(grad_h, h.shape)
        grad_h = _seeded(grad_h, gradient, axis=axis, reverse=reverse)
    ga, gx, gh0 = _api.scan_backward(
        a, h, grad_h, before, axis=axis, reverse=reverse, method=method, resets=r
    )
    return ga, _layout.cast(gx, dtype), gh0


# --- planning the graph -----------------------------------------------------------------------


def _stand_in(value, name):
    """What validation sees of argument ``name``: a Dask array becomes a zero-stride array of
    its shape and dtype (of its chunks' array type); anything else is itself."""
    if not isinstance(value, da.Array):
        return value
    if any(math.isnan(n) for n in value.shape):
        raise ValueError(
            f"{name} must have known chunk sizes, got a Dask array of shape {value.shape} "
            f"(unknown sizes come from boolean indexing and the like); call "
            f"{name}.compute_chunk_sizes() first"
        )
    xp = _layout.xp_of(value._meta)
    return xp.broadcast_to(xp.zeros((), value.dtype), value.shape)


def _stand_ins(**named):
    return [_stand_in(value, name) for name, value in named.items()]


def _lift(value, ndim: int):
    """``value`` (a Dask, NumPy or CuPy array) as a Dask array of ``ndim`` axes."""
    if not isinstance(value, da.Array):
        value = da.from_array(value, chunks=-1) if value.ndim else da.from_array(value)
    if value.ndim < ndim:
        value = value[(None,) * (ndim - value.ndim)]
    return value


def _chunking(arrays, shape):
    """The chunks of the result: along each axis those of the first of ``arrays`` (Dask
    arrays of ``len(shape)`` axes) that is not broadcast along it."""
    chunks = []
    for d, n in enumerate(shape):
        full = [arr.chunks[d] for arr in arrays if arr.shape[d] == n]
        chunks.append(full[0] if full and n != 1 else ((n,) if n else (0,)))
    return tuple(chunks)


def _aligned(arr, shape, chunks):
    """``arr`` rechunked to ``chunks`` along its axes of full length (broadcast axes, of
    length 1, stay one chunk)."""
    wanted = {d: chunks[d] for d, n in enumerate(arr.shape) if n == shape[d]}
    if all(arr.chunks[d] == c for d, c in wanted.items()):
        return arr
    return arr.rechunk(wanted)


def _block(arr, index):
    """The key of the block of ``arr`` that block ``index`` of the result reads."""
    return (arr.name,) + tuple(i if n > 1 else 0 for i, n in zip(index, arr.numblocks))


def _forward_call(a, x, h0, axis, reverse, method, resets, kind):
    proxies = _stand_ins(a=a, x=x, h0=h0)
    args = _validate.scan_args(*proxies, axis, reverse, _stand_in(resets, "resets"))
    named = (("a", a), ("x", x), ("resets", resets))
    return _Call(args, method, named, h0, ("x", "a", "resets"), kind)


def _bound(inputs, carries):
    """Copies of the Dask arrays ``inputs`` (``None`` kept) that load only once every one of
    ``carries`` is computed: see "Memory and reads" in the module docstring.

    Every task of the inputs' graphs is copied under a new key, and the copies of the tasks
    that depend on no other task (those that load or make data) wait for one task that waits
    for every carry. Data already in memory (arrays embedded in the graph, or persisted on a
    cluster) is not copied: the copies' blocks refer to it. ``dask.graph_manipulation.bind``
    means to do this, but (Dask 2026.8) its copies of ``rechunk`` and ``reshape`` graphs still
    point at the original keys."""
    arrays = [arr for arr in inputs if arr is not None]
    token = tokenize(carries.name, *[arr.name for arr in arrays])
    graph = convert_legacy_graph(dict(HighLevelGraph.merge(*[a.dask for a in arrays])))
    tasks = [key for key, node in graph.items() if isinstance(node, (Task, Alias))]
    renamed = {key: _renamed(key, token) for key in tasks}
    ready = "linscan-carries-ready-" + token
    copied = {ready: Task(ready, _nothing, *map(TaskRef, flatten(carries.__dask_keys__())))}
    for key, new in renamed.items():
        node = graph[key].substitute(renamed, key=new)
        if isinstance(node, Task) and not node.dependencies & renamed.keys():
            node = Task(new, _second, TaskRef(ready), node.substitute({}, key=None))
        copied[new] = node
    for arr in arrays:
        for key in flatten(arr.__dask_keys__()):
            if key not in renamed:  # in memory already: the copy is another name for it
                copied[_renamed(key, token)] = Alias(_renamed(key, token), key)
    copies = iter(
        da.Array(
            HighLevelGraph.from_collections(_renamed(arr.name, token), copied, [carries, *arrays]),
            _renamed(arr.name, token),
            arr.chunks,
            dtype=arr.dtype,
            meta=arr._meta,
        )  # fmt: skip
        for arr in arrays
    )
    return tuple(None if arr is None else next(copies) for arr in inputs)


def _renamed(key, token):
    if isinstance(key, tuple):
        return (_renamed(key[0], token),) + key[1:]
    return f"{key}-again-{token}"


def _nothing(*values):
    return None


def _second(first, second):
    return second


class _Call:
    """The operands of one call aligned on one chunking, and the graph-building steps.

    ``operands``: ``(name, value)`` in the order the chunk functions take them; ``prefer``:
    the names whose chunking the result takes, first first."""

    def __init__(self, args, method, operands, h0, prefer, kind):
        self.method = _validate.check_method(method)
        self.axis, self.reverse, self.dtype = args.axis, args.reverse, args.dtype
        self.acc = _dtypes.accumulator(args.dtype)
        shape = self.shape = args.shape
        validated = {"a": args.a, "resets": args.resets}
        if hasattr(args, "x"):
            validated["x"] = args.x
        else:
            validated.update(h=args.h, grad_h=args.grad_h)
        lifted = {}
        for name, value in operands:
            if name == "resets" and value is None:
                continue
            value = value if isinstance(value, da.Array) else validated[name]
            lifted[name] = _lift(value, len(shape))
        # Chunked like the first Dask input given, then like the others.
        dask_inputs = {name for name, value in operands if isinstance(value, da.Array)}
        ranked = [name for name in prefer if name in lifted]
        order = sorted(ranked, key=lambda name: name not in dask_inputs)
        self.chunks = _chunking([lifted[name] for name in order], shape)
        self.operands = {n: _aligned(v, shape, self.chunks) for n, v in lifted.items()}
        self.inputs = tuple(self.operands.get(name) for name, _ in operands)
        self.xp = _layout.xp_of(self.inputs[0]._meta)  # NumPy or CuPy chunks
        self.steps = len(self.chunks[self.axis])
        self.order = list(range(self.steps))[:: -1 if self.reverse else 1]
        self.state_shape = _layout.state_shape(shape, self.axis)
        self.state_chunks = _layout.state_shape(self.chunks, self.axis)
        self.h0 = None
        if args.h0 is not None:
            value = h0 if isinstance(h0, da.Array) else args.h0
            self.h0 = _aligned(_lift(value, len(self.state_shape)), self.state_shape,
                               self.state_chunks)  # fmt: skip
        self.token = tokenize(kind, args.shape, self.dtype, self.chunks, self.axis, self.reverse,
                              self.method,
                              *[v.name for v in self.operands.values()],
                              None if self.h0 is None else self.h0.name)  # fmt: skip
        self.options = dict(axis=self.axis, reverse=self.reverse, method=self.method)

    # The block grid: full indices, and the indices of one time step.

    def states(self):
        """The block indices of one time step (the axes other than time)."""
        return itertools.product(*(range(len(c)) for c in self.state_chunks))

    def index(self, state, step):
        return state[: self.axis] + (step,) + state[self.axis :]

    def state_block_shape(self, state):
        return tuple(c[i] for c, i in zip(self.state_chunks, state))

    def _h0_key(self, state):
        return None if self.h0 is None else _block(self.h0, state)

    # Steps 1 and 2.

    def _summaries(self, layer, name, summarize, inputs, order):
        """Tasks ``(name, position, *state)``: the summary of the chunk at ``position`` of
        ``order``."""
        for state in self.states():
            for position, step in enumerate(order):
                index = self.index(state, step)
                keys = [None if arr is None else _block(arr, index) for arr in inputs]
                task = (_call, summarize, keys, {**self.options, "acc": self.acc})
                layer[(name, position) + state] = task

    def _combined(self, layer, name, lo, hi, state):
        """The key of the composed map of positions ``lo`` to ``hi - 1`` (tasks added once)."""
        if hi - lo == 1:
            return (name, lo) + state
        key = (name + "-tree", lo, hi) + state
        if key not in layer:
            mid = (lo + hi) // 2
            left = self._combined(layer, name, lo, mid, state)
            right = self._combined(layer, name, mid, hi, state)
            layer[key] = (_compose, left, right)
        return key

    def carries(self, summarize, inputs, order, start=True):
        """A Dask array of shape ``(len(order),) + state_shape``: at ``p`` the state entering
        the chunk at position ``p + 1`` of the processing order (``order`` lists every chunk
        but the last processed); with ``start``, ``h0`` enters the first. A tree: each carry
        is a composed map applied to a carry nearer the start, split in halves (depth about
        ``2 log2(k)``)."""
        name = "linscan-summary-" + self.token
        out = "linscan-carry-" + self.token
        layer = {}
        self._summaries(layer, name, summarize, inputs, order)
        for state in self.states():
            entering = self._h0_key(state) if start else None
            self._fill(layer, name, out, state, 0, len(order) + 1, entering)
        chunks = ((1,) * len(order),) + self.state_chunks
        graph = self._graph(out, layer, inputs)
        return da.Array(graph, out, chunks, dtype=self.acc, meta=self._meta(len(chunks), self.acc))

    def _fill(self, layer, name, out, state, lo, hi, entering):
        """Tasks for the carries into positions ``lo + 1`` to ``hi - 1``, given the key of the
        one entering position ``lo``."""
        if hi - lo <= 1:
            return
        mid = (lo + hi) // 2
        key = (out, mid - 1) + state
        summary = self._combined(layer, name, lo, mid, state)
        layer[key] = (_apply, summary, entering, self.state_block_shape(state))
        self._fill(layer, name, out, state, lo, mid, entering)
        self._fill(layer, name, out, state, mid, hi, key)

    def total(self, summarize, inputs, order):
        """The state after every chunk (``final_state``), as a Dask array of one step."""
        name = "linscan-summary-" + self.token
        out = "linscan-final-" + self.token
        layer = {}
        self._summaries(layer, name, summarize, inputs, order)
        for state in self.states():
            summary = self._combined(layer, name, 0, len(order), state)
            shape = self.state_block_shape(state)
            layer[(out,) + state] = (_final, summary, self._h0_key(state), shape, self.dtype)
        graph = self._graph(out, layer, inputs)
        return da.Array(
            graph,
            out,
            self.state_chunks,
            dtype=self.dtype,
            meta=self._meta(len(self.state_chunks), self.dtype),
        )

    # Step 3.

    def blockwise(self, work, inputs, carries, dtype, order=None, extra=None):
        """Tasks ``work(*blocks, entering, [extra], **options)`` over every block, where
        ``entering`` is the state (or gradient) entering the block from the chunks processed
        before it in ``order`` (default: the forward order). Returns a Dask array of the
        results, or, with ``dtype=None``, the name of the tasks (they return tuples)."""
        order = self.order if order is None else order
        name = f"linscan-{work.__name__.strip('_').replace('_', '-')}-{self.token}"
        layer = {}
        first = None if extra is not None else self._h0_key
        for state in self.states():
            for position, step in enumerate(order):
                index = self.index(state, step)
                keys = [None if arr is None else _block(arr, index) for arr in inputs]
                if position:
                    keys.append((carries.name, position - 1) + state)
                else:
                    keys.append(first(state) if first is not None else None)
                if extra is not None:
                    keys.append(extra(index))
                options = dict(self.options, dtype=self.dtype)
                layer[(name,) + index] = (_call, work, keys, options)
        if extra is not None:
            layer.update(extra.tasks)
        graph = self._graph(name, layer, list(inputs) + [carries])
        if dtype is None:
            return name, graph
        meta = self._meta(len(self.chunks), dtype)
        return da.Array(graph, name, self.chunks, dtype=dtype, meta=meta)

    def boundaries(self, h, h0):
        """For ``scan_backward``: a function of a block index giving the key of the state
        before that block (a boundary step of ``h``'s previous chunk, or ``h0``'s block)."""
        name = "linscan-boundary-" + self.token
        layer, previous = {}, {}
        for position, step in enumerate(self.order[1:], start=1):
            previous[step] = self.order[position - 1]
        end = 0 if self.reverse else -1
        for state in self.states():
            for step, before in previous.items():
                task = (_call, _boundary, [_block(h, self.index(state, before))],
                        {"axis": self.axis, "index": end})  # fmt: skip
                layer[(name,) + self.index(state, step)] = task

        def key(index):
            step = index[self.axis]
            if step in previous:
                return (name,) + index
            state = index[: self.axis] + index[self.axis + 1 :]
            return None if h0 is None else _block(h0, state)

        key.tasks = layer
        return key

    def part(self, parts, item, chunks, dtype):
        """Item ``item`` of the tuples of ``parts`` (from :meth:`blockwise`), as a Dask array
        of ``chunks``."""
        name, graph = parts
        out = f"{name}-{item}"
        layer = {(out,) + key[1:]: (operator.getitem, key, item) for key in self._keys(name)}
        graph = HighLevelGraph.merge(graph, HighLevelGraph({out: layer}, {out: {name}}))
        return da.Array(graph, out, chunks, dtype=dtype, meta=self._meta(len(chunks), dtype))

    def reduced(self, parts, item, operand, original, step):
        """The gradient of a broadcast input (``operand``, lifted; ``original`` as given)
        from item ``item`` of every block's result (of the blocks of time chunk ``step``
        when given: ``grad_h0``), summed over its broadcast copies, in its shape and dtype."""
        name, graph = parts
        out = f"{name}-{item}"
        if step is None:
            lifted_shape, grid = operand.shape, self.shape
            keys = {key[1:]: key for key in self._keys(name)}
            chunks = self.chunks
        else:
            lifted_shape, grid = operand.shape, self.state_shape
            keys = {s: (name,) + self.index(s, step) for s in self.states()}
            chunks = self.state_chunks
        # One block per block of the grid; along broadcast axes each holds a partial sum.
        broadcast = [d for d, n in enumerate(lifted_shape) if n == 1 and grid[d] != 1]
        sizes = tuple(
            (1,) * len(c) if d in broadcast else c for d, c in enumerate(chunks)
        )  # fmt: skip
        layer = {(out,) + index: (operator.getitem, key, item) for index, key in keys.items()}
        graph = HighLevelGraph.merge(graph, HighLevelGraph({out: layer}, {out: {name}}))
        native = original.dtype.newbyteorder("=")
        part = _dtypes.accumulator(native)  # each block's part, unrounded: _backward_chunk
        arr = da.Array(graph, out, sizes, dtype=part, meta=self._meta(len(sizes), part))
        if broadcast:  # summed in 64 bits, as the in-memory sums
            wide = np.promote_types(_dtypes.accumulator(native), np.float64)
            arr = arr.sum(axis=tuple(broadcast), dtype=wide, keepdims=True)
        if arr.shape != original.shape:
            arr = arr.reshape(original.shape)
        return arr.astype(native) if arr.dtype != native else arr

    # Helpers.

    def _keys(self, name):
        for state in self.states():
            for step in range(self.steps):
                yield (name,) + self.index(state, step)

    def _meta(self, ndim, dtype):
        """An empty array of the chunks' type: what Dask calls a collection's meta."""
        return self.xp.empty((0,) * ndim, dtype)

    def _graph(self, name, layer, dependencies):
        deps = [arr for arr in list(dependencies) + [self.h0] if arr is not None]
        return HighLevelGraph.from_collections(name, layer, dependencies=deps)


def _call(function, blocks, options):
    """``function(*blocks, **options)``: a task whose keyword arguments are plain data."""
    return function(*blocks, **options)
