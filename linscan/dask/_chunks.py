"""The work of one chunk, by the in-memory functions: its map (step 1 of ``linscan.dask``),
the walk of its steps where its map cannot stand, and its scan from the true entering state
(step 3).

Plain functions of NumPy or CuPy blocks and of plain keyword options: they travel to Dask's
workers as tasks ``apply_to_blocks(function, blocks, options)``.
"""

from __future__ import annotations

from functools import partial

from .. import _api, _dtypes, _layout
from ._maps import chunk_map


def apply_to_blocks(function, blocks, options):
    """``function(*blocks, **options)``: a task whose keyword arguments are plain data."""
    return function(*blocks, **options)


# --- step 1: the map of a chunk ---------------------------------------------------------------


def forward_map(a, x, resets, *, axis, reverse, method, acc):
    """The map of one chunk (:class:`linscan.dask._maps.ChunkMap`): the state leaving it for
    a state entering it. One summary of the chunk (``linscan._api.summary``)."""
    found = _api.summary(a, x, axis=axis, reverse=reverse, method=method, resets=resets,
                         dtype=acc)  # fmt: skip
    walk = partial(walk_states, a, x, resets, axis=axis, reverse=reverse, method=method)
    return chunk_map(found.mantissa, found.exponent, found.state, found.reset, walk)


def walk_states(a, x, resets, state, *, axis, reverse, method):
    """The state leaving a chunk entered with ``state``, by the in-memory function (which
    walks what cannot be composed)."""
    return _api.final_state(a, x, state, axis=axis, reverse=reverse, method=method,
                            resets=resets)  # fmt: skip


def backward_map(a, grad_h, resets, *, axis, reverse, method, acc):
    """The map of one chunk for the backward pass: the gradient it sends to the state before
    it is ``G + conj(A) * c`` for a gradient ``c`` arriving at its end (``G`` where it
    resets): the summary of its backward carry. Reads no ``h``: the gradient sent back does
    not depend on it."""
    found = _api.summary(a, grad_h, axis=axis, reverse=reverse, method=method, resets=resets,
                         back=True, dtype=acc)  # fmt: skip
    walk = partial(walk_gradients, a, grad_h, resets, axis=axis, reverse=reverse, method=method,
                   acc=acc)  # fmt: skip
    return chunk_map(found.mantissa, found.exponent, found.state, found.reset, walk)


def walk_gradients(a, grad_h, resets, gradient, *, axis, reverse, method, acc):
    """The gradient a chunk sends to the state before it when ``gradient`` arrives at its
    end (``None``: nothing), by the in-memory function."""
    xp = _layout.xp_of(grad_h)
    shape = _layout.broadcast_shapes(a.shape, grad_h.shape, () if resets is None else resets.shape)
    grad_h = with_arriving_gradient(xp.broadcast_to(grad_h, shape), gradient, axis=axis,
                                    reverse=reverse)  # fmt: skip
    before = xp.zeros(_layout.state_shape(shape, axis), acc)
    return _api.scan_backward(
        a, grad_h, grad_h, before, axis=axis, reverse=reverse, method=method, resets=resets
    )[2]


def with_arriving_gradient(grad_h, gradient, *, axis, reverse):
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


# --- step 3: the scan of a chunk from its true entering state ---------------------------------


def scan_chunk(a, x, resets, state, *, axis, reverse, method, dtype):
    """``scan`` of one chunk entered with ``state`` (``None``: zero), in the result's
    ``dtype``."""
    h = _api.scan(a, x, state, axis=axis, reverse=reverse, method=method, resets=resets)
    return _layout.cast(h, dtype)


def boundary_step(h, *, axis, index):
    """Step ``index`` of chunk ``h`` (its last, or first for ``reverse``): the next chunk's
    ``h0``."""
    return _layout.xp_of(h).array(h.take(index, axis=axis))


def backward_chunk(a, h, grad_h, resets, gradient, before, *, axis, reverse, method, dtype):
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
        grad_h = with_arriving_gradient(grad_h, gradient, axis=axis, reverse=reverse)
    grad_a, grad_x, grad_h0 = _api.scan_backward(
        a, h, grad_h, before, axis=axis, reverse=reverse, method=method, resets=resets
    )
    return grad_a, _layout.cast(grad_x, dtype), grad_h0
