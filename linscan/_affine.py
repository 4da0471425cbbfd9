"""The map algebra of the recurrence, once in Python: the mirror of ``kernels_cu/affine.cuh``.

A run of steps of ``h[t] = a[t] * h[t-1] + x[t]`` is the affine map ``h -> A * h + B``: ``A``
the product of its decays, ``B`` the serial loop's result from a zero state. Running two runs
one after the other composes their maps. A run holding a step that resets ignores the state
it is given: ``reset`` marks it, and then ``B`` alone is its result (a flag, not ``A = 0``,
so that an inf or NaN of the state does not cross it: ``0 * inf`` is NaN).

``A * h + B`` is the serial loop's result, inf and NaN included, unless

* ``A`` is infinite or NaN: the run met an infinite decay (from a zero state ``B`` holds
  ``inf * 0`` where the loop holds ``inf * h``), or the product overflowed; or
* ``A`` is zero and ``h`` is not finite: a zero product may be an underflow, which the loop,
  multiplying an infinite state by one decay at a time, never sees.

There the map *cannot stand for its steps* (:func:`unsafe`) and the steps must be walked from
the true entering state: the CPU backend walks such pieces (``linscan.backends.cpu``), the
GPU kernel such tiles (``scan.cu``; emulated by ``linscan.backends.cuda.emulate``).

``linscan.dask`` keeps a product with a separate exponent, which neither underflows nor
overflows, so that ``A * h`` is the loop's product however small ``A`` (a zero ``A`` is a zero
decay, which meets an infinite state as the loop does: ``0 * inf`` is NaN). For such maps
(:func:`unsafe_extended`) the second rule becomes: ``A * h`` and ``B`` both infinite. Their sum
is the loop's only where ``B``'s inf comes from an infinite input; where it comes from an
overflow of the loop from zero, the loop from ``h`` holds the inf of ``A * h`` instead (the
plain product's rule catches these as an overflowed or underflowed ``A``). And ``A`` beyond the
range of the states' dtype counts as infinite, as the plain product does.

:func:`cannot_stand` is the rule itself, in arithmetic that Python numbers, NumPy and CuPy
arrays and Numba's compiled code all share: the CPU kernels compile it into their blocked
walks (``linscan.backends.cpu.kernels``), and :func:`unsafe` applies it to arrays. The
functions take NumPy or CuPy arrays (or scalars) alike; ``inexact`` marks a composed map
whose ``B`` came from applying a map where it could not stand (the kernel's INEXACT flag).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Map(NamedTuple):
    """``h -> B if reset else A * h + B``, elementwise over arrays of one state's shape."""

    A: object
    B: object
    reset: object = False
    inexact: object = False


def not_finite(v):
    """Whether ``v`` is infinite or NaN (a complex number: either part), elementwise: ``v - v``
    is exactly 0 for every finite number and NaN otherwise."""
    return v - v != 0


def cannot_stand(A, h):
    """Whether a map of plain product ``A``, applied to the state ``h``, can differ from the
    loop walking its steps from ``h``: ``A`` infinite or NaN, or zero (perhaps an underflow)
    meeting an infinite or NaN state. Scalars or arrays (a Python ``bool`` or a boolean
    array); compiled by Numba as it is (so it calls no other Python function)."""
    return (A - A != 0) | ((A == 0) & (h - h != 0))


def unsafe(A, reset, h, *, underflows: bool = True):
    """Where ``A * h + B`` can differ from the loop walking the map's steps from ``h``
    (:func:`cannot_stand`; without ``underflows``, for a product that cannot underflow, only
    an infinite or NaN ``A``); never where the map resets."""
    with np.errstate(invalid="ignore"):
        bad = cannot_stand(A, h) if underflows else not_finite(A)
    return _unless(bad, reset)


def unsafe_extended(A, B, reset, Ah=None):
    """:func:`unsafe` for a product ``A`` that neither underflows nor overflows (the caller
    gives an ``A`` beyond the states' range as inf): ``A`` infinite or NaN, or ``A * h``
    (``Ah``; ``None``: for some ``h``, an infinite one) and ``B`` both infinite; never where
    the map resets."""
    with np.errstate(invalid="ignore"):
        infinite_B = _infinite(B)
        if Ah is not None:
            infinite_B = infinite_B & _infinite(Ah)
    return unsafe(A, reset, None, underflows=False) | _unless(infinite_B, reset)


def _infinite(v):
    """Whether ``v`` is infinite (a complex number: either part), elementwise."""
    return np.isinf(v.real) | np.isinf(v.imag) if v.dtype.kind == "c" else np.isinf(v)


def _unless(bad, reset):
    """``bad`` where the map does not reset."""
    if isinstance(reset, (bool, np.bool_)):  # one flag for every element
        return bad & (not reset)
    return bad & ~reset


def compose(earlier: Map, later: Map) -> Map:
    """The map of ``earlier``'s steps followed by ``later``'s (``compose`` of affine.cuh)."""
    A0, B0, R0, W0 = earlier
    A1, B1, R1, W1 = later
    with np.errstate(invalid="ignore", over="ignore"):
        return Map(
            np.where(R1, A1, A1 * A0),
            np.where(R1, B1, A1 * B0 + B1),
            R1 | R0,
            np.where(R1, W1, W0 | W1 | unsafe(A1, R1, B0)),
        )


def apply(m: Map, h):
    """``(state, exact)``: the state leaving ``m``'s steps entered with ``h``, and where that
    is the serial loop's result (elsewhere the steps must be walked)."""
    A, B, R, W = m
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(R, B, A * h + B), ~np.where(R, W, W | unsafe(A, R, h))
