"""Broadcasting and the canonical layout, written once for every backend.

Every array of a call is viewed as ``(O, T, I)``: ``O`` is the product of the axes before the
time axis, ``T`` its length, ``I`` the product of the axes after it. For a C-contiguous array
this is a reshape, so no data moves: ``I == 1`` is the time-contiguous case, a large ``I`` the
time-major one. Inputs that broadcast keep their zero strides (a per-channel decay is not
materialized at full size) unless the merged axes cannot be described by strides, when NumPy's
reshape copies. The same code serves NumPy and CuPy arrays (``xp`` is the array's module).
"""

from __future__ import annotations

import math

import numpy as np

from ._dispatch import is_cupy


def xp_of(arr):
    """The array module of ``arr``: ``cupy`` for a CuPy array, else ``numpy``."""
    if is_cupy(arr):
        import cupy

        return cupy
    return np


def dims(shape: tuple, axis: int) -> tuple:
    """``(O, T, I)`` of a result of ``shape`` scanned along ``axis``."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def broadcast_shapes(*shapes) -> tuple:
    """The shape arrays of ``shapes`` broadcast to, by NumPy's rules, for any number of
    dimensions (``numpy.broadcast_shapes`` raises RuntimeError past 32). ValueError if they
    do not broadcast."""
    ndim = max(map(len, shapes), default=0)
    result = [1] * ndim
    for shape in shapes:
        for k, n in enumerate(shape, start=ndim - len(shape)):
            if n != 1:
                if result[k] not in (1, n):
                    raise ValueError(f"shapes {shapes} do not broadcast together")
                result[k] = n
    return tuple(result)


def state_shape(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def view3(arr: np.ndarray, shape: tuple, axis: int, dtype: np.dtype, xp=np, trail=0):
    """``arr`` (an array of module ``xp``) broadcast to ``shape`` as an ``(O, T, I)`` array of
    ``dtype``, followed by the last ``trail`` dimensions of ``shape`` as they are (a matrix
    recurrence's state or matrices: merged into ``I``, a lane axis of stride 0 beside them
    made a copy per lane); strided views are kept, and the cast (if any) happens before
    broadcasting, on the small array."""
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    if arr.shape != shape:
        arr = xp.broadcast_to(arr, shape)
    lanes = shape[: len(shape) - trail]
    return arr.reshape(dims(lanes, axis) + shape[len(lanes) :])


def readonly(arr):
    """A read-only view of ``arr``, so that every input reaches the CPU kernels with the same
    writeability (Numba compiles one version per combination of flags)."""
    view = arr.view()
    view.flags.writeable = False
    return view


def contiguous3(arr: np.ndarray, shape: tuple, axis: int, dtype: np.dtype, xp=np, trail=0):
    """Like ``view3`` but C-contiguous (a copy only where ``arr`` is not already so)."""
    view = view3(arr, shape, axis, dtype, xp, trail)
    return view if view.flags.c_contiguous else xp.ascontiguousarray(view)


def initial_state(h0, shape: tuple, axis: int, dtype: np.dtype, xp=np) -> np.ndarray:
    """A fresh, writable ``(O, I)`` array of module ``xp`` holding ``h0`` broadcast (zeros for
    ``None``; a 0-d NumPy ``h0`` is a scalar)."""
    O, _, I = dims(shape, axis)
    if h0 is None:
        return xp.zeros((O, I), dtype)
    if xp is not np and isinstance(h0, (np.generic, np.ndarray)):
        return xp.full((O, I), h0.item(), dtype)
    return xp.array(xp.broadcast_to(h0, state_shape(shape, axis)), dtype=dtype).reshape(O, I)


def sum_to_shape(full: np.ndarray, target: tuple, dtype: np.dtype) -> np.ndarray:
    """Sum ``full`` over the axes that broadcasting added to an array of shape ``target``, in
    ``dtype``.

    The gradient of a broadcast input is the sum of the gradients of its copies. Sums of 32-bit
    components run in 64 bits (without a 64-bit copy of ``full``) so that their rounding does
    not grow with the number of terms. A real ``dtype`` takes the real part of a complex
    ``full``: the gradient of a real input that met complex ones.
    """
    if full.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        full = full.real
    lead = full.ndim - len(target)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, n in enumerate(target) if n == 1 and full.shape[lead + k] != 1
    )
    if not axes:  # (a reshape costs a CuPy call a microsecond: none where none is needed)
        return cast(full if full.shape == tuple(target) else full.reshape(target), dtype)
    acc = np.promote_types(full.dtype, np.float64)  # float64 or complex128
    # keepdims: an array even where every axis is summed (NumPy would give a scalar).
    return cast(full.sum(axis=axes, dtype=acc, keepdims=True).reshape(target), dtype)


def cast(arr, dtype):
    """``arr`` in ``dtype`` (itself if it has it); values beyond a narrower dtype's range become
    inf without NumPy's overflow warning: an overflowing result is inf, as documented."""
    if arr.dtype == dtype:
        return arr
    with np.errstate(over="ignore"):
        return arr.astype(dtype)


def _address(arr) -> int:
    return arr.data.ptr if is_cupy(arr) else arr.__array_interface__["data"][0]


def _extent(arr) -> tuple:
    """The byte range ``[lo, hi)`` a CuPy array's elements lie in."""
    lo = hi = arr.data.ptr
    if arr.flags.c_contiguous:  # (the common case, without a loop)
        return lo, lo + arr.nbytes
    for n, stride in zip(arr.shape, arr.strides):
        if n == 0:
            return lo, lo
        if stride < 0:
            lo += stride * (n - 1)
        else:
            hi += stride * (n - 1)
    return lo, hi + arr.itemsize


def may_share_memory(p, q) -> bool:
    """Whether two arrays may overlap, by their bounds (always False across host and device).
    For CuPy arrays the bounds are computed here: CuPy's own check is slow for small calls."""
    on_gpu = is_cupy(p)
    if on_gpu != is_cupy(q):
        return False
    if not on_gpu:
        return bool(np.may_share_memory(p, q))
    (p0, p1), (q0, q1) = _extent(p), _extent(q)
    return p0 < q1 and q0 < p1 and p0 < p1 and q0 < q1


def same_memory_layout(p, q) -> bool:
    """True if ``p`` and ``q`` address exactly the same elements in the same order, so that a
    kernel reading ``q[i]`` before writing ``p[i]`` is safe."""
    return (
        is_cupy(p) == is_cupy(q)
        and p.shape == q.shape
        and p.strides == q.strides
        and _address(p) == _address(q)
    )


def safe_output(out, shape: tuple, axis: int, inputs, exact_ok=()) -> np.ndarray | None:
    """The ``(O, T, I)`` view of ``out`` to write into directly, or ``None`` when a scratch
    result must be computed and copied into ``out``: ``out`` is missing or not C-contiguous,
    or it overlaps one of ``inputs`` without being exactly one of ``exact_ok``. Which exact
    aliases are safe depends on the kernel (an element is read before it is written), so each
    caller names them."""
    if out is None or not out.flags.c_contiguous:
        return None
    out3 = out.reshape(dims(shape, axis))
    for arr in inputs:
        if not hasattr(arr, "shape") or not may_share_memory(out3, arr):
            continue
        if not any(arr is ok for ok in exact_ok) or not same_memory_layout(out3, arr):
            return None
    return out3
