"""scipy.signal's linear filters as matrix recurrences: change the import, keep the code.

``lfilter``, ``lfilter_zi``, ``filtfilt``, ``sosfilt``, ``sosfilt_zi`` and ``sosfiltfilt`` take
the arguments of their ``scipy.signal`` namesakes and return the same results (within
rounding), computed by :func:`linscan.matscan`. A filter of order n runs as it does in
scipy, in transposed direct form II: its n delays are the state ``z`` of

    z[t] = A z[t-1] + B x[t],        y[t] = b[0] x[t] + z[t-1][0]

where ``A`` has ``-a[1:]`` in its first column and ones above the diagonal and ``B = b[1:] -
a[1:] b[0]`` (coefficients divided by ``a[0]``); ``zi`` and ``zf`` are that state, as in
scipy. Second-order sections run one after the other, each a recurrence of two states.
Orders up to 8 (``linscan.matscan``'s largest state); for higher orders use sections.

NumPy arrays only so far (``linscan.matscan`` has no GPU kernels yet). scipy is not needed.
"""

from __future__ import annotations

import math

import numpy as np

from . import _matrix, _validate

__all__ = ["lfilter", "lfilter_zi", "filtfilt", "sosfilt", "sosfilt_zi", "sosfiltfilt"]

#: Steps of the input vectors ``B x[t]`` made at a time (times the lanes and the order):
#: a long signal is filtered block by block, carrying the state, in bounded memory.
_BLOCK_VALUES = 1 << 22


def _coefficients(b, a):
    """``b`` and ``a`` as 1-D arrays of one length ``n + 1``, divided by ``a[0]``."""
    b, a = np.atleast_1d(np.asarray(b)), np.atleast_1d(np.asarray(a))
    for name, value in (("b", b), ("a", a)):
        if value.ndim != 1 or value.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {value.shape}")
        if value.dtype.kind not in "biufc":
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
    if a[0] == 0:
        raise ValueError("a[0] must not be zero (the output's own coefficient)")
    n = max(a.size, b.size)
    b = np.concatenate([b, np.zeros(n - b.size, b.dtype)]) / a[0]
    a = np.concatenate([a, np.zeros(n - a.size, a.dtype)]) / a[0]
    return b, a


def _state_space(b, a, dtype):
    """``A`` (n x n) and ``B`` (n) of the transposed direct form II of a normalized filter."""
    n = a.size - 1
    A = np.zeros((n, n), dtype)
    A[:, 0] = -a[1:]
    A[:-1, 1:] = np.eye(n - 1, dtype=dtype)
    return A, (b[1:] - a[1:] * b[0]).astype(dtype)


def _signal(x, dtype_of):
    """``x`` as an array (floats for integer input, as scipy computes them) and the result
    dtype of ``x`` with the arrays ``dtype_of`` (coefficients, initial state)."""
    if _validate._is_python_number(x):
        raise ValueError("x must be an array with a time axis, got a Python number")
    x = np.asarray(x)
    if x.dtype.kind not in "biufc":
        raise TypeError(f"x must hold numbers, got dtype {x.dtype}")
    dtype = np.result_type(x, *dtype_of, 1.0)  # integers give float64, floats stay
    if dtype.kind not in "fc":
        raise TypeError(f"x must hold numbers, got dtype {x.dtype}")
    return x, np.dtype(dtype)


def _initial(zi, x, axis: int, n: int, name: str = "zi"):
    """``zi`` (shaped like ``x`` with ``n`` along ``axis``; other lengths 1 broadcast) as the
    matscan state: ``x``'s other dimensions, then ``n``."""
    zi = np.asarray(zi)
    expected = x.shape[:axis] + (n,) + x.shape[axis + 1 :]
    fits = zi.ndim == x.ndim and zi.shape[axis] == n
    if not fits or any(z not in (1, e) for z, e in zip(zi.shape, expected)):
        raise ValueError(f"{name} must have shape {expected} (x's shape with the filter's "
                         f"{n} delays along axis {axis}), got shape {zi.shape}")  # fmt: skip
    return np.moveaxis(zi, axis, -1)


def _run(b, a, x, axis: int, zi, dtype, reverse: bool = False):
    """``y`` and the final state (the matscan layout: ``x``'s other dimensions, then n) of
    the normalized filter ``b, a`` over ``x`` along ``axis``, from ``zi`` (that layout, or
    ``None``); walking backwards in time with ``reverse``."""
    n = a.size - 1
    xs = x.astype(dtype, copy=False)
    lanes_shape = x.shape[:axis] + x.shape[axis + 1 :]
    y = np.empty(x.shape, dtype)
    state = np.zeros(lanes_shape + (n,), dtype) if zi is None else zi.astype(dtype)
    if n == 0:
        np.multiply(xs, b[0].astype(dtype), out=y)
        return y, state
    A, B = _state_space(b, a, dtype)
    T = x.shape[axis]
    block = max(1, _BLOCK_VALUES // max(1, math.prod(lanes_shape) * n))
    starts = range(0, T, block)
    for t0 in reversed(starts) if reverse else starts:
        t1 = min(T, t0 + block)
        piece = np.moveaxis(xs, axis, -1)[..., t0:t1]  # (lanes..., steps)
        z = _matrix.matscan(A, piece[..., None] * B, state, axis=-1, reverse=reverse)
        out = np.moveaxis(y, axis, -1)[..., t0:t1]
        # y[t] = b0 x[t] + z[t-1][0]: the state entering step t, the walk's previous one.
        if reverse:
            entering = np.concatenate([z[..., 1:, 0], state[..., None, 0]], axis=-1)
            state = z[..., 0, :]
        else:
            entering = np.concatenate([state[..., None, 0], z[..., :-1, 0]], axis=-1)
            state = z[..., -1, :]
        np.multiply(piece, b[0].astype(dtype), out=out)
        out += entering
    return y, state


def lfilter(b, a, x, axis=-1, zi=None):
    """Filter ``x`` along ``axis`` with the rational filter ``b / a``, as
    ``scipy.signal.lfilter`` (same arguments and results).

    ``y[t] = (b[0] x[t] + ... + b[M] x[t-M] - a[1] y[t-1] - ... - a[N] y[t-N]) / a[0]``.
    With ``zi`` (the initial delays, shaped like ``x`` with ``max(len(a), len(b)) - 1``
    along ``axis``) returns ``(y, zf)``, else ``y``. Orders above 8 raise ``ValueError``
    (use second-order sections: :func:`sosfilt`).

    Examples
    --------
    >>> import numpy as np
    >>> from linscan import signal
    >>> signal.lfilter([1.0], [1.0, -0.5], np.ones(4))
    array([1.   , 1.5  , 1.75 , 1.875])
    """
    b, a = _coefficients(b, a)
    x, dtype = _signal(x, (b, a) + (() if zi is None else (np.asarray(zi),)))
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (time), got a 0-d array")
    axis = _validate.check_axis(axis, x.ndim)
    n = a.size - 1
    if n > _validate.MAX_STATE:
        raise ValueError(
            f"the filter's order must be at most {_validate.MAX_STATE} (max(len(a), len(b)) - 1)"
            f", got {n}: split it into second-order sections and use sosfilt"
        )
    state = None if zi is None else _initial(zi, x, axis, n)
    y, final = _run(b, a, x, axis, state, dtype)
    if zi is None:
        return y
    return y, np.moveaxis(final, -1, axis)


def lfilter_zi(b, a):
    """The initial delays for which ``lfilter(b, a, x, zi=lfilter_zi(b, a) * x[0])`` starts
    in the steady state of a constant input ``x[0]``, as ``scipy.signal.lfilter_zi``."""
    b, a = _coefficients(b, a)
    n = a.size - 1
    dtype = np.result_type(b, a, 1.0)
    A, B = _state_space(b, a, dtype)
    return np.linalg.solve(np.eye(n, dtype=dtype) - A, B) if n else np.zeros(0, dtype)


def _sections(sos):
    sos = np.atleast_2d(np.asarray(sos))
    if sos.ndim != 2 or sos.shape[1] != 6 or sos.shape[0] == 0:
        raise ValueError(f"sos must have shape (n_sections, 6), got shape {sos.shape}")
    if sos.dtype.kind not in "biufc":
        raise TypeError(f"sos must hold numbers, got dtype {sos.dtype}")
    if np.any(sos[:, 3] == 0):
        raise ValueError("sos[:, 3] (each section's a[0]) must not be zero")
    return sos


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
    x, dtype = _signal(x, (sos,) + (() if zi is None else (np.asarray(zi),)))
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (time), got a 0-d array")
    axis = _validate.check_axis(axis, x.ndim)
    if zi is not None:
        zi = np.asarray(zi)
        if zi.ndim != x.ndim + 1 or zi.shape[0] != sos.shape[0]:
            expected = (sos.shape[0],) + x.shape[:axis] + (2,) + x.shape[axis + 1 :]
            raise ValueError(f"zi must have shape {expected} (a leading axis of sections), "
                             f"got shape {zi.shape}")  # fmt: skip
        states = [_initial(z, x, axis, 2, f"zi[{k}]") for k, z in enumerate(zi)]
    y, finals = x, []
    for k, section in enumerate(sos):
        b, a = _coefficients(section[:3], section[3:])
        y, final = _run(b, a, y, axis, None if zi is None else states[k], dtype)
        finals.append(final)
    if zi is None:
        return y
    return y, np.stack([np.moveaxis(f, -1, axis) for f in finals])


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
    if not isinstance(edge, (int, np.integer)) or edge < 0:
        raise ValueError(f"padlen must be a non-negative integer, got {padlen!r}")
    if x.shape[axis] <= edge:
        raise ValueError(
            f"x must be longer than padlen along axis {axis}: padlen is {edge}, x has "
            f"{x.shape[axis]} steps"
        )
    if edge == 0:
        return 0, x
    first = np.take(x, [0], axis=axis)
    last = np.take(x, [-1], axis=axis)
    head = np.flip(np.take(x, np.arange(1, edge + 1), axis=axis), axis=axis)
    tail = np.flip(np.take(x, np.arange(-edge - 1, -1), axis=axis), axis=axis)
    if padtype == "odd":
        head, tail = 2 * first - head, 2 * last - tail
    elif padtype == "constant":
        head = np.repeat(first, edge, axis=axis)
        tail = np.repeat(last, edge, axis=axis)
    return edge, np.concatenate([head, x, tail], axis=axis)


def _unpad(y, edge, axis):
    if edge == 0:
        return y
    index = [slice(None)] * y.ndim
    index[axis] = slice(edge, -edge)
    return y[tuple(index)]


def _forward_backward(x, axis, padtype, padlen, ntaps, run):
    """Filter forwards then backwards (scipy's "pad" method), each pass starting in the
    steady state of its first sample: ``run(y, first, reverse)`` filters ``y`` from the state
    a constant input ``first`` (``(lanes..., 1)``) would have settled in."""
    edge, ext = _edges(x, padtype, padlen, axis, ntaps)
    y = run(ext, np.take(ext, 0, axis=axis)[..., None], False)
    y = run(y, np.take(y, -1, axis=axis)[..., None], True)
    return _unpad(y, edge, axis)


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
    b, a = _coefficients(b, a)
    x, dtype = _signal(x, (b, a))
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (time), got a 0-d array")
    axis = _validate.check_axis(axis, x.ndim)
    n = a.size - 1
    if n > _validate.MAX_STATE:
        raise ValueError(f"the filter's order must be at most {_validate.MAX_STATE}, got {n}: "
                         "split it into second-order sections and use sosfiltfilt")  # fmt: skip
    steady = lfilter_zi(b, a).astype(dtype)

    def run(y, first, reverse):
        return _run(b, a, y, axis, steady * first, dtype, reverse)[0]

    return _forward_backward(x, axis, padtype, padlen, a.size, run)


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
    x, dtype = _signal(x, (sos,))
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (time), got a 0-d array")
    axis = _validate.check_axis(axis, x.ndim)
    ntaps = 2 * sos.shape[0] + 1
    ntaps -= min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    steady = sosfilt_zi(sos).astype(dtype)  # (n_sections, 2)
    filters = [_coefficients(section[:3], section[3:]) for section in sos]

    def run(y, first, reverse):
        for k, (b, a) in enumerate(filters):
            y = _run(b, a, y, axis, steady[k] * first, dtype, reverse)[0]
        return y

    return _forward_backward(x, axis, padtype, padlen, ntaps, run)
