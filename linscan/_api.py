"""Public functions: validate, lay out canonically, run the backend, restore the shape."""

from __future__ import annotations

import math

import numpy as np

from . import _dispatch, _dtypes, _extended, _interop, _layout, _validate


def _via_dlpack(function, named, returns_new=True, **options):
    """Run ``function`` on NumPy/CuPy views of the arrays of another library (``named``: the
    ``(name, value)`` array arguments) and return its results in that library
    (``returns_new``: whether some result is not an ``out`` array)."""

    def work():
        call = _interop.Call(named, returns_new)
        arrays = {name: call.bring_in(name, value) for name, value in named}
        return call.send_back(function(**arrays, **options))

    return _interop.outside_compilers(named, work)


def _canonical(backend, args, name: str, work):
    """Input ``name`` of ``args`` in the backend's ``(O, T, I)`` form in dtype ``work``: ``a``
    keeps its strides (a broadcast decay stays small), the others are C-contiguous."""
    make = backend.decays if name == "a" else backend.operand
    return make(getattr(args, name), args.shape, args.axis, work)


def scan(a, x, h0=None, *, axis=-1, reverse=False, out=None, method="auto", resets=None):
    r"""Compute the linear recurrence ``h[t] = a[t] * h[t-1] + x[t]`` along ``axis``.

    Parameters
    ----------
    a : array_like or float
        Decays. Broadcasts against ``x``: a Python number, a decay per step (shape
        ``(T, 1, ...)``), a decay per channel, or one value per element.
    x : array_like
        Inputs.
    h0 : array_like or float, optional
        The state before the first step, ``h[-1]``; broadcasts to the result's shape with
        ``axis`` removed. Zeros when omitted.
    axis : int, default -1
        The time axis of the broadcast shape of ``a`` and ``x``; may be negative.
    reverse : bool, default False
        Run backwards in time: ``h[t] = a[t] * h[t+1] + x[t]`` with ``h[T] = h0``.
    out : numpy.ndarray, optional
        Where to write the result; it must have the result's shape and dtype and may be ``x``
        itself. No other input is ever modified.
    method : {"auto", "sequential", "parallel"}, default "auto"
        ``"sequential"`` walks each lane through time in one plain loop (the serial baseline
        of Martin & Cundy); ``"parallel"`` chunks time and combines the chunks; ``"auto"``
        picks the faster for the shape. All agree within rounding.
    resets : array_like of bool, optional
        Segment starts, broadcast to the result's shape: where ``resets[t]`` is true,
        ``h[t] = x[t]`` (the state carried into step ``t``, or ``h0`` at the first step, is
        dropped; with ``reverse`` the state carried from ``t + 1``). Packs sequences of
        different lengths into one call; nothing, not even an inf or NaN, crosses a reset.

    Returns
    -------
    h : numpy.ndarray
        The states, with the broadcast shape of ``a`` and ``x`` and the promoted dtype of
        ``a``, ``x`` and ``h0``: NumPy's promotion (float32 with complex64 gives complex64;
        Python numbers take the arrays' dtype), with float16 and bfloat16 together giving
        float32. float16 and bfloat16 are accumulated in float32 and rounded once. ``out`` if
        given.

    Raises
    ------
    TypeError
        An input of a dtype other than float16, bfloat16, float32, float64, complex64 and
        complex128 (integers, bool, objects, strings), a non-boolean ``reverse`` or
        ``resets``, a non-integer ``axis``, or an ``out`` that is not an array of the result
        dtype.
    ValueError
        Shapes that do not broadcast, an ``out`` of the wrong shape or read-only, an unknown
        ``method``.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> import numpy as np, linscan
    >>> linscan.scan(0.5, np.array([1.0, 1.0, 1.0]))
    array([1.  , 1.5 , 1.75])
    >>> linscan.scan(np.array([1.0, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0]]), axis=0)
    array([[1., 2.],
           [4., 6.]])
    """
    if _interop.foreign(x, a, h0, out, resets):
        named = (("a", a), ("x", x), ("h0", h0), ("out", out), ("resets", resets))
        return _via_dlpack(
            scan, named, out is None, axis=axis, reverse=reverse, method=method
        )
    args = _validate.scan_args(a, x, h0, axis, reverse, resets)
    method = _validate.check_method(method)
    given = out
    if out is not None:
        out = _validate.check_out(out, args.shape, args.dtype, device=args.device)
    backend, device = _dispatch.backend(args.device)
    work = backend.storage(args.dtype)
    with device:
        result = out if out is not None else backend.empty(args.shape, args.dtype)
        if result.size:
            _scan(backend, args, method, work, result, out)
    return given if given is not None else result


def _scan(backend, args, method, work, result, out):
    a3 = _canonical(backend, args, "a", work)
    x3 = _canonical(backend, args, "x", work)
    r3 = backend.flags(args.resets, args.shape, args.axis)
    state = backend.initial(args.h0, args.shape, args.axis, work)
    h3 = None
    if work != args.dtype:
        pass  # computed in the wider dtype, rounded once into the result
    elif out is None:
        h3 = result.reshape(_layout.dims(args.shape, args.axis))
    else:
        # The forward kernels read a[t] and x[t] before writing h[t]: out may be either. The
        # resets and the initial state (a view of h0 on the GPU) are read throughout.
        inputs = _present(a3, x3, r3, state)
        h3 = _layout.safe_output(out, args.shape, args.axis, inputs, exact_ok=(a3, x3))
    target = h3 if h3 is not None else backend.empty(x3.shape, work)
    backend.scan(a3, x3, target, state, args.reverse, method, r3)
    if h3 is None:
        with np.errstate(over="ignore"):  # rounding to 16 bits may overflow to inf
            result[...] = target.reshape(args.shape)


def final_state(a, x, h0=None, *, axis=-1, reverse=False, method="auto", resets=None):
    r"""The last state of ``scan(a, x, h0, axis=axis, reverse=reverse)``, without writing ``h``.

    For streaming: scan a long sequence piece by piece, passing each piece's final state as
    the next piece's ``h0``. Reads ``a`` and ``x`` once and writes only the state.

    Parameters
    ----------
    a, x, h0, axis, reverse, method, resets
        As for :func:`scan`.

    Returns
    -------
    numpy.ndarray
        ``h[T-1]`` (``h[0]`` with ``reverse``): the broadcast shape of ``a`` and ``x`` without
        ``axis``. For ``T = 0`` it is ``h0`` broadcast (zeros without ``h0``).

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As for :func:`scan`.

    Examples
    --------
    >>> import numpy as np, linscan
    >>> x = np.arange(6.0)
    >>> first = linscan.final_state(0.5, x[:3])
    >>> float(linscan.final_state(0.5, x[3:], first)), float(linscan.scan(0.5, x)[-1])
    (8.0625, 8.0625)
    """
    if _interop.foreign(x, a, h0, resets):
        named = (("a", a), ("x", x), ("h0", h0), ("resets", resets))
        return _via_dlpack(final_state, named, axis=axis, reverse=reverse, method=method)
    args = _validate.scan_args(a, x, h0, axis, reverse, resets)
    method = _validate.check_method(method)
    backend, device = _dispatch.backend(args.device)
    work = backend.storage(args.dtype)
    shape = _layout.state_shape(args.shape, args.axis)
    with device:
        if math.prod(shape) == 0 or args.shape[args.axis] == 0:
            state = _layout.initial_state(args.h0, args.shape, args.axis, args.dtype, backend.xp)
        else:
            state = backend.final_state(
                _canonical(backend, args, "a", work),
                _canonical(backend, args, "x", work),
                backend.initial(args.h0, args.shape, args.axis, work),
                args.reverse,
                method,
                backend.flags(args.resets, args.shape, args.axis),
            )
    return _layout.cast(state.reshape(shape), args.dtype)


def summary(a, x, *, axis=-1, reverse=False, method="auto", resets=None, back=False,
            dtype=None):  # fmt: skip
    """Private, for ``linscan.dask``: what a run of steps does to the state entering it (the
    backend's ``summary``: ``linscan.backends.base``) as a ``linscan._extended.Summary`` of
    arrays of the state's shape. ``a``, ``x`` (``grad_h`` with ``back``), ``axis``,
    ``reverse``, ``method`` and ``resets`` as for :func:`scan`; the call's dtype is that of
    ``a``, ``x`` and ``dtype`` (a whole sequence's dtype, which its ``h0`` may widen)."""
    args = _validate.scan_args(a, x, None, axis, reverse, resets)
    if dtype is not None:
        args = args._replace(dtype=_dtypes.promote([args.dtype, np.dtype(dtype)]))
    method = _validate.check_method(method)
    backend, device = _dispatch.backend(args.device)
    work = backend.storage(args.dtype)
    shape = _layout.state_shape(args.shape, args.axis)
    with device:
        if math.prod(shape) == 0 or args.shape[args.axis] == 0:  # nothing walked: h -> h
            xp, acc = backend.xp, _dtypes.accumulator(args.dtype)
            mantissa, exponent = _extended.split(xp.ones(shape, acc), xp)
            reset = None if args.resets is None else xp.zeros(shape, bool)
            return _extended.Summary(mantissa, exponent, xp.zeros(shape, acc), reset)
        found = backend.summary(
            _canonical(backend, args, "a", work),
            _canonical(backend, args, "x", work),
            args.reverse,
            method,
            backend.flags(args.resets, args.shape, args.axis),
            back,
        )
    return _extended.Summary(*(None if v is None else v.reshape(shape) for v in found))


def scan_backward(
    a, h, grad_h, h0=None, *, axis=-1, reverse=False, method="auto", out=None, resets=None
):
    r"""Vector-Jacobian product of :func:`scan`: gradients for ``a``, ``x`` and ``h0``.

    Given ``h = scan(a, x, h0, axis=axis, reverse=reverse, resets=resets)`` and the gradient
    ``grad_h`` of a loss with respect to ``h``, one reverse scan computes ``g[t] = grad_h[t] +
    conj(a[t+1]) * g[t+1]`` and from it ``grad_x = g``, ``grad_a[t] = g[t] * conj(h[t-1])``
    (``h[-1] = h0``) and ``grad_h0 = conj(a[0]) * g[0]`` (all mirrored in time for
    ``reverse``). ``x`` is not needed. A step that resets passes nothing back: its
    ``grad_a`` is zero and so is the gradient it sends to the steps before it.

    Complex inputs follow PyTorch's convention: for a real loss ``L`` the gradient of a complex
    ``z`` is ``dL/dRe(z) + 1j * dL/dIm(z)`` (``conj`` above; for real numbers it does nothing),
    and a real input meeting complex ones gets the real part of its gradient. JAX's
    cotangents are the complex conjugates of these: conjugate ``grad_h`` going in and the
    gradients coming out (``linscan.jax`` differentiates in JAX's convention itself).

    Parameters
    ----------
    a : array_like or float
        The decays given to :func:`scan`.
    h : array_like
        The result of :func:`scan`.
    grad_h : array_like
        The gradient with respect to ``h``; broadcasts to ``h.shape``.
    h0 : array_like or float, optional
        The initial state given to :func:`scan`.
    axis, reverse, method, resets
        As given to :func:`scan`.
    out : tuple, optional
        ``(grad_a, grad_x, grad_h0)``, each an array to write that gradient into (its shape
        and dtype as returned) or ``None``. Reusing buffers saves the cost of fresh memory,
        which at large sizes is a good part of the pass. ``out[1]`` may be ``grad_h``; the
        three must not share memory with each other.

    Returns
    -------
    grad_a : numpy.ndarray
        The shape of ``a`` as passed, summed over the axes broadcasting added (a 0-d array
        for a Python number), in the dtype of ``a``.
    grad_x : numpy.ndarray
        The shape of ``h``, in the result dtype (the promotion of all inputs' dtypes).
    grad_h0 : numpy.ndarray or None
        The shape and dtype of ``h0``; ``None`` when ``h0`` is ``None``.

    Each is the corresponding ``out`` array when one was given.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As for :func:`scan`; ``a``, ``grad_h``, ``h0`` and ``resets`` must broadcast to
        ``h``.

    Examples
    --------
    >>> import numpy as np, linscan
    >>> a, x = np.array([0.5, 0.5]), np.array([1.0, 2.0])
    >>> h = linscan.scan(a, x)                # [1.0, 2.5]
    >>> ga, gx, gh0 = linscan.scan_backward(a, h, np.ones(2), h0=0.0)
    >>> gx                                    # d(h0 + h1)/dx
    array([1.5, 1. ])
    >>> ga                                    # [g0 * h[-1], g1 * h[0]]
    array([0., 1.])
    >>> float(gh0)
    0.75
    """
    if _interop.foreign(h, a, grad_h, h0, out, resets):
        named = (("a", a), ("h", h), ("grad_h", grad_h), ("h0", h0), ("out", out))
        named += (("resets", resets),)
        filled = isinstance(out, tuple) and len(out) == 3
        filled = filled and all(arr is not None for arr in out[: 2 if h0 is None else 3])
        return _via_dlpack(
            scan_backward, named, not filled, axis=axis, reverse=reverse, method=method
        )
    args = _validate.backward_args(a, h, grad_h, h0, axis, reverse, resets)
    method = _validate.check_method(method)
    out_a, out_x, out_h0 = _validate.check_backward_out(out, args)
    backend, device = _dispatch.backend(args.device)
    with device:
        grads = _scan_backward(backend, args, method, out_a, out_x, out_h0)
    if out is None:
        return grads
    # The caller's own arrays (an ndarray subclass was written through a plain view).
    return tuple(grad if given is None else given for grad, given in zip(grads, out))


def _scan_backward(backend, args, method, out_a, out_x, out_h0):
    shape, dtype = args.shape, args.dtype
    work = backend.storage(dtype)
    dims = _layout.dims(shape, args.axis)
    a3 = _canonical(backend, args, "a", work)
    h3 = _canonical(backend, args, "h", work)
    gh3 = _canonical(backend, args, "grad_h", work)
    # The backward kernels read grad_h[t] before writing grad_x[t], so grad_x may replace
    # grad_h. Nothing may alias grad_a: the chained kernels read a[t] after writing grad_a[t],
    # and h[t-1] after a neighbouring chain wrote grad_a there.
    r3 = backend.flags(args.resets, shape, args.axis)
    before = backend.initial(args.h0, shape, args.axis, work)  # h[-1]: grad_a reads it
    inputs = _present(a3, h3, gh3, r3, before)
    grad_x3 = None
    if work == dtype:
        grad_x3 = _layout.safe_output(out_x, shape, args.axis, inputs, exact_ok=(gh3,))
    grad_x3 = grad_x3 if grad_x3 is not None else backend.empty(dims, work)
    # grad_a is written unrounded (float32 for 16-bit dtypes): a broadcast a sums it.
    wide = _dtypes.accumulator(dtype)
    direct = out_a is not None and out_a.shape == shape and out_a.dtype == wide
    grad_a3 = _layout.safe_output(out_a if direct else None, shape, args.axis, inputs + (grad_x3,))
    grad_a3 = grad_a3 if grad_a3 is not None else backend.empty(dims, wide)
    want_h0 = args.h0 is not None
    if grad_x3.size:
        state = backend.backward(
            a3,
            h3,
            gh3,
            before,
            grad_x3,
            grad_a3,
            args.reverse,
            method,
            want_h0,
            r3,
        )
    elif want_h0:
        state = _layout.initial_state(None, shape, args.axis, work, backend.xp)
    grad_x = _deliver(_layout.cast(grad_x3.reshape(shape), dtype), out_x)
    grad_a = _deliver(
        _layout.sum_to_shape(grad_a3.reshape(shape), args.a.shape, _native(args.a)), out_a
    )
    grad_h0 = None
    if want_h0:
        state = state.reshape(_layout.state_shape(shape, args.axis))
        grad_h0 = _deliver(_layout.sum_to_shape(state, args.h0.shape, _native(args.h0)), out_h0)
    return grad_a, grad_x, grad_h0


def _present(*arrays) -> tuple:
    """The arrays of ``arrays`` that are not ``None``."""
    return tuple(arr for arr in arrays if arr is not None)


def _native(arr) -> np.dtype:
    """The dtype of a gradient for ``arr``: its own, in native byte order."""
    return arr.dtype.newbyteorder("=")


def _deliver(result: np.ndarray, out):
    """``result``, copied into ``out`` unless it already is ``out``'s memory."""
    if out is None:
        return result
    if not _layout.same_memory_layout(result, out):
        out[...] = result
    return out
