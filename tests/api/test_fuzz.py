"""Hostile input: hypothesis throws anything at the public functions.

Every call must either return the right result (checked against the float64 serial oracle) or
raise TypeError, ValueError or numpy's AxisError with a message naming an argument; never
another exception, and never a changed input. Arrays come in every NumPy dtype (big-endian,
structured, object, datetime, strings), 0-d to 5-d, zero-size, as strided, reversed and
transposed views, as ndarray subclasses (``np.matrix``, one whose methods lie) and masked
arrays; ``out`` may share memory with any input, aligned or not; keywords come with wrong
types and out-of-range values.

Values: finite, NaN and +-inf, in every argument.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import linscan
from helpers import Twisted
from linscan import testing

ERRORS = (TypeError, ValueError, np.exceptions.AxisError)
NAMES = ("a", "x", "h0", "h", "grad_h", "axis", "reverse", "method", "out", "resets")

FLOATS = ["float16", "float32", "float64", "complex64", "complex128", ">f4", ">f8", ">c16"]


def _dtypes():
    return st.one_of(
        st.sampled_from([np.dtype(d) for d in FLOATS]),
        hnp.scalar_dtypes(),  # bool, ints, floats, complex, datetime64, timedelta64
        hnp.integer_dtypes(endianness="?"),
        hnp.byte_string_dtypes(max_len=3),
        hnp.unicode_string_dtypes(max_len=3),
        hnp.array_dtypes(allow_subarrays=True),  # structured
        st.just(np.dtype(object)),
    )


@st.composite
def arrays(draw, shape=None, dtype=None):
    """An array of any dtype and shape, as a view of some kind."""
    dtype = draw(_dtypes()) if dtype is None else np.dtype(dtype)
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4))
    if dtype.kind in "fc":
        specials = [0.0, -0.0, np.nan, np.inf, -np.inf]
        values = st.one_of(st.floats(-4, 4), st.sampled_from(specials))
        flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        arr = np.array(flat, dtype=np.float64).reshape(shape).astype(dtype)
        if dtype.kind == "c" and draw(st.booleans()):
            arr = arr + 1j * arr[::-1].reshape(shape) if arr.ndim else arr
    else:
        arr = draw(hnp.arrays(dtype, shape))
    kinds = ["plain", "reversed", "strided", "transposed", "readonly", "subclass", "masked"]
    kind = draw(st.sampled_from(kinds + ["matrix"] * (arr.ndim == 2)))
    if kind == "subclass":  # its methods lie: linscan must not call them
        arr = arr.view(Twisted)
    elif kind == "matrix":
        arr = np.matrix(arr)
    elif kind == "masked":
        arr = np.ma.masked_array(arr, mask=draw(hnp.arrays(np.bool_, arr.shape)))
    elif arr.ndim and kind == "reversed":
        arr = np.flip(np.flip(arr).copy())
    elif arr.ndim and kind == "strided":
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    elif arr.ndim and kind == "transposed":
        arr = np.ascontiguousarray(arr.T).T
    elif kind == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def junk():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.complex_numbers(),
        st.text(max_size=3),
        st.lists(st.floats(-2, 2), max_size=3),
        st.just(object()),
        st.just({"a": 1}),
        arrays(),
    )


@st.composite
def calls(draw, function):
    """Arguments of ``function``: mostly plausible, often broken in one or more places."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    float_dtype = st.sampled_from(FLOATS)

    def operand(plausible=0.8):
        if draw(st.floats(0, 1)) < plausible:
            return draw(arrays(shape, draw(float_dtype)))
        return draw(junk())

    kwargs = {}
    if function is linscan.scan_backward:
        args = [operand(), operand(), operand()]  # a, h, grad_h
    else:
        args = [operand(), operand()]  # a, x
    if draw(st.booleans()):
        state = shape[1:] if shape else ()
        kwargs["h0"] = (draw(arrays(state, draw(float_dtype))) if draw(st.floats(0, 1)) < 0.7
                        else draw(junk()))  # fmt: skip
    axis_values = st.one_of(st.integers(-6, 5), junk())
    for name, plausible in (
        ("axis", axis_values),
        ("reverse", st.one_of(st.booleans(), junk())),
        ("method", st.one_of(st.sampled_from(["auto", "sequential", "parallel"]), junk())),
        ("resets", st.one_of(arrays(shape, np.bool_), junk())),
    ):
        if draw(st.booleans()):
            kwargs[name] = draw(plausible)
    if function is linscan.scan and draw(st.integers(0, 3)) == 0:
        kwargs["out"] = draw(st.one_of(arrays(shape, draw(float_dtype)), junk()))
    if draw(st.integers(0, 3)) == 0:  # an out sharing memory with an input
        inputs = {k: v for k, v in enumerate(args) if _bytes_of(v)}
        inputs.update({k: v for k, v in kwargs.items() if k in ("h0", "resets") and _bytes_of(v)})
        if inputs:
            name = draw(st.sampled_from(sorted(inputs, key=str)))
            out_shape = shape
            if function is linscan.scan_backward:
                entry = draw(st.integers(0, 1))  # grad_a (like a) or grad_x (like h)
                out_shape = np.shape(args[0]) if entry == 0 else shape
            target, out = draw(overlapping(inputs[name], out_shape, draw(float_dtype)))
            if isinstance(name, int):
                args[name] = target
            else:
                kwargs[name] = target
            if function is linscan.scan_backward:
                kwargs["out"] = (out, None, None) if entry == 0 else (None, out, None)
            elif function is linscan.scan:
                kwargs["out"] = out
    return args, kwargs


def _bytes_of(value) -> bool:
    """Whether ``value`` is an array whose bytes another array may view (not objects)."""
    return isinstance(value, np.ndarray) and not value.dtype.hasobject


@st.composite
def overlapping(draw, target, shape, dtype):
    """``target`` copied into a byte buffer, and an array of ``shape`` and ``dtype`` viewing
    bytes of the same buffer that overlap it (or touch it, when either is empty)."""
    dtype = np.dtype(dtype)
    out_bytes = int(np.prod(shape)) * dtype.itemsize
    size = target.nbytes + 2 * out_bytes + 1
    buffer = np.zeros(size, np.uint8)
    lo = draw(st.integers(out_bytes, out_bytes + 1))  # sometimes unaligned
    first, last = max(0, lo - out_bytes + 1), lo + max(target.nbytes - 1, 0)
    start = draw(st.integers(first, last)) if first <= last else lo
    copy = buffer[lo : lo + target.nbytes].view(target.dtype).reshape(target.shape)
    copy[...] = np.asarray(target)
    out = buffer[start : start + out_bytes].view(dtype).reshape(shape)
    return copy, out


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return np.array(value, subok=False)  # a plain copy of the values (a masked array's data)
    if isinstance(value, (list, dict)):
        return copy.deepcopy(value)
    return value


def _unchanged(before, after):
    if isinstance(after, np.ndarray):
        after = np.asarray(after)
        return before.dtype == after.dtype and before.shape == after.shape and _same(before, after)
    if isinstance(after, (list, dict)):
        return repr(before) == repr(after)
    return True


def _same(before, after):
    if before.dtype == object:  # a copy holds the same objects: compare them by identity
        return all(b is a for b, a in zip(before.flat, after.flat))
    try:
        return bool(np.all((before == after) | ((before != before) & (after != after))))
    except (TypeError, ValueError):  # structured and other dtypes that do not compare
        return before.tobytes() == after.tobytes()


def _outs(kwargs):
    out = kwargs.get("out")
    return [v for v in (out if isinstance(out, tuple) else (out,)) if isinstance(v, np.ndarray)]


def _check(function, args, kwargs):
    """Call ``function``; return its result, or ``None`` after a documented error, and the
    inputs as they were before the call. Inputs are unchanged, but where a call that returned
    wrote an ``out`` that shares their memory (the caller asked for that); a call that raised
    has changed nothing."""
    names = list(range(len(args))) + [k for k in kwargs if k != "out"]
    inputs = list(args) + [kwargs[k] for k in names[len(args) :]]
    before = [_snapshot(v) for v in inputs]
    outs = _outs(kwargs)
    try:
        result = function(*args, **kwargs)
        returned = True
    except ERRORS as exc:
        message = str(exc)
        assert any(name in message for name in NAMES), f"{type(exc).__name__}: {message}"
        result, returned = None, False
    for old, new in zip(before, inputs):
        shared = isinstance(new, np.ndarray) and any(np.may_share_memory(new, o) for o in outs)
        assert (returned and shared) or _unchanged(old, new), "an input was modified"
    return result, dict(zip(names, before))


def test_a_call_that_raises_may_change_no_input_even_one_shared_with_out():
    """``_check``'s exemption for an input sharing memory with ``out`` holds only for a call
    that returned: a call that raised must have written nothing (issue 14)."""
    x = np.zeros(4)
    out = x[::-1]

    def writes_then_raises(x, out=None):
        out[...] = 1.0
        raise ValueError("x is wrong after all")

    with pytest.raises(AssertionError, match="an input was modified"):
        _check(writes_then_raises, (x,), {"out": out})
    x[...] = 0.0

    def writes(x, out=None):
        out[...] = 1.0
        return out

    _check(writes, (x,), {"out": out})  # asked for: out is written, and it shares x's memory


ORACLES = {
    linscan.scan: testing.assert_scan_close,
    linscan.final_state: testing.assert_final_state_close,
    linscan.scan_backward: testing.assert_scan_backward_close,
}


@pytest.mark.parametrize("function", list(ORACLES), ids=lambda f: f.__name__)
@given(data=st.data())
def test_the_truth_or_a_documented_error(function, data):
    args, kwargs = data.draw(calls(function))
    result, before = _check(function, args, kwargs)
    if result is not None:  # the oracle sees the inputs as they were when called
        kw = {k: before.get(k, v) for k, v in kwargs.items() if k in ("axis", "reverse", "resets")}
        ORACLES[function](result, *(before[k] for k in range(len(args))), before.get("h0"), **kw)


@pytest.mark.parametrize("function", [linscan.scan, linscan.final_state])
def test_every_dtype_is_accepted_or_named(function):
    """A fixed sweep next to the random one: each NumPy dtype as x."""
    for code in np.typecodes["All"] + "U" + "S" + "O":
        x = np.zeros(3, dtype=code)
        try:
            function(0.5, x)
        except TypeError as exc:
            assert "x must" in str(exc)
        else:
            assert np.dtype(code).kind in "fc"
