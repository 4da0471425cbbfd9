"""linscan.dask: the in-memory functions on Dask arrays, chunked along any axes.

Each result is held to the float64 oracle with the in-memory tolerance (chunking regroups the
same terms: see linscan.testing) and must have the in-memory result's dtype and shape.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from helpers import SUMMARIES
from hypothesis import strategies as st

import linscan
from linscan import reference, testing
from linscan.testing import assert_same_values, poisoned

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
ld = pytest.importorskip("linscan.dask")

SYNC = {"scheduler": "synchronous"}
#: Each example builds and computes a Dask graph: a quarter of the profile's examples (50 under
#: the ci profile, 500 under long).
FEWER = settings(max_examples=max(10, settings.default.max_examples // 4))
DTYPES = (np.float32, np.float64, np.complex64, np.float16)


@st.composite
def chunks_of(draw, n, most=200):
    """Chunk sizes for an axis of length ``n``: 1 to ``most`` chunks of uneven sizes."""
    if n <= 1:
        return (n,)
    count = draw(st.integers(1, min(n, most)))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=count - 1, max_size=count - 1)))
    return tuple(np.diff([0, *cuts, n]).tolist())


@st.composite
def chunked(draw, value):
    """``value`` as a Dask array with random chunks (numbers and ``None`` stay as they are)."""
    if value is None or not isinstance(value, np.ndarray):
        return value
    chunks = tuple(draw(chunks_of(n)) for n in value.shape)
    return da.from_array(value, chunks=chunks)


def _compute(*values, path="kernel"):
    """Compute ``values`` on one thread, chunks summarized by ``path`` (``helpers.SUMMARIES``)."""
    with dask.config.set(SYNC), SUMMARIES[path]():
        return dask.compute(*values)


def _chunked_case(draw, case):
    return [draw(chunked(v)) for v in (case.a, case.x, case.h0, case.resets)]


@FEWER
@given(st.data())
def test_scan_matches_the_oracle_for_any_chunking(data):
    case = data.draw(testing.scan_cases(dtypes=DTYPES, max_steps=60))
    a, x, h0, resets = _chunked_case(data.draw, case)
    kw = dict(axis=case.axis, reverse=case.reverse, resets=resets)
    lazy = ld.scan(a, x, h0, **kw)
    expected = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    assert (lazy.shape, lazy.dtype) == (expected.shape, expected.dtype)
    (h,) = _compute(lazy, path=data.draw(st.sampled_from(list(SUMMARIES)), label="path"))
    assert (h.shape, h.dtype) == (expected.shape, expected.dtype)
    testing.assert_scan_close(h, case.a, case.x, case.h0, **case.kwargs)
    if isinstance(x, da.Array) and x.shape == lazy.shape:
        assert lazy.chunks == x.chunks


@FEWER
@given(st.data())
def test_final_state_matches_the_oracle_for_any_chunking(data):
    case = data.draw(testing.scan_cases(dtypes=DTYPES, max_steps=60))
    a, x, h0, resets = _chunked_case(data.draw, case)
    lazy = ld.final_state(a, x, h0, axis=case.axis, reverse=case.reverse, resets=resets)
    expected = linscan.final_state(case.a, case.x, case.h0, **case.kwargs)
    (state,) = _compute(lazy, path=data.draw(st.sampled_from(list(SUMMARIES)), label="path"))
    assert (state.shape, state.dtype) == (expected.shape, expected.dtype)
    testing.assert_final_state_close(state, case.a, case.x, case.h0, **case.kwargs)


@FEWER
@given(st.data())
def test_scan_backward_matches_the_oracle_for_any_chunking(data):
    case = data.draw(testing.backward_cases(dtypes=DTYPES, max_steps=60))
    h_mem = linscan.scan(case.a, case.x, case.h0, **case.kwargs)
    a, _, h0, resets = _chunked_case(data.draw, case)
    h, grad_h = data.draw(chunked(h_mem)), data.draw(chunked(case.grad_h))
    kw = dict(axis=case.axis, reverse=case.reverse, resets=resets)
    lazy = ld.scan_backward(a, h, grad_h, h0, **kw)
    expected = linscan.scan_backward(case.a, h_mem, case.grad_h, case.h0, **case.kwargs)
    path = data.draw(st.sampled_from(list(SUMMARIES)), label="path")
    grads = _compute(*[g for g in lazy if g is not None], path=path)
    grads = grads + (None,) * (3 - len(grads))
    for got, want in zip(grads, expected):
        if want is None:
            assert got is None
        else:
            assert (got.shape, got.dtype) == (want.shape, want.dtype)
    testing.assert_scan_backward_close(grads, case.a, h_mem, case.grad_h, case.h0, **case.kwargs)


@pytest.mark.parametrize("path", list(SUMMARIES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("count", [1, 2, 3, 17, 200])
def test_up_to_200_uneven_chunks_along_time(count, reverse, path):
    rng = np.random.default_rng(count)
    T = 1000
    cuts = np.sort(rng.choice(np.arange(1, T), count - 1, replace=False))
    chunks = tuple(np.diff([0, *cuts, T]).tolist())
    a = rng.uniform(0.9, 1.0, (3, T))
    x = rng.normal(size=(3, T))
    resets = rng.random((3, T)) < 0.003
    h0 = rng.normal(size=3)
    A, X, R = (da.from_array(v, chunks=(2, chunks)) for v in (a, x, resets))
    kw = dict(reverse=reverse, resets=resets)
    h, state = _compute(ld.scan(A, X, h0, reverse=reverse, resets=R),
                        ld.final_state(A, X, h0, reverse=reverse, resets=R), path=path)  # fmt: skip
    testing.assert_scan_close(h, a, x, h0, **kw)
    testing.assert_final_state_close(state, a, x, h0, **kw)
    g = rng.normal(size=(3, T))
    grads = _compute(*ld.scan_backward(A, da.from_array(h, chunks=(3, chunks)), g, h0,
                                       reverse=reverse, resets=R), path=path)  # fmt: skip
    testing.assert_scan_backward_close(grads, a, h, g, h0, **kw)


def _depth(collection) -> int:
    """The number of tasks on the longest dependency chain of ``collection``'s graph."""
    graph = dict(collection.__dask_graph__())
    deps = {key: dask.core.get_dependencies(graph, key) for key in graph}
    depth = {}

    def visit(key):
        if key not in depth:
            depth[key] = 1 + max((visit(d) for d in deps[key]), default=0)
        return depth[key]

    import sys

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    return max(visit(key) for key in graph)


def test_graph_depth_grows_with_the_log_of_the_number_of_chunks():
    depths = {}
    for count in (4, 64, 1024):
        x = da.ones((2, 4 * count), chunks=(2, 4))
        depths[count] = (_depth(ld.final_state(0.5, x)), _depth(ld.scan(0.5, x)))
    # 16 times the chunks: 4 more levels of the tree. final_state: one composition a level;
    # scan: two (the compositions, then the carries) and Dask's checkpoint before the second
    # pass (a reduction tree of its own over the carries).
    for k, per_level in ((0, 1), (1, 3)):
        assert depths[64][k] - depths[4][k] <= per_level * 4, depths
        assert depths[1024][k] - depths[64][k] <= per_level * 4, depths


def test_the_result_is_lazy_and_inputs_unchanged():
    calls = []

    def block(x, block_info=None):
        calls.append(1)
        return x

    x = da.ones((4, 30), chunks=(2, 7)).map_blocks(block, dtype=float, meta=np.empty((0, 0)))
    a = np.full(30, 0.5)
    before = a.copy()
    h = ld.scan(a, x, axis=-1)
    f = ld.final_state(a, x)
    g = ld.scan_backward(a, h, x, h0=np.zeros(4))
    assert calls == []
    _compute(h, f, *g)
    assert calls and np.array_equal(a, before)


def test_broadcast_inputs_h0_dask_and_numpy_mixed():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, (20, 1))  # a decay per step, broadcast over channels
    x = rng.normal(size=(20, 6))
    h0 = rng.normal(size=(1,))
    X = da.from_array(x, chunks=(3, 4))
    H0 = da.from_array(h0)
    (h,) = _compute(ld.scan(a, X, H0, axis=0))
    testing.assert_scan_close(h, a, x, h0, axis=0)
    grads = _compute(*ld.scan_backward(a, da.from_array(h, chunks=5), np.ones((20, 6)), H0,
                                       axis=0))  # fmt: skip
    assert grads[0].shape == (20, 1) and grads[2].shape == (1,)
    testing.assert_scan_backward_close(grads, a, h, np.ones((20, 6)), h0, axis=0)


def test_python_number_decay_and_h0():
    x = da.arange(12.0, chunks=5).reshape(3, 4)
    h = ld.scan(0.5, x, 1.0, axis=0)
    expected = linscan.scan(0.5, np.arange(12.0).reshape(3, 4), 1.0, axis=0)
    np.testing.assert_allclose(_compute(h)[0], expected, rtol=1e-15)
    ga, _, gh0 = _compute(*ld.scan_backward(0.5, h, da.ones((3, 4), chunks=2), 1.0, axis=0))
    want = linscan.scan_backward(0.5, expected, np.ones((3, 4)), 1.0, axis=0)
    assert ga.shape == () and gh0.shape == ()
    np.testing.assert_allclose(ga, want[0], rtol=1e-13)
    np.testing.assert_allclose(gh0, want[2], rtol=1e-13)


def test_docstring_examples():
    import doctest

    failed, tried = doctest.testmod(ld, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failed == 0 and tried >= 3


def test_errors_are_the_in_memory_errors():
    x = da.ones((3, 4), chunks=2)
    with pytest.raises(np.exceptions.AxisError):
        ld.scan(0.5, x, axis=2)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        ld.scan(0.5, da.ones(4, dtype=np.int32, chunks=2))
    with pytest.raises(ValueError, match="a and x must broadcast together"):
        ld.scan(da.ones(3, chunks=2), x)
    with pytest.raises(ValueError, match="method"):
        ld.final_state(0.5, x, method="fast")
    with pytest.raises(TypeError, match="resets must be a boolean array"):
        ld.scan(0.5, x, resets=da.zeros((3, 4), chunks=2))


@pytest.mark.parametrize("name", ["a", "x", "h0", "resets", "h", "grad_h"])
def test_unknown_chunk_sizes_are_named(name):
    """A Dask array of unknown chunk sizes (boolean indexing) is refused by name, before any
    graph is built."""
    known = da.from_array(np.arange(1.0, 13.0).reshape(2, 6), chunks=(1, 3))
    unknown = known[:, known[0] > 0]
    assert math.isnan(unknown.shape[1])
    values = dict(a=0.5, x=known, h0=None, resets=None, h=known, grad_h=known)
    values[name] = unknown if name != "resets" else unknown > 0
    if name == "h0":
        values["h0"] = known[known[:, 0] > 0, 0]
    match = rf"^{name} must have known chunk sizes"
    with pytest.raises(ValueError, match=match):
        if name in ("h", "grad_h"):
            ld.scan_backward(values["a"], values["h"], values["grad_h"], values["h0"])
        else:
            ld.scan(values["a"], values["x"], values["h0"], resets=values["resets"])


def test_empty_and_single_chunk():
    for shape, chunks in (((0, 3), 2), ((3, 0), 2), ((5, 3), -1)):
        x = np.arange(math.prod(shape), dtype=float).reshape(shape)
        X = da.from_array(x, chunks=chunks)
        h, f = _compute(ld.scan(0.9, X, axis=0), ld.final_state(0.9, X, 2.0, axis=0))
        np.testing.assert_allclose(h, linscan.scan(0.9, x, axis=0))
        np.testing.assert_allclose(f, linscan.final_state(0.9, x, 2.0, axis=0))


def test_empty_state_with_resets():
    """A number for ``a`` and ``h0`` against zero-size resets: the state maps broadcast to
    the resets' (empty) shape (found by CI's hypothesis run)."""
    x = np.zeros((1, 0, 0), np.float32)
    r = np.zeros((1, 0, 0), bool)
    got = _compute(ld.final_state(0.0, da.from_array(x), 0.0, axis=0, resets=da.from_array(r)))
    want = linscan.final_state(0.0, x, 0.0, axis=0, resets=r)
    assert got[0].shape == want.shape == (0, 0) and got[0].dtype == want.dtype


def _three_ways(a, x, h0, grad_h, chunks, path="kernel", **kw):
    """scan, final_state and scan_backward (at the serial loop's ``h``): the serial loop's
    results, then linscan.dask's on arrays of ``chunks``, its chunks summarized by ``path``
    (``helpers.SUMMARIES``)."""
    h = linscan.scan(a, x, h0, method="sequential", **kw)
    want = [h, linscan.final_state(a, x, h0, method="sequential", **kw),
            *linscan.scan_backward(a, h, grad_h, h0, method="sequential", **kw)]  # fmt: skip
    A, X, H, G = (da.from_array(v, chunks=chunks) for v in (a, x, h, grad_h))
    got = [ld.scan(A, X, h0, **kw), ld.final_state(A, X, h0, **kw),
           *ld.scan_backward(A, H, G, h0, **kw)]  # fmt: skip
    return want, list(_compute(*got, path=path))


@pytest.mark.parametrize("steps_per_chunk, path", [(7, "kernel"), (61, "kernel"), (401, "kernel"),
                                                   (61, "composed"), (401, "composed")])  # fmt: skip
def test_non_finite_values_follow_the_serial_loop(steps_per_chunk, path):
    """Every kind of trouble (helpers.poison) over many time chunks: the serial loop's
    results, inf and NaN in the same places. Chunks whose maps cannot stand for their steps
    (an infinite decay, a product beyond the range, an infinite state meeting the inf of an
    overflow) are walked from their true entering states, as in memory. (At most 100 chunks
    a row: the Dask graph of 7-step chunks of 6000 steps took a minute.)"""
    for seed in range(24):
        rng = np.random.default_rng(seed)
        rows, steps = [(1, 6000), (3, 2000), (6, 300)][seed % 3]
        steps = min(steps, 100 * steps_per_chunk)
        a, x, h0, grad_h = (v[..., 0] for v in poisoned(rng, (rows, steps, 1), np.float64))
        want, got = _three_ways(a, x, h0, grad_h, (rows, steps_per_chunk), path,
                                reverse=seed % 4 > 1)  # fmt: skip
        for g, w in zip(got, want):
            assert_same_values(g, w, np.float64)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("trouble", ["zero then inf", "inf then zero", "overflow then zero",
                                     "zero then overflow", "underflow into inf"])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("path", list(SUMMARIES))
def test_chunks_whose_products_are_nan_or_lost_follow_the_loop(path, reverse, trouble, dtype):
    """The cases that gave NaN for the loop's inf or number (issue 14): a chunk's decay product
    ``0 * inf`` or ``overflow * 0``, and products that underflow under an infinite state."""
    T, chunk = 400, 100
    a = np.full((2, T), 0.9)
    x = np.ones((2, T))
    h0 = np.array([1.0, np.inf])
    first, second = (30, 60) if not reverse else (60, 30)
    if trouble == "zero then inf":
        a[:, first], a[:, second] = 0.0, np.inf
    elif trouble == "inf then zero":
        a[:, first], a[:, second] = np.inf, 0.0
    elif trouble == "overflow then zero":  # (beyond float64 too: the CPU keeps float32
        a[:, 10:50], a[:, 70] = 1e30, 0.0  # states in float64 where it can)
    elif trouble == "zero then overflow":
        a[:, 5], a[:, 50:90] = 0.0, 1e30
    else:  # products of 1e-30 underflow in a few steps; the loop keeps the inf of h0
        a[:, 120:180] = 1e-30
    a, x, h0 = (v.astype(dtype) for v in (a, x, h0))
    grad_h = np.ones((2, T), dtype)
    want, got = _three_ways(a, x, h0, grad_h, (1, chunk), path, reverse=reverse)
    for g, w in zip(got, want):
        for part in (np.real, np.imag):  # each component's inf and NaN in place
            assert_same_values(part(g), part(w), dtype)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("path", list(SUMMARIES))
def test_inf_and_nan_inputs_and_states_are_followed(path, reverse):
    """What composing chunks can follow, it does: inf and NaN inputs, NaN decays and infinite
    initial states."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.0, (5, 1000))
    x = rng.standard_normal((5, 1000))
    x[0, 300], x[1, 500], a[2, 700] = np.inf, np.nan, np.nan
    h0 = np.array([0.0, 0.0, 1.0, 0.0, np.inf])
    want, got = _three_ways(a, x, h0, rng.standard_normal(a.shape), (5, 200), path,
                            reverse=reverse)  # fmt: skip
    for g, w in zip(got, want):
        assert_same_values(g, w, np.float64)
    h = got[0]
    assert np.isinf(h[4]).all() and np.isnan(h[1, 500:] if not reverse else h[1, :501]).all()


@pytest.mark.gpu
def test_cupy_chunks():
    cupy = pytest.importorskip("cupy")
    if not linscan._dispatch.gpu_status()[0]:
        pytest.skip("no usable GPU")
    rng = np.random.default_rng(2)
    a, x = rng.uniform(0.5, 1, (4, 300)), rng.normal(size=(4, 300))
    A = da.from_array(cupy.asarray(a), chunks=(2, 37))
    X = da.from_array(cupy.asarray(x), chunks=(2, 37))
    h, f = _compute(ld.scan(A, X, 1.0), ld.final_state(A, X, 1.0))
    assert isinstance(h, cupy.ndarray)
    testing.assert_scan_close(cupy.asnumpy(h), a, x, 1.0)
    testing.assert_final_state_close(cupy.asnumpy(f), a, x, 1.0)
    grads = _compute(*ld.scan_backward(A, da.from_array(h, chunks=(4, 50)), X, 1.0))
    testing.assert_scan_backward_close([cupy.asnumpy(g) for g in grads], a,
                                       cupy.asnumpy(h), x, 1.0)  # fmt: skip


def test_16_bit_gradients_summed_over_blocks_are_rounded_once():
    """A float16 decay per step, broadcast over rows that lie in different blocks: its
    gradient sums the blocks' parts unrounded and rounds once, as the in-memory sum does
    (rounding each block's part to float16 first errs by up to 1.5 units in the last place)."""
    rng = np.random.default_rng(21)
    a = rng.uniform(0.5, 1.0, (1, 400, 1)).astype(np.float16)
    x = rng.standard_normal((8, 400, 3)).astype(np.float32)
    g = rng.standard_normal((8, 400, 3)).astype(np.float32)
    h = linscan.scan(a, x, axis=1)
    want = linscan.scan_backward(a, h, g, axis=1)[0]
    (got,) = _compute(ld.scan_backward(a, da.from_array(h, chunks=(1, 50, 3)), g, axis=1)[0])
    assert got.dtype == np.float16 and got.shape == a.shape
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float16))
    assert ulps.max() <= 1 and np.count_nonzero(ulps) <= 0.02 * ulps.size, ulps.max()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("shape, axis", [((600,), 0), ((600, 3), 0), ((2, 600), 1)])
@pytest.mark.parametrize("path", list(SUMMARIES))
def test_decay_products_exact_through_a_subnormal_partial_product(path, dtype, shape, axis):
    """Decays 1e-160, 1e-160, 1e300 in one chunk (in one chain of a 128-step block, and in
    consecutive steps): a plain product passes through a subnormal (1e-320, with only a few
    digits) although its end (1e-20) is normal. Dask must give the loop's results, with the
    CPU's chunk summaries and with those of CuPy chunks (run here on NumPy) alike (issue
    14; the summaries themselves: tests/api/test_summary.py)."""
    a = np.ones(shape, dtype)
    lanes = np.moveaxis(a, axis, 0)  # (T, ...): a view
    for k, (step, decay) in enumerate(((0, 1e-160), (4, 1e-160), (8, 1e300))):
        lanes[70 + step] = decay
        lanes[130 + k] = decay
    x = np.zeros(shape)
    np.moveaxis(x, axis, 0)[0] = 1e300
    want = reference.scan(a, x, axis=axis)
    # Chunks of 300 steps hold a chained block for the CPU's summary kernel. The composed
    # summary runs here on the CPU's final_state, whose chained blocks lose these digits (a
    # known limit of the in-memory chains): chunks of 64 steps keep it to its serial loop.
    steps = 300 if path == "kernel" else 64
    X = da.from_array(x, chunks=tuple(steps if d == axis else -1 for d in range(x.ndim)))
    A = da.from_array(a, chunks=X.chunks)
    got, final = _compute(ld.scan(A, X, axis=axis), ld.final_state(A, X, axis=axis), path=path)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(final, want.take(-1, axis=axis), rtol=1e-13)
