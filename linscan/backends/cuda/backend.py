"""The GPU backend: the CUDA kernels of ``kernels_cu/`` on CuPy arrays.

Imported only when a call has CuPy arrays; implements the contract of
``linscan.backends.base``. The launch plan comes from ``plan``, the kernels from ``source``,
their parameter lists from ``abi``. Kernels run on CuPy's current stream, scratch comes from
CuPy's memory pool, and nothing on this path waits for the device.
"""

from __future__ import annotations

import cupy
import numpy as np

from ... import _dtypes, _extended, _layout
from .. import base
from . import abi, plan, source

_ZERO = {dtype: dtype.type(0) for dtype in map(_dtypes.accumulator, _dtypes.SUPPORTED)}
_sms: dict = {}


def _is_host(value) -> bool:
    # A Python number (a NumPy scalar after validation) or a NumPy scalar (a 0-d array).
    return isinstance(value, (np.generic, np.ndarray))


def _multiprocessors() -> tuple:
    """(current device id, its multiprocessor count), the count looked up once per device."""
    device = cupy.cuda.runtime.getDevice()
    count = _sms.get(device)
    if count is None:
        count = _sms[device] = cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"]
    return device, count


def _pointer(arr):
    return abi.NULL if arr is None else arr


def _elements(arr) -> tuple:
    """The strides of ``arr`` in elements."""
    return tuple(stride // arr.itemsize for stride in arr.strides)


def _flat(arr, O: int, T: int) -> bool:
    """Whether a canonical ``(O, T, 1)`` view is laid out as ``x``, element ``(o, t)`` at
    ``o * T + t`` (``row_scan`` reads it so), or is a value (a decay given by value)."""
    if not isinstance(arr, cupy.ndarray):
        return True
    so, st, _ = _elements(arr)
    return (T == 1 or st == 1) and (O == 1 or so == T)


def _scratch(launch: plan.Launch) -> dict:
    """The look-back's scratch of a chained launch, its status words zeroed on the current
    stream (the layout of ``plan.Launch``: status, A, B, prefix, then the reset flags)."""
    scratch = cupy.empty(launch.scratch_bytes, np.uint8)
    base = scratch.data.ptr
    stream = cupy.cuda.get_current_stream()
    cupy.cuda.runtime.memsetAsync(base, 0, launch.status_bytes, stream.ptr)
    values, step = base + launch.status_bytes, launch.values_bytes
    # (Python ints go as 64-bit integers: the same bits as the pointers.)
    return dict(status=base, agg_a=values, agg_b=values + step, incl=values + 2 * step,
                agg_r=values + 3 * step)  # fmt: skip


#: A launch whose tiles do not look back, a call without resets, a decay given by value.
_NO_SCRATCH = dict(status=abi.NULL, agg_a=abi.NULL, agg_b=abi.NULL, incl=abi.NULL, agg_r=abi.NULL)
_NO_FLAGS = dict(r=abi.NULL, r_so=0, r_st=0, r_si=0)
_NO_DECAYS = dict(a=abi.NULL, a_so=0, a_st=0, a_si=0)  # a_value: the decay, by value


def _run(mode, a, v, hf, h0, y, ga, s_out, down: bool, method: str, r=None) -> None:
    """Launch one kernel of ``mode`` over the canonical arrays (``None`` for unused ones)."""
    O, T, I = v.shape
    arith = _dtypes.accumulator(v.dtype)
    device_id, sms = _multiprocessors()
    flat = (
        plan.FAST and I == 1 and mode in plan.ROW_MODES and _flat(a, O, T)
        and (r is None or _flat(r, O, T))
    )  # fmt: skip
    launch = plan.launch(O, T, I, arith.itemsize, mode, method, sms, None, r is not None, flat)
    kernel = source.function(v.dtype, mode, launch, device_id)
    h0_so, h0_si = (0, 0) if h0 is None else _elements(h0)
    args = dict(
        v=v, hf=_pointer(hf), h0=_pointer(h0), h0_so=h0_so, h0_si=h0_si, y=_pointer(y),
        ga=_pointer(ga), s_out=_pointer(s_out), O=O, Tn=T, I=I, down=abi.DOWN[down],
    )  # fmt: skip
    if isinstance(a, cupy.ndarray):
        args["a"], args["a_value"] = a, _ZERO[arith]
        args["a_so"], args["a_st"], args["a_si"] = _elements(a)
    else:
        args.update(_NO_DECAYS)
        args["a_value"] = arith.type(a)
    if r is None:
        args.update(_NO_FLAGS)
    else:  # strides in bytes: the flags are bytes
        args["r"], (args["r_so"], args["r_st"], args["r_si"]) = r, r.strides
    if launch.kernel != "serial_scan":
        args.update(_scratch(launch) if launch.chained else _NO_SCRATCH)
        args["log2s"], args["groups"], args["N"] = launch.log2s_c, launch.groups, O * T
    block = (launch.threads,)
    kernel((launch.grid,), block, abi.pack(launch.kernel, args), shared_mem=launch.smem)


class CUDA(base.Backend):
    """The CUDA kernels on CuPy arrays, on the current device and stream."""

    name = "cuda"
    xp = cupy

    def storage(self, dtype):
        """The dtype itself: 16-bit arrays are read and written in 16 bits and computed in
        float32 inside the kernels."""
        return dtype

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype)

    def decays(self, a, shape, axis, dtype):
        """``a`` as a canonical view read through its own strides, or a host scalar as the
        kernels' ``a_value``."""
        if _is_host(a):
            return dtype.type(a)
        return _layout.view3(a, shape, axis, dtype, cupy)

    def operand(self, arr, shape, axis, dtype):
        if _is_host(arr):
            return cupy.full(_layout.dims(shape, axis), arr.item(), dtype)
        return _layout.contiguous3(arr, shape, axis, dtype, cupy)

    def initial(self, h0, shape, axis, dtype):
        """``h0`` as an ``(O, I)`` view (zero strides where it broadcasts), or ``None``."""
        if h0 is None:
            return None
        O, _, I = _layout.dims(shape, axis)
        if _is_host(h0):
            return cupy.broadcast_to(cupy.full((1, 1), h0.item(), dtype), (O, I))
        state = h0.astype(dtype, copy=False)
        state = cupy.broadcast_to(state, _layout.state_shape(shape, axis))
        return state.reshape(O, I)

    def flags(self, resets, shape, axis):
        return None if resets is None else _layout.view3(resets, shape, axis, resets.dtype, cupy)

    def scan(self, a, x, h, h0, reverse: bool, method: str, resets=None) -> None:
        _run(plan.FORWARD, a, x, None, h0, h, None, None, reverse, method, resets)

    def final_state(self, a, x, h0, reverse: bool, method: str, resets=None):
        O, _, I = x.shape
        state = cupy.empty((O, I), _dtypes.accumulator(x.dtype))  # written unrounded
        _run(plan.FINAL, a, x, None, h0, None, None, state, reverse, method, resets)
        return state

    def backward(self, a, h, gh, h0, gx, ga, reverse, method, want_h0, resets=None):
        O, _, I = h.shape
        grad_h0 = cupy.empty((O, I), _dtypes.accumulator(h.dtype)) if want_h0 else None
        # The backward pass walks against the forward scan.
        _run(plan.BACKWARD, a, gh, h, h0, gx, ga, grad_h0, not reverse, method, resets)
        return grad_h0

    def summary(self, a, x, reverse: bool, method: str, resets=None, back=False):
        """Composed of ``final_state`` and array operations (reads ``a`` twice or three
        times): no kernel computes it in one pass yet."""
        return _extended.composed_summary(self, a, x, reverse, method, resets, back)


backend = CUDA()
