"""Public functions for matrix recurrences ``h[t] = A[t] @ h[t-1] + x[t]`` (small states).

The state is the trailing dimension of size d (1 to 8) of ``x`` and ``h``; ``A`` ends in
``(d, d)``. Everything before those dimensions is laid out as for :func:`linscan.scan` (time
``axis``, outer rows, channels), so the canonical layout is ``(O, T, I)`` followed by ``(d,)``
or ``(d, d)``. The CPU kernels are in ``linscan.backends.cpu.matrix``; on CuPy arrays the
three functions run those of ``linscan.backends.cuda.matrix`` (opt-in: ``_validate.gpu_matrix``).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import _dispatch, _dtypes, _interop, _layout, _validate
from ._api import _via_dlpack


def _canonical(args, arr, trail: tuple, work, contiguous: bool = True):
    """``arr`` broadcast to ``args.lanes + trail`` as ``(O, T, I) + trail`` in ``work``: a
    strided view for ``A`` (a matrix shared by steps or lanes stays one matrix), C-contiguous
    for the others (read-only views on the host)."""
    make = _layout.contiguous3 if contiguous else _layout.view3
    view = make(arr, args.lanes + trail, args.axis, work, _xp(args), trail=len(trail))
    return view if args.device is not None else _layout.readonly(view)


def _matrices(args, work):
    """``A`` as ``(O, T, I, d, d)`` (``_canonical``'s strided view); where ``A`` is the same at
    every step (its time axis absent or of length 1 before broadcasting), a view with time
    stride 0 over one step's matrices. Made in one go, a broadcast over some outer rows and
    not others became a copy of every step's matrices, with a time stride that hid the
    constant from the kernels (repeated squaring instead of a product per step)."""
    d = args.d
    own = args.A.shape[:-2]
    k = args.axis - (len(args.lanes) - len(own))  # A's own index of the time axis
    if k >= 0 and own[k] != 1:
        return _canonical(args, args.A, (d, d), work, contiguous=False)
    one = args.lanes[: args.axis] + (1,) + args.lanes[args.axis + 1 :]
    view = _layout.view3(args.A, one + (d, d), args.axis, work, _xp(args), trail=2)
    O, T, I = _layout.dims(args.lanes, args.axis)
    view = _xp(args).broadcast_to(view, (O, T, I, d, d))
    return view if args.device is not None else _layout.readonly(view)


def _state(args, work):
    """A fresh ``(O, I, d)`` array holding ``h0`` broadcast (zeros without ``h0``)."""
    O, _, I = _layout.dims(args.lanes, args.axis)
    flat = _layout.initial_state(args.h0, args.shape, args.axis, work, _xp(args))
    return flat.reshape(O, I, args.d)


def _xp(args):
    """The array module of the call: NumPy, or CuPy for a call on a GPU."""
    return np if args.device is None else _layout.xp_of(args.x)


def _kernels(args):
    """``(kernels, context)``: the CPU's Numba kernels (imported on first use), or for a call
    on a GPU the CUDA kernels and a context that makes the arrays' device current; both
    modules offer ``scan(A5, x4, h4, state, reverse, method, write=True)``."""
    if args.device is None:
        from .backends.cpu import matrix

        return matrix, contextlib.nullcontext()
    from .backends.cuda import matrix

    return matrix, _dispatch.backend(args.device)[1]


def matscan(A, x, h0=None, *, axis=-1, reverse=False, out=None, method="auto"):
    r"""Compute the matrix recurrence ``h[t] = A[t] @ h[t-1] + x[t]`` along ``axis``.

    The state is a vector of size d (1 to 8), the last dimension of ``x``; ``A`` holds a
    ``d x d`` matrix per step in its last two dimensions. A second-order filter section, a
    Kalman filter's mean, a linear ODE step and an IIR filter in state-space form are such
    recurrences. With ``d = 1`` it is :func:`linscan.scan`.

    Parameters
    ----------
    A : array_like
        Matrices, shape ``(..., d, d)``: the dimensions before the matrix broadcast against
        those of ``x`` before the state, so ``A`` may be one matrix (shape ``(d, d)``), a
        matrix per step (``(T, d, d)`` with ``axis=0``), per lane, or per element.
    x : array_like
        Inputs, shape ``(..., T, ..., d)``; at least 2 dimensions.
    h0 : array_like or float, optional
        The state before the first step: broadcasts to the result's shape without ``axis``.
        Zeros when omitted.
    axis : int, default -1
        The time axis among the dimensions before the state (``-1``: the one just before it).
    reverse : bool, default False
        Run backwards in time: ``h[t] = A[t] @ h[t+1] + x[t]`` with ``h[T] = h0``.
    out : numpy.ndarray or cupy.ndarray, optional
        Where to write the result (its shape and dtype, an array of the inputs' kind); may be
        ``x`` itself.
    method : {"auto", "sequential", "parallel"}, default "auto"
        ``"sequential"`` walks each lane through time in one loop (lanes spread over
        threads); ``"parallel"`` cuts time into segments, reduces each to its affine map in
        float64 (one matrix product per step, or repeated squaring where ``A`` is the same at
        every step), composes the maps and walks the segments in parallel; ``"auto"`` splits
        time only where ``A`` is constant in time and too few lanes keep more than two
        threads busy. On a GPU ``"sequential"`` walks each lane on one thread, and the
        others cut the lanes into chunks where there are too few lanes to fill the GPU. inf
        and NaN land where the loop puts them, except that a state that overflows in the loop
        and would later come back into range (a decay, or a step of the opposite sign) stays
        inf there, where a split walk can return the finite value, as for
        :func:`linscan.scan`.

    Returns
    -------
    h : numpy.ndarray or cupy.ndarray
        Shape ``broadcast(A.shape[:-2], x.shape[:-1]) + (d,)``, in the promoted dtype of the
        inputs (as for :func:`linscan.scan`; 16-bit inputs are accumulated in float32).

    Raises
    ------
    TypeError
        An unsupported dtype, a Python number for ``A`` or ``x``, a CuPy array where the GPU
        kernels are not opted in (``LINSCAN_GPU_MATRIX=1``: they have not run on a GPU yet),
        arrays on different devices, a non-boolean ``reverse``, a bad ``out``.
    ValueError
        ``x`` with fewer than 2 dimensions or a state larger than 8, ``A`` not ending in
        ``(d, d)``, shapes that do not broadcast, an unknown ``method``.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    A rotation by 90 degrees applied to a running state:

    >>> import numpy as np, linscan
    >>> A = np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> x = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    >>> linscan.matscan(A, x)
    array([[ 1.,  0.],
           [ 0.,  1.],
           [-1.,  0.]])
    """
    if _interop.foreign(x, A, h0, out):
        named = (("A", A), ("x", x), ("h0", h0), ("out", out))
        return _via_dlpack(matscan, named, out is None, axis=axis, reverse=reverse, method=method)
    args = _validate.matscan_args(A, x, h0, axis, reverse)
    method = _validate.check_method(method)
    xp = _xp(args)
    given = out
    if out is not None:
        out = _validate.check_out(out, args.shape, args.dtype, device=args.device)
    kernels, context = _kernels(args)
    with context:
        result = out if out is not None else xp.empty(args.shape, args.dtype)
        if result.size == 0:
            return given if given is not None else result
        work = _dtypes.accumulator(args.dtype)
        A5 = _matrices(args, work)
        x4 = _canonical(args, args.x, (args.d,), work)
        state = _state(args, work)
        h4 = None
        if work == args.dtype:
            if out is None:
                h4 = result.reshape(x4.shape)
            else:  # the kernels read x[t] before writing h[t]: out may be x itself
                flat = _layout.safe_output(out, args.shape, args.axis, (A5, x4), exact_ok=(x4,))
                h4 = None if flat is None else flat.reshape(x4.shape)
        target = h4 if h4 is not None else xp.empty(x4.shape, work)
        kernels.scan(A5, x4, target, state, args.reverse, method)
        if h4 is None:
            with np.errstate(over="ignore"):
                result[...] = target.reshape(args.shape)
    return given if given is not None else result


def matscan_final_state(A, x, h0=None, *, axis=-1, reverse=False, method="auto"):
    """The last state of ``matscan(A, x, h0, axis=axis, reverse=reverse)``, without writing
    ``h``: for streaming, pass each piece's final state as the next piece's ``h0``.

    Parameters
    ----------
    A, x, h0, axis, reverse, method
        As for :func:`matscan`.

    Returns
    -------
    numpy.ndarray or cupy.ndarray
        ``h[T-1]`` (``h[0]`` with ``reverse``): shape ``broadcast(A.shape[:-2],
        x.shape[:-1])`` without ``axis``, plus ``(d,)``. ``h0`` broadcast (zeros without it)
        for an empty sequence.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As for :func:`matscan`.

    Examples
    --------
    >>> import numpy as np, linscan
    >>> A = np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> x = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    >>> linscan.matscan_final_state(A, x)
    array([-1.,  0.])
    """
    if _interop.foreign(x, A, h0):
        named = (("A", A), ("x", x), ("h0", h0))
        return _via_dlpack(matscan_final_state, named, True, axis=axis, reverse=reverse,
                           method=method)  # fmt: skip
    args = _validate.matscan_args(A, x, h0, axis, reverse)
    method = _validate.check_method(method)
    work = _dtypes.accumulator(args.dtype)
    shape = _layout.state_shape(args.lanes, args.axis) + (args.d,)
    kernels, context = _kernels(args)
    with context:
        state = _state(args, work)
        if math.prod(args.shape) != 0:
            A5 = _matrices(args, work)
            x4 = _canonical(args, args.x, (args.d,), work)
            kernels.scan(A5, x4, None, state, args.reverse, method, write=False)
        return _layout.cast(state.reshape(shape), args.dtype)


def matscan_backward(A, h, grad_h, h0=None, *, axis=-1, reverse=False, method="auto"):
    r"""Vector-Jacobian product of :func:`matscan`: gradients for ``A``, ``x`` and ``h0``.

    One reverse walk: ``g[t] = grad_h[t] + A[t+1]^H g[t+1]``, ``grad_x = g``,
    ``grad_A[t] = g[t] h[t-1]^H`` (an outer product; ``h[-1] = h0``) and ``grad_h0 =
    A[0]^H g[0]``, all mirrored in time for ``reverse``; ``^H`` is the conjugate transpose
    (PyTorch's complex convention, as in :func:`linscan.scan_backward`).

    Parameters
    ----------
    A, h0, axis, reverse, method
        As given to :func:`matscan` (``A`` must broadcast to ``h``'s lanes).
    h : array_like
        The result of :func:`matscan`.
    grad_h : array_like
        The gradient with respect to ``h``; broadcasts to ``h.shape``.

    Returns
    -------
    grad_A : numpy.ndarray or cupy.ndarray
        The shape and dtype of ``A``, summed over the steps and lanes a broadcast ``A``
        stands for.
    grad_x : numpy.ndarray or cupy.ndarray
        The shape of ``h``, in the promoted dtype.
    grad_h0 : numpy.ndarray, cupy.ndarray or None
        The shape and dtype of ``h0``; ``None`` without ``h0``.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As for :func:`matscan`; ``A`` and ``grad_h`` must broadcast to ``h``.

    Examples
    --------
    >>> import numpy as np, linscan
    >>> A = np.array([[0.5, 0.0], [0.0, 0.5]])
    >>> h = linscan.matscan(A, np.ones((2, 2)))
    >>> grad_A, grad_x, _ = linscan.matscan_backward(A, h, np.ones((2, 2)))
    >>> grad_x
    array([[1.5, 1.5],
           [1. , 1. ]])
    >>> grad_A  # g[1] h[0]^T: the outer product of [1, 1] and [1, 1]
    array([[1., 1.],
           [1., 1.]])
    """
    if _interop.foreign(h, A, grad_h, h0):
        named = (("A", A), ("h", h), ("grad_h", grad_h), ("h0", h0))
        return _via_dlpack(matscan_backward, named, True, axis=axis, reverse=reverse,
                           method=method)  # fmt: skip
    args = _validate.matscan_args(A, h, h0, axis, reverse, name="h", grad_h=grad_h)
    _validate.check_method(method)
    work = _dtypes.accumulator(args.dtype)
    d = args.d
    xp = _xp(args)
    kernels, context = _kernels(args)
    with context:
        return _backward(args, work, d, xp, kernels, method)


def _backward(args, work, d, xp, kernels, method):
    """``matscan_backward``'s work, on the call's device."""
    if math.prod(args.shape) == 0:
        gx4 = xp.zeros(args.shape, work)
        gA = xp.zeros(args.lanes + (d, d), work)
        c = xp.zeros(_layout.state_shape(args.lanes, args.axis) + (d,), work)
    else:
        A5 = _matrices(args, work)
        h4 = _canonical(args, args.x, (d,), work)
        gh4 = _canonical(args, args.grad_h, (d,), work)
        gx4 = xp.empty(h4.shape, work)
        gA = xp.empty(h4.shape + (d,), work)
        c = kernels.backward(A5, h4, gh4, _state(args, work), gx4, gA, args.reverse, method)
    grad_x = _layout.cast(gx4.reshape(args.shape), args.dtype)
    grad_A = _layout.sum_to_shape(
        gA.reshape(args.lanes + (d, d)), args.A.shape, args.A.dtype.newbyteorder("=")
    )
    grad_h0 = None
    if args.h0 is not None:
        state = c.reshape(_layout.state_shape(args.lanes, args.axis) + (d,))
        grad_h0 = _layout.sum_to_shape(state, args.h0.shape, args.h0.dtype.newbyteorder("="))
    return grad_A, grad_x, grad_h0
