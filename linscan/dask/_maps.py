"""The map of a chunk of time steps, and how maps compose and apply (steps 1 and 2 of
``linscan.dask``).

A chunk, or a run of chunks, maps the state entering it to the state leaving it:
``h -> A * h + B`` (``B`` where it resets), the algebra of ``linscan._affine``. Unlike the
in-memory pieces, a run here may span a whole sequence, so ``A``, the product of its decays,
is kept as ``mantissa * 2**exponent`` (``exponent`` an int64 array): it neither underflows nor
overflows however long the run, and ``A * h`` is what the loop multiplying one decay at a time
gives. Where a map cannot stand for its steps (``linscan._affine.unsafe_extended``) its chunk
keeps a function that walks its inputs from a given state, and applying the map walks it.

The functions take NumPy or CuPy arrays alike and run on Dask's workers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _affine, _api, _dtypes, _layout


class ChunkMap(NamedTuple):
    """What a chunk, or a run of chunks, does to the state entering it: ``h -> A * h + B``
    (``B`` where it resets).

    ``A``, the product of the decays, is ``mantissa * 2**exponent`` (see
    :func:`split_exponent`): ``A`` is zero only for a zero decay, and infinite or NaN only for
    an infinite or NaN decay. ``B`` is the loop's result from a zero state, in the accumulator
    dtype. ``reset`` says where the run resets (``None``: nowhere).

    Where ``A`` is infinite (an infinite decay: ``B`` holds ``inf * 0`` where the loop holds
    ``inf * h``), or beyond the accumulator's range, the map cannot stand for its steps
    (:func:`cannot_stand`). A chunk holding such a lane keeps ``walk`` (its inputs, and the
    function that walks them from a given state); a run of chunks holding such a lane keeps
    ``pieces``, the runs it is made of in order, each a map that stands or a chunk that
    walks. :func:`apply` walks them there."""

    mantissa: object
    exponent: object
    B: object
    reset: object = None
    walk: object = None
    pieces: tuple = ()


# --- numbers as (mantissa, exponent) ----------------------------------------------------------


def split_exponent(value, xp):
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
    return times_power_of_two(value, -exponent, xp), exponent


def times_power_of_two(value, exponent, xp):
    """``value * 2**exponent`` without an intermediate overflow or underflow (complex values
    component by component)."""
    with np.errstate(over="ignore"):
        if value.dtype.kind != "c":
            return xp.ldexp(value, exponent)
        real, imag = xp.ldexp(value.real, exponent), xp.ldexp(value.imag, exponent)
        return real + 1j * imag


def multiply_split(first, second, xp):
    """The product of two ``(mantissa, exponent)`` pairs, normalized."""
    with np.errstate(invalid="ignore", over="ignore"):
        mantissa, exponent = split_exponent(first[0] * second[0], xp)
    return mantissa, exponent + first[1] + second[1]


#: Mantissas of magnitude at least 0.5 (at most sqrt(2) for complex ones): a product of this
#: many stays a normal float64.
MANTISSAS_PER_PRODUCT = 1000


# --- the product of a chunk's decays ----------------------------------------------------------


def decay_product(a, steps, xp, *, axis, method, acc):
    """The product over time of the decays ``a`` of a chunk of ``steps`` steps (a decay
    broadcast along time counts once per step) as ``(mantissa, exponent)`` (see
    :func:`split_exponent`)."""
    if a.shape[axis] == 1 and steps > 1:  # one decay for every step: its power, by squaring
        base, power = split_exponent(a.take(0, axis=axis), xp), steps
        total = (xp.ones_like(base[0]), xp.zeros_like(base[1]))
        while power:
            if power & 1:
                total = multiply_split(total, base, xp)
            base, power = multiply_split(base, base, xp), power >> 1
        return total
    if xp is np:
        return cpu_decay_product(a, axis, acc)
    return device_decay_product(a, xp, axis=axis, method=method, acc=acc)


def device_decay_product(a, xp, *, axis, method, acc):
    """:func:`decay_product` of CuPy decays ``a`` (NumPy in tests), one per step: the plain
    product of ``final_state`` where it is exact (:func:`plain_product_is_exact`), else array
    operations on the device."""
    if plain_product_is_exact(a, xp, axis=axis, acc=acc):
        zero = xp.zeros((), acc)
        return split_exponent(_api.final_state(a, zero, zero + 1, axis=axis, method=method), xp)
    return decay_product_by_arrays(a.astype(acc, copy=False), xp, axis=axis)


#: Binary orders of magnitude kept clear of the ends of the accumulator's normal range (see
#: :func:`plain_product_is_exact`).
PRODUCT_MARGIN = 8


def plain_product_is_exact(a, xp, *, axis, acc):
    """Whether a plain product of the decays ``a`` in ``acc``, grouped as a scan chooses
    (it composes runs of consecutive steps in an order of its own), is the loop's product to
    rounding: whether the product of every run of consecutive decays is a normal number
    (below the smallest normal one a product has lost digits, although the end of the whole
    product may be normal again: 1e-160 * 1e-160 * 1e300). That holds where the running sums
    of the decays' logarithms, from 0, span less than the normal range, less a margin (for
    rounding, and for a complex product's smaller component). A zero, infinite or NaN decay
    makes it false."""
    if not a.shape[axis]:
        return True
    info = _dtypes.finfo(acc)
    span = min(-int(info.minexp), int(info.maxexp)) - PRODUCT_MARGIN
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = xp.cumsum(xp.log2(abs(a).astype(np.float64)), axis=axis)
        highest = xp.maximum(sums.max(axis=axis), 0)
        lowest = xp.minimum(sums.min(axis=axis), 0)
        return bool(xp.all(highest - lowest < span))  # NaN (inf - inf) is not


def cpu_decay_product(a, axis, acc):
    """:func:`decay_product` of NumPy decays ``a``, one per step: one pass of the CPU
    backend's kernel (imported here: it loads Numba)."""
    from ..backends.cpu.backend import backend

    return backend.decay_product(a, axis, acc)


def decay_product_by_arrays(a, xp, *, axis):
    """:func:`decay_product` of decays ``a`` of one per step, by array operations."""
    mantissas, exponents = split_exponent(a, xp)
    total = (xp.ones_like(mantissas.take(0, axis=axis)), exponents.sum(axis=axis))
    for lo in range(0, a.shape[axis], MANTISSAS_PER_PRODUCT):
        stop = min(lo + MANTISSAS_PER_PRODUCT, a.shape[axis])
        block = mantissas.take(xp.arange(lo, stop), axis=axis)
        with np.errstate(invalid="ignore", over="ignore"):
            total = multiply_split(total, (block.prod(axis=axis), 0), xp)
    return total


# --- maps: making, composing, applying --------------------------------------------------------


def chunk_map(mantissa, exponent, B, reset, walk):
    """A chunk's map (:class:`ChunkMap`), keeping ``walk`` only where some lane cannot
    stand."""
    chunk = ChunkMap(mantissa, exponent, B, reset)
    if not bool(cannot_stand(chunk).any()):
        return chunk
    chunk = chunk._replace(walk=walk)
    return chunk._replace(pieces=(chunk,))


def cannot_stand(run, Ah=None):
    """Where map ``run`` cannot stand for its steps, given ``Ah``, its ``A`` times the entering
    state (``None``: for some state): ``linscan._affine.unsafe_extended``, ``A`` taken as
    infinite beyond the accumulator's range, as the in-memory product overflows there."""
    xp = _layout.xp_of(run.B)
    beyond = run.exponent > _dtypes.finfo(run.B.dtype).maxexp
    A = xp.where(beyond, np.inf, run.mantissa) if bool(beyond.any()) else run.mantissa
    return _affine.unsafe_extended(A, run.B, False if run.reset is None else run.reset, Ah)


def compose(first, second):
    """The map of ``first`` followed by ``second``, keeping the pieces to walk where the
    composed map cannot stand."""
    combined = compose_plain(first, second)
    if not (first.pieces or second.pieces or bool(cannot_stand(combined).any())):
        return combined
    # The runs in order (a product of runs that stand may itself exceed the range), with
    # neighbours composed into one where that stands.
    pieces = []
    for run in (first.pieces or (first,)) + (second.pieces or (second,)):
        if pieces and run.walk is None and pieces[-1].walk is None:
            merged = compose_plain(pieces[-1], run)
            if not bool(cannot_stand(merged).any()):
                pieces[-1] = merged
                continue
        pieces.append(run)
    return combined._replace(pieces=tuple(pieces))


def compose_plain(first, second):
    """The map of ``first`` followed by ``second``, without pieces."""
    xp = _layout.xp_of(first.B)
    mantissa, exponent = multiply_split((first.mantissa, first.exponent),
                                        (second.mantissa, second.exponent), xp)  # fmt: skip
    if first.reset is None or second.reset is None:
        reset = first.reset if second.reset is None else second.reset
    else:
        reset = first.reset | second.reset
    return ChunkMap(mantissa, exponent, apply(second, first.B), reset)


def apply(run, state):
    """The state leaving the run of map ``run`` entered with ``state``: the serial loop's
    result. ``A * state + B`` (``B`` for a zero state, or where the run resets), except where
    the map cannot stand for its steps: there the run's pieces are walked from ``state``."""
    xp = _layout.xp_of(run.B)
    reset = False if run.reset is None else run.reset
    with np.errstate(invalid="ignore", over="ignore"):
        live = state != 0  # NaN included: it stays NaN
        Ah = times_power_of_two(run.mantissa * state, run.exponent, xp)
        result = xp.where(live & ~xp.asarray(reset), Ah + run.B, run.B).astype(run.B.dtype)
    if run.pieces:
        walk = live & cannot_stand(run, Ah)
        if bool(walk.any()):
            walked = state
            for piece in run.pieces:
                walked = piece.walk(walked) if piece.walk is not None else apply(piece, walked)
            result = xp.where(walk, walked, result)
    return result


def carry_block(run, state, shape):
    """The state leaving the run of map ``run`` entered with ``state`` (``None``: zero), as a
    fresh array of the full ``shape`` of one step of its block: a carry into the next chunk."""
    result = run.B if state is None else apply(run, state)
    xp = _layout.xp_of(result)
    return xp.array(xp.broadcast_to(result, shape))  # a copy (ascontiguousarray makes 0-d 1-d)


def final_block(run, state, shape, dtype):
    """:func:`carry_block` in the result's ``dtype``: a block of ``final_state``."""
    return _layout.cast(carry_block(run, state, shape), dtype)
