"""Bad input: the documented exception, a message naming the argument, inputs untouched."""

import numpy as np
import pytest

import linscan

from helpers import Unchanged

AxisError = np.exceptions.AxisError
F32 = np.ones((3, 4), np.float32)


def arr(*shape, dtype=np.float64):
    return np.linspace(0.1, 0.9, int(np.prod(shape))).reshape(shape).astype(dtype)


# (call, exception type, fragments the message must contain)
SCAN_CASES = [
    # dtypes
    (dict(a=arr(3, dtype=np.int64), x=arr(3)), TypeError, ["a", "bfloat16, float32", "int64"]),
    (dict(a=arr(3), x=np.ones(3, bool)), TypeError, ["x", "bool"]),
    (dict(a=arr(3), x=arr(3, dtype=np.longdouble)), TypeError, ["x", "float128"]),
    (dict(a=arr(3), x=arr(3, dtype=np.clongdouble)), TypeError, ["x", "complex256"]),
    (dict(a=arr(3), x=np.array(["a", "b", "c"])), TypeError, ["x", "<U1"]),
    (dict(a=arr(3), x=np.array([1.0, None, 2.0], object)), TypeError, ["x", "object"]),
    (dict(a=arr(3), x=arr(3), h0=np.array(1, np.int32)), TypeError, ["h0", "int32"]),
    (dict(a=True, x=arr(3)), TypeError, ["a", "bool"]),
    (dict(a=arr(3), x="abc"), TypeError, ["x", "<U3"]),
    (dict(a=arr(3), x=[[1.0], [2.0, 3.0]]), TypeError, ["x", "list"]),
    (dict(a=arr(3), x={"not": "an array"}), TypeError, ["x"]),
    (dict(a=arr(3), x=np.ones(3, "datetime64[s]")), TypeError, ["x", "datetime64"]),
    (dict(a=arr(3), x=np.zeros(3, [("f", "f4")])), TypeError, ["x"]),
    (dict(a=2**2000, x=arr(3)), ValueError, ["a", "bits"]),
    # shapes
    (dict(a=arr(3), x=arr(4)), ValueError, ["a and x", "(3,)", "(4,)"]),
    (dict(a=arr(2, 3), x=arr(3), h0=arr(2), axis=0), ValueError, ["h0", "(3,)", "(2,)"]),
    (dict(a=arr(2, 3), x=arr(2, 3), h0=arr(4, 2)), ValueError, ["h0", "(2,)", "(4, 2)"]),
    (dict(a=arr(2, 3), x=arr(2, 3), h0=arr(1, 1, 2)), ValueError, ["h0", "(1, 1, 2)"]),
    # axis
    (dict(a=arr(3), x=arr(3), axis=1), AxisError, ["axis", "1", "dimension 1"]),
    (dict(a=arr(3), x=arr(3), axis=-2), AxisError, ["axis", "-2"]),
    (dict(a=arr(3), x=arr(3), axis=0.0), TypeError, ["axis", "integer", "float"]),
    (dict(a=arr(3), x=arr(3), axis=True), TypeError, ["axis", "integer"]),
    (dict(a=arr(3), x=arr(3), axis=None), TypeError, ["axis", "NoneType"]),
    (dict(a=0.5, x=1.0), AxisError, ["axis", "0-d"]),
    # flags and method
    (dict(a=arr(3), x=arr(3), reverse=1), TypeError, ["reverse", "True or False", "1"]),
    (dict(a=arr(3), x=arr(3), reverse="yes"), TypeError, ["reverse"]),
    (dict(a=arr(3), x=arr(3), method="fast"), ValueError, ["method", "'fast'", "sequential"]),
    (dict(a=arr(3), x=arr(3), method=None), TypeError, ["method", "NoneType"]),
    # out
    (dict(a=arr(3), x=arr(3), out=[0.0, 0.0, 0.0]), TypeError, ["out", "NumPy array", "list"]),
    (dict(a=arr(3), x=arr(3), out=np.empty(4)), ValueError, ["out", "(3,)", "(4,)"]),
    (
        dict(a=arr(3), x=arr(3), out=np.empty(3, np.float32)),
        TypeError,
        ["out", "float64", "float32"],
    ),
    (
        dict(a=F32[0], x=F32[0], out=np.empty(4, np.float64)),
        TypeError,
        ["out", "float32", "float64"],
    ),
]


def _check_message(exc, fragments):
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    "function, kwargs, error, fragments",
    [("scan", *case) for case in SCAN_CASES]
    + [("final_state", *case) for case in SCAN_CASES if "out" not in case[0]],
)
def test_scan_and_final_state_reject(function, kwargs, error, fragments):
    inputs = Unchanged(*kwargs.values())
    with pytest.raises(error) as exc:
        getattr(linscan, function)(**kwargs)
    _check_message(exc, fragments)
    inputs.check()


def test_read_only_out():
    out = np.empty(3)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        linscan.scan(arr(3), arr(3), out=out)


def test_failed_call_leaves_out_x_untouched():
    """out=x with a bad h0: nothing is written before validation fails."""
    x = arr(4, 3)
    before = x.copy()
    with pytest.raises(ValueError, match="h0"):
        linscan.scan(arr(4, 3), x, h0=arr(5), out=x, axis=0)
    np.testing.assert_array_equal(x, before)


SHARED = np.empty(3)
BACKWARD_CASES = [
    (dict(a=arr(3), h=arr(3), grad_h=arr(4)), ValueError, ["grad_h", "(3,)", "(4,)"]),
    (dict(a=arr(2, 3), h=arr(3), grad_h=arr(3)), ValueError, ["a", "shape of h", "(2, 3)"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), h0=arr(2)), ValueError, ["h0", "(2,)"]),
    (dict(a=arr(3), h=np.ones(3, np.int8), grad_h=arr(3)), TypeError, ["h", "int8"]),
    (dict(a=arr(3), h=arr(3), grad_h=np.ones(3, bool)), TypeError, ["grad_h", "bool"]),
    (dict(a=arr(3), h=2.0, grad_h=arr(3)), AxisError, ["axis"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), axis=2), AxisError, ["axis", "2"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), reverse=None), TypeError, ["reverse"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), method="x"), ValueError, ["method"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), out=[None] * 3), TypeError, ["out", "tuple", "list"]),
    (dict(a=arr(3), h=arr(3), grad_h=arr(3), out=(None, None)), TypeError, ["out", "length 2"]),
    (
        dict(a=arr(3), h=arr(3), grad_h=arr(3), out=(np.empty(2), None, None)),
        ValueError,
        ["out[0] (grad_a)", "(3,)", "(2,)"],
    ),
    (
        dict(a=0.5, h=arr(3), grad_h=arr(3), out=(np.empty(()), np.empty(3, np.float32), None)),
        TypeError,
        ["out[1] (grad_x)", "float64", "float32"],
    ),
    (
        dict(a=arr(3), h=arr(3), grad_h=arr(3), out=(None, None, np.empty(()))),
        ValueError,
        ["out[2] (grad_h0)", "None when h0 is None"],
    ),
    (
        dict(a=arr(3), h=arr(3), grad_h=arr(3), out=(SHARED, SHARED, None)),
        ValueError,
        ["out", "separate arrays"],
    ),
]


@pytest.mark.parametrize("kwargs, error, fragments", BACKWARD_CASES)
def test_scan_backward_rejects(kwargs, error, fragments):
    inputs = Unchanged(*kwargs.values())
    with pytest.raises(error) as exc:
        linscan.scan_backward(**kwargs)
    _check_message(exc, fragments)
    inputs.check()


def test_errors_come_before_any_work(monkeypatch):
    """Validation runs before the backend is touched: a failing call never reaches it."""
    from linscan import _dispatch

    def boom(device):
        raise AssertionError("the backend was reached")

    monkeypatch.setattr(_dispatch, "backend", boom)
    with pytest.raises(ValueError):
        linscan.scan(arr(3), arr(4))
    with pytest.raises(ValueError):
        linscan.scan_backward(arr(3), arr(3), arr(4))


def test_bad_thread_setting(monkeypatch):
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="LINSCAN_NUM_THREADS"):
        linscan.scan(arr(3), arr(3))
