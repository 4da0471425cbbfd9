r"""linscan on Dask arrays: :func:`scan`, :func:`final_state` and :func:`scan_backward`, lazily.

Install with ``pip install "linscan[dask]"``. Each function takes the arguments of the
in-memory function of the same name (``out`` excepted: the result is a new lazy array) and
means the same; any input may be a Dask array, chunked along any axes, the time axis
included, with NumPy or CuPy chunks. The result is a lazy Dask array chunked like the inputs
(like ``x``, or ``h`` for :func:`scan_backward`; where the inputs are chunked differently
along an axis, chunked like the first that is not broadcast along it).

How a scan is split along time. With ``k`` chunks along the time axis:

1. *Summaries.* Each chunk computes its backend's summary (``linscan._api.summary``): its
   local final state ``B`` (from a zero state), the product ``A`` of its decays (with a
   separate exponent, so that it neither underflows nor overflows) and whether it resets: a
   chunk maps an incoming state ``s`` to ``A * s + B`` (to ``B`` where it resets). On the
   CPU that is one pass over the chunk; CuPy chunks compose it of passes that read ``a``
   twice (``linscan._extended.composed_summary``).
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
(``_dask_internals.loaded_after``) load only once every carry is known, so no chunk waits in
memory for its carry and the peak memory is that of a few chunks per worker, whatever the
array's size. The price is that every input chunk is loaded (read from its store, or
computed by its graph) twice: once per step. In memory, :func:`scan` reads ``a`` and ``x``
twice (on the GPU ``a`` three times: twice in step 1) and writes ``h`` once;
:func:`final_state` loads its inputs once (step 1 only) and writes one step;
:func:`scan_backward` loads ``a``, ``grad_h`` and ``resets`` twice and ``h`` twice in step 3
(once as a chunk, once for the boundary step that the next chunk needs as its ``h0``). With
one chunk along time there is only step 3, and every input is loaded once.

16-bit inputs carry their states in float32 from chunk to chunk, as the in-memory scan
accumulates them, and round once per chunk of the result.

The modules: ``_maps`` (a chunk's map, composing and applying maps),
``_chunks`` (the work of one chunk, on Dask's workers), ``_graph`` (the operands aligned on one
block grid, and the tasks of the three steps) and ``_dask_internals`` (every use of Dask's
private API).
"""

from __future__ import annotations

import dask.array as da

from .. import _validate
from ._chunks import backward_chunk, backward_map, forward_map, scan_chunk
from ._dask_internals import loaded_after
from ._graph import BlockGrid, forward_grid, stand_in, stand_ins

__all__ = ["scan", "final_state", "scan_backward"]


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
    grid = forward_grid(a, x, h0, axis, reverse, method, resets, "scan")
    inputs, carries = grid.inputs, None
    if grid.time_chunks > 1:
        carries = grid.carries(forward_map, inputs, grid.time_order[:-1])
        inputs = loaded_after(inputs, carries)
    return grid.blockwise(scan_chunk, inputs, carries, grid.dtype)


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
    grid = forward_grid(a, x, h0, axis, reverse, method, resets, "final_state")
    if grid.shape[grid.axis] == 0:
        state = da.broadcast_to(grid.h0, grid.state_shape) if grid.h0 is not None else None
        if state is None:
            state = da.zeros(grid.state_shape, grid.dtype, chunks=grid.state_chunks)
        return state.astype(grid.dtype)
    return grid.total(forward_map, grid.inputs, grid.time_order)


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
    proxies = stand_ins(a=a, h=h, grad_h=grad_h, h0=h0)
    args = _validate.backward_args(*proxies, axis, reverse, stand_in(resets, "resets"))
    named = (("a", a), ("h", h), ("grad_h", grad_h), ("resets", resets))
    grid = BlockGrid(args, method, named, h0, ("h", "grad_h", "a", "resets"), "scan_backward")
    backwards = grid.time_order[::-1]
    inputs, carries = grid.inputs, None
    if grid.time_chunks > 1:
        a_blocks, _, grad_h_blocks, resets_blocks = inputs
        carries = grid.carries(backward_map, (a_blocks, grad_h_blocks, resets_blocks),
                               backwards[:-1], False)  # fmt: skip
        inputs = loaded_after(inputs, carries)
    # The state before each chunk: the last step of the chunk before it, h0 for the first.
    before = grid.boundaries(inputs[1], grid.h0)
    parts = grid.blockwise(backward_chunk, inputs, carries, None, backwards, extra=before)
    grad_x = grid.part(parts, 1, grid.chunks, grid.dtype)
    grad_a = grid.reduced(parts, 0, grid.operands["a"], args.a, None)
    grad_h0 = None
    if args.h0 is not None:
        grad_h0 = grid.reduced(parts, 2, grid.h0, args.h0, grid.time_order[0])
    return grad_a, grad_x, grad_h0
