"""Tools for testing recurrence code against linscan's serial oracle.

* :func:`assert_scan_close` / :func:`assert_scan_backward_close` compare a result with the
  float64 serial loop of :mod:`linscan.reference`, with a tolerance set by the result's dtype
  and the problem, never by the test.
* :func:`scan_cases` / :func:`backward_cases` are hypothesis strategies drawing valid calls:
  every axis, T = 0 and 1, broadcast decays, ``h0`` absent / given / broadcast, ``reverse``,
  mixed float32/float64 inputs, non-contiguous and negative-stride views; keyword options
  narrow them to what the code under test supports (a fixed axis, one direction, no ``h0``,
  full-shape arrays, one dtype...).
* A failure names the worst element and its error as a multiple of the tolerance, the
  result dtype the oracle assumed, the Python numbers it rounded to it and the inputs. A
  result computed from the Python numbers unrounded passes too (see :class:`Oracle`).

The tolerance. For the serial loop with ``n`` steps from the start, the rounding error at a
step is at most ``2 * eps * n * M``, where ``M`` is the same recurrence run on ``|a|``,
``|x|`` and ``|h0|``: each step adds at most ``2 * eps`` relative error to terms whose
magnitudes ``M`` bounds, and later steps scale earlier errors by no more than they scale
``M``. Chunked and parallel evaluations regroup the same terms and obey the same form of
bound; the oracle's own float64 error is of the same form. We allow ``4 * eps * n * M``.

To that comes an absolute term for arithmetic that flushes subnormal results to zero (the
GPU's: CuPy compiles every kernel with ``-ftz=true``): each step may then lose up to the
smallest normal number ``tiny``, and later steps scale that loss by decays of modulus at most
1, so a state is off by at most ``n * tiny``; a gradient ``g * h`` multiplies the loss in
``g`` by ``|h|``, so ``grad_a`` allows ``n * tiny * (1 + max |h|)`` (and ``grad_h0`` the same
with ``max |a|``). These matter only for results within a few thousand ``tiny`` of zero
(about 1e-35 for float32).

Complex results are compared component by component, each with the tolerance of the modulus:
``|a * s + x|`` is bounded by the same ``M``, and a complex multiply-add errs by at most
``(1 + sqrt(5)) * eps`` instead of ``2 * eps``, so ``eps`` is scaled by ``(1 + sqrt(5)) / 2``.
16-bit results (float16, bfloat16) are accumulated in float32 and rounded once: the float32
tolerance above plus one ``eps`` of the 16-bit dtype times ``|expected|`` (two units of
roundoff) and half its smallest subnormal, not the error of a 16-bit running sum.

Matrix recurrences (:func:`matscan_oracle`, :func:`assert_matscan_close`,
:func:`matscan_cases`) use the same bound with ``M`` the matrix recurrence run on ``|A|``,
``|x|`` and ``|h0|`` (elementwise moduli): a step's ``d``-term dot products err by at most
``(d + 1) * eps`` of what ``M`` bounds instead of ``2 * eps``, so the allowance is scaled by
``(d + 1) / 2`` (the scalar rule for ``d = 1``).

Wrong algorithms (a lost carry, an off-by-one step) miss by a
fraction of ``M``, far outside it. Hypothesis should not draw ill-conditioned cases that a
tolerance would have to hide; the strategies here keep ``|a| <= 1`` and bounded inputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _dtypes, reference

__all__ = [
    "TOLERANCE_FACTOR",
    "Oracle",
    "scan_oracle",
    "backward_oracles",
    "assert_scan_close",
    "assert_final_state_close",
    "assert_scan_backward_close",
    "ScanCase",
    "BackwardCase",
    "DECAY_FORMS",
    "X_FORMS",
    "H0_FORMS",
    "result_dtype",
    "scan_cases",
    "backward_cases",
    "POISONS",
    "poison",
    "matscan_oracle",
    "assert_matscan_close",
    "assert_matscan_final_state_close",
    "MatscanCase",
    "MATRIX_FORMS",
    "matscan_cases",
    "poisoned",
    "assert_same_values",
]

#: Multiple of ``eps * steps * M`` allowed (see the module docstring).
TOLERANCE_FACTOR = 4.0


def _abs(v):
    """``|v|`` in float64 (the modulus of complex values), or ``None``."""
    if v is None:
        return None
    return np.abs(np.asarray(v, dtype=np.complex128 if np.iscomplexobj(v) else np.float64))


def _steps(shape, axis, from_end):
    """Number of steps taken to reach each element along ``axis`` (1 for the first)."""
    T = shape[axis]
    n = np.arange(T, 0, -1) if from_end else np.arange(1, T + 1)
    return n.reshape((T,) + (1,) * (len(shape) - axis - 1)).astype(np.float64)


def _failure(name, actual, expected, bound, steps, dtype, flushed=1.0):
    """Why ``actual`` is not ``expected`` within ``dtype``'s tolerance, or ``None``."""
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return f"{name}: shape {actual.shape}, expected {expected.shape}"
    if _dtypes.is_complex(dtype) or np.iscomplexobj(expected):
        # The components, each within the modulus's tolerance (see the module docstring).
        scale = (1 + 5**0.5) / 2 if _dtypes.is_complex(dtype) else 1.0
        # A complex value with a NaN part is NaN as a whole (its modulus is): where the
        # oracle's is, the result must have a NaN part too, whichever; the other part of such
        # a value means nothing (complex arithmetic spreads NaN from one part to the other or
        # not, by the order of its operations).
        expected_nan = np.isnan(expected.real) | np.isnan(expected.imag)
        actual_nan = np.isnan(actual.real) | np.isnan(actual.imag)
        if not np.array_equal(expected_nan, actual_nan):
            where = np.unravel_index(np.argmax(expected_nan != actual_nan), expected_nan.shape)
            return (
                f"{name}: NaN where the oracle has none, or none where it has NaN; first at "
                f"index {where}: got {actual[where]!r}, expected {expected[where]!r}"
            )
        if expected_nan.any():
            both_nan = complex(np.nan, np.nan)
            actual = np.where(actual_nan, both_nan, actual)
            expected = np.where(expected_nan, both_nan, expected)
        for part in ("real", "imag"):
            failure = _failure_real(
                f"{name} ({part} part)", getattr(actual, part), getattr(expected, part), bound,
                steps, _dtypes.real_of(dtype), flushed, scale,
            )  # fmt: skip
            if failure:
                return failure
        return None
    return _failure_real(name, actual, expected, bound, steps, dtype, flushed)


def _tolerance(bound, steps, dtype, flushed, scale, expected):
    """Allowed ``|actual - expected|`` (see the module docstring)."""
    acc = _dtypes.finfo(_dtypes.accumulator(dtype))
    tol = (TOLERANCE_FACTOR * scale * float(acc.eps) * bound + float(acc.tiny) * flushed) * steps
    if dtype in _dtypes.SIXTEEN_BIT:  # one rounding to 16 bits
        out = _dtypes.finfo(dtype)
        tol = tol + float(out.eps) * np.abs(expected) + float(out.smallest_subnormal) / 2
    return tol


def _failure_real(name, actual, expected, bound, steps, dtype, flushed, scale=1.0):
    tol = np.broadcast_to(_tolerance(bound, steps, dtype, flushed, scale, expected),
                          np.shape(expected))  # fmt: skip
    got = actual.astype(np.float64)
    # Where the float64 result overflows the dtype, the dtype's result must be inf too: where
    # it rounds to inf (round to nearest: float16's 65504 holds up to 65520, not only to 65504).
    with np.errstate(over="ignore"):
        rounded = np.asarray(expected).astype(dtype)
    overflow = np.isinf(rounded.astype(np.float64)) & np.isfinite(expected)
    expect = np.where(overflow, np.copysign(np.inf, expected), expected)
    finite = np.isfinite(expect)
    with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf where both overflowed
        error = np.abs(got - expect)
        close = error <= tol
        # How far outside: a multiple of the tolerance; a wrong inf or NaN counts as infinite.
        excess = np.where(finite & np.isfinite(got), error / tol, np.inf)
    same_nonfinite = (np.isnan(expect) & np.isnan(got)) | (~np.isnan(expect) & (got == expect))
    ok = np.where(finite, close, same_nonfinite)
    if ok.all():
        return None
    excess = np.where(ok, -1.0, np.where(np.isnan(excess), np.inf, excess))
    where = tuple(int(i) for i in np.unravel_index(np.argmax(excess), ok.shape))
    if np.isfinite(excess[where]):
        how = f"error {error[where]:.3g}, {excess[where]:.3g} times the tolerance {tol[where]:.3g}"
    else:
        how = "a non-finite value where the other is finite, or another non-finite value"
    return (
        f"{name}: {np.size(ok) - np.count_nonzero(ok)} of {np.size(ok)} elements differ from "
        f"the float64 oracle beyond the {dtype} tolerance; the worst at index {where}: got "
        f"{float(got[where])!r}, expected {float(expect[where])!r}: {how}"
    )


def _dtype_of(actual, dtype):
    return np.dtype(dtype) if dtype is not None else np.asarray(actual).dtype


@dataclass
class Oracle:
    """The float64 reference result of one call, with what its tolerance needs: the
    magnitude bound ``M``, the step counts ``n`` and the factor by which a value flushed to
    zero can be scaled afterwards (see the module docstring).

    ``context`` says what the oracle computed (the inputs, and the dtype it assumed the
    result has) for failure messages; it shows the inputs as they are when a check fails.
    ``alternative``, where there is one, gives the oracle of the same call with the Python
    numbers among the inputs unrounded: linscan rounds them to the result's dtype (as NumPy
    does), an implementation computing in a wider dtype need not, and a result close to
    either answer passes. Both are functions, called only when a check fails."""

    expected: object
    bound: object
    steps: object
    flushed: float = 1.0
    context: object = ""  # a str, or a function making it
    alternative: object = None  # None, or a function making an Oracle

    def check(self, name: str, actual, dtype=None) -> None:
        """Raise ``AssertionError`` unless ``actual`` matches within ``dtype``'s tolerance
        (default: ``actual.dtype``)."""
        dtype = _dtype_of(actual, dtype)
        failure = self._failure(name, actual, dtype)
        if failure is None:
            return
        if self.alternative is not None:
            if self.alternative()._failure(name, actual, dtype) is None:
                return
            failure += " (nor within it of the answer for the Python numbers unrounded)"
        context = self.context() if callable(self.context) else self.context
        raise AssertionError(f"{failure}\n{context}" if context else failure)

    def _failure(self, name, actual, dtype):
        return _failure(name, actual, self.expected, self.bound, self.steps, dtype,
                        self.flushed)  # fmt: skip


def _show(value) -> str:
    """``value`` for a failure message: Python numbers in full, arrays abridged."""
    if value is None or isinstance(value, (bool, int, float, complex)):
        return repr(value)
    arr = np.asarray(value)
    body = np.array2string(arr, threshold=24, edgeitems=2, max_line_width=100)
    return f"{arr.dtype} array of shape {arr.shape}: {body}"


def _wide(value):
    """A 0-d array's value as a Python float or complex (exactly: every dtype widens)."""
    arr = np.asarray(value)
    return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64).item()


def _rounded(given, seen) -> bool:
    """Whether ``given`` is a Python number that linscan's rounding (``seen``) changed (NaN
    stays NaN)."""
    if not isinstance(given, (int, float, complex)):
        return False
    wide = _wide(seen)
    return wide != given and not (wide != wide and given != given)


def _context(names, given, seen, kw) -> str:
    """What an oracle computed: the inputs as given, the result dtype assumed and the Python
    numbers it rounded to it."""
    dtype = result_dtype(*given)
    rounded = [f"{n} = {g!r} as {dtype} {_wide(v)!r}" for n, g, v in zip(names, given, seen)
               if _rounded(g, v)]  # fmt: skip
    lines = [
        f"The oracle: linscan.reference's float64 loop on the inputs as linscan sees them "
        f"(result dtype {dtype}" + (f"; Python numbers rounded to it: {', '.join(rounded)})"
                                    if rounded else ")") + ". Inputs:"
    ]  # fmt: skip
    lines += [f"  {n} = {_show(g)}" for n, g in zip(names, given)]
    lines += [f"  {k} = {_show(v)}" for k, v in kw.items()]
    return "\n".join(lines)


def _oracles(names, given, kw, make):
    """``make(*values)`` (oracles of the inputs ``values``) for the inputs as linscan sees
    them, each given its ``context`` and, where rounding a Python number to the result dtype
    changed it, the ``alternative`` made of the inputs as given."""
    seen = _as_linscan_sees(*given)
    oracles = make(*seen)
    context = functools.partial(_context, names, given, seen, kw)  # made on failure only
    changed = any(_rounded(g, v) for g, v in zip(given, seen))
    single = isinstance(oracles, Oracle)

    @functools.cache
    def others():  # the oracles of the inputs as given: made once, on a first failure
        made = make(*(_array_unless_number(g) for g in given))
        return (made,) if single else made

    for k, oracle in enumerate((oracles,) if single else oracles):
        if oracle is not None:
            oracle.context = context
            oracle.alternative = functools.partial(lambda k: others()[k], k) if changed else None
    return oracles


def _as_linscan_sees(*values):
    """``values`` with Python numbers rounded to the call's result dtype, as linscan (like
    NumPy) rounds them: a decay of 0.9 given with float16 arrays is float16(0.9)."""
    values = [_array_unless_number(v) for v in values]
    dtype = result_dtype(*values)
    return [np.asarray(v, dtype) if isinstance(v, (int, float, complex)) else v for v in values]


def _array_unless_number(value):
    """Nested lists and other array-likes as the arrays linscan makes of them; Python numbers
    (weak) and ``None`` as they are."""
    if value is None or hasattr(value, "dtype") or isinstance(value, (int, float, complex)):
        return value
    return np.asarray(value)


def scan_oracle(a, x, h0=None, *, axis=-1, reverse=False, resets=None) -> Oracle:
    """The oracle for ``scan(a, x, h0, axis=axis, reverse=reverse, resets=resets)``."""
    kw = dict(axis=axis, reverse=reverse, resets=resets)

    def make(a, x, h0):
        expected = reference.scan(a, x, h0, **kw)
        bound = reference.scan(_abs(a), _abs(x), _abs(h0), **kw)
        return Oracle(expected, bound, _steps(expected.shape, axis % expected.ndim, reverse))

    return _oracles(("a", "x", "h0"), (a, x, h0), kw, make)


def backward_oracles(a, h, grad_h, h0=None, *, axis=-1, reverse=False, resets=None) -> tuple:
    """Oracles for the three results of ``scan_backward`` (``None`` for ``grad_h0`` without
    ``h0``). Gradients of broadcast inputs are sums over their copies; their tolerance counts
    the summed copies as extra steps."""
    kw = dict(axis=axis, reverse=reverse, resets=resets)
    shape = np.shape(h)
    ax = axis % len(shape)
    size, T = float(np.prod(shape)), shape[ax]

    def steps_summed(arg):  # the steps of g plus the copies summed into one gradient
        return T + 1 + size / max(1.0, float(np.prod(np.shape(arg))))

    def largest(arr):  # of the finite values: a NaN or inf elsewhere makes no tolerance
        magnitudes = _abs(arr)
        return float(np.max(magnitudes, where=np.isfinite(magnitudes), initial=0.0))

    def make(a, h, grad_h, h0):
        expected = reference.scan_backward(a, h, grad_h, h0, **kw)
        bounds = reference.scan_backward(_abs(a), _abs(h), _abs(grad_h), _abs(h0), **kw)
        grad_a = Oracle(expected[0], bounds[0], steps_summed(a), 1.0 + largest(h))
        grad_x = Oracle(expected[1], bounds[1], _steps(shape, ax, not reverse))
        grad_h0 = None
        if h0 is not None:
            grad_h0 = Oracle(expected[2], bounds[2], steps_summed(h0), 1.0 + largest(a))
        return grad_a, grad_x, grad_h0

    return _oracles(("a", "h", "grad_h", "h0"), (a, h, grad_h, h0), kw, make)


def assert_scan_close(h, a, x, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None):
    """Assert that ``h`` is ``scan(a, x, h0, axis=axis, reverse=reverse)`` within rounding.

    The reference is the float64 serial loop; the tolerance is that of ``dtype`` (default:
    ``h.dtype``), see the module docstring. NaN and inf must appear where the oracle has them,
    with infinities where the float64 result overflows ``dtype``.
    """
    scan_oracle(a, x, h0, axis=axis, reverse=reverse, resets=resets).check("h", h, dtype)


def assert_final_state_close(
    state, a, x, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None
):
    """Assert that ``state`` is ``final_state(a, x, h0, axis=axis, reverse=reverse,
    resets=resets)``."""
    kw = dict(axis=axis, reverse=reverse, resets=resets)

    def make(a, x, h0):
        expected = reference.final_state(a, x, h0, **kw)
        bound = reference.final_state(_abs(a), _abs(x), _abs(h0), **kw)
        shape = np.broadcast_shapes(np.shape(a), np.shape(x))
        return Oracle(expected, bound, float(shape[axis % len(shape)] + 1))

    _oracles(("a", "x", "h0"), (a, x, h0), kw, make).check("final state", state, dtype)


def assert_scan_backward_close(
    grads, a, h, grad_h, h0=None, *, axis=-1, reverse=False, resets=None, dtype=None
):
    """Assert that ``grads = (grad_a, grad_x, grad_h0)`` is ``scan_backward(a, h, grad_h, h0)``.

    Each gradient is held to its own dtype's tolerance unless ``dtype`` is given.
    """
    oracles = backward_oracles(a, h, grad_h, h0, axis=axis, reverse=reverse, resets=resets)
    for name, got, oracle in zip(("grad_a", "grad_x", "grad_h0"), grads, oracles):
        if oracle is None:
            if got is not None:
                raise AssertionError(f"{name}: expected None without h0, got {got!r}")
        else:
            oracle.check(name, got, dtype)


def matscan_oracle(A, x, h0=None, *, axis=-1, reverse=False) -> Oracle:
    """The oracle for ``linscan.matscan(A, x, h0, axis=axis, reverse=reverse)`` (see the
    module docstring for its tolerance)."""
    kw = dict(axis=axis, reverse=reverse)

    def make(A, x, h0):
        expected = reference.matscan(A, x, h0, **kw)
        d = expected.shape[-1]
        bound = reference.matscan(_abs(A), _abs(x), _abs(h0), **kw) * ((d + 1) / 2)
        ax = axis % (expected.ndim - 1)
        return Oracle(expected, bound, _steps(expected.shape, ax, reverse))

    return _oracles(("A", "x", "h0"), (A, x, h0), kw, make)


def assert_matscan_close(h, A, x, h0=None, *, axis=-1, reverse=False, dtype=None):
    """Assert that ``h`` is ``linscan.matscan(A, x, h0, axis=axis, reverse=reverse)`` within
    rounding: the float64 serial loop, the tolerance of ``dtype`` (default ``h.dtype``)."""
    matscan_oracle(A, x, h0, axis=axis, reverse=reverse).check("h", h, dtype)


def assert_matscan_final_state_close(state, A, x, h0=None, *, axis=-1, reverse=False,
                                     dtype=None):  # fmt: skip
    """Assert that ``state`` is ``linscan.matscan_final_state(A, x, h0, axis=axis,
    reverse=reverse)`` within rounding."""
    kw = dict(axis=axis, reverse=reverse)

    def make(A, x, h0):
        expected = reference.matscan_final_state(A, x, h0, **kw)
        d = expected.shape[-1]
        bound = reference.matscan_final_state(_abs(A), _abs(x), _abs(h0), **kw) * ((d + 1) / 2)
        lanes = np.broadcast_shapes(np.shape(A)[:-2], np.shape(x)[:-1])
        return Oracle(expected, bound, float(lanes[axis % len(lanes)] + 1))

    _oracles(("A", "x", "h0"), (A, x, h0), kw, make).check("final state", state, dtype)


# --- hypothesis strategies ------------------------------------------------------------------------


@dataclass
class ScanCase:
    """Arguments of one call: ``scan(case.a, case.x, case.h0, **case.kwargs)``."""

    a: object
    x: np.ndarray
    h0: object
    axis: int
    reverse: bool
    resets: object = None

    @property
    def kwargs(self) -> dict:
        return {"axis": self.axis, "reverse": self.reverse, "resets": self.resets}

    @property
    def shape(self) -> tuple:
        return np.broadcast_shapes(np.shape(self.a), np.shape(self.x))


@dataclass
class BackwardCase(ScanCase):
    """A ``ScanCase`` plus an upstream gradient ``grad_h`` of the result's shape and the
    forward result ``h`` that ``scan_backward`` takes: ``scan_backward(case.a, case.h,
    case.grad_h, case.h0, **case.kwargs)``."""

    grad_h: np.ndarray = None
    h: np.ndarray = None

    @classmethod
    def of(cls, case: ScanCase, grad_h, h=None) -> BackwardCase:
        """``case`` with ``grad_h``, and ``h`` (default: the float64 serial loop's result,
        rounded to the result dtype)."""
        if h is None:
            dtype = result_dtype(case.a, case.x, case.h0)
            h = reference.scan(*_as_linscan_sees(case.a, case.x, case.h0), **case.kwargs)
            with np.errstate(over="ignore"):
                h = h.astype(dtype)
        return cls(case.a, case.x, case.h0, case.axis, case.reverse, case.resets, grad_h, h)


def result_dtype(*values) -> np.dtype:
    """The dtype linscan returns for inputs ``values`` (``None`` ignored; Python numbers weak)."""
    values = [_array_unless_number(v) for v in values if v is not None]
    # NumPy scalars too; in native byte order, as linscan promotes them.
    arrays = [np.asarray(v).dtype.newbyteorder("=") for v in values if hasattr(v, "dtype")]
    return _dtypes.promote(arrays, any(type(v) is complex for v in values))


def _hyp():
    import hypothesis.strategies as st
    from hypothesis.extra import numpy as hnp

    return st, hnp


def _values(draw, shape, dtype, bound, low=None):
    """An array of ``shape`` and ``dtype`` with values in ``[low, bound]`` (``low`` defaults to
    ``-bound``), no subnormals. Complex values have a modulus in ``[max(low, 0), bound]`` and
    any phase; bfloat16 values are drawn in float32 and rounded."""
    st, hnp = _hyp()
    dtype = np.dtype(dtype)
    low = -bound if low is None else low
    if _dtypes.is_complex(dtype):
        modulus = _values(draw, shape, np.float64, bound, max(low, 0.0))
        phase = _values(draw, shape, np.float64, np.pi)
        return (modulus * np.exp(1j * phase)).astype(dtype)
    if dtype == _dtypes.BFLOAT16:
        return _values(draw, shape, np.float32, bound, low).astype(dtype)
    elements = st.floats(low, bound, width=dtype.itemsize * 8, allow_subnormal=False)
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _number(draw, dtypes, bound, low):
    """A Python float in ``[low, bound]`` or, where ``dtypes`` has a complex dtype, sometimes a
    Python complex number of modulus in that range."""
    st, _ = _hyp()
    if any(_dtypes.is_complex(np.dtype(d)) for d in dtypes) and draw(st.booleans()):
        value = _values(draw, (), np.complex128, bound, low)
        return complex(float(value.real), float(value.imag))
    return draw(st.floats(low, bound, allow_subnormal=False))


def _as_view(draw, arr):
    """Return ``arr``'s values as a non-contiguous or negative-stride view, or ``arr``."""
    st, _ = _hyp()
    if arr.ndim == 0:
        return arr
    kind = draw(st.sampled_from(["contiguous", "reversed", "strided", "transposed"]))
    axis = draw(st.integers(0, arr.ndim - 1))
    if kind == "reversed":
        return np.flip(np.flip(arr, axis).copy(), axis)
    if kind == "strided":
        return np.repeat(arr, 2, axis=axis)[(slice(None),) * axis + (slice(None, None, 2),)]
    if kind == "transposed":
        return np.ascontiguousarray(arr.T).T
    return arr


def _per_channel(shape, ax):
    """A decay per channel: ``shape`` with the time axis ``ax`` of length 1, and the leading
    axes dropped where a channel axis follows the time axis (so that broadcasting adds them
    back); with time last, every channel axis is kept."""
    per_channel = tuple(1 if k == ax else n for k, n in enumerate(shape))
    return per_channel[ax:] if ax < len(shape) - 1 else per_channel


def _reduced(draw, shape, keep_axis=None, drop=True):
    """A shape that broadcasts to ``shape``: some axes set to 1 and, with ``drop``, some
    leading axes dropped; ``keep_axis`` keeps its length and position."""
    st, _ = _hyp()
    reduced = [n if k == keep_axis or draw(st.booleans()) else 1 for k, n in enumerate(shape)]
    lead = draw(st.integers(0, len(shape))) if drop and keep_axis is None else 0
    return tuple(reduced[lead:])


#: How :func:`scan_cases` draws ``a``: an array of the result's shape, a Python number, one
#: decay per step (length 1 but along the time axis), one per channel (the time axis of length
#: 1), or any shape that broadcasts.
DECAY_FORMS = ("full", "number", "per-step", "per-channel", "broadcast")
#: How :func:`scan_cases` draws ``x``: of the result's shape, or with some of its other axes
#: of length 1 (it keeps every axis, so that ``axis`` means the same for it and the result).
X_FORMS = ("full", "broadcast")
#: How :func:`scan_cases` draws ``h0``: absent, of the state's shape, a Python number, or any
#: shape that broadcasts to the state's.
H0_FORMS = ("none", "full", "number", "broadcast")


def _forms(name, forms, known) -> tuple:
    forms = (forms,) if isinstance(forms, str) else tuple(forms)
    unknown = [f for f in forms if f not in known]
    if not forms or unknown:
        raise ValueError(f"{name} must be a non-empty selection of {known}, got {forms!r}")
    return forms


def _check_options(dtypes, axis, reverse, min_ndim, max_ndim, min_steps, max_steps):
    """The keyword options of :func:`scan_cases`, checked: ``(dtypes, lowest ndim)``."""
    if isinstance(dtypes, (str, type, np.dtype)):
        dtypes = (dtypes,)
    dtypes = tuple(np.dtype(d) for d in dtypes)
    if not dtypes:
        raise ValueError("dtypes must name at least one dtype, got none")
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
        raise TypeError(f"axis must be None (any axis) or an int, got {axis!r}")
    if reverse is not None and not isinstance(reverse, bool):
        raise TypeError(f"reverse must be None (either way) or a bool, got {reverse!r}")
    lowest = max(min_ndim, 1, 0 if axis is None else (axis + 1 if axis >= 0 else -axis))
    if lowest > max_ndim:
        raise ValueError(
            f"max_ndim must allow min_ndim={min_ndim} and axis={axis!r}, got max_ndim={max_ndim}"
        )
    if not 0 <= min_steps <= max_steps:
        raise ValueError(f"min_steps must be in [0, max_steps={max_steps}], got {min_steps}")
    return dtypes, lowest


def scan_cases(
    dtypes=(np.float32, np.float64), max_ndim=3, max_side=5, max_steps=40, views=True,
    resets=True, *, axis=None, reverse=None, decay_forms=DECAY_FORMS, x_forms=X_FORMS,
    h0_forms=H0_FORMS, same_dtype=False, min_ndim=1, min_steps=0, empty=True,
):  # fmt: skip
    """Hypothesis strategy of :class:`ScanCase`.

    By default it draws every kind of valid call: ``a`` in each of :data:`DECAY_FORMS` (a full
    array, a Python number, a decay per step, per channel, or any broadcastable shape) with
    values in ``[-1, 1]`` or, half the time, ``[0.875, 1]``; ``x`` and ``h0`` in ``[-4, 4]``,
    in each of :data:`X_FORMS` and :data:`H0_FORMS`; every axis; both directions; each
    array's dtype drawn from ``dtypes`` on its own; non-contiguous and negative-stride views
    (``views``); 1 to ``max_ndim`` axes of up to ``max_side``, now and then an empty one; 0 to
    ``max_steps`` steps (occasionally up to ten times more, to cross block boundaries); and,
    with ``resets``, a third of the cases with a boolean ``resets`` mask, full or broadcast,
    sparse or dense.

    The keyword options narrow that to what an implementation under test supports:

    * ``axis``: always this axis (an int; ``-1`` for an implementation that scans the last
      axis); ``reverse``: always this direction (a bool);
    * ``decay_forms``, ``x_forms``, ``h0_forms``: the forms drawn (e.g.
      ``decay_forms=("full",), x_forms=("full",)`` for ``a`` and ``x`` of one shape,
      ``h0_forms=("none",)`` for no ``h0``);
    * ``same_dtype``: every array of a case has the one dtype drawn for it from ``dtypes``;
    * ``min_ndim``, ``min_steps``; ``empty=False``: no empty arrays (no side and no time axis
      of length 0).

    For example, an implementation ``my_scan(a, x)`` of float32 arrays of one shape, over the
    last axis, forwards, with no ``h0`` and no resets, is tested with::

        scan_cases(dtypes=(np.float32,), resets=False, axis=-1, reverse=False,
                   decay_forms=("full",), x_forms=("full",), h0_forms=("none",))

    and called as ``my_scan(case.a, case.x)``.
    """
    st, hnp = _hyp()
    dtypes, lowest = _check_options(dtypes, axis, reverse, min_ndim, max_ndim, min_steps,
                                    max_steps)  # fmt: skip
    decay_forms = _forms("decay_forms", decay_forms, DECAY_FORMS)
    x_forms = _forms("x_forms", x_forms, X_FORMS)
    h0_forms = _forms("h0_forms", h0_forms, H0_FORMS)
    least_steps = max(min_steps, 0 if empty else 1)

    @st.composite
    def build(draw):
        ndim = draw(st.integers(lowest, max_ndim))
        ax_ = draw(st.integers(-ndim, ndim - 1)) if axis is None else int(axis)
        ax = ax_ % ndim
        steps = draw(
            st.one_of(
                st.sampled_from([least_steps, least_steps + 1]),
                st.integers(least_steps, max(max_steps, least_steps)),
                st.integers(least_steps, 10 * max(max_steps, least_steps)),
            )
        )
        # Mostly non-empty sides; now and then an empty one.
        sides = st.integers(0 if empty else 1, 4 * max_side).map(
            lambda n: 1 + n % max_side if n else 0
        )
        shape = tuple(steps if k == ax else draw(sides) for k in range(ndim))
        one = draw(st.sampled_from(dtypes)) if same_dtype else None

        def dtype():
            return one if same_dtype else draw(st.sampled_from(dtypes))

        form = draw(st.sampled_from(decay_forms))
        # Decays spread over [-1, 1] forget within a few steps; decays near 1 keep every carry
        # significant, which is what exposes a wrong combination of chunks.
        low = draw(st.sampled_from([-1.0, 0.875]))  # 0.875: exact in float32
        numbers = (one,) if same_dtype else dtypes  # the dtypes a Python number may take
        if form == "number":
            a = _number(draw, numbers, 1.0, low)
        else:
            a_shape = {
                "full": shape,
                "per-step": tuple(n if k == ax else 1 for k, n in enumerate(shape)),
                "per-channel": _per_channel(shape, ax),
                "broadcast": None,
            }[form] or _reduced(draw, shape)
            a = _values(draw, a_shape, dtype(), 1.0, low)
            a = _as_view(draw, a) if views else a
        # x keeps every axis (so that the result has ndim axes and ``axis`` means the same).
        x_full = draw(st.sampled_from(x_forms)) == "full"
        x_shape = shape if x_full else _reduced(draw, shape, ax, drop=False)
        x = _values(draw, x_shape, dtype(), 4.0)
        x = _as_view(draw, x) if views else x
        full = np.broadcast_shapes(np.shape(a), x.shape)
        state_shape = full[:ax] + full[ax + 1 :]
        h0_form = draw(st.sampled_from(h0_forms))
        if h0_form == "none":
            h0 = None
        elif h0_form == "number":
            h0 = _number(draw, numbers, 4.0, -4.0)
        else:
            h0_shape = state_shape if h0_form == "full" else _reduced(draw, state_shape)
            h0 = _values(draw, h0_shape, dtype(), 4.0)
        mask = None
        if resets and draw(st.integers(0, 2)) == 0:
            r_shape = full if draw(st.booleans()) else _reduced(draw, full)
            density = draw(st.sampled_from([0.02, 0.2, 0.7]))
            seed = draw(st.integers(0, 2**32 - 1))
            mask = np.random.default_rng(seed).random(r_shape) < density
        backwards = draw(st.booleans()) if reverse is None else reverse
        return ScanCase(a, x, h0, ax_, backwards, mask)

    return build()


def backward_cases(dtypes=(np.float32, np.float64), **options):
    """Hypothesis strategy of :class:`BackwardCase`: a :func:`scan_cases` draw (narrowed by
    the same ``options``), its forward result ``h`` (the float64 loop's, rounded to the
    result dtype) and ``grad_h`` of the result's shape (in ``[-4, 4]``)."""
    st, _ = _hyp()
    cases = scan_cases(dtypes=dtypes, **options)

    @st.composite
    def build(draw):
        case = draw(cases)
        grad_h = _values(draw, case.shape, result_dtype(case.a, case.x, case.h0), 4.0)
        return BackwardCase.of(case, grad_h)

    return build()


# --- matrix recurrences ------------------------------------------------------------------


@dataclass
class MatscanCase:
    """Arguments of one call: ``matscan(case.A, case.x, case.h0, **case.kwargs)``."""

    A: np.ndarray
    x: np.ndarray
    h0: object
    axis: int
    reverse: bool

    @property
    def kwargs(self) -> dict:
        return {"axis": self.axis, "reverse": self.reverse}

    @property
    def shape(self) -> tuple:
        lanes = np.broadcast_shapes(np.shape(self.A)[:-2], np.shape(self.x)[:-1])
        return lanes + np.shape(self.x)[-1:]


#: The forms of ``A`` that :func:`matscan_cases` draws: one matrix for every step and lane,
#: a matrix per step, per lane (the same at every step), or per element.
MATRIX_FORMS = ("one", "per-step", "per-lane", "full")


def matscan_cases(dtypes=(np.float32, np.float64, np.complex64, np.complex128), *,
                  max_state=8, max_ndim=3, max_side=3, max_steps=40, axis=None, reverse=None,
                  matrix_forms=MATRIX_FORMS, h0=True):  # fmt: skip
    """Hypothesis strategy of :class:`MatscanCase`: states of 1 to ``max_state``, 1 to
    ``max_ndim`` dimensions before the state (sides up to ``max_side``, time up to
    ``max_steps`` steps, 0 included), every axis (negative too) unless ``axis`` is given,
    both directions unless ``reverse`` is, ``A`` in each of ``matrix_forms`` with spectral
    norm at most 1 (so that states stay bounded), ``x`` and ``h0`` in ``[-1, 1]`` (``h0``
    absent, an array, one state for every lane, or a Python number; never with
    ``h0=False``), one dtype per case drawn from ``dtypes``."""
    st, _ = _hyp()
    unknown = set(matrix_forms) - set(MATRIX_FORMS)
    if unknown or not matrix_forms:
        raise ValueError(f"matrix_forms must be some of {MATRIX_FORMS}, got {matrix_forms!r}")

    @st.composite
    def cases(draw):
        d = draw(st.integers(1, max_state), label="d")
        ndim = draw(st.integers(1, max_ndim))
        lanes = list(draw(st.lists(st.integers(1, max_side), min_size=ndim, max_size=ndim)))
        ax = draw(st.integers(0, ndim - 1)) if axis is None else axis % ndim
        lanes[ax] = draw(st.integers(0, max_steps), label="T")
        lanes = tuple(lanes)
        dtype = np.dtype(draw(st.sampled_from(dtypes)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        form = draw(st.sampled_from(matrix_forms), label="A form")
        shape = {
            "one": (),
            "per-step": (lanes[ax],) + (1,) * (ndim - 1 - ax),
            "per-lane": lanes[:ax] + (1,) + lanes[ax + 1 :],
            "full": lanes,
        }[form]
        radius = draw(st.sampled_from([0.5, 0.9, 1.0]))
        A = _matrices(rng, shape, d, dtype, radius)
        x = _vectors(rng, lanes + (d,), dtype)
        start = draw(st.sampled_from(["none", "array", "vector", "number"] if h0 else ["none"]))
        state = lanes[:ax] + lanes[ax + 1 :] + (d,)
        first = {
            "none": lambda: None,
            "array": lambda: _vectors(rng, state, dtype),
            "vector": lambda: _vectors(rng, (d,), dtype),
            "number": lambda: 0.5,
        }[start]()
        rev = draw(st.booleans()) if reverse is None else reverse
        given_axis = ax - ndim if axis is None and draw(st.booleans()) else ax
        if axis is not None:
            given_axis = axis
        return MatscanCase(A, x, first, given_axis, rev)

    return cases()


def _matrices(rng, shape, d, dtype, radius):
    """Random matrices of ``shape + (d, d)`` with spectral norm ``radius``."""
    A = rng.standard_normal(shape + (d, d))
    if _dtypes.is_complex(np.dtype(dtype)):
        A = A + 1j * rng.standard_normal(shape + (d, d))
    A = A / np.linalg.norm(A, 2, axis=(-2, -1))[..., None, None] * radius
    return A.astype(dtype)


def _vectors(rng, shape, dtype):
    x = rng.uniform(-1, 1, shape)
    if _dtypes.is_complex(np.dtype(dtype)):
        x = x + 1j * rng.uniform(-1, 1, shape)
    return x.astype(dtype)


# --- Non-finite trouble -------------------------------------------------------------------
# Inputs for tests of where inf and NaN land: a recurrence that composes decay products must
# put them where the serial loop does (see linscan's README, "inf and NaN").

#: Kinds of trouble :func:`poison` puts into a case.
POISONS = ("inf decay", "NaN decay", "zero decay", "inf input", "inf decay after zeros",
           "underflow", "tiny decays", "overflow")  # fmt: skip


def poison(kind, a, x, rng):
    """Put one kind of trouble (:data:`POISONS`) in place into ``(O, T, I)`` arrays ``a`` and
    ``x``, in a lane and at a step drawn from ``rng``."""
    O, T, I = x.shape
    o, t, i = rng.integers(0, O), rng.integers(0, T), rng.integers(0, I)
    if kind == "inf decay":
        a[o, t, i] = rng.choice([np.inf, -np.inf])
    elif kind == "NaN decay":
        a[o, t, i] = np.nan
    elif kind == "zero decay":
        a[o, t, i] = x[o, t, i] = 0.0
    elif kind == "inf input":
        x[o, t, i] = rng.choice([np.inf, -np.inf])
    elif kind == "inf decay after zeros":  # met by a state of exactly 0 (either way): the
        for u in (t - 1, t + 1):  # loop's inf * 0 is NaN
            if 0 <= u < T:
                a[o, u, i] = x[o, u, i] = 0.0
        a[o, t, i] = np.inf
    elif kind == "underflow":  # products reach 0 with no zero decay: an inf state survives
        a[o, t : t + 300, i] = 1e-3
    elif kind == "tiny decays":  # products of a few steps are 0 already (normal in float32:
        a[o, t : t + 64, i] = 1e-30  # the GPU flushes float32 subnormals to zero)
    else:  # the lane overflows for good (a state that overflows and then decays back into
        a[o, :, i] = 4.0  # range is what parallel methods do not follow: README, guarantees)


def poisoned(rng, shape, dtype, clean_first=False):
    """``(a, x, h0, grad_h)`` of ``dtype`` for an ``(O, T, I)`` shape: decays in [0.5, 1],
    normal inputs, 1 to 5 kinds of trouble (:func:`poison`), 30% of the initial states
    infinite. With ``clean_first`` the first lane has no trouble but an infinite initial
    state: over a long row its decays' product underflows, and the state must stay inf."""
    a = rng.uniform(0.5, 1.0, shape)
    x = rng.standard_normal(shape)
    clean = a[0, :, 0].copy(), x[0, :, 0].copy()
    for kind in rng.choice(POISONS, rng.integers(1, 6)):
        poison(kind, a, x, rng)
    h0 = rng.standard_normal((shape[0], shape[2]))
    h0[rng.random(h0.shape) < 0.3] = np.inf
    if clean_first:
        a[0, :, 0], x[0, :, 0] = clean
        h0[0, 0] = np.inf
    grad_h = rng.standard_normal(shape)
    return tuple(np.asarray(v, dtype) for v in (a, x, h0, grad_h))


def assert_same_values(got, want, dtype):
    """inf and NaN in the same places, with the same signs; finite values close. (For the
    tests of where non-finite values land; accuracy has its own tests.)"""
    for where in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(where(got), where(want))
    finite = np.isfinite(want)
    tol = 1e-3 if np.dtype(dtype).itemsize == 4 else 1e-9
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol)
