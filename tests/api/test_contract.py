"""The contract under hostile use (issue 14): ndarray subclasses, masked arrays, ``out``
overlapping any input, more than 32 dimensions, objects that only speak DLPack, and Python
numbers beyond a 16-bit dtype's range. Each call gives the serial loop's answer or a named
TypeError / ValueError, before any work."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import linscan
from helpers import Twisted
from linscan import _dispatch, _layout, reference
from linscan.backends.cpu.backend import CPU

RNG = np.random.default_rng(14)


def matrix(arr):
    return np.matrix(arr)


def twisted(arr):
    return np.asarray(arr).view(Twisted)


def masked(arr):
    return np.ma.masked_array(arr, mask=np.zeros(np.shape(arr), bool))


def _inputs(T=300, O=4):
    """2-D inputs (np.matrix holds only 2-D arrays): ``O`` rows of ``T`` steps."""
    a = RNG.uniform(0.5, 1.0, (O, T))
    x = RNG.standard_normal((O, T))
    h0 = RNG.standard_normal((O, 1))
    resets = RNG.random((O, T)) < 0.05
    grad_h = RNG.standard_normal((O, T))
    return a, x, h0, resets, grad_h


SUBCLASSES = [matrix, twisted]


@pytest.mark.parametrize("wrap", SUBCLASSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", ["a", "x", "h0", "resets"])
@pytest.mark.parametrize("T", [300, 5000])
def test_scan_reads_subclasses_as_plain_arrays(wrap, name, T):
    """A 3-D problem whose argument ``name`` is given 2-D (np.matrix holds nothing else),
    broadcasting against the others."""
    O, K = 2, 3
    full = dict(
        a=RNG.uniform(0.5, 1.0, (O, K, T)),
        x=RNG.standard_normal((O, K, T)),
        h0=RNG.standard_normal((O, K)),
        resets=RNG.random((O, K, T)) < 0.05,
    )
    plain = dict(full)
    plain[name] = full[name] if name == "h0" else full[name][0]
    wrapped = dict(plain)
    wrapped[name] = wrap(plain[name])
    want = reference.scan(**plain)
    h = linscan.scan(**wrapped)
    assert type(h) is np.ndarray
    np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)
    last = linscan.final_state(**wrapped)
    assert type(last) is np.ndarray
    np.testing.assert_allclose(last, want[..., -1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrap", SUBCLASSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", ["a", "h", "grad_h", "resets"])
def test_scan_backward_reads_subclasses_as_plain_arrays(wrap, name):
    a, x, h0, resets, grad_h = _inputs(2000)
    h = reference.scan(a, x, h0[:, 0], resets=resets)
    plain = dict(a=a, h=h, grad_h=grad_h, resets=resets)
    wrapped = dict(plain)
    wrapped[name] = wrap(wrapped[name])
    want = reference.scan_backward(**plain, h0=h0[:, 0])
    got = linscan.scan_backward(**wrapped, h0=h0[:, 0])
    for g, w in zip(got, want):
        assert type(g) is np.ndarray
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("wrap", SUBCLASSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("T", [300, 5000])
def test_out_of_a_subclass_is_written_and_returned(wrap, T):
    a, x, h0, resets, grad_h = _inputs(T)
    out = wrap(np.zeros_like(x))
    h = linscan.scan(a, x, h0[:, 0], out=out)
    assert h is out
    np.testing.assert_allclose(np.asarray(out), reference.scan(a, x, h0[:, 0]), rtol=1e-12, atol=1e-12)
    outs = (wrap(np.zeros_like(a)), wrap(np.zeros_like(x)), None)
    got = linscan.scan_backward(a, np.asarray(out), grad_h, out=outs)
    assert got[0] is outs[0] and got[1] is outs[1] and got[2] is None
    want = reference.scan_backward(a, np.asarray(out), grad_h)
    np.testing.assert_allclose(np.asarray(got[0]), want[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(got[1]), want[1], rtol=1e-10, atol=1e-10)


SCAN_ARGS = ["a", "x", "h0", "resets", "out"]
BACKWARD_ARGS = ["a", "h", "grad_h", "h0", "resets", "out[0]", "out[1]", "out[2]"]


def _says_what_to_pass(message, name):
    """An input is told to pass ``.filled(value)``; an output, which receives results, that a
    masked array cannot be one (issue 14)."""
    if name.startswith("out"):
        assert "filled" not in message and "cannot be an out" in message, message
        assert message.endswith("pass a plain numpy.ndarray"), message
    else:
        assert f"pass {name}.filled(value)" in message, message


@pytest.mark.parametrize("function", [linscan.scan, linscan.final_state])
@pytest.mark.parametrize("name", SCAN_ARGS)
def test_masked_arrays_are_refused_by_name(function, name):
    a, x, h0, resets, _ = _inputs(50)
    kwargs = dict(a=a, x=x, h0=h0[:, 0], resets=resets)
    if name == "out":
        if function is linscan.final_state:
            pytest.skip("final_state has no out")
        kwargs["out"] = masked(np.zeros_like(x))
    else:
        kwargs[name] = masked(kwargs[name])
    with pytest.raises(TypeError, match=rf"^{name} must be a NumPy array without a mask") as e:
        function(**kwargs)
    _says_what_to_pass(str(e.value), name)
    if name == "out":
        assert not kwargs["out"].data.any()  # refused before any work


@pytest.mark.parametrize("name", BACKWARD_ARGS)
def test_masked_arrays_are_refused_by_scan_backward(name):
    a, x, h0, resets, grad_h = _inputs(50)
    kwargs = dict(a=a, h=x, grad_h=grad_h, h0=h0[:, 0], resets=resets)
    out = [np.zeros_like(a), np.zeros_like(x), np.zeros_like(h0[:, 0])]
    if name.startswith("out"):
        k = int(name[4])
        out[k] = masked(out[k])
    else:
        kwargs[name] = masked(kwargs[name])
    escaped = name.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(TypeError, match=rf"^{escaped}.* must be a NumPy array without a mask") as e:
        linscan.scan_backward(**kwargs, out=tuple(out))
    _says_what_to_pass(str(e.value), name)
    assert not any(np.asarray(o).any() for o in out)


# --- out overlapping an input -----------------------------------------------------------------


def _bytes_shared_with(resets: np.ndarray, layout: str):
    """A float64 array of resets' length whose bytes hold the resets, and the resets as a
    bool view of those bytes: packed at the start ("dense": resets[t] lies in element t // 8)
    or at the end, or one per element ("strided")."""
    n = resets.size
    buffer = np.zeros(n, np.float64)
    raw = buffer.view(np.uint8)
    flags = {"dense": raw[:n], "end": raw[-n:], "strided": raw[::8]}[layout].view(np.bool_)
    flags[...] = resets
    return buffer, flags


@pytest.mark.parametrize("T", [64, 5000])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("layout", ["dense", "end", "strided"])
def test_out_overlapping_resets(T, reverse, layout):
    a, x, h0, resets, grad_h = (v[0] for v in _inputs(T))
    resets[[5, T // 2]] = True
    buffer, flags = _bytes_shared_with(resets, layout)
    want = reference.scan(a, x, h0[0], reverse=reverse, resets=resets)
    h = linscan.scan(a, x, h0[0], reverse=reverse, resets=flags, out=buffer)
    np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)

    h = want
    want = reference.scan_backward(a, h, grad_h, h0[0], reverse=reverse, resets=resets)
    for k in (0, 1):
        buffer, flags = _bytes_shared_with(resets, layout)
        out = [None, None, None]
        out[k] = buffer
        got = linscan.scan_backward(
            a, h, grad_h, h0[0], reverse=reverse, resets=flags, out=tuple(out)
        )
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[1 - k], want[1 - k], rtol=1e-10, atol=1e-10)


class _ReadsStateLate(CPU):
    """The CPU backend with the GPU backend's initial state, a view of ``h0`` read throughout
    (``Backend.initial``), taken to the extreme the contract allows: each pass writes all of
    its outputs (NaN) before it reads the state. An ``out`` overlapping ``h0`` that ``_api``
    does not send through scratch memory gives NaN."""

    def initial(self, h0, shape, axis, dtype):
        if h0 is None:
            return None
        state = np.broadcast_to(h0.astype(dtype, copy=False), _layout.state_shape(shape, axis))
        O, _, I = _layout.dims(shape, axis)
        return state.reshape(O, I)  # a view here: the tests' h0 has the state's shape

    def scan(self, a, x, h, h0, reverse, method, resets=None):
        h[...] = np.nan
        super().scan(a, x, h, None if h0 is None else h0.copy(), reverse, method, resets)

    def backward(self, a, h, gh, h0, gx, ga, reverse, method, want_h0, resets=None):
        gx[...] = np.nan
        ga[...] = np.nan
        return super().backward(a, h, gh, None if h0 is None else h0.copy(), gx, ga, reverse,
                                method, want_h0, resets)  # fmt: skip


@pytest.fixture(params=["cpu", "reads h0 late"])
def state_reader(request, monkeypatch):
    if request.param != "cpu":
        late = _ReadsStateLate()
        monkeypatch.setattr(_dispatch, "backend", lambda device: (late, _dispatch._HOST))


@pytest.mark.parametrize("row", [0, 3, 5])
def test_out_overlapping_h0(state_reader, row):
    """h0 is a row of the very out passed (the same bytes): it is read as it was when the
    call was made, even by a backend that reads the initial state after writing out."""
    a, x, _, _, grad_h = _inputs(5000, O=6)
    out = RNG.standard_normal((6, 5000))
    h0 = out[row]
    assert np.shares_memory(h0, out)
    want = reference.scan(a, x, h0.copy(), axis=0)
    h = linscan.scan(a, x, h0, axis=0, out=out)
    assert h is out
    np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)

    h = want
    for k in (0, 1):
        buffer = RNG.standard_normal((6, 5000))
        h0 = buffer[row]
        h0[...] = want[0] * 0.5  # any values: those the gradients are checked against
        wants = reference.scan_backward(a, h, grad_h, h0.copy(), axis=0)
        out = [None, None, None]
        out[k] = buffer
        got = linscan.scan_backward(a, h, grad_h, h0, axis=0, out=tuple(out))
        assert got[k] is buffer
        for g, w in zip(got, wants):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


# --- more than 32 dimensions ------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [33, 40, 64])
def test_more_than_32_dimensions(ndim):
    core = (3, 2, 50)  # the squeezed problem: time is the last axis
    shape = (1,) * (ndim - len(core)) + core
    a = RNG.uniform(0.5, 1.0, (1,) * (ndim - 1) + (50,))  # broadcast over the lanes
    x = RNG.standard_normal(shape)
    h0 = RNG.standard_normal(shape[:-1])
    resets = RNG.random(shape) < 0.1
    want = reference.scan(a.reshape(50), x.reshape(core), h0.reshape(core[:-1]),
                          resets=resets.reshape(core))  # fmt: skip
    h = linscan.scan(a, x, h0, resets=resets)
    assert h.shape == shape
    np.testing.assert_allclose(h.reshape(core), want, rtol=1e-12, atol=1e-12)
    last = linscan.final_state(a, x, h0, resets=resets)
    np.testing.assert_allclose(last.reshape(core[:-1]), want[..., -1], rtol=1e-12, atol=1e-12)
    grads = linscan.scan_backward(a, h, x, h0, resets=resets)
    wants = reference.scan_backward(a.reshape(50), want, x.reshape(core),
                                    h0.reshape(core[:-1]), resets=resets.reshape(core))  # fmt: skip
    for g, w, like in zip(grads, wants, (a, x, h0)):
        assert g.shape == like.shape
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-10, atol=1e-10)


# --- objects that only speak DLPack -----------------------------------------------------------


class OnlyDLPack:
    """An array of a library no one knows: ``__dlpack__`` and nothing else."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, **kwargs):
        return self.arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


@pytest.mark.parametrize("function", [linscan.scan, linscan.final_state, linscan.scan_backward])
def test_a_library_results_cannot_return_to_is_refused_before_any_work(function, monkeypatch):
    from linscan.backends.cpu.backend import CPU

    def boom(*args, **kwargs):
        raise AssertionError("work started")

    for name in ("scan", "final_state", "backward"):
        monkeypatch.setattr(CPU, name, boom)
    args = [OnlyDLPack(np.ones(4))] * (3 if function is linscan.scan_backward else 2)
    kwargs = {}
    if function is linscan.scan_backward:  # a filled out[1] but not out[0]: grad_a is new
        kwargs["out"] = (None, OnlyDLPack(np.zeros(4)), None)
    with pytest.raises(TypeError, match="speaks DLPack but is not a library"):
        function(0.5, *args[1:], **kwargs)
    if kwargs:
        assert not kwargs["out"][1].arr.any()


def test_a_library_results_cannot_return_to_works_into_out():
    x, out = OnlyDLPack(np.ones(4)), OnlyDLPack(np.zeros(4))
    assert linscan.scan(0.5, x, out=out) is out
    np.testing.assert_allclose(out.arr, [1, 1.5, 1.75, 1.875])
    grads = (OnlyDLPack(np.zeros(())), OnlyDLPack(np.zeros(4)), None)
    assert linscan.scan_backward(0.5, out, x, out=grads) == grads
    np.testing.assert_allclose(grads[1].arr, [1.875, 1.75, 1.5, 1.0])


# --- Python numbers beyond a 16-bit dtype -----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "complex64"])
@pytest.mark.parametrize("value", [1e10, 70000, 1e39, -1e39 + 1j])
@pytest.mark.parametrize("full", [False, True], ids=["fast-path", "full-path"])
def test_a_number_beyond_the_dtype_warns_on_every_path(dtype, value, full):
    from linscan import _dtypes

    dtype = np.dtype(_dtypes.BFLOAT16 if dtype == "bfloat16" else dtype)
    if isinstance(value, complex) and dtype.kind != "c":
        pytest.skip("a complex number makes the result complex")
    x = np.ones(3, dtype)
    kwargs = dict(h0=0.0) if full else {}  # h0 leaves the fast path
    largest = float(_dtypes.finfo(dtype).max)
    beyond = max(abs(value.real), abs(value.imag)) if isinstance(value, complex) else abs(value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        linscan.scan(value, x, **kwargs)
    messages = [str(w.message) for w in caught]
    if beyond > largest * 1.001:
        assert len(messages) == 1, messages
        assert messages[0].startswith("a: the Python number") and dtype.name in messages[0]
        assert caught[0].filename == __file__  # attributed to the caller
    else:
        assert messages == []


def test_a_number_that_rounds_to_the_largest_value_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = linscan.scan(65519.0, np.ones(2, np.float16))
    assert np.isfinite(h[1])


def test_the_matrix_calls_that_crashed_run_in_a_fresh_process():
    """The reports of issue 14 (a np.matrix decay or out corrupted the heap or segfaulted),
    in a child process with a timeout, so that a regression fails this test instead of
    killing the test run."""
    script = textwrap.dedent(
        """
        import warnings
        import numpy as np, linscan
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        a = np.matrix(np.full((4, 2000), 0.5))
        h = linscan.scan(a, np.ones((4, 2000)))
        assert type(h) is np.ndarray and np.allclose(h[:, -1], 2.0), h[:, -1]
        out = np.matrix(np.empty((4, 2000)))
        assert linscan.scan(0.5, np.ones((4, 2000)), out=out) is out
        assert np.allclose(np.asarray(out)[:, -1], 2.0)
        small = linscan.scan(np.matrix([[0.5, 0.5, 0.5]]), np.ones((1, 3)))
        assert np.allclose(small, [[1.0, 1.5, 1.75]]), small
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
