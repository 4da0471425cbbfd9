"""linscan as PyTorch operators: ``scan``, ``final_state`` and ``scan_backward`` registered
with ``torch.library`` (namespace ``linscan``), so that they run in eager mode, under
``torch.compile`` (``fullgraph=True``, dynamic shapes), ``torch.func`` (``grad``, ``vjp``,
``vmap``, ``jacrev``) and ``torch.autograd.gradcheck``, and pass ``torch.library.opcheck``.

    import linscan.torch as lt
    h = lt.scan(a, x, h0, axis=1)          # differentiable in a, x and h0
    s = lt.final_state(a, x, h0, axis=1)

Importing this module imports PyTorch; linscan itself never does (PyTorch is no dependency of
linscan: ``pip install 'linscan[torch]'`` names it). Arguments are those of
:func:`linscan.scan`: decays ``a`` a tensor or a Python number, broadcast against ``x``; ``h0``
a tensor, a number or ``None``; ``resets`` a boolean tensor or ``None``; ``axis``, ``reverse``.
``method`` is left to linscan (``"auto"``). Tensors reach linscan's kernels without a copy
(through DLPack: CPU tensors as NumPy arrays, CUDA tensors as CuPy arrays); CUDA tensors are
computed on PyTorch's current stream. Results are new tensors on the inputs' device.

Gradients: the backward pass is :func:`linscan.scan_backward` (one reverse scan), itself an
operator; ``final_state``'s recomputes the states first. A gradient of a gradient (double
backward, ``jacfwd``, ``hessian``) raises ``NotImplementedError``: it is not built yet.

``vmap`` moves the batch dimension in front and folds it into the outer dimensions of one
call (the batch is never looped over).
"""

import numbers
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _api, _dtypes, _interop

__all__ = ["scan", "final_state", "scan_backward"]


def scan(a, x, h0=None, *, axis: int = -1, reverse: bool = False, resets=None) -> Tensor:
    """:func:`linscan.scan` on tensors, as a PyTorch operator (see the module's docstring)."""
    a, h0 = _tensors(a, h0, like=x, axis=axis, reverse=reverse, resets=resets)
    return _SCAN[_transforming()](a, x, h0, resets, axis, reverse)


def final_state(a, x, h0=None, *, axis: int = -1, reverse: bool = False, resets=None) -> Tensor:
    """:func:`linscan.final_state` on tensors, as a PyTorch operator."""
    a, h0 = _tensors(a, h0, like=x, axis=axis, reverse=reverse, resets=resets)
    return _FINAL_STATE[_transforming()](a, x, h0, resets, axis, reverse)


def scan_backward(a, h, grad_h, h0=None, *, axis: int = -1, reverse: bool = False,
                  resets=None) -> tuple:  # fmt: skip
    """:func:`linscan.scan_backward` on tensors: ``(grad_a, grad_x, grad_h0)``, ``grad_h0``
    ``None`` without ``h0``."""
    a, h0 = _tensors(a, h0, like=h, axis=axis, reverse=reverse, resets=resets, grad_h=grad_h)
    grad_a, grad_x, grad_h0 = _SCAN_BACKWARD[_transforming()](a, h, grad_h, h0, resets, axis,
                                                              reverse)  # fmt: skip
    return grad_a, grad_x, None if h0 is None else grad_h0


def _transforming() -> bool:
    """Whether calls go through the autograd.Functions below rather than to the operators:
    under torch.func transforms, which an operator's registered autograd does not reach, and
    under torch.compile (traced so). Elsewhere the operator's own autograd serves, at a third
    of the Function's cost per call."""
    return torch.compiler.is_compiling() or _functorch_active()


_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def _tensors(a, h0, like: Tensor, axis, reverse, **others):
    """``a`` and ``h0`` as tensors on ``like``'s device: a Python number becomes a 0-d tensor
    of the dtype linscan gives it: ``like``'s, or for a complex number with real tensors the
    complex type of their precision (NumPy's promotion of Python numbers). Every tensor among
    them and ``others`` must be on ``like``'s device (the dispatcher would otherwise pick a
    kernel by one of them: a ``meta`` decay gave an unfilled CPU result)."""
    if not isinstance(like, Tensor):
        raise TypeError(f"linscan.torch takes tensors: got {type(like).__name__} for the input")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")

    def tensor(value):
        if value is None or isinstance(value, Tensor):
            return value
        if type(value) in (int, float, complex):  # (NumPy scalars keep their dtype, below)
            dtype = like.dtype
            if not isinstance(value, numbers.Real) and not dtype.is_complex:
                dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            return torch.tensor(value, dtype=dtype, device=like.device)
        if isinstance(value, np.generic) and np.dtype(value.dtype).kind in "fc":
            return torch.as_tensor(np.asarray(value), device=like.device)
        raise TypeError(f"linscan.torch takes tensors or Python numbers: got "
                        f"{type(value).__name__}")  # fmt: skip

    a, h0 = tensor(a), tensor(h0)
    for name, value in dict(a=a, h0=h0, **others).items():
        if isinstance(value, Tensor) and value.device != like.device:
            raise TypeError(f"{name} is on {value.device} but the input is on {like.device}: "
                            "linscan never moves tensors between devices")  # fmt: skip
    return a, h0


# --- the operators ---------------------------------------------------------------------------


def _linscan(function, device: torch.device, *args, **kwargs):
    """``function`` (a linscan call) on NumPy (CPU) or CuPy (CUDA) views of the tensors among
    ``args`` and ``kwargs`` (detached: no copy), its array results back as tensors; on a CUDA
    device, on its current PyTorch stream. (Straight through DLPack rather than linscan's
    path for foreign arrays, which checks what an operator's inputs already are.)"""
    if device.type != "cuda":
        return _tensors_of(function(*map(_array, args), **_arrays(kwargs)))
    import cupy

    with cupy.cuda.Device(device.index), _cupy_stream(device):
        return _tensors_of(function(*map(_array, args), **_arrays(kwargs)))


def _array(value):
    """A tensor as a NumPy or CuPy array viewing its memory; anything else as it is."""
    if not isinstance(value, Tensor):
        return value
    value = value.detach().resolve_neg().resolve_conj()  # (lazy views: a copy; else itself)
    if value.device.type == "cpu":
        if value.dtype != torch.bfloat16:
            return value.numpy()  # (a third of DLPack's time)
        return _interop._from_dlpack(np, value)
    import cupy

    return _interop._from_dlpack(cupy, value)


def _arrays(kwargs: dict) -> dict:
    return {name: _array(value) for name, value in kwargs.items()}


def _tensors_of(result):
    """linscan's result (an array, ``None`` or a tuple of them) as tensors on the array's
    device, sharing its memory."""
    if isinstance(result, tuple):
        return tuple(_tensors_of(item) for item in result)
    if result is None:
        return None
    if isinstance(result, np.ndarray) and result.dtype != _dtypes.BFLOAT16:
        return torch.from_numpy(result)
    return _interop._export(torch, _BF16_LIKE, result)


_BF16_LIKE = torch.empty(0)  # (tells _export that results go to PyTorch)


def _cupy_stream(device: torch.device):
    """PyTorch's current stream on ``device`` as a CuPy stream (one object per stream)."""
    from .backends.cuda.backend import external_stream

    return external_stream(torch.cuda.current_stream(device).cuda_stream, device.index)


def _promoted(*tensors) -> torch.dtype:
    """linscan's result dtype of arrays of these tensors' dtypes (NumPy's promotion, which
    PyTorch's ``promote_types`` follows for the floating and complex types; float16 with
    bfloat16 gives float32 in both)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


@torch.library.custom_op("linscan::scan", mutates_args=())
def _scan(a: Tensor, x: Tensor, h0: Optional[Tensor], resets: Optional[Tensor], axis: int,
          reverse: bool) -> Tensor:  # fmt: skip
    return _linscan(_api.scan, x.device, a, x, h0, axis=axis, reverse=reverse, resets=resets)


@_scan.register_fake
def _(a, x, h0, resets, axis, reverse):
    return x.new_empty(torch.broadcast_shapes(a.shape, x.shape), dtype=_promoted(a, x, h0))


@torch.library.custom_op("linscan::final_state", mutates_args=())
def _final_state(a: Tensor, x: Tensor, h0: Optional[Tensor], resets: Optional[Tensor],
                 axis: int, reverse: bool) -> Tensor:  # fmt: skip
    return _own(_linscan(_api.final_state, x.device, a, x, h0, axis=axis, reverse=reverse,
                         resets=resets), x)  # fmt: skip


@_final_state.register_fake
def _(a, x, h0, resets, axis, reverse):
    shape = list(torch.broadcast_shapes(a.shape, x.shape))
    del shape[_axis(axis, len(shape))]
    return x.new_empty(shape, dtype=_promoted(a, x, h0))


_Three = tuple[Tensor, Tensor, Tensor]


@torch.library.custom_op("linscan::scan_backward", mutates_args=())
def _scan_backward(a: Tensor, h: Tensor, grad_h: Tensor, h0: Optional[Tensor],
                   resets: Optional[Tensor], axis: int, reverse: bool) -> _Three:  # fmt: skip
    grad_a, grad_x, grad_h0 = _linscan(_api.scan_backward, h.device, a, h, grad_h, h0, axis=axis,
                                       reverse=reverse, resets=resets)  # fmt: skip
    if grad_h0 is None:  # (an operator returns tensors: an empty one stands for none)
        grad_h0 = h.new_empty((0,))
    return _own(grad_a, a), _own(grad_x, h), _own(grad_h0, h)


def _own(result: Tensor, given: Tensor) -> Tensor:
    """``result`` as the operators promise it (their fake implementations say so): a
    contiguous tensor of its own (linscan may return a state laid out by a broadcast ``h0``,
    a ``.real`` view, or, in principle, memory of an input)."""
    if result.data_ptr() == given.data_ptr() and result.numel():
        return result.clone(memory_format=torch.contiguous_format)
    return result.contiguous()


@_scan_backward.register_fake
def _(a, h, grad_h, h0, resets, axis, reverse):
    grad_h0 = h.new_empty((0,)) if h0 is None else h0.new_empty(h0.shape)  # (contiguous)
    return (a.new_empty(a.shape), h.new_empty(h.shape, dtype=_promoted(a, h, grad_h, h0)),
            grad_h0)  # fmt: skip


def _axis(axis: int, rank: int) -> int:
    """``axis`` in ``range(rank)`` (a negative one counted from the end)."""
    if not -rank <= axis < rank:
        raise np.exceptions.AxisError(axis, rank)
    return axis % rank


# --- gradients -------------------------------------------------------------------------------


def _save(ctx, inputs, output):
    a, x, h0, resets, axis, reverse = inputs
    ctx.options = dict(axis=axis, reverse=reverse)
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
    ctx.has_h0 = h0 is not None
    return a, x, h0, resets


def _finish(ctx, grad_a, grad_x, grad_h0):
    """The gradients for ``(a, x, h0, resets, axis, reverse)``: grad_x summed to ``x``'s shape
    where ``a`` broadcast it, in ``x``'s dtype."""
    grad_x = _summed(grad_x, ctx.x_shape, ctx.x_dtype)
    return grad_a, grad_x, grad_h0 if ctx.has_h0 else None, None, None, None


def _scan_setup(ctx, inputs, output):
    a, _, h0, resets = _save(ctx, inputs, output)
    ctx.save_for_backward(a, output, h0, resets)


def _scan_grad(ctx, grad):
    a, h, h0, resets = ctx.saved_tensors
    grads = _SCAN_BACKWARD[_transforming()](a, h, grad, h0, resets, ctx.options["axis"],
                                            ctx.options["reverse"])  # fmt: skip
    return _finish(ctx, *grads)


_scan.register_autograd(_scan_grad, setup_context=_scan_setup)


def _final_setup(ctx, inputs, output):
    ctx.save_for_backward(*_save(ctx, inputs, output))


def _final_grad(ctx, grad):
    """The states are recomputed (final_state never wrote them); ``grad`` enters at the last
    step of the walk."""
    a, x, h0, resets = ctx.saved_tensors
    axis, reverse = ctx.options["axis"], ctx.options["reverse"]
    h = _SCAN[_transforming()](a, x, h0, resets, axis, reverse)
    axis = _axis(axis, h.ndim)
    steps = h.shape[axis]
    if steps == 0:  # the final state is h0 itself
        grad_h0 = None if h0 is None else _summed(grad, h0.shape, h0.dtype)
        return _finish(ctx, torch.zeros_like(a), h.new_zeros(h.shape), grad_h0)
    # grad at the walk's last step, zeros elsewhere (built, not written: vmap batches grad)
    rest = list(h.shape)
    rest[axis] = steps - 1
    parts = [grad.unsqueeze(axis), grad.new_zeros(rest)]
    grad_h = torch.cat(parts if reverse else parts[::-1], dim=axis)
    return _finish(ctx, *_SCAN_BACKWARD[_transforming()](a, h, grad_h, h0, resets, axis, reverse))


def _summed(grad: Tensor, shape, dtype: torch.dtype) -> Tensor:
    """``grad`` summed to ``shape`` (over what broadcasting added), in ``dtype`` (the real
    part for a real input)."""
    grad = grad.sum_to_size(shape) if grad.shape != shape else grad
    if grad.is_complex() and not dtype.is_complex:
        grad = grad.real
    return grad.to(dtype)


_final_state.register_autograd(_final_grad, setup_context=_final_setup)


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(
        "linscan.torch: a gradient of scan_backward (double backward, jacfwd, hessian) is not "
        "built yet; differentiate linscan.torch.scan once"
    )


def _nothing_to_save(ctx, inputs, output):
    pass


_scan_backward.register_autograd(_no_double_backward, setup_context=_nothing_to_save)


# The public functions go through autograd.Functions with the same formulas: torch.func
# transforms an operator's registered autograd does not reach (PyTorch issues 168393, 179652:
# its generated Function has no setup_context), but does reach a Function that has one. Their
# vmap rule is generated from the operators', which vmap folds into one call. (Spelled out
# one by one: torch.compile does not trace a Function built by type() with a generic forward.)
class _Scan(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context, backward = staticmethod(_scan_setup), staticmethod(_scan_grad)

    @staticmethod
    def forward(a, x, h0, resets, axis, reverse):
        return torch.ops.linscan.scan(a, x, h0, resets, axis, reverse)


class _FinalState(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context, backward = staticmethod(_final_setup), staticmethod(_final_grad)

    @staticmethod
    def forward(a, x, h0, resets, axis, reverse):
        return torch.ops.linscan.final_state(a, x, h0, resets, axis, reverse)


class _ScanBackward(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_nothing_to_save)
    backward = staticmethod(_no_double_backward)

    @staticmethod
    def forward(a, h, grad_h, h0, resets, axis, reverse):
        return torch.ops.linscan.scan_backward(a, h, grad_h, h0, resets, axis, reverse)


# Each call by _transforming(): False, the operator; True, its autograd.Function.
_SCAN = {False: torch.ops.linscan.scan, True: _Scan.apply}
_FINAL_STATE = {False: torch.ops.linscan.final_state, True: _FinalState.apply}
_SCAN_BACKWARD = {False: torch.ops.linscan.scan_backward, True: _ScanBackward.apply}


# --- vmap: the batch folded into the outer dimensions ----------------------------------------


def _batch_first(value, bdim, rank: int, size: int):
    """``value`` with ``rank`` dimensions after a batch dimension of ``size`` in front: its
    own batch dimension moved there, or (unbatched) the same values for every batch element
    (a view); its shape padded with leading ones to ``rank``. ``None`` stays ``None``."""
    if value is None:
        return None
    if bdim is None:
        value = value.expand((size,) + tuple(value.shape))
    else:
        value = value.movedim(bdim, 0)
    logical = tuple(value.shape[1:])
    return value.reshape((size,) + (1,) * (rank - len(logical)) + logical)


def _rank(*values_dims) -> int:
    """The rank of the broadcast shape of batched or unbatched tensors (without the batch)."""
    return max(t.ndim - (d is not None) for t, d in values_dims)


def _scan_like_vmap(op):
    def rule(info, in_dims, a, x, h0, resets, axis, reverse):
        a_d, x_d, h0_d, r_d = in_dims[:4]
        rank = _rank((a, a_d), (x, x_d))
        moved = _axis(axis, rank) + 1
        size = info.batch_size
        out = op(_batch_first(a, a_d, rank, size), _batch_first(x, x_d, rank, size),
                 _batch_first(h0, h0_d, rank - 1, size), _batch_first(resets, r_d, rank, size),
                 moved, reverse)  # fmt: skip
        return out, 0

    return rule


_scan.register_vmap(_scan_like_vmap(torch.ops.linscan.scan))
_final_state.register_vmap(_scan_like_vmap(torch.ops.linscan.final_state))


@_scan_backward.register_vmap
def _(info, in_dims, a, h, grad_h, h0, resets, axis, reverse):
    a_d, h_d, g_d, h0_d, r_d = in_dims[:5]
    rank = _rank((a, a_d), (h, h_d))
    size = info.batch_size
    a_b = _batch_first(a, a_d, rank, size)
    h0_b = _batch_first(h0, h0_d, rank - 1, size)
    grad_a, grad_x, grad_h0 = torch.ops.linscan.scan_backward(
        a_b, _batch_first(h, h_d, rank, size), _batch_first(grad_h, g_d, rank, size), h0_b,
        _batch_first(resets, r_d, rank, size), _axis(axis, rank) + 1, reverse,
    )  # fmt: skip
    # Each gradient per batch element, in its input's own (unpadded) shape.
    grad_a = grad_a.reshape((size,) + tuple(a.shape if a_d is None else _without(a.shape, a_d)))
    if h0 is None:
        return (grad_a, grad_x, grad_h0), (0, 0, None)
    h0_shape = h0.shape if h0_d is None else _without(h0.shape, h0_d)
    return (grad_a, grad_x, grad_h0.reshape((size,) + tuple(h0_shape))), (0, 0, 0)


def _without(shape, dim: int) -> tuple:
    shape = list(shape)
    del shape[dim]
    return tuple(shape)
