"""CuPy arrays over fake device memory, for checking the GPU backend's host side without a
GPU: ``install`` points CuPy's allocation, device, stream and memset calls and linscan's
kernel lookup at a ``FakeGPU``, which records each launch and memset instead of running it.
Nothing ever reads or writes the fake addresses. Used by ``test_cuda_launch.py`` and by
``benchmarks/small_calls.py`` (the Python path of a small call, timed without a GPU)."""

import math

import numpy as np
import cupy

memory = cupy.cuda.memory

BASE = 0x7000_0000_0000  # fake device addresses: nothing reads or writes them


class FakeStream:
    """A stream handle: its pointer, and whether it is capturing a CUDA graph."""

    def __init__(self, ptr: int, capturing: bool = False):
        self.ptr, self.capturing = ptr, capturing

    def is_capturing(self) -> bool:
        return self.capturing


class FakeGPU:
    def __init__(self, record: bool = True):
        self.memory = memory.UnownedMemory(BASE, 1 << 40, None, device_id=0)
        self.offset = 0
        self.record = record  # False: launches and memsets only counted (timing)
        self.launches, self.memsets = [], []
        self.calls = 0
        self.stream = FakeStream(77)

    def empty(self, shape, dtype=np.float64, order="C"):
        shape = shape if isinstance(shape, tuple) else (shape,)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        arr = cupy.ndarray(shape, dtype, memory.MemoryPointer(self.memory, self.offset))
        self.offset = (self.offset + -(-max(nbytes, 1) // 512) * 512) % (1 << 39)
        return arr

    def memset(self, *args):
        if self.record:
            self.memsets.append(args)

    def launch(self, dtype, mode, lp, device_id):
        def kernel(grid, block, args, shared_mem=0):
            self.calls += 1
            if self.record:
                self.launches.append(dict(lp=lp, mode=mode, dtype=np.dtype(dtype), grid=grid,
                                          block=block, args=args, smem=shared_mem))  # fmt: skip

        return kernel


def install(setattr, setitem, fake: FakeGPU) -> FakeGPU:
    """Route CuPy and linscan's GPU backend to ``fake``; ``setattr(obj, name, value)`` and
    ``setitem(mapping, key, value)`` make the changes (pytest's ``monkeypatch`` methods undo
    them after a test)."""
    from linscan.backends.cuda import backend, source

    setattr(cupy, "empty", fake.empty)
    setattr(cupy.cuda.runtime, "getDevice", lambda: 0)
    setattr(cupy.cuda.runtime, "memsetAsync", fake.memset)
    setattr(cupy.cuda, "get_current_stream", lambda: fake.stream)
    setattr(source, "function", fake.launch)
    setitem(backend._sms, 0, 132)
    return fake
