"""The GPU backend: the CUDA kernels of ``kernels_cu/`` on CuPy arrays.

Imported only when a call has CuPy arrays. Same contract as ``linscan._cpu`` on the
canonical layout; the launch plan comes from ``plan``, the kernels from ``source``. Kernels
run on CuPy's current stream, scratch comes from CuPy's memory pool, and nothing on this path
waits for the device.
"""

from __future__ import annotations

import cupy
import numpy as np

from .. import _dtypes, _layout
from . import plan, source

_NULL = np.uint64(0)  # a null pointer
_NULLS = (_NULL,) * 5
_NO_RESETS = (_NULL, 0, 0, 0)
_ZERO = {dtype: dtype.type(0) for dtype in map(_dtypes.accumulator, _dtypes.SUPPORTED)}
_INT32 = {False: np.int32(0), True: np.int32(1)}
_BLOCK = (plan.BLOCK,)
_sms: dict = {}


xp = cupy  # the array module of this backend


def storage(dtype):
    """The dtype the kernels take the arrays of a call of ``dtype`` in: the dtype itself
    (16-bit arrays are read and written in 16 bits and computed in float32)."""
    return dtype


def empty(shape, dtype):
    return cupy.empty(shape, dtype)


def _is_host(value) -> bool:
    return isinstance(value, np.ndarray)  # a Python or NumPy scalar, made 0-d by validation


def decays(a, shape, axis, dtype):
    """``a`` as a canonical view read through its own strides, or a host scalar as such."""
    if _is_host(a):
        return dtype.type(a)
    return _layout.view3(a, shape, axis, dtype)


def operand(arr, shape, axis, dtype):
    if _is_host(arr):
        return cupy.full(_layout.dims(shape, axis), arr.item(), dtype)
    return _layout.contiguous3(arr, shape, axis, dtype)


def flags(resets, shape, axis):
    """The resets as an ``(O, T, I)`` view read through its own strides, or ``None``."""
    return None if resets is None else _layout.view3(resets, shape, axis, resets.dtype)


def initial(h0, shape, axis, dtype):
    """``h0`` as an ``(O, I)`` view (zero strides where it broadcasts), or ``None``."""
    if h0 is None:
        return None
    O, _, I = _layout.dims(shape, axis)
    if _is_host(h0):
        return cupy.broadcast_to(cupy.full((1, 1), h0.item(), dtype), (O, I))
    state = h0.astype(dtype, copy=False)
    state = cupy.broadcast_to(state, _layout.state_shape(shape, axis))
    return state.reshape(O, I)


def _multiprocessors() -> tuple:
    """(current device id, its multiprocessor count), the count looked up once per device."""
    device = cupy.cuda.runtime.getDevice()
    count = _sms.get(device)
    if count is None:
        count = _sms[device] = cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"]
    return device, count


def _run(mode, a, v, hf, h0, y, ga, s_out, down: bool, method: str, r=None) -> None:
    """Launch one kernel of ``mode`` over the canonical arrays (``None`` for unused ones).

    Every scalar argument has its C type: Python ints go to CuPy as ``long long`` (the
    kernel's 64-bit sizes and strides), ``int`` parameters are ``numpy.int32``, the decay value
    is a scalar of the arithmetic dtype; absent arrays are null pointers."""
    O, T, I = v.shape
    arith = _dtypes.accumulator(v.dtype)
    device_id, sms = _multiprocessors()
    lp = plan.launch(O, T, I, arith.itemsize, mode, method, sms, None, r is not None)
    kernel = source.function(v.dtype, mode, lp, device_id)
    if type(a) is cupy.ndarray or isinstance(a, cupy.ndarray):
        size = a.itemsize
        so, st, si = a.strides
        a_args = (a, so // size, st // size, si // size, _ZERO[arith])
    else:
        a_args = (_NULL, 0, 0, 0, arith.type(a))
    r_args = _NO_RESETS if r is None else (r, *r.strides)  # bytes: strides are in elements
    if h0 is None:
        h0_args = (_NULL, 0, 0)
    else:
        so, si = h0.strides
        h0_args = (h0, so // h0.itemsize, si // h0.itemsize)
    if lp.chained:
        scratch = cupy.empty(lp.scratch_bytes, np.uint8)
        base = scratch.data.ptr
        stream = cupy.cuda.get_current_stream()
        cupy.cuda.runtime.memsetAsync(base, 0, lp.status_bytes, stream.ptr)
        values = base + lp.status_bytes
        step = lp.values_bytes
        # status, agg_a, agg_b, agg_r, incl (kernel order); in memory the flags come last.
        # (Python ints go as 64-bit integers: the same bits as the pointers.)
        chain = (base, values, values + step, values + 3 * step, values + 2 * step)
    else:
        chain = _NULLS
    args = (
        *a_args, *r_args, v, _NULL if hf is None else hf, *h0_args,
        _NULL if y is None else y, _NULL if ga is None else ga,
        _NULL if s_out is None else s_out,
        O, T, I, _INT32[down], lp.log2s_c, lp.groups, *chain,
    )  # fmt: skip
    kernel((lp.grid,), _BLOCK, args, shared_mem=lp.smem)


def scan(a, x, h, h0, reverse: bool, method: str, resets=None) -> None:
    _run(plan.FORWARD, a, x, None, h0, h, None, None, reverse, method, resets)


def final_state(a, x, h0, reverse: bool, method: str, resets=None):
    O, _, I = x.shape
    state = cupy.empty((O, I), _dtypes.accumulator(x.dtype))  # the kernels write it unrounded
    _run(plan.FINAL, a, x, None, h0, None, None, state, reverse, method, resets)
    return state


def backward(a, h, gh, h0, gx, ga, reverse: bool, method: str, want_h0: bool, resets=None):
    O, _, I = h.shape
    grad_h0 = cupy.empty((O, I), _dtypes.accumulator(h.dtype)) if want_h0 else None
    # The backward pass walks against the forward scan.
    _run(plan.BACKWARD, a, gh, h, h0, gx, ga, grad_h0, not reverse, method, resets)
    return grad_h0
