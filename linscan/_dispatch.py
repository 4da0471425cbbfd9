"""Which backend a call belongs to, decided without importing CuPy; and the GPU probe.

A call runs on the GPU when one of its arrays is a CuPy array; then every other array must be
one too, on the same device (Python and NumPy scalars are fine): linscan never copies between
host and device behind the caller's back.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np


_cupy_ndarray = None  # cupy.ndarray, once CuPy has been imported by anyone


def is_cupy(value) -> bool:
    """True for a CuPy array. Without CuPy imported nothing can be one, so this never imports it."""
    global _cupy_ndarray
    if _cupy_ndarray is None:
        cupy = sys.modules.get("cupy")
        ndarray = getattr(cupy, "ndarray", None)  # None while CuPy is still importing
        if ndarray is None:
            return False
        _cupy_ndarray = ndarray
    return isinstance(value, _cupy_ndarray)


def is_scalar(value) -> bool:
    """Python numbers and NumPy scalars: values, not arrays, welcome on either backend."""
    return isinstance(value, (int, float, complex, np.generic))


def placement(named) -> int | None:
    """The CUDA device id of a call whose ``(name, value)`` pairs hold a CuPy array, or ``None``
    for a host call. Raises ``TypeError`` for host arrays mixed with CuPy arrays, or CuPy
    arrays on different devices."""
    device = first = None
    for name, value in named:
        if value is None or not is_cupy(value):
            continue
        if device is None:
            device, first = value.device.id, name
        elif value.device.id != device:
            raise TypeError(
                f"{name} is on GPU {value.device.id} but {first} is on GPU {device}; linscan "
                "never copies between devices: move them to one device first"
            )
    if device is None:
        return None
    for name, value in named:
        if value is None or is_cupy(value) or is_scalar(value):
            continue
        raise TypeError(
            f"{name} must be a CuPy array or a scalar, like {first} (a CuPy array), got "
            f"{type(value).__module__}.{type(value).__name__}; linscan never copies between "
            f"host and device: pass cupy.asarray({name})"
        )
    return device


_HOST = contextlib.nullcontext()


def backend(device: int | None):
    """``(backend, context)`` for a call placed on ``device`` (:func:`placement`): the CPU
    backend for a host call, else the CUDA backend, with a context that makes the arrays'
    device current while it runs (a context that does nothing where it already is)."""
    if device is None:
        return _cpu(), _HOST
    cupy, cuda = _cuda()
    if cupy.cuda.runtime.getDevice() == device:
        return cuda, _HOST
    return cuda, cupy.cuda.Device(device)


@functools.cache
def _cpu():
    """The CPU backend, imported on first use (an import statement per call costs a small
    call a microsecond)."""
    from .backends.cpu.backend import backend

    return backend


@functools.cache
def _cuda():
    """``(cupy, the CUDA backend)``, imported on first use."""
    import cupy

    from .backends.cuda.backend import backend

    return cupy, backend


def gpu_status() -> tuple:
    """``(usable, detail)``: whether the GPU backend can run here, and the device or the
    reason it cannot (CuPy missing, no driver, no device)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'linscan[cuda12]' or '[cuda13]')"
    except Exception as exc:  # a broken installation raises all sorts of things on import
        return False, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            return False, "CuPy finds no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return True, f"{count} device(s); device 0: {name}, CuPy {cupy.__version__}"
    except Exception as exc:  # CUDARuntimeError without a driver or device
        return False, f"CuPy {cupy.__version__} is installed but no GPU is usable ({exc})"
