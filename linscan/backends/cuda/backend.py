"""The GPU backend: the CUDA kernels of ``kernels_cu/`` on CuPy arrays.

Imported only when a call has CuPy arrays; implements the contract of
``linscan.backends.base``. The launch plan comes from ``plan``, the kernels from ``source``,
their parameter lists from ``abi``. Kernels run on CuPy's current stream; the look-back's
scratch comes from CuPy's memory pool and is kept per stream (``_Scratch``); nothing on this
path waits for the device. Small calls are Python-bound, so what a call's signature fixes is
planned once (``_prepare``).
"""

from __future__ import annotations

import functools
import threading
import weakref

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


def _elements(strides, itemsize: int):
    """Byte ``strides`` in elements (``None`` stays ``None``)."""
    return None if strides is None else tuple(stride // itemsize for stride in strides)


def _flat(strides, O: int, T: int, I: int) -> bool:
    """Whether a canonical ``(O, T, I)`` view with ``strides`` (in elements; ``None``: a decay
    given by value) is laid out as ``x``, element ``(o, t, i)`` at ``(o * T + t) * I + i``,
    as the lean kernels read it."""
    if strides is None:
        return True
    so, st, si = strides
    return (I == 1 or si == 1) and (T == 1 or st == I) and (O == 1 or so == T * I)


class _Held:
    """One stream's look-back scratch for one kind of kernel."""

    __slots__ = ("stream", "status", "values", "epoch", "tiles")

    def __init__(self, stream_ref):
        self.stream = stream_ref  # a weak reference
        self.status = self.values = None  # CuPy byte arrays, grown as calls need
        self.epoch = 0  # the last call's epoch (tagged kernels)
        self.tiles = 0  # the tile counter after the last call, modulo 2^32 (tagged kernels)


def _grown(array, nbytes: int):
    """``(array, False)`` if it holds ``nbytes``, else ``(a new array, True)`` of at least
    twice its size."""
    if array is not None and array.nbytes >= nbytes:
        return array, False
    size = nbytes if array is None else max(nbytes, 2 * array.nbytes)
    return cupy.empty(size, np.uint8), True


class _Scratch:
    """The look-back's scratch, kept per device and stream between calls (allocating it anew
    cost a small call as much as the rest of its launch). Calls on one stream run in order,
    so each finds the scratch free; ``lock`` holds each call's preparation and launch together
    where threads share a stream. A stream's scratch is let go when the stream is; it only
    grows (to the largest call's).

    tile_scan's status words (a tile counter, a flag per tile) are zeroed on the stream before
    each launch. The lean kernels' (``plan.TAGGED``) carry the call's epoch above the flag and
    their counter runs on from call to call (``lookback.cuh``): they live apart from the
    values and are zeroed only when first allocated, grown, or out of epochs."""

    def __init__(self):
        self.lock = threading.Lock()
        self._held: dict = {}  # (device, stream pointer, tagged) -> _Held

    def _entry(self, device: int, stream, tagged: bool) -> _Held:
        key = (device, stream.ptr, tagged)
        if stream.ptr == _PER_THREAD:  # one handle, but each thread's own stream: not shared
            key += (threading.get_ident(),)
        held = self._held.get(key)
        if held is None or held.stream() is not stream:

            def forget(ref, key=key):  # the stream is gone (unless its pointer was reused)
                # (Runs at any garbage collection, in any thread, perhaps with `lock` held:
                # no lock here, and a `drop` in between leaves nothing to remove.)
                if getattr(self._held.get(key), "stream", None) is ref:
                    self._held.pop(key, None)

            held = self._held[key] = _Held(weakref.ref(stream, forget))
        return held

    def take(self, launch: plan.Launch, device: int) -> dict:
        """The scratch arguments of a chained launch (the layout of ``plan.Launch``: status,
        then A, B, prefix and the reset flags), its status words ready on the current stream.
        Call with ``lock`` held, and launch before letting it go (or :meth:`drop` it).

        Raises ``RuntimeError`` while the stream is capturing a CUDA graph: a replayed graph
        would run the launch again on this scratch after later calls had taken it (and
        reallocated it), and the lean kernels' tile counter would not match its tile0."""
        stream = cupy.cuda.get_current_stream()
        if stream.is_capturing():
            raise RuntimeError(_CAPTURING)
        tagged = launch.kernel in plan.TAGGED
        held = self._entry(device, stream, tagged)
        if tagged:
            status, fresh = _grown(held.status, launch.status_bytes)
            if fresh or held.epoch == plan.MAX_EPOCH:
                held.status = None  # (until the memset is queued: an interrupt leaves none)
                cupy.cuda.runtime.memsetAsync(status.data.ptr, 0, status.nbytes, stream.ptr)
                held.epoch = held.tiles = 0
            held.status = status
            held.values, _ = _grown(held.values, launch.scratch_bytes - launch.status_bytes)
            status, values = held.status.data.ptr, held.values.data.ptr
            held.epoch += 1
            epoch, tile0 = held.epoch, held.tiles
            held.tiles = (held.tiles + launch.grid) % 2**32
        else:
            held.values, _ = _grown(held.values, launch.scratch_bytes)
            status = held.values.data.ptr
            cupy.cuda.runtime.memsetAsync(status, 0, launch.status_bytes, stream.ptr)
            values, epoch, tile0 = status + launch.status_bytes, 0, 0
        step = launch.values_bytes
        # (Python ints go as 64-bit integers: the same bits as the pointers.)
        return dict(
            status=status, agg_a=values, agg_b=values + step, incl=values + 2 * step,
            agg_r=values + 3 * step, epoch=np.uint32(epoch), tile0=np.uint32(tile0),
        )  # fmt: skip

    def drop(self, launch: plan.Launch, device: int) -> None:
        """Forget the current stream's scratch for ``launch``'s kind: a launch that failed
        after :meth:`take` left its counter where the next call cannot know it."""
        stream = cupy.cuda.get_current_stream()
        key = (device, stream.ptr, launch.kernel in plan.TAGGED)
        self._held.pop(key + (threading.get_ident(),) if stream.ptr == _PER_THREAD else key, None)


_CAPTURING = (
    "linscan cannot record this call into a CUDA graph (the current stream is capturing): its "
    "tiles chain through scratch memory that linscan keeps between calls, and a replayed graph "
    "would reuse it after later calls. Call it outside the capture, or with "
    "method='sequential' (one thread per lane, no scratch)"
)
_EXTERNAL: dict = {}  # (device, stream pointer) -> cupy.cuda.ExternalStream


def external_stream(pointer: int, device: int):
    """Another library's CUDA stream (PyTorch's, XLA's) as a CuPy stream, one object per
    stream: the look-back scratch is kept per stream object, so a new object per call would
    allocate and zero it anew. Kept for the process (a handful of streams)."""
    key = (device, pointer)
    stream = _EXTERNAL.get(key)
    if stream is None:
        if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy 14 on (ExternalStream deprecated)
            with cupy.cuda.Device(device):
                stream = cupy.cuda.Stream.from_external(_StreamHandle(pointer))
        else:
            stream = cupy.cuda.ExternalStream(pointer, device)
        _EXTERNAL[key] = stream
    return stream


class _StreamHandle:
    """A stream pointer that speaks the CUDA stream protocol (``__cuda_stream__``)."""

    def __init__(self, pointer: int):
        self.pointer = pointer

    def __cuda_stream__(self):
        return (0, self.pointer)


_PER_THREAD = 2  # cudaStreamPerThread: each host thread's default stream, one handle
_SCRATCH = _Scratch()
#: A launch whose tiles do not look back, a call without resets, a decay given by value.
_NO_SCRATCH = dict(status=abi.NULL, agg_a=abi.NULL, agg_b=abi.NULL, incl=abi.NULL, agg_r=abi.NULL,
                   epoch=np.uint32(0), tile0=np.uint32(0))  # fmt: skip
_NO_FLAGS = dict(r=abi.NULL, r_so=0, r_st=0, r_si=0)
_NO_DECAYS = dict(a=abi.NULL, a_so=0, a_st=0, a_si=0)  # a_value: the decay, by value


@functools.lru_cache(maxsize=512)
def _prepare(mode, shape, dtype, a_strides, h0_strides, r_strides, down, method, sms, fast):
    """The launch of a call and the kernel arguments its signature fixes (all but the arrays'
    pointers and a decay given by value), planned once per signature: small calls are
    Python-bound. Strides in bytes, ``None`` for an absent array or a decay by value."""
    O, T, I = shape
    arith = _dtypes.accumulator(dtype)
    a_so_st_si = _elements(a_strides, dtype.itemsize)
    flat = (
        fast and _flat(a_so_st_si, O, T, I)
        and (r_strides is None or _flat(r_strides, O, T, I))
    )  # fmt: skip
    launch = plan.launch(O, T, I, arith.itemsize, mode, method, sms, None, r_strides is not None,
                         flat)  # fmt: skip
    h0_so, h0_si = _elements(h0_strides, dtype.itemsize) or (0, 0)
    args = dict(
        h0_so=h0_so, h0_si=h0_si, O=O, Tn=T, I=I, down=abi.DOWN[down], a_value=_ZERO[arith],
        log2s=launch.log2s_c, groups=launch.groups, N=O * T, **_NO_SCRATCH, **_NO_FLAGS,
        **_NO_DECAYS,
    )  # fmt: skip
    if a_so_st_si is not None:
        args["a_so"], args["a_st"], args["a_si"] = a_so_st_si
    if r_strides is not None:  # strides in bytes: the flags are bytes
        args["r_so"], args["r_st"], args["r_si"] = r_strides
    return launch, args


def _run(mode, a, v, hf, h0, y, ga, s_out, down: bool, method: str, r=None) -> None:
    """Launch one kernel of ``mode`` over the canonical arrays (``None`` for unused ones)."""
    device, sms = _multiprocessors()
    on_device = isinstance(a, cupy.ndarray)
    launch, fixed = _prepare(
        mode, v.shape, v.dtype, a.strides if on_device else None,
        None if h0 is None else h0.strides, None if r is None else r.strides, down, method,
        sms, plan.FAST,
    )  # fmt: skip
    args = dict(fixed, v=v, hf=_pointer(hf), h0=_pointer(h0), y=_pointer(y), ga=_pointer(ga),
                s_out=_pointer(s_out))  # fmt: skip
    if on_device:
        args["a"] = a
    else:
        args["a_value"] = _dtypes.accumulator(v.dtype).type(a)
    if r is not None:
        args["r"] = r
    kernel = source.function(v.dtype, mode, launch, device)
    grid, block = (launch.grid,), (launch.threads,)
    if not launch.chained:
        kernel(grid, block, abi.pack(launch.kernel, args), shared_mem=launch.smem)
        return
    with _SCRATCH.lock:
        try:
            args.update(_SCRATCH.take(launch, device))
            kernel(grid, block, abi.pack(launch.kernel, args), shared_mem=launch.smem)
        except BaseException:
            _SCRATCH.drop(launch, device)
            raise


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
