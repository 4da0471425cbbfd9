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

from .. import _affine, _dtypes, _layout
from .._extended import multiply, times_power_of_two


class ChunkMap(NamedTuple):
    """What a chunk, or a run of chunks, does to the state entering it: ``h -> A * h + B``
    (``B`` where it resets).

    ``A``, the product of the decays, is ``mantissa * 2**exponent`` (see
    ``linscan._extended``): ``A`` is zero only for a zero decay, and infinite or NaN only for
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
    mantissa, exponent = multiply((first.mantissa, first.exponent),
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
