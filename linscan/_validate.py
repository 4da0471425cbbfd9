"""Every argument check and every user-facing error message.

Each public function turns its arguments into a validated, immutable description of the work
(``ScanArgs`` / ``BackwardArgs``) before anything is allocated or launched, so that a call that
raises has touched nothing. Errors name the argument, what was expected and what was given.
"""

from __future__ import annotations

import cmath
import operator
import os
import sys
import warnings
from typing import NamedTuple

import numpy as np

from . import _dtypes
from ._dispatch import is_cupy, placement
from ._layout import broadcast_shapes, may_share_memory

#: Dtypes the backends compute in (see ``_dtypes``).
SUPPORTED_DTYPES = _dtypes.SUPPORTED
METHODS = ("auto", "sequential", "parallel")


class ScanArgs(NamedTuple):  # a tuple: built on every call, 1 us cheaper than a dataclass
    """Validated arguments of ``scan`` / ``final_state``.

    ``a``, ``x`` and ``h0`` are arrays in their original dtype (NumPy arrays, or CuPy arrays
    for a GPU call; Python numbers become 0-d NumPy arrays of ``dtype``, so that ``arg.dtype``
    is always the dtype a gradient for it should have); ``shape`` is the broadcast shape of
    the result and ``axis`` is non-negative. ``device`` is the CUDA device of a GPU call and
    ``None`` for a host call. ``resets`` is a boolean array that broadcasts to ``shape``, or
    ``None``.
    """

    a: np.ndarray
    x: np.ndarray
    h0: np.ndarray | None
    dtype: np.dtype
    shape: tuple
    axis: int
    reverse: bool
    device: int | None = None
    resets: np.ndarray | None = None


class BackwardArgs(NamedTuple):
    """Validated arguments of ``scan_backward``; ``shape`` is ``h.shape``."""

    a: np.ndarray
    h: np.ndarray
    grad_h: np.ndarray
    h0: np.ndarray | None
    dtype: np.dtype
    shape: tuple
    axis: int
    reverse: bool
    device: int | None = None
    resets: np.ndarray | None = None


def _is_python_number(value) -> bool:
    return isinstance(value, (int, float, complex)) and not isinstance(value, bool)


def host_array(name: str, value: np.ndarray, output: bool = False) -> np.ndarray:
    """A NumPy array as a plain ``numpy.ndarray`` viewing the same memory.

    Subclasses are read as the array they hold: their methods (``np.matrix``'s ``reshape``,
    which keeps two dimensions) must not steer the kernels, and results are plain arrays. A
    masked array is refused: a scan has no meaning for masked steps, and reading the data
    under the mask would silently ignore it; as an ``output`` its mask would go stale."""
    if type(value) is np.ndarray:
        return value
    if isinstance(value, np.ma.MaskedArray):
        what = (
            "a masked array cannot be an out: pass a plain numpy.ndarray"
            if output
            else f"pass {name}.filled(value) to choose what the masked elements hold"
        )
        raise TypeError(f"{name} must be a NumPy array without a mask, got a masked array; {what}")
    return np.asarray(value)


def _operand(name: str, value):
    """Return ``value`` as a NumPy array, or unchanged if it is a Python int or float.

    Python numbers stay Python numbers until the result dtype is known: under NumPy's
    promotion rules they take the dtype of the arrays they meet ("weak" scalars), a complex
    number making it complex.
    """
    if _is_python_number(value):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a floating-point array or number, got a bool")
    if isinstance(value, np.ndarray):
        arr = host_array(name, value)
    elif is_cupy(value):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"{name} must be a NumPy array or a number, got {type(value).__name__} ({exc})"
            ) from exc
    _check_dtype(name, arr.dtype)
    return arr


def _check_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.newbyteorder("=") in SUPPORTED_DTYPES:
        return
    detail = "got bool" if dtype.kind == "b" else f"got {dtype}"
    raise TypeError(f"{name} must have a floating-point dtype ({_dtypes.TEXT}); {detail}")


def _result_dtype(*operands) -> np.dtype:
    """The promoted dtype of validated operands (arrays of supported dtypes and Python
    numbers, which are weak: see ``_dtypes.promote``)."""
    arrays = [op.dtype.newbyteorder("=") for op in operands if hasattr(op, "dtype")]
    return _dtypes.promote(arrays, any(isinstance(op, complex) for op in operands))


def _as_array(name: str, value, dtype: np.dtype):
    """A Python number becomes a NumPy scalar of the result dtype (a value, which every
    backend takes as it is: no 0-d array to make and take apart again); arrays pass through.
    A finite number beyond the dtype's range becomes inf, as NumPy rounds it, with a warning
    naming the argument (NumPy warns for some dtypes and not others)."""
    if not _is_python_number(value):
        return value
    try:
        with np.errstate(over="ignore"):
            arr = dtype.type(value)
    except OverflowError as exc:  # a Python int too large for any float
        raise ValueError(
            f"{name} must fit in {dtype}, got a Python int of {value.bit_length()} bits"
        ) from exc
    parts = (value.real, value.imag) if isinstance(value, complex) else (value,)
    if any(abs(part) > _LARGEST[dtype] for part in parts) and cmath.isfinite(value):
        if not np.isfinite(arr):  # (not merely rounded down to the largest finite value)
            _warn(
                f"{name}: the Python number {value!r} is beyond the range of {dtype} and "
                f"becomes inf; pass an array of a wider dtype to compute with it"
            )
    return arr


#: The largest finite component of each supported dtype.
_LARGEST = {dtype: float(_dtypes.finfo(dtype).max) for dtype in SUPPORTED_DTYPES}


def _warn(message: str) -> None:
    """A ``RuntimeWarning`` attributed to the first caller outside linscan (also the CPU
    backend's, on capping ``LINSCAN_NUM_THREADS``)."""
    here = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of this function
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def check_axis(axis, ndim: int) -> int:
    """Normalize ``axis`` for an array of ``ndim`` dimensions (``AxisError`` if out of range)."""
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if ndim == 0:
        raise np.exceptions.AxisError(
            "axis: the result is 0-d; a scan needs at least one dimension (a and x are both "
            "scalars)"
        )
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim, msg_prefix="axis")
    return axis % ndim


def check_flag(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_method(method) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be one of {METHODS}, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _state_shape(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def _check_h0(h0: np.ndarray, shape: tuple, axis: int, what: str) -> None:
    state = _state_shape(shape, axis)
    if not _broadcasts_to(h0.shape, state):
        raise ValueError(
            f"h0 must broadcast to shape {state} ({what} without axis {axis}), got shape {h0.shape}"
        )


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """True if an array of ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        return False
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _plain_call(a, arrays, h0, axis, reverse):
    """The common call, recognized cheaply (small calls are Python-bound): ``arrays`` (``x``;
    or ``h`` and ``grad_h``) NumPy or CuPy arrays of one supported dtype and shape (one
    device), ``a`` the same or a Python float, no ``h0``, an int ``axis`` in range, a bool
    ``reverse``. Returns ``(a, dtype, shape, axis, device)``, or ``None`` for anything else,
    which the full checks handle (and word the errors of)."""
    if h0 is not None or type(axis) is not int or type(reverse) is not bool:
        return None
    x = arrays[0]
    kind = type(x)
    dtype = getattr(x, "dtype", None)
    if dtype not in SUPPORTED_DTYPES or not (kind is np.ndarray or is_cupy(x)):
        return None
    shape = x.shape
    if not -len(shape) <= axis < len(shape):
        return None
    device = None if kind is np.ndarray else x.device.id
    others = arrays[1:] if type(a) is float else (a,) + arrays[1:]
    for other in others:
        if type(other) is not kind or other.dtype != dtype or other.shape != shape:
            return None
        if device is not None and other.device.id != device:
            return None
    if type(a) is float:
        a = _as_array("a", a, dtype)
    return a, dtype, shape, axis % len(shape), device


def _check_resets(resets, shape: tuple, what: str):
    """``resets`` as a boolean array that broadcasts to ``shape`` (``None`` stays ``None``)."""
    if resets is None:
        return None
    if isinstance(resets, np.ndarray):
        resets = host_array("resets", resets)
    elif not is_cupy(resets):
        try:
            resets = np.asarray(resets)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"resets must be a boolean array, got {type(resets).__name__} ({exc})"
            ) from exc
    if resets.dtype != np.bool_:
        raise TypeError(f"resets must be a boolean array, got dtype {resets.dtype}")
    if not _broadcasts_to(resets.shape, shape):
        raise ValueError(f"resets must broadcast to {what} {shape}, got shape {resets.shape}")
    return resets


def _together(first, second, ends=(None, None), leaving="") -> tuple:
    """The broadcast shape of two ``(name, shape)`` arguments, each cut at its ``ends``
    (``shape[:end]``); a ``ValueError`` naming both and their whole shapes if they do not
    broadcast (``leaving`` says what the cut left out)."""
    (a_name, a_shape), (b_name, b_shape) = first, second
    try:
        return broadcast_shapes(a_shape[: ends[0]], b_shape[: ends[1]])
    except ValueError:
        raise ValueError(
            f"{a_name} and {b_name} must broadcast together{leaving}, got {a_name} with shape "
            f"{a_shape} and {b_name} with shape {b_shape}"
        ) from None


def scan_args(a, x, h0, axis, reverse, resets=None) -> ScanArgs:
    """Validate the arguments shared by ``scan`` and ``final_state``."""
    if resets is None:
        plain = _plain_call(a, (x,), h0, axis, reverse)
        if plain is not None:
            a, dtype, shape, axis, device = plain
            return ScanArgs(a, x, None, dtype, shape, axis, reverse, device)
    device = placement((("a", a), ("x", x), ("h0", h0), ("resets", resets)))
    a = _operand("a", a)
    x = _operand("x", x)
    h0 = None if h0 is None else _operand("h0", h0)
    reverse = check_flag("reverse", reverse)
    dtype = _result_dtype(a, x, h0)
    a, x = _as_array("a", a, dtype), _as_array("x", x, dtype)
    h0 = None if h0 is None else _as_array("h0", h0, dtype)
    shape = x.shape if a.shape == x.shape else _together(("a", a.shape), ("x", x.shape))
    axis = check_axis(axis, len(shape))
    if h0 is not None:
        _check_h0(h0, shape, axis, f"the result's shape {shape}")
    resets = _check_resets(resets, shape, "the result's shape")
    return ScanArgs(a, x, h0, dtype, shape, axis, reverse, device, resets)


def check_out(out, shape: tuple, dtype: np.dtype, name: str = "out", device=None):
    """``out`` must be an array of the call's kind (NumPy, or CuPy on the call's device).
    Returns the array to write into: ``out``, or a plain ndarray view of a subclass."""
    if device is None and not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if device is None:
        out = host_array(name, out, output=True)
    if device is not None:
        if not is_cupy(out):
            raise TypeError(
                f"{name} must be a CuPy array (the inputs are CuPy arrays), got "
                f"{type(out).__module__}.{type(out).__name__}"
            )
        if out.device.id != device:
            raise TypeError(
                f"{name} must be on GPU {device} like the inputs, got GPU {out.device.id}"
            )
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if device is None and not out.flags.writeable:  # (CuPy arrays are always writeable)
        raise ValueError(f"{name} must be writeable, got a read-only array")
    return out


def check_backward_out(out, args: BackwardArgs) -> tuple:
    """``out`` of ``scan_backward`` as a 3-tuple of arrays to write into, or ``None``s."""
    if out is None:
        return (None, None, None)
    if not isinstance(out, tuple) or len(out) != 3:
        raise TypeError(
            "out must be None or a tuple (grad_a, grad_x, grad_h0) of arrays or None, "
            f"got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    wanted = (
        ("out[0] (grad_a)", args.a.shape, args.a.dtype.newbyteorder("=")),
        ("out[1] (grad_x)", args.shape, args.dtype),
        (
            "out[2] (grad_h0)",
            None if args.h0 is None else args.h0.shape,
            None if args.h0 is None else args.h0.dtype.newbyteorder("="),
        ),
    )
    checked = []
    for arr, (name, shape, dtype) in zip(out, wanted):
        if arr is not None:
            if shape is None:
                raise ValueError(f"{name} must be None when h0 is None, got {type(arr).__name__}")
            arr = check_out(arr, shape, dtype, name, args.device)
        checked.append(arr)
    arrays = [arr for arr in checked if arr is not None]
    for k, first in enumerate(arrays):
        for second in arrays[k + 1 :]:
            if may_share_memory(first, second):
                raise ValueError("out must hold separate arrays, got two that share memory")
    return tuple(checked)


def backward_args(a, h, grad_h, h0, axis, reverse, resets=None) -> BackwardArgs:
    """Validate the arguments of ``scan_backward``."""
    if resets is None:
        plain = _plain_call(a, (h, grad_h), h0, axis, reverse)
        if plain is not None:
            a, dtype, shape, axis, device = plain
            return BackwardArgs(a, h, grad_h, None, dtype, shape, axis, reverse, device)
    device = placement((("a", a), ("h", h), ("grad_h", grad_h), ("h0", h0), ("resets", resets)))
    a = _operand("a", a)
    h = _operand("h", h)
    grad_h = _operand("grad_h", grad_h)
    h0 = None if h0 is None else _operand("h0", h0)
    reverse = check_flag("reverse", reverse)
    dtype = _result_dtype(a, h, grad_h, h0)
    a, h, grad_h = (_as_array(n, v, dtype) for n, v in (("a", a), ("h", h), ("grad_h", grad_h)))
    h0 = None if h0 is None else _as_array("h0", h0, dtype)
    shape = h.shape
    axis = check_axis(axis, len(shape))
    for name, value in (("a", a), ("grad_h", grad_h)):
        if not _broadcasts_to(value.shape, shape):
            raise ValueError(
                f"{name} must broadcast to the shape of h {shape}, got shape {value.shape}"
            )
    if h0 is not None:
        _check_h0(h0, shape, axis, f"the shape of h {shape}")
    resets = _check_resets(resets, shape, "the shape of h")
    return BackwardArgs(a, h, grad_h, h0, dtype, shape, axis, reverse, device, resets)


# Matrix recurrences (``linscan.matscan``): the state is a trailing dimension of size d.

#: The largest state a matrix recurrence takes (the kernels hold d x d maps in registers).
MAX_STATE = 8


class MatscanArgs(NamedTuple):
    """Validated arguments of ``matscan`` and its relatives. ``A`` (..., d, d), ``x`` (or
    ``h``) and ``h0`` are NumPy arrays, or CuPy arrays on GPU ``device`` (a Python-number
    ``h0`` becomes a scalar of ``dtype``); ``lanes`` is the broadcast shape of
    ``A.shape[:-2]`` and ``x.shape[:-1]``, the result has shape ``lanes + (d,)``, and
    ``axis`` (non-negative) indexes ``lanes``. ``grad_h`` is set for ``matscan_backward``
    only."""

    A: np.ndarray
    x: np.ndarray
    h0: np.ndarray | None
    dtype: np.dtype
    lanes: tuple
    d: int
    axis: int
    reverse: bool
    grad_h: np.ndarray | None = None
    device: int | None = None

    @property
    def shape(self) -> tuple:
        return self.lanes + (self.d,)


#: The setting that lets CuPy arrays into the matrix recurrences (and ``linscan.signal``,
#: which runs on them there): their GPU kernels have not run on a GPU yet
#: (``linscan.backends.cuda.matrix``).
GPU_MATRIX = "LINSCAN_GPU_MATRIX"


def gpu_matrix() -> bool:
    """Whether CuPy arrays may run the matrix recurrences' GPU kernels (opt-in:
    ``LINSCAN_GPU_MATRIX=1`` in the environment, read at each call)."""
    return os.environ.get(GPU_MATRIX, "") == "1"


def gpu_matrix_allowed(name: str, value, caller: str = "linscan.matscan") -> None:
    """Raise the ``TypeError`` of the opt-in where ``value`` (argument ``name`` of ``caller``) is
    a CuPy array and ``gpu_matrix()`` is false: the one message for every function that runs
    the matrix recurrences' GPU kernels."""
    if is_cupy(value) and not gpu_matrix():
        raise TypeError(
            f"{name} must be a NumPy array: on CuPy arrays {caller} runs the GPU kernels of the "
            "matrix recurrences, which have not run on a GPU yet and are opt-in "
            f"({GPU_MATRIX}=1 in the environment), got a CuPy array"
        )


def _matrix_operand(name: str, value, role: str):
    """An array operand of a matrix recurrence: a NumPy array of a supported dtype, or a CuPy
    array where the GPU kernels are opted in (``gpu_matrix_allowed``)."""
    if _is_python_number(value):
        raise TypeError(f"{name} must be an array {role}, got a Python {type(value).__name__}")
    gpu_matrix_allowed(name, value)
    return _operand(name, value)


def matscan_args(A, x, h0, axis, reverse, name="x", grad_h=None) -> MatscanArgs:
    """Validate the arguments of ``matscan`` / ``matscan_final_state`` (``name`` ``"x"``), or
    with ``name="h"`` and ``grad_h`` those of ``matscan_backward`` (CuPy arrays, all on one
    device, where the GPU kernels are opted in: ``gpu_matrix_allowed``)."""
    A = _matrix_operand("A", A, "of matrices, shape (..., d, d)")
    x = _matrix_operand(name, x, "of states, shape (..., T, ..., d)")
    if name == "h":  # matscan_backward, whose grad_h is required (None is no array either)
        grad_h = _matrix_operand("grad_h", grad_h, f"broadcasting to the shape of {name}")
    gpu_matrix_allowed("h0", h0)
    device = placement((("A", A), (name, x), ("grad_h", grad_h), ("h0", h0)))
    h0 = None if h0 is None else _operand("h0", h0)
    reverse = check_flag("reverse", reverse)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions, time and the state (size d) last, got "
            f"shape {x.shape}"
        )
    d = x.shape[-1]
    if not 1 <= d <= MAX_STATE:
        raise ValueError(
            f"{name} must have a state (its last dimension) of size 1 to {MAX_STATE}, got "
            f"shape {x.shape}"
        )
    if A.ndim < 2 or A.shape[-2:] != (d, d):
        raise ValueError(
            f"A must end in two dimensions ({d}, {d}) matching the state of {name} (shape "
            f"{x.shape}), got shape {A.shape}"
        )
    dtype = _result_dtype(*(v for v in (A, x, grad_h, h0) if v is not None))
    h0 = None if h0 is None else _as_array("h0", h0, dtype)
    if name == "h":
        lanes = x.shape[:-1]
        for arg, value, tail in (("A", A, 2), ("grad_h", grad_h, 1)):
            if not _broadcasts_to(value.shape[:-tail], lanes) or (
                value.shape[-tail:] != x.shape[-1:] * tail
            ):
                raise ValueError(
                    f"{arg} must broadcast to the shape of h {x.shape}"
                    + (f" with matrices ({d}, {d})" if tail == 2 else "")
                    + f", got shape {value.shape}"
                )
    else:
        lanes = _together(
            ("A", A.shape), ("x", x.shape), (-2, -1), " (leaving out A's matrix and x's state)"
        )
    axis = check_axis(axis, len(lanes))
    if h0 is not None:
        state = _state_shape(lanes, axis) + (d,)
        if not _broadcasts_to(h0.shape, state):
            raise ValueError(
                f"h0 must broadcast to shape {state} (the result's shape {lanes + (d,)} without "
                f"axis {axis}), got shape {h0.shape}"
            )
    return MatscanArgs(A, x, h0, dtype, lanes, d, axis, reverse, grad_h, device)


__all__ = [
    "SUPPORTED_DTYPES",
    "METHODS",
    "ScanArgs",
    "BackwardArgs",
    "scan_args",
    "backward_args",
    "check_axis",
    "check_flag",
    "check_method",
    "check_out",
    "check_backward_out",
    "host_array",
    "MAX_STATE",
    "MatscanArgs",
    "matscan_args",
    "GPU_MATRIX",
    "gpu_matrix",
    "gpu_matrix_allowed",
]
