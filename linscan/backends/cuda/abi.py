"""The parameter lists of the kernels of ``kernels_cu/scan.cu``, once: their names in order
and the C type of each, from which the launcher packs its arguments and the tests read them
back (``tests/cuda/test_cuda_launch.py`` also checks these tables against the ``.cu``
source).

CuPy passes a Python int as ``long long`` and a Python float as ``double`` without looking at
the kernel's signature, so every argument is given its exact C type here: ``POINTER`` a CuPy
array or a ``numpy.uint64`` address (0: none), ``LONG`` a Python int, ``INT`` a
``numpy.int32``, ``UINT`` a ``numpy.uint32``, ``VALUE`` a scalar of the arithmetic type.
"""

from __future__ import annotations

import operator

import numpy as np

POINTER, LONG, INT, UINT, VALUE = "pointer", "long long", "int", "unsigned", "value"

NULL = np.uint64(0)  # a null pointer
DOWN = {False: np.int32(0), True: np.int32(1)}  # the kernels' `down`: walk against address order

#: ``serial_scan``: one thread per lane walks its steps.
SERIAL_SCAN = (
    # the decays: an array read through its strides (in elements), or `a_value` everywhere
    ("a", POINTER), ("a_so", LONG), ("a_st", LONG), ("a_si", LONG), ("a_value", VALUE),
    # the resets, strides in bytes (a null pointer: none)
    ("r", POINTER), ("r_so", LONG), ("r_st", LONG), ("r_si", LONG),
    # x (grad_h for the backward pass), the forward states h (backward), h0 and its strides
    ("v", POINTER), ("hf", POINTER), ("h0", POINTER), ("h0_so", LONG), ("h0_si", LONG),
    # results: h (grad_x), grad_a, the final state (grad_h0)
    ("y", POINTER), ("ga", POINTER), ("s_out", POINTER),
    # the canonical shape (O, T, I) and the direction
    ("O", LONG), ("Tn", LONG), ("I", LONG), ("down", INT),
)  # fmt: skip

#: ``tile_scan``: the tiles of a plan (``plan.Launch``) chained by a look-back over scratch.
TILE_SCAN = SERIAL_SCAN + (
    ("log2s", INT), ("groups", LONG),
    # scratch (plan.Launch's layout): tile counter and flags, then each tile's map and prefix
    ("status", POINTER), ("agg_a", POINTER), ("agg_b", POINTER), ("agg_r", POINTER),
    ("incl", POINTER),
)  # fmt: skip

#: The lean kernels' look-back scratch, kept between calls: the call's epoch and its first
#: tile number (``lookback.cuh``), then tile_scan's layout.
_KEPT_SCRATCH = (
    ("epoch", UINT), ("tile0", UINT),
    ("status", POINTER), ("agg_a", POINTER), ("agg_b", POINTER), ("agg_r", POINTER),
    ("incl", POINTER),
)  # fmt: skip

#: ``row_scan``: time-contiguous rows (``kernels_cu/rows.cuh``): every array laid out as ``x``
#: along flat time, so no strides but h0's.
ROW_SCAN = (
    ("a", POINTER), ("a_value", VALUE), ("r", POINTER), ("v", POINTER), ("hf", POINTER),
    ("h0", POINTER), ("h0_so", LONG), ("y", POINTER), ("ga", POINTER), ("s_out", POINTER),
    # flat time N = O * T, the row length and the direction
    ("N", LONG), ("Tn", LONG), ("down", INT),
) + _KEPT_SCRATCH  # fmt: skip

#: ``chan_scan``: time-major channels (``kernels_cu/channels.cuh``), every array laid out as
#: ``x``, so no strides but h0's.
CHAN_SCAN = (
    ("a", POINTER), ("a_value", VALUE), ("r", POINTER), ("v", POINTER), ("hf", POINTER),
    ("h0", POINTER), ("h0_so", LONG), ("h0_si", LONG), ("y", POINTER), ("ga", POINTER),
    ("s_out", POINTER),
    # the canonical shape (O, T, I) and the direction
    ("O", LONG), ("Tn", LONG), ("I", LONG), ("down", INT),
) + _KEPT_SCRATCH  # fmt: skip

PARAMETERS = {"serial_scan": SERIAL_SCAN, "tile_scan": TILE_SCAN, "row_scan": ROW_SCAN,
              "chan_scan": CHAN_SCAN}  # fmt: skip
#: Each kernel's argument tuple from a dict of its parameters by name (KeyError for a missing
#: one; names the kernel does not take are left out), in the table's order.
_IN_ORDER = {kernel: operator.itemgetter(*(name for name, _ in table))
             for kernel, table in PARAMETERS.items()}  # fmt: skip


def pack(kernel: str, values: dict) -> tuple:
    """The argument tuple of ``kernel`` from ``values``, its parameters by name (each given
    with its C type: see above). On every launch: an itemgetter, not a loop."""
    return _IN_ORDER[kernel](values)
