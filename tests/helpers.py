"""Shared test helpers."""

import contextlib
import copy
import ctypes
import threading

import numpy as np
import pytest

from linscan.backends.cpu import plan as _plan

#: Plans the property tests force, besides whatever the library picks by itself: split mode
#: over three threads with tiny segments and tiles (every chunking path at small sizes), and
#: lanes mode over two threads, walking down without touching ahead (tile 0).
CONFIGS = {
    "natural": {},
    "split3": dict(threads=3, min_threaded=0, min_segment=1, tile=96),
    "lanes2": dict(threads=2, min_threaded=0, min_segment=10**9, tile=0),
}
METHODS = ("auto", "sequential", "parallel")
#: The ``device`` fixture's parameters: the CPU, and the GPU (marked ``gpu``).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
#: The CPU under every forced plan of ``CONFIGS``, and the GPU (where they mean nothing).
DEVICE_CONFIGS = [pytest.param("cpu", config, id=f"cpu-{config}") for config in CONFIGS] + [
    pytest.param("cuda", "natural", id="cuda", marks=pytest.mark.gpu)
]


class Twisted(np.ndarray):
    """An ndarray subclass whose methods lie: ``reshape`` returns the wrong shape, ``ravel``
    and ``astype`` return garbage. linscan must read the memory, not call these."""

    def reshape(self, *shape, **kwargs):
        return np.zeros(7).view(Twisted)

    def ravel(self, *args, **kwargs):
        return np.full(self.size, 1e243)

    def astype(self, *args, **kwargs):
        return np.full(self.shape, 1e243)


class Device:
    """Where a test's arrays live, for tests run on every backend (the ``device`` fixture of
    conftest.py): ``put`` a NumPy array there, ``get`` one back as NumPy. On ``"cpu"`` both
    do nothing; on ``"cuda"`` ``put`` copies the values to the GPU with the same shape and
    strides (a view stays a view of a larger allocation). ``dtypes``: what the property tests
    draw there (the CPU covers the other dtypes in test_dtypes.py)."""

    def __init__(self, name: str):
        self.name = name
        if name == "cuda":
            import cupy

            self.xp = cupy
            self.dtypes = ALL_DTYPES
        else:
            self.xp = np
            self.dtypes = (np.float32, np.float64)

    def __repr__(self):
        return self.name

    def put(self, value):
        if self.xp is np or not isinstance(value, np.ndarray):
            return value
        cupy = self.xp
        if value.ndim == 0 or value.flags.c_contiguous or value.size == 0:
            return cupy.asarray(value)
        spans = [(s * (n - 1)) for s, n in zip(value.strides, value.shape)]
        lo = sum(min(0, s) for s in spans)
        hi = sum(max(0, s) for s in spans) + value.itemsize
        start = value.__array_interface__["data"][0] + lo
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * (hi - lo)).from_address(start))
        memory = cupy.asarray(raw.copy())
        return cupy.ndarray(value.shape, value.dtype, memory.data + (-lo), strides=value.strides)

    def get(self, value):
        if value is None or self.xp is np:
            return value
        if isinstance(value, tuple):
            return tuple(self.get(v) for v in value)
        return self.xp.asnumpy(value) if isinstance(value, self.xp.ndarray) else value

    def puts(self, kwargs: dict) -> dict:
        """A case's keyword arguments with its resets on the device."""
        return dict(kwargs, resets=self.put(kwargs.get("resets")))


@contextlib.contextmanager
def composed_summaries():
    """Host calls summarize runs of steps as the GPU backend does, by
    ``linscan._extended.composed_summary`` over the CPU backend's passes: the path of
    ``linscan.dask``'s CuPy chunks, run on NumPy."""
    from linscan import _dispatch, _extended
    from linscan.backends.cpu.backend import CPU

    class Composed(CPU):
        def summary(self, a, x, reverse, method, resets=None, back=False):
            return _extended.composed_summary(self, a, x, reverse, method, resets, back)

    composed, plain = Composed(), _dispatch.backend

    def backend(device):
        return (composed, _dispatch._HOST) if device is None else plain(device)

    _dispatch.backend = backend
    try:
        yield
    finally:
        _dispatch.backend = plain


#: Where a summary comes from: the backend's own (on the CPU, its one-pass kernels), or
#: composed of passes and array operations (the GPU backend's, run here on NumPy).
SUMMARIES = {"kernel": contextlib.nullcontext, "composed": composed_summaries}


def _all_dtypes():
    from linscan import _dtypes

    return (np.float16, _dtypes.BFLOAT16, np.float32, np.float64, np.complex64, np.complex128)


ALL_DTYPES = _all_dtypes()


def forced(config):
    return _plan.forced(**CONFIGS[config])


class Unchanged:
    """Snapshot arguments; ``check()`` asserts that none of them changed (values and flags).
    ``device``: where the arguments live (their host copies are compared)."""

    def __init__(self, *args, device=None):
        self.args = args
        self.get = (lambda v: v) if device is None else device.get
        self.copies = [copy.deepcopy(self.get(arg)) for arg in args]

    def check(self):
        for arg, before in zip(self.args, self.copies):
            _same(self.get(arg), before)


def _same(arg, before):
    if isinstance(arg, np.ndarray):
        assert arg.dtype == before.dtype and arg.shape == before.shape
        np.testing.assert_array_equal(arg, before, strict=True)
    elif isinstance(arg, (tuple, list)):
        assert type(arg) is type(before) and len(arg) == len(before)
        for item, item_before in zip(arg, before):
            _same(item, item_before)
    else:
        assert arg == before or (arg is None and before is None)


def race(work, threads=8, timeout=300):
    """Run ``work(k)`` for k in range(threads) on as many threads, released together by a
    barrier; return the results in order. Re-raises the first exception a thread met, and
    fails if a thread has not finished within ``timeout`` seconds (a deadlock)."""
    results, errors = [None] * threads, []
    barrier = threading.Barrier(threads)

    def run(k):
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in pool), "a thread did not finish: deadlock?"
    if errors:
        raise errors[0]
    return results


def load_example(name):
    """The module of ``examples/<name>.py``, imported from its file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_spreads_as(got, want, tol=1e-9):
    """``got`` holds NaN and inf where ``want`` does (an inf or NaN spread as the loop spreads
    it), and is within ``tol`` of it elsewhere."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol)


def skip_module_without_gpu(module: str):
    """Skip the test module named ``module`` (the caller's ``__name__``), at its import, where
    no GPU is usable, saying why. The name is in the reason: pytest-xdist reports skips of one
    place and reason once, and every module's would come from here."""
    from linscan._dispatch import gpu_status

    usable, why = gpu_status()
    if not usable:
        pytest.skip(f"{module}: no usable GPU: {why}", allow_module_level=True)
