"""Arrays of other libraries (PyTorch, JAX, ...): in and out through DLPack.

A call whose arrays come from one library that speaks DLPack runs on NumPy or CuPy views of
the same memory (no copy where the producer allows one: PyTorch tensors are viewed, JAX arrays
are viewed read-only), and its results go back to that library through DLPack, on the same
device. ``array_api_compat`` names the library's namespace (``array_namespace``), so that no
table of libraries is kept here; its ``from_dlpack`` brings the results back.

NumPy's DLPack has no bfloat16: PyTorch's bfloat16 tensors cross as int16 and are viewed as
bfloat16 on the other side; other producers' bfloat16 arrays cross through ``__array__`` (a
copy, CPU only).
"""

from __future__ import annotations

import sys

import numpy as np

from . import _dtypes
from ._dispatch import is_cupy

_CPU, _CUDA, _CUDA_MANAGED = 1, 2, 13  # DLPack device types


_PLAIN = {type(None), np.ndarray, int, float, complex, bool}  # and cupy.ndarray, once seen


def foreign(*values) -> bool:
    """Whether one of ``values`` is an array of another library (cheap for the usual call)."""
    for value in values:
        if type(value) in _PLAIN:
            continue
        if type(value).__module__.startswith("cupy") and is_cupy(value):
            _PLAIN.add(type(value))  # cupy.ndarray itself: the next call takes the first test
            continue
        if isinstance(value, (int, float, complex, np.ndarray, np.generic)) or is_cupy(value):
            continue
        if isinstance(value, tuple):  # scan_backward's out
            if foreign(*value):
                return True
            continue
        if hasattr(value, "__dlpack__"):
            return True
    return False


def _library(value) -> str:
    kind = type(value)
    return f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def _is_torch(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def _arrays(named):
    """The ``(name, value)`` pairs that are arrays (not ``None`` or numbers); tuples unpacked."""
    for name, value in named:
        if isinstance(value, tuple):
            yield from _arrays((f"{name}[{k}]", item) for k, item in enumerate(value))
        elif value is not None and not isinstance(value, (int, float, complex, np.generic)):
            yield name, value


_USE_TORCH = (
    "linscan.scan and its siblings take plain arrays and would cut PyTorch's graph; use "
    "linscan.torch (linscan.torch.scan, final_state, scan_backward: operators that autograd, "
    "torch.compile and torch.func understand)"
)


def outside_compilers(named, work):
    """``work()``, run where ``torch.compile`` does not trace it if ``named`` (a call's
    ``(name, value)`` arguments) holds PyTorch tensors: a compiled function calling linscan on
    tensors breaks its graph there and runs linscan as it is (Dynamo would otherwise trace
    linscan's own code with fake tensors, and fail); with ``fullgraph=True`` the error gives
    the reason, which names linscan.torch."""
    if not any(_is_torch(value) for _, value in _arrays(named)):
        return work()
    return _untraced()(work)


def _untraced():
    """``_run`` wrapped by ``torch.compiler.disable``, made once (making it costs a small
    call's time again): made when linscan is imported after PyTorch, else at the first call
    with tensors (if that call is being compiled, Dynamo breaks the graph at the making too)."""
    global _UNTRACED
    if _UNTRACED is None:
        import torch

        try:
            _UNTRACED = torch.compiler.disable(_run, reason=_OUTSIDE_GRAPH)
        except TypeError:  # a PyTorch without reason=
            _UNTRACED = torch.compiler.disable(_run)
    return _UNTRACED


def _run(work):
    return work()


_UNTRACED = None
_OUTSIDE_GRAPH = (
    "linscan.scan and its siblings run PyTorch tensors outside the compiled graph; "
    "linscan.torch has them as operators that torch.compile (fullgraph=True too) traces"
)
if "torch" in sys.modules:  # (never imported here: only found)
    _untraced()


def _not_traced(name, value) -> None:
    """A ``TypeError`` naming the framework's own linscan operators for a PyTorch tensor that
    takes part in autograd or a ``torch.func`` transform, and for a JAX tracer (inside
    ``jit``, ``grad``, ``vmap``): linscan's plain functions see only arrays, which would cut
    the graph or the trace."""
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        import torch

        why = (
            "under a torch.func transform"
            if torch._C._functorch.is_functorch_wrapped_tensor(value)
            else "that requires a gradient" if value.requires_grad
            else None
        )  # fmt: skip
        if why:
            raise TypeError(f"{name} is a PyTorch tensor {why}: {_USE_TORCH}")
    elif module == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"{name} is a JAX tracer (inside jax.jit, grad or vmap): linscan.scan takes "
                "concrete arrays; use linscan.jax (linscan.jax.scan, final_state: JAX "
                "operations that jit, grad, jvp and vmap understand)"
            )


def _device(value) -> tuple:
    if _is_torch(value):  # (read without DLPack's enum, which torch.compile cannot trace)
        device = value.device
        return (_CUDA, device.index) if device.type == "cuda" else (_CPU, 0)
    try:
        return tuple(int(v) for v in value.__dlpack_device__())
    except Exception as exc:  # a producer's own error, whatever its type
        raise TypeError(f"{_library(value)} does not describe its device ({exc})") from exc


class Call:
    """The foreign arrays of one call: brings them in as NumPy or CuPy arrays, and results
    back into their library. All of the call's arrays must come from that library and sit
    on one device (``TypeError`` otherwise)."""

    def __init__(self, named, returns_new: bool = True):
        """``named``: the call's ``(name, value)`` arguments; ``returns_new``: whether the call
        returns arrays it allocates (not only ``out``), which need the library's namespace:
        looked up now, so that a library linscan cannot hand results back to is refused
        before any work."""
        arrays = list(_arrays(named))
        self.first = next((pair for pair in arrays if foreign(pair[1])), None)
        self.given = {}  # id of a converted array -> the caller's object
        first, like = self.first
        for name, value in arrays:
            _not_traced(name, value)
        device = _device(like)
        for name, value in arrays:
            if _library(value) != _library(like):
                raise TypeError(
                    f"{name} is a {_library(value)} but {first} is a {_library(like)}: linscan "
                    "takes the arrays of one call from one library (Python numbers are fine) "
                    "and never converts between libraries behind the caller's back"
                )
            if _device(value) != device:
                raise TypeError(
                    f"{name} is on DLPack device {_device(value)} but {first} is on {device}: "
                    "linscan never copies between devices; move them to one device first"
                )
        self.namespace = _namespace(first, like) if returns_new else None

    def bring_in(self, name, value):
        """``value`` as a NumPy or CuPy array viewing the same memory (unchanged if it is not
        a foreign array; a tuple item by item)."""
        if isinstance(value, tuple):
            return tuple(self.bring_in(f"{name}[{k}]", item) for k, item in enumerate(value))
        if value is None or not hasattr(value, "__dlpack__") or not foreign(value):
            return value
        arr = _view(name, value)
        self.given[id(arr)] = value
        return arr

    def send_back(self, result):
        """``result`` (an array, ``None`` or a tuple of them) in the library of the call: the
        caller's own object where ``result`` is a converted input (``out``)."""
        if isinstance(result, tuple):
            return tuple(self.send_back(item) for item in result)
        if result is None:
            return None
        given = self.given.get(id(result))
        if given is not None:
            return given
        return _export(self.namespace, self.first[1], result)


def _view(name, value):
    if _is_torch(value) and (value.is_neg() or value.is_conj()):
        # PyTorch's lazy negation and conjugation (x.conj(), its .imag): DLPack would hand
        # over the memory without them. An input is resolved into a copy; out cannot be.
        if name.startswith("out"):
            raise TypeError(f"{name} is a PyTorch view with its negative or conjugate bit set, "
                            "which linscan cannot write through; pass a plain tensor")
        value = value.resolve_neg().resolve_conj()
    device_type, device_id = _device(value)
    try:
        if device_type == _CPU:
            return _from_dlpack(np, value)
        if device_type in (_CUDA, _CUDA_MANAGED):
            try:
                import cupy
            except ImportError:
                raise TypeError(
                    f"{name} is on CUDA device {device_id}; linscan runs GPU arrays with CuPy, "
                    "which is not installed (pip install 'linscan[cuda13]')"
                ) from None
            with cupy.cuda.Device(device_id):
                return _from_dlpack(cupy, value)
    except (BufferError, RuntimeError, ValueError) as exc:
        raise TypeError(
            f"{name}: a {_library(value)} that linscan cannot view through DLPack ({exc})"
        ) from exc
    raise TypeError(
        f"{name} is on a device linscan does not run on (DLPack device type {device_type}); "
        "it runs NumPy-readable host memory and CUDA devices"
    )


def _from_dlpack(xp, value):
    dtype = str(getattr(value, "dtype", ""))
    if dtype.endswith("bfloat16"):
        if _is_torch(value):  # NumPy's DLPack has no bfloat16: cross as int16
            import torch

            return xp.from_dlpack(value.view(torch.int16)).view(_dtypes.BFLOAT16)
        if xp is np:
            return np.asarray(value)  # JAX and others: their __array__ (a copy)
    return xp.from_dlpack(value)


def _namespace(name, value):
    """The array namespace of ``value``'s library, which results are returned in."""
    import array_api_compat

    try:
        return array_api_compat.array_namespace(value)
    except TypeError as exc:
        raise TypeError(
            f"{name} is a {_library(value)}, which speaks DLPack but is not a library linscan "
            f"can return arrays of ({exc}); convert it first, e.g. numpy.from_dlpack({name})"
        ) from exc


def _export(xp, like, result):
    """``result`` as an array of namespace ``xp`` (the library of ``like``), on ``result``'s
    device."""
    if result.dtype == _dtypes.BFLOAT16:
        if _is_torch(like):
            import torch

            return xp.from_dlpack(result.view(np.int16)).view(torch.bfloat16)
        return xp.asarray(result)
    return xp.from_dlpack(result)
