"""scipy.signal's linear filters, parallel over time: change the import, keep the code.

``lfilter``, ``lfilter_zi``, ``filtfilt``, ``sosfilt``, ``sosfilt_zi`` and ``sosfiltfilt`` take
the arguments of their ``scipy.signal`` namesakes and return the same results (within
rounding). A filter runs as in scipy, in transposed direct form II: a stage of order n keeps
n delays ``z`` and computes

    y[t] = b[0] x[t] + z[0],      z[j] <- b[j+1] x[t] - a[j+1] y[t] + z[j+1]

(coefficients divided by ``a[0]``); ``zi`` and ``zf`` are those delays, as in scipy. The
delays of a cascade (second-order sections feeding each other, or one transfer function) are
the state of a linear recurrence with a constant matrix: the CPU kernels
(``linscan.backends.cpu.filters``) run many lanes in lockstep and cut one long signal into
pieces whose entering delays are composed from that matrix's powers, a matrix scan over the
pieces.

On CuPy arrays every stage runs as a matrix scan of its delays (``linscan.matscan``, whose GPU
kernels are opt-in: ``LINSCAN_GPU_MATRIX=1``; stages of order 8 at most), one stage after
the other; coefficients may be CuPy arrays too (a few numbers, read to the host). scipy is not
needed.
"""

from __future__ import annotations

import math

import numpy as np

from . import _dtypes, _layout, _validate
from ._dispatch import is_cupy, placement

#: Private test knob: run NumPy arrays through the stages-as-matrix-scans path of CuPy arrays
#: (``_by_matscan``), so that tests check it without a GPU.
_BY_MATSCAN = False

__all__ = ["lfilter", "lfilter_zi", "filtfilt", "sosfilt", "sosfilt_zi", "sosfiltfilt"]


def _host(value):
    """Coefficients on the host: a CuPy array's values copied there (a few numbers)."""
    return value.get() if is_cupy(value) else value


def _coefficients(b, a):
    """``b`` and ``a`` as 1-D arrays of one length ``n + 1``, divided by ``a[0]`` in float64
    (complex128), and the dtype they give a result. scipy divides in the result's dtype: the
    quotients here, cast to it, are scipy's (a float32 quotient taken in float64 and rounded
    to float32 is the float32 division's); divided in float32, they held float32 rounding in
    a float64 result."""
    b, a = np.atleast_1d(np.asarray(_host(b))), np.atleast_1d(np.asarray(_host(a)))
    for name, value in (("b", b), ("a", a)):
        if value.ndim != 1 or value.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {value.shape}")
        if value.dtype.kind not in "biufc":
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
    if a[0] == 0:
        raise ValueError("a[0] must not be zero (the output's own coefficient)")
    n, own = max(a.size, b.size), np.result_type(b, a, 1.0)
    wide = np.result_type(own, np.float64)
    b = np.concatenate([b, np.zeros(n - b.size, b.dtype)]).astype(wide) / wide.type(a[0])
    a = np.concatenate([a, np.zeros(n - a.size, a.dtype)]).astype(wide) / wide.type(a[0])
    return b, a, own


def _state_space(b, a, dtype):
    """``A`` (n x n) and ``B`` (n) of the transposed direct form II of a normalized filter."""
    n = a.size - 1
    A = np.zeros((n, n), dtype)
    A[:, 0] = -a[1:]
    A[:-1, 1:] = np.eye(n - 1, dtype=dtype)
    return A, (b[1:] - a[1:] * b[0]).astype(dtype)


def _signal(x, coefficients, zi=None):
    """``x`` as an array (floats for integer input, as scipy computes them), ``zi`` as an
    array or ``None``, and the result dtype of ``x``, the ``coefficients`` arrays and ``zi``.
    ``x`` and ``zi`` are NumPy arrays, or both CuPy arrays on one device."""
    placement((("x", x), ("zi", zi)))  # one device, or none: a TypeError for a mix
    on_gpu = is_cupy(x)
    _validate.gpu_matrix_allowed("x", x, "linscan.signal")
    x = x if on_gpu else np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must be an array with a time axis, got a scalar (0-d)")
    named = [("x", x)]
    if zi is not None:
        zi = zi if is_cupy(zi) else np.asarray(zi)
        named.append(("zi", zi))
    for name, value in named:
        if value.dtype.kind not in "biufc":
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
    dtype = np.dtype(np.result_type(*coefficients, *(v.dtype for _, v in named), 1.0))
    if dtype.newbyteorder("=") not in _dtypes.SUPPORTED:
        what = " and ".join(name for name, _ in named)
        raise TypeError(f"{what} with the coefficients must give one of {_dtypes.TEXT}, got "
                        f"{dtype} (the kernels compute in these)")  # fmt: skip
    return x, zi, dtype.newbyteorder("=")


def _initial(zi, x, axis: int, n: int, name: str = "zi"):
    """``zi`` (shaped like ``x`` with ``n`` along ``axis``; other lengths 1 broadcast) with
    ``axis`` last: ``x``'s other dimensions, then the ``n`` delays."""
    xp = _layout.xp_of(x)
    zi = xp.asarray(zi)
    expected = x.shape[:axis] + (n,) + x.shape[axis + 1 :]
    fits = zi.ndim == x.ndim and zi.shape[axis] == n
    if not fits or any(z not in (1, e) for z, e in zip(zi.shape, expected)):
        raise ValueError(f"{name} must have shape {expected} (x's shape with the filter's "
                         f"{n} delays along axis {axis}), got shape {zi.shape}")  # fmt: skip
    return xp.moveaxis(zi, axis, -1)


def _lanes(x, axis: int):
    """The flat index of each lane's first element and the time stride of a C-contiguous
    array ``x`` scanned along ``axis`` (lanes in C order of the other dimensions)."""
    O, T, I = _layout.dims(x.shape, axis)
    first = (np.arange(O)[:, None] * (T * I) + np.arange(I)[None, :]).ravel()
    return first, I


def _cascade(b, a, x, axis: int, zi, dtype, reverse: bool = False, fir: bool = False):
    """``y`` and the final delays of the cascade of normalized stages ``b``, ``a`` (``(K,
    N + 1)``) over ``x`` along ``axis``, from the delays ``zi`` (``(K, lanes..., N)``, the
    lanes being ``x``'s other dimensions; ``None``: zeros), in ``dtype``; walking backwards
    in time with ``reverse``. The final delays have ``zi``'s layout. ``fir``: one stage
    without feedback, convolved as scipy does (an inf or NaN then reaches ``N + 1``
    outputs, where the recurrence would spread ``0 * inf`` through its delays)."""
    if fir:
        return _convolved(b[0], x, axis, None if zi is None else zi[0], dtype, reverse)
    if is_cupy(x) or _BY_MATSCAN:
        return _by_matscan(b, a, x, axis, zi, dtype, reverse)
    from .backends.cpu import filters  # Numba is imported on first use

    work = _dtypes.accumulator(dtype)
    K, N = b.shape[0], b.shape[1] - 1
    lanes_shape = x.shape[:axis] + x.shape[axis + 1 :]
    lanes = math.prod(lanes_shape)
    xs = np.ascontiguousarray(x, dtype=work)
    y = np.empty(x.shape, work)
    if zi is None:
        z = np.zeros((K, N, lanes), work)
    else:
        full = np.broadcast_to(zi, (K,) + lanes_shape + (N,)).reshape(K, lanes, N)
        z = np.array(full.transpose(0, 2, 1), dtype=work, order="C")  # a copy: run in place
    if N == 0:
        np.multiply(xs, np.prod(b[:, 0]).astype(work), out=y)
    elif y.size:
        first, stride = _lanes(x, axis)
        if reverse:
            first, stride = first + (x.shape[axis] - 1) * stride, -stride
        filters.run(xs.reshape(-1), y.reshape(-1), first, stride, x.shape[axis],
                    b.astype(work), a.astype(work), z)  # fmt: skip
    final = z.transpose(0, 2, 1).reshape((K,) + lanes_shape + (N,))
    return _layout.cast(y, dtype), _layout.cast(final, dtype)


def _by_matscan(b, a, x, axis, zi, dtype, reverse):
    """``_cascade`` as matrix scans, a stage at a time (CuPy arrays): a stage's delays ``z``
    follow ``z[t] = F z[t-1] + v[t]`` (``F`` of ``_state_space``; ``v[t][j] = b[j+1] x[t] -
    a[j+1] b[0] x[t]``, scipy's terms, so that an inf input spreads NaN where scipy's does,
    ``inf - inf``, which the folded ``(b[j+1] - a[j+1] b[0]) x[t]`` kept inf) and its output
    is ``b[0] x[t] + z[t-1][0]``, so ``linscan.matscan`` of ``F`` over ``v`` from the
    entering delays gives them all, and the next stage filters that output.

    Stages of order 3 or more (a transfer function's companion matrix, far from normal) walk
    each lane whole (``method="sequential"``): composed over chunks, an order-5 filter with
    poles at 0.95 came 1.2e-9 from scipy in float64, where the loop is within 1e-9 (the CPU
    keeps such stages out of its blocks for the same reason, ``filters._blocked``). Sections
    and first-order stages take the chunks."""
    from ._matrix import matscan

    xp = _layout.xp_of(x)
    work = _dtypes.accumulator(dtype)
    K, N = b.shape[0], b.shape[1] - 1
    if N > _validate.MAX_STATE:
        raise ValueError(
            f"a stage of order {N} on CuPy arrays: the matrix scan takes at most "
            f"{_validate.MAX_STATE} delays (split the filter into sections)"
        )
    u = xp.moveaxis(xp.asarray(x, dtype=work), axis, -1)  # time last
    if reverse:
        u = u[..., ::-1]
    lanes_shape = u.shape[:-1]
    finals = []
    for k in range(K):
        if zi is None:
            z = xp.zeros(lanes_shape + (N,), work)
        else:
            z = xp.asarray(xp.broadcast_to(zi[k], lanes_shape + (N,)), dtype=work)
        if N == 0 or u.shape[-1] == 0:
            u = u * work.type(b[k, 0])
            finals.append(z)
            continue
        F = xp.asarray(_state_space(b[k], a[k], work)[0])
        bk, ak = (xp.asarray(v.astype(work)) for v in (b[k, 1:], a[k, 1:]))
        method = "sequential" if N > 2 else "auto"
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN spread, as in scipy
            fed = u * work.type(b[k, 0])  # the output's part straight from the input
            h = matscan(F, u[..., None] * bk - fed[..., None] * ak, z, axis=-1, method=method)
            entering = xp.concatenate([z[..., :1], h[..., :-1, 0]], axis=-1)
            u = fed + entering
        finals.append(h[..., -1, :])
    if reverse:
        u = u[..., ::-1]
    y = xp.ascontiguousarray(xp.moveaxis(u, -1, axis))
    return _layout.cast(y, dtype), _layout.cast(xp.stack(finals), dtype)


def _convolved(b, x, axis, zi, dtype, reverse):
    """``_cascade`` for one stage without feedback: the full convolution of ``x`` with ``b``
    plus ``zi`` at its start; ``y`` its first ``T`` values, the final delays the rest."""
    xp = _layout.xp_of(x)
    work = _dtypes.accumulator(dtype)
    xs = xp.moveaxis(xp.asarray(x), axis, -1).astype(work)
    if reverse:
        xs = xs[..., ::-1]
    T, n = xs.shape[-1], b.size - 1
    full = xp.zeros(xs.shape[:-1] + (T + n,), work)
    for k, coefficient in enumerate(b.astype(work)):
        full[..., k : k + T] += coefficient * xs
    if zi is not None:
        full[..., :n] += zi
    y = full[..., :T]
    if reverse:
        y = y[..., ::-1]
    y = xp.ascontiguousarray(xp.moveaxis(y, -1, axis))
    return _layout.cast(y, dtype), _layout.cast(full[None, ..., T:], dtype)


def lfilter(b, a, x, axis=-1, zi=None):
    """Filter ``x`` along ``axis`` with the rational filter ``b / a``, as
    ``scipy.signal.lfilter`` (same arguments and results).

    ``y[t] = (b[0] x[t] + ... + b[M] x[t-M] - a[1] y[t-1] - ... - a[N] y[t-N]) / a[0]``.
    With ``zi`` (the initial delays, shaped like ``x`` with ``max(len(a), len(b)) - 1``
    along ``axis``) returns ``(y, zf)``, else ``y``. Any order; high orders are as
    ill-conditioned as in scipy (second-order sections, :func:`sosfilt`, are not).

    Examples
    --------
    >>> import numpy as np
    >>> from linscan import signal
    >>> signal.lfilter([1.0], [1.0, -0.5], np.ones(4))
    array([1.   , 1.5  , 1.75 , 1.875])
    """
    fir = np.size(a) == 1  # scipy convolves: an inf or NaN reaches len(b) outputs only
    b, a, own = _coefficients(b, a)
    x, zi, dtype = _signal(x, (own,), zi)
    axis = _validate.check_axis(axis, x.ndim)
    state = None if zi is None else _initial(zi, x, axis, a.size - 1)[None]
    y, final = _cascade(b[None], a[None], x, axis, state, dtype, fir=fir)
    if zi is None:
        return y
    return y, _layout.xp_of(y).moveaxis(final[0], -1, axis)


def lfilter_zi(b, a):
    """The initial delays for which ``lfilter(b, a, x, zi=lfilter_zi(b, a) * x[0])`` starts
    in the steady state of a constant input ``x[0]``, as ``scipy.signal.lfilter_zi`` (which,
    unlike ``lfilter``, drops leading zeros of ``a``)."""
    a = np.atleast_1d(np.asarray(_host(a)))
    while a.ndim == 1 and a.size > 1 and a[0] == 0:
        a = a[1:]
    b, a, own = _coefficients(b, a)
    n = a.size - 1
    dtype = np.result_type(own, 1.0)
    b, a = b.astype(dtype), a.astype(dtype)
    if n == 0:
        return np.zeros(0, dtype)
    A, B = _state_space(b, a, dtype)
    return np.linalg.solve(np.eye(n, dtype=dtype) - A, B)


def _sections(sos):
    sos = np.atleast_2d(np.asarray(_host(sos)))
    if sos.ndim != 2 or sos.shape[1] != 6 or sos.shape[0] == 0:
        raise ValueError(f"sos must have shape (n_sections, 6), got shape {sos.shape}")
    if sos.dtype.kind not in "biufc":
        raise TypeError(f"sos must hold numbers, got dtype {sos.dtype}")
    if np.any(sos[:, 3] == 0):
        raise ValueError("sos[:, 3] (each section's a[0]) must not be zero")
    return sos


def _stages(sos):
    """The sections' normalized ``b`` and ``a`` as two ``(n_sections, 3)`` arrays."""
    a0 = sos[:, 3:4]
    return sos[:, :3] / a0, sos[:, 3:] / a0


def sosfilt(sos, x, axis=-1, zi=None):
    """Filter ``x`` along ``axis`` with cascaded second-order sections, as
    ``scipy.signal.sosfilt``. ``sos`` has shape ``(n_sections, 6)``, each row ``b0, b1, b2,
    a0, a1, a2``; ``zi`` (shape ``(n_sections, ...)``: ``x``'s shape with 2 along ``axis``)
    gives the sections' initial delays, and then ``(y, zf)`` is returned.

    Examples
    --------
    >>> import numpy as np
    >>> from linscan import signal
    >>> sos = [[1.0, 0.0, 0.0, 1.0, -0.5, 0.0], [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    >>> signal.sosfilt(sos, np.ones(3))
    array([1.  , 1.5 , 1.75])
    """
    sos = _sections(sos)
    x, zi, dtype = _signal(x, (sos,), zi)
    axis = _validate.check_axis(axis, x.ndim)
    if zi is not None:
        if zi.ndim != x.ndim + 1 or zi.shape[0] != sos.shape[0]:
            expected = (sos.shape[0],) + x.shape[:axis] + (2,) + x.shape[axis + 1 :]
            raise ValueError(f"zi must have shape {expected} (a leading axis of sections), "
                             f"got shape {zi.shape}")  # fmt: skip
        xp = _layout.xp_of(x)
        zi = xp.stack([_initial(z, x, axis, 2, f"zi[{k}]") for k, z in enumerate(zi)])
    b, a = _stages(sos)
    y, final = _cascade(b, a, x, axis, zi, dtype)
    if zi is None:
        return y
    return y, _layout.xp_of(y).moveaxis(final, -1, axis + 1)


def sosfilt_zi(sos):
    """Initial delays of every section for the steady state of a unit step, as
    ``scipy.signal.sosfilt_zi`` (shape ``(n_sections, 2)``)."""
    sos = _sections(sos)
    dtype = np.result_type(sos, 1.0)
    zi = np.empty((sos.shape[0], 2), dtype)
    scale = 1.0
    for k, section in enumerate(sos):
        b, a = section[:3], section[3:]
        zi[k] = scale * lfilter_zi(b, a)
        scale *= b.sum() / a.sum()
    return zi


def _edges(x, padtype, padlen, axis, ntaps):
    """scipy's padding for the forward-backward filters: the padding length and ``x``
    extended by it at both ends."""
    if padtype not in ("even", "odd", "constant", None):
        raise ValueError(f"padtype must be 'even', 'odd', 'constant' or None, got {padtype!r}")
    edge = 0 if padtype is None else 3 * ntaps if padlen is None else padlen
    if not isinstance(edge, (int, np.integer)) or isinstance(edge, bool):
        raise TypeError(f"padlen must be an integer or None, got {padlen!r}")
    edge = max(0, int(edge))  # a negative padlen pads nothing, as in scipy
    if x.shape[axis] <= edge:
        raise ValueError(
            f"x must be longer than padlen along axis {axis}: padlen is {edge}, x has "
            f"{x.shape[axis]} steps"
        )
    if edge == 0:
        return 0, x
    xp = _layout.xp_of(x)
    T = x.shape[axis]
    first = xp.take(x, xp.asarray([0]), axis=axis)
    last = xp.take(x, xp.asarray([T - 1]), axis=axis)
    head = xp.flip(xp.take(x, xp.arange(1, edge + 1), axis=axis), axis=axis)
    tail = xp.flip(xp.take(x, xp.arange(T - edge - 1, T - 1), axis=axis), axis=axis)
    if padtype == "odd":
        head, tail = 2 * first - head, 2 * last - tail
    elif padtype == "constant":
        head = xp.repeat(first, edge, axis=axis)
        tail = xp.repeat(last, edge, axis=axis)
    return edge, xp.concatenate([head, x, tail], axis=axis)


def _unpad(y, edge, axis):
    if edge == 0:
        return y
    index = [slice(None)] * y.ndim
    index[axis] = slice(edge, -edge)
    return y[tuple(index)]


def _forward_backward(b, a, steady, x, axis, padtype, padlen, ntaps, dtype, fir=False):
    """Filter with the stages ``b``, ``a`` forwards then backwards (scipy's "pad" method),
    each pass starting where a constant input equal to its first sample would have settled
    the delays: ``steady`` (``(K, N)``) for a unit input. ``fir`` as for ``_cascade``."""
    xp = _layout.xp_of(x)
    edge, ext = _edges(x, padtype, padlen, axis, ntaps)
    unit = steady.reshape((steady.shape[0],) + (1,) * (x.ndim - 1) + (steady.shape[1],))
    unit = xp.asarray(unit)

    def run(y, first, reverse):
        return _cascade(b, a, y, axis, unit * first[None, ..., None], dtype, reverse, fir)[0]

    y = run(ext, xp.take(ext, 0, axis=axis), False)
    y = run(y, xp.take(y, y.shape[axis] - 1, axis=axis), True)
    return _unpad(y, edge, axis)


def _as_padded(x, padtype, padlen):
    """``x``, as int64 where it is boolean and scipy's odd extension (``2 * x[0] - x[k]``)
    would make it so, which decides the result's dtype (float64 with float32 coefficients)."""
    if padtype != "odd" or padlen == 0:
        return x
    arr = x if is_cupy(x) else np.asarray(x)
    return arr.astype(np.int64) if arr.dtype == bool else x


def filtfilt(b, a, x, axis=-1, padtype="odd", padlen=None, method="pad", irlen=None):
    """Filter ``x`` forwards and backwards (zero phase), as ``scipy.signal.filtfilt`` with
    ``method="pad"`` (the default): the ends are extended by ``padlen`` (default ``3 *
    max(len(a), len(b))``) samples of ``padtype`` (``"odd"``, ``"even"``, ``"constant"`` or
    ``None``) and each pass starts in the steady state of its first sample. The backward
    pass walks time downwards: nothing is flipped or copied for it. ``method="gust"`` is not
    implemented (``ValueError``); ``irlen`` belongs to it.

    Examples
    --------
    >>> import numpy as np
    >>> from linscan import signal
    >>> signal.filtfilt([0.5], [1.0, -0.5], np.ones(20))[:3]
    array([1., 1., 1.])
    """
    if method != "pad":
        raise ValueError(f"method must be 'pad' (Gustafsson's method is not implemented), "
                         f"got {method!r}")  # fmt: skip
    fir = np.size(a) == 1
    steady = lfilter_zi(b, a)[None]  # from the coefficients as given, as scipy's
    b, a, own = _coefficients(b, a)
    x, _, dtype = _signal(_as_padded(x, padtype, padlen), (own,))
    axis = _validate.check_axis(axis, x.ndim)
    return _forward_backward(b[None], a[None], steady, x, axis, padtype, padlen, a.size, dtype,
                             fir)  # fmt: skip


def sosfiltfilt(sos, x, axis=-1, padtype="odd", padlen=None):
    """Filter ``x`` forwards and backwards with second-order sections, as
    ``scipy.signal.sosfiltfilt`` (its padding and default ``padlen``).

    Examples
    --------
    >>> import numpy as np
    >>> from linscan import signal
    >>> sos = [[0.5, 0.0, 0.0, 1.0, -0.5, 0.0]]
    >>> signal.sosfiltfilt(sos, np.ones(20))[:3]
    array([1., 1., 1.])
    """
    sos = _sections(sos)
    x, _, dtype = _signal(_as_padded(x, padtype, padlen), (sos,))
    axis = _validate.check_axis(axis, x.ndim)
    ntaps = 2 * sos.shape[0] + 1
    ntaps -= min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    b, a = _stages(sos)
    return _forward_backward(b, a, sosfilt_zi(sos), x, axis, padtype, padlen, ntaps, dtype)
