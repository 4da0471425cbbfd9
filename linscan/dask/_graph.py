"""Building the task graphs of ``linscan.dask``: the operands of one call aligned on one block
grid, and the tasks of its three steps over that grid.

Validation sees each Dask array as a stand-in of its shape and dtype (:func:`stand_in`), so a
call raises what the in-memory function raises before anything is computed. The operands are
then lifted to Dask arrays of the result's number of axes and rechunked to one chunking (that
of the first Dask input not broadcast along each axis); :class:`BlockGrid` builds the tasks:
a summary per chunk (step 1), a tree of compositions giving every chunk its entering state
(step 2), and a task per block (step 3). The work of the tasks is in ``._chunks`` and
``._maps``; the graph copies that load the inputs again after the carries are in
``._dask_internals``.
"""

from __future__ import annotations

import itertools
import math
import operator

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .. import _dtypes, _layout, _validate
from ._chunks import apply_to_blocks, boundary_step
from ._dask_internals import meta
from ._maps import carry_block, compose, final_block

# --- the operands -----------------------------------------------------------------------------


def stand_in(value, name):
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
    xp = _layout.xp_of(meta(value))
    return xp.broadcast_to(xp.zeros((), value.dtype), value.shape)


def stand_ins(**named):
    return [stand_in(value, name) for name, value in named.items()]


def as_dask(value, ndim: int):
    """``value`` (a Dask, NumPy or CuPy array) as a Dask array of ``ndim`` axes."""
    if not isinstance(value, da.Array):
        value = da.from_array(value, chunks=-1) if value.ndim else da.from_array(value)
    if value.ndim < ndim:
        value = value[(None,) * (ndim - value.ndim)]
    return value


def result_chunks(arrays, shape):
    """The chunks of the result: along each axis those of the first of ``arrays`` (Dask
    arrays of ``len(shape)`` axes) that is not broadcast along it."""
    chunks = []
    for d, n in enumerate(shape):
        full = [arr.chunks[d] for arr in arrays if arr.shape[d] == n]
        chunks.append(full[0] if full and n != 1 else ((n,) if n else (0,)))
    return tuple(chunks)


def aligned(arr, shape, chunks):
    """``arr`` rechunked to ``chunks`` along its axes of full length (broadcast axes, of
    length 1, stay one chunk)."""
    wanted = {d: chunks[d] for d, n in enumerate(arr.shape) if n == shape[d]}
    if all(arr.chunks[d] == c for d, c in wanted.items()):
        return arr
    return arr.rechunk(wanted)


def block_key(arr, index):
    """The key of the block of ``arr`` that block ``index`` of the result reads."""
    return (arr.name,) + tuple(i if n > 1 else 0 for i, n in zip(index, arr.numblocks))


def forward_grid(a, x, h0, axis, reverse, method, resets, kind):
    """The :class:`BlockGrid` of a call of ``scan`` or ``final_state`` (``kind``)."""
    proxies = stand_ins(a=a, x=x, h0=h0)
    args = _validate.scan_args(*proxies, axis, reverse, stand_in(resets, "resets"))
    named = (("a", a), ("x", x), ("resets", resets))
    return BlockGrid(args, method, named, h0, ("x", "a", "resets"), kind)


# --- the tasks --------------------------------------------------------------------------------


class BlockGrid:
    """The operands of one call aligned on one chunking, and the graph-building steps.

    ``args``: the validated arguments (of the stand-ins); ``operands``: ``(name, value)`` in
    the order the chunk functions take them; ``prefer``: the names whose chunking the result
    takes, first first; ``kind``: the function's name, for the graph's keys.

    Block indices: a block of the result is ``block_index(state_block, time_chunk)``, where
    ``state_block`` indexes the blocks of one time step (the axes other than time) and
    ``time_chunk`` the chunks along time; ``time_order`` lists the time chunks in the order
    the scan runs through them."""

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
            lifted[name] = as_dask(value, len(shape))
        # Chunked like the first Dask input given, then like the others.
        dask_inputs = {name for name, value in operands if isinstance(value, da.Array)}
        ranked = [name for name in prefer if name in lifted]
        order = sorted(ranked, key=lambda name: name not in dask_inputs)
        self.chunks = result_chunks([lifted[name] for name in order], shape)
        self.operands = {n: aligned(v, shape, self.chunks) for n, v in lifted.items()}
        self.inputs = tuple(self.operands.get(name) for name, _ in operands)
        self.xp = _layout.xp_of(meta(self.inputs[0]))  # NumPy or CuPy chunks
        self.time_chunks = len(self.chunks[self.axis])
        self.time_order = list(range(self.time_chunks))[:: -1 if self.reverse else 1]
        self.state_shape = _layout.state_shape(shape, self.axis)
        self.state_chunks = _layout.state_shape(self.chunks, self.axis)
        self.h0 = None
        if args.h0 is not None:
            value = h0 if isinstance(h0, da.Array) else args.h0
            self.h0 = aligned(as_dask(value, len(self.state_shape)), self.state_shape,
                              self.state_chunks)  # fmt: skip
        self.token = tokenize(kind, args.shape, self.dtype, self.chunks, self.axis, self.reverse,
                              self.method,
                              *[v.name for v in self.operands.values()],
                              None if self.h0 is None else self.h0.name)  # fmt: skip
        self.options = dict(axis=self.axis, reverse=self.reverse, method=self.method)

    # The block grid: full indices, and the indices of one time step.

    def state_blocks(self):
        """The block indices of one time step (the axes other than time)."""
        return itertools.product(*(range(len(c)) for c in self.state_chunks))

    def block_index(self, state_block, time_chunk):
        return state_block[: self.axis] + (time_chunk,) + state_block[self.axis :]

    def state_block_shape(self, state_block):
        return tuple(c[i] for c, i in zip(self.state_chunks, state_block))

    def _h0_key(self, state_block):
        return None if self.h0 is None else block_key(self.h0, state_block)

    # Steps 1 and 2.

    def _summaries(self, layer, name, summarize, inputs, order):
        """Tasks ``(name, position, *state_block)``: the map of the chunk at ``position`` of
        ``order``."""
        for state_block in self.state_blocks():
            for position, time_chunk in enumerate(order):
                index = self.block_index(state_block, time_chunk)
                keys = [None if arr is None else block_key(arr, index) for arr in inputs]
                task = (apply_to_blocks, summarize, keys, {**self.options, "acc": self.acc})
                layer[(name, position) + state_block] = task

    def _composed_key(self, layer, name, lo, hi, state_block):
        """The key of the composed map of positions ``lo`` to ``hi - 1`` (tasks added once)."""
        if hi - lo == 1:
            return (name, lo) + state_block
        key = (name + "-tree", lo, hi) + state_block
        if key not in layer:
            mid = (lo + hi) // 2
            left = self._composed_key(layer, name, lo, mid, state_block)
            right = self._composed_key(layer, name, mid, hi, state_block)
            layer[key] = (compose, left, right)
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
        for state_block in self.state_blocks():
            entering = self._h0_key(state_block) if start else None
            self._fill_carries(layer, name, out, state_block, 0, len(order) + 1, entering)
        chunks = ((1,) * len(order),) + self.state_chunks
        graph = self._graph(out, layer, inputs)
        return da.Array(graph, out, chunks, dtype=self.acc, meta=self._meta(len(chunks), self.acc))

    def _fill_carries(self, layer, name, out, state_block, lo, hi, entering):
        """Tasks for the carries into positions ``lo + 1`` to ``hi - 1``, given the key of the
        one entering position ``lo``."""
        if hi - lo <= 1:
            return
        mid = (lo + hi) // 2
        key = (out, mid - 1) + state_block
        summary = self._composed_key(layer, name, lo, mid, state_block)
        layer[key] = (carry_block, summary, entering, self.state_block_shape(state_block))
        self._fill_carries(layer, name, out, state_block, lo, mid, entering)
        self._fill_carries(layer, name, out, state_block, mid, hi, key)

    def total(self, summarize, inputs, order):
        """The state after every chunk (``final_state``), as a Dask array of one step."""
        name = "linscan-summary-" + self.token
        out = "linscan-final-" + self.token
        layer = {}
        self._summaries(layer, name, summarize, inputs, order)
        for state_block in self.state_blocks():
            summary = self._composed_key(layer, name, 0, len(order), state_block)
            shape = self.state_block_shape(state_block)
            layer[(out,) + state_block] = (final_block, summary, self._h0_key(state_block),
                                           shape, self.dtype)  # fmt: skip
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
        results, or, with ``dtype=None``, the name of the tasks (they return tuples) and their
        graph."""
        order = self.time_order if order is None else order
        name = f"linscan-{work.__name__.strip('_').replace('_', '-')}-{self.token}"
        layer = {}
        first = None if extra is not None else self._h0_key
        for state_block in self.state_blocks():
            for position, time_chunk in enumerate(order):
                index = self.block_index(state_block, time_chunk)
                keys = [None if arr is None else block_key(arr, index) for arr in inputs]
                if position:
                    keys.append((carries.name, position - 1) + state_block)
                else:
                    keys.append(first(state_block) if first is not None else None)
                if extra is not None:
                    keys.append(extra(index))
                options = dict(self.options, dtype=self.dtype)
                layer[(name,) + index] = (apply_to_blocks, work, keys, options)
        if extra is not None:
            layer.update(extra.tasks)
        graph = self._graph(name, layer, list(inputs) + [carries])
        if dtype is None:
            return name, graph
        chunk_meta = self._meta(len(self.chunks), dtype)
        return da.Array(graph, name, self.chunks, dtype=dtype, meta=chunk_meta)

    def boundaries(self, h, h0):
        """For ``scan_backward``: a function of a block index giving the key of the state
        before that block (a boundary step of ``h``'s previous chunk, or ``h0``'s block)."""
        name = "linscan-boundary-" + self.token
        layer, previous = {}, {}
        for position, time_chunk in enumerate(self.time_order[1:], start=1):
            previous[time_chunk] = self.time_order[position - 1]
        end = 0 if self.reverse else -1
        for state_block in self.state_blocks():
            for time_chunk, before in previous.items():
                task = (apply_to_blocks, boundary_step,
                        [block_key(h, self.block_index(state_block, before))],
                        {"axis": self.axis, "index": end})  # fmt: skip
                layer[(name,) + self.block_index(state_block, time_chunk)] = task

        def key(index):
            if index[self.axis] in previous:
                return (name,) + index
            state_block = index[: self.axis] + index[self.axis + 1 :]
            return None if h0 is None else block_key(h0, state_block)

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

    def reduced(self, parts, item, operand, original, time_chunk):
        """The gradient of a broadcast input (``operand``, lifted; ``original`` as given)
        from item ``item`` of every block's result (of the blocks of ``time_chunk`` when
        given: ``grad_h0``), summed over its broadcast copies, in its shape and dtype."""
        name, graph = parts
        out = f"{name}-{item}"
        if time_chunk is None:
            grid = self.shape
            keys = {key[1:]: key for key in self._keys(name)}
            chunks = self.chunks
        else:
            grid = self.state_shape
            keys = {s: (name,) + self.block_index(s, time_chunk) for s in self.state_blocks()}
            chunks = self.state_chunks
        # One block per block of the grid; along broadcast axes each holds a partial sum.
        broadcast = [d for d, n in enumerate(operand.shape) if n == 1 and grid[d] != 1]
        sizes = tuple(
            (1,) * len(c) if d in broadcast else c for d, c in enumerate(chunks)
        )  # fmt: skip
        layer = {(out,) + index: (operator.getitem, key, item) for index, key in keys.items()}
        graph = HighLevelGraph.merge(graph, HighLevelGraph({out: layer}, {out: {name}}))
        native = original.dtype.newbyteorder("=")
        part = _dtypes.accumulator(native)  # each block's part, unrounded: backward_chunk
        arr = da.Array(graph, out, sizes, dtype=part, meta=self._meta(len(sizes), part))
        if broadcast:  # summed in 64 bits, as the in-memory sums
            wide = np.promote_types(_dtypes.accumulator(native), np.float64)
            arr = arr.sum(axis=tuple(broadcast), dtype=wide, keepdims=True)
        if arr.shape != original.shape:
            arr = arr.reshape(original.shape)
        return arr.astype(native) if arr.dtype != native else arr

    # Helpers.

    def _keys(self, name):
        for state_block in self.state_blocks():
            for time_chunk in range(self.time_chunks):
                yield (name,) + self.block_index(state_block, time_chunk)

    def _meta(self, ndim, dtype):
        """An empty array of the chunks' type: what Dask calls a collection's meta."""
        return self.xp.empty((0,) * ndim, dtype)

    def _graph(self, name, layer, dependencies):
        deps = [arr for arr in list(dependencies) + [self.h0] if arr is not None]
        return HighLevelGraph.from_collections(name, layer, dependencies=deps)
