"""What only the GPU backend has: many tiles along time and channel groups, CPU-GPU agreement,
streams, the memory pool, 64-bit sizes, first calls racing to compile, and the rules for
NumPy mixed with CuPy. The tests both backends share (properties against the oracle,
aliasing, determinism, non-finite values) run on the GPU through the ``device`` fixture
(tests/conftest.py). Skipped without a usable GPU."""

import numpy as np
import pytest

import linscan
from helpers import ALL_DTYPES, Device, race, skip_module_without_gpu
from linscan.testing import (
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
)

pytestmark = pytest.mark.gpu
skip_module_without_gpu(__name__)

import cupy  # noqa: E402

METHODS = ("auto", "sequential", "parallel")
ALL = ALL_DTYPES
_cuda = Device("cuda")
gpu, host, on_gpu = _cuda.put, _cuda.get, _cuda.puts


def test_gpu_view_helper_keeps_strides():
    base = np.arange(24.0).reshape(4, 6)
    for view in (base[:, ::2], base.T, base[::-1, 1:], np.flip(base, 1)):
        dev = gpu(view)
        assert dev.strides == view.strides
        np.testing.assert_array_equal(cupy.asnumpy(dev), view)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "shape, axis, decay_form",
    [((1, 200_000), 1, "full"), ((37, 5000), 1, "per_step"), ((5000, 37), 0, "per_channel"),
     ((3, 2000, 33), 1, "full"), ((2000, 1024), 0, "per_step"), ((4096, 1, 4), 0, "scalar"),
     ((300, 7, 200), 0, "per_channel"), ((2**19,), 0, "scalar"), ((3000, 256), 0, "full"),
     ((2, 1000, 107), 1, "scalar")],
)  # fmt: skip
def test_long_sequences_every_layout(method, reverse, shape, axis, decay_form):
    """Many tiles along time (look-back across windows), many channel groups, rows strung
    along flat time, both directions, broadcast decays read through their strides; with
    LINSCAN_FAST_KERNELS=1 the lean kernels take the rows and the time-major channels laid
    out as x (the last two layouts: chan_scan)."""
    rng = np.random.default_rng(sum(shape) + axis)
    full = rng.uniform(0.99, 1.0, shape).astype(np.float32)
    if decay_form == "per_step":
        a = full[(0,) * axis + (slice(None),) + (0,) * (len(shape) - axis - 1)].reshape(
            (-1,) + (1,) * (len(shape) - axis - 1)
        )
    elif decay_form == "per_channel":
        a = full[(0,) * (axis + 1)].reshape(shape[axis + 1 :]) if axis + 1 < len(shape) else 0.995
    elif decay_form == "scalar":
        a = 0.995
    else:
        a = full
    x = rng.standard_normal(shape).astype(np.float32)
    h0 = rng.standard_normal(shape[:axis] + shape[axis + 1 :]).astype(np.float32)
    gh = rng.standard_normal(shape).astype(np.float32)
    kw = dict(axis=axis, reverse=reverse)
    h = linscan.scan(gpu(a), gpu(x), gpu(h0), method=method, **kw)
    state = linscan.final_state(gpu(a), gpu(x), gpu(h0), method=method, **kw)
    grads = linscan.scan_backward(gpu(a), h, gpu(gh), gpu(h0), method=method, **kw)
    h_host = host(h)
    assert_scan_close(h_host, a, x, h0, **kw)
    assert_final_state_close(host(state), a, x, h0, **kw)
    assert_scan_backward_close(tuple(host(g) for g in grads), a, h_host, gh, h0, **kw)


def _drawn(rng, shape, dtype, low, high):
    values = rng.uniform(low, high, shape)
    if np.dtype(dtype).kind == "c":
        values = values * np.exp(1j * rng.uniform(-0.1, 0.1, shape))
    return values.astype(dtype)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize(
    "shape, axis, per_step",
    [((1, 60_000), 1, True), ((20_000, 33), 0, False), ((3, 20_000, 2), 1, True),
     ((2000, 128), 0, False)],
)  # fmt: skip
def test_long_sequences_every_dtype_with_resets(reverse, dtype, shape, axis, per_step):
    """Many tiles with resets per step (packed rows) or per element: tiles whose map ignores
    its input in some channels only, look-back that stops channel by channel."""
    rng = np.random.default_rng(sum(shape) + axis)
    a = _drawn(rng, shape, dtype, 0.99, 1.0)
    x = _drawn(rng, shape, dtype, -1.0, 1.0)
    h0 = _drawn(rng, shape[:axis] + shape[axis + 1 :], dtype, -1.0, 1.0)
    gh = _drawn(rng, shape, dtype, -1.0, 1.0)
    mask_shape = tuple(n if k == axis or not per_step else 1 for k, n in enumerate(shape))
    resets = rng.random(mask_shape) < 3e-4
    kw = dict(axis=axis, reverse=reverse)
    on = dict(kw, resets=gpu(resets))
    h = linscan.scan(gpu(a), gpu(x), gpu(h0), method="parallel", **on)
    state = linscan.final_state(gpu(a), gpu(x), gpu(h0), method="parallel", **on)
    grads = linscan.scan_backward(gpu(a), h, gpu(gh), gpu(h0), method="parallel", **on)
    assert h.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads)
    h_host = host(h)
    assert_scan_close(h_host, a, x, h0, resets=resets, **kw)
    assert_final_state_close(host(state), a, x, h0, resets=resets, **kw)
    grads = tuple(host(g) for g in grads)
    assert_scan_backward_close(grads, a, h_host, gh, h0, resets=resets, **kw)


def test_numpy_mixed_with_cupy_is_a_type_error():
    x = cupy.ones(5)
    with pytest.raises(TypeError, match=r"a must be a CuPy array or a scalar.*cupy\.asarray\(a\)"):
        linscan.scan(np.ones(5), x)
    with pytest.raises(TypeError, match="h0 must be a CuPy array"):
        linscan.scan(0.5, x, np.zeros(()))
    with pytest.raises(TypeError, match="out must be a CuPy array"):
        linscan.scan(0.5, x, out=np.empty(5))
    with pytest.raises(TypeError, match="out must be a NumPy array"):
        linscan.scan(0.5, np.ones(5), out=cupy.empty(5))
    with pytest.raises(TypeError, match="grad_h must be a CuPy array"):
        linscan.scan_backward(0.5, x, np.ones(5))
    # Python and NumPy scalars are values, welcome with CuPy arrays.
    h = linscan.scan(np.float64(0.5), x, 1.0)
    assert isinstance(h, cupy.ndarray)
    np.testing.assert_allclose(host(h), linscan.scan(0.5, np.ones(5), 1.0))


@pytest.mark.parametrize("method", METHODS)
def test_plain_calls_with_a_scalar_decay(method):
    """The validation shortcut for plain calls: a Python float decay, no h0, out= or not."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3000)).astype(np.float32)
    gh = rng.standard_normal((4, 3000)).astype(np.float32)
    h = linscan.scan(0.9, cupy.asarray(x), method=method)
    out = cupy.empty_like(h)
    assert linscan.scan(0.9, cupy.asarray(x), out=out, method=method) is out
    grads = linscan.scan_backward(0.9, h, cupy.asarray(gh), method=method)
    assert isinstance(h, cupy.ndarray) and isinstance(grads[0], cupy.ndarray)
    assert_scan_close(host(h), 0.9, x)
    assert_scan_close(host(out), 0.9, x)
    assert_scan_backward_close(tuple(host(g) for g in grads), 0.9, host(h), gh)


def test_same_errors_as_the_cpu_path():
    for call in (
        lambda xp: linscan.scan(xp.ones(3), xp.ones(4)),
        lambda xp: linscan.scan(0.5, xp.ones(3, xp.int32)),
        lambda xp: linscan.scan(0.5, xp.ones(3), axis=2),
        lambda xp: linscan.scan(0.5, xp.ones((2, 3)), xp.ones(3)),
        lambda xp: linscan.scan(0.5, xp.ones(3), method="fast"),
    ):
        with pytest.raises(Exception) as on_cpu:
            call(np)
        with pytest.raises(type(on_cpu.value)) as on_gpu:
            call(cupy)
        assert str(on_gpu.value) == str(on_cpu.value)


@pytest.mark.parametrize("method", ["sequential", "parallel", "auto"])
def test_non_finite_values_agree_with_the_cpu(method):
    """inf and NaN in x, h0 and a, and float32 overflow, land where the serial loop (the CPU's
    sequential method) puts them, with every GPU method: an infinite state survives decay
    products that underflow."""
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        a = rng.uniform(0.5, 1.0, (5, 20000)).astype(dtype)
        x = rng.uniform(0, 1, (5, 20000)).astype(dtype)
        h0 = np.array([0.0, 0.0, 0.0, np.inf, 0.0], dtype)
        x[0, 1000] = np.inf
        x[1, 500] = np.nan
        a[2, 12000] = np.nan
        a[4] = 2.0  # overflows
        cpu = linscan.scan(a, x, h0, method="sequential")
        got = host(linscan.scan(gpu(a), gpu(x), gpu(h0), method=method))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(cpu))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(cpu))
        assert np.isinf(got[4, -1]) and np.isnan(got[1, 500:]).all()
        finite = np.isfinite(cpu)
        assert_scan_close(np.where(finite, got, 0), np.where(finite, a, 0), np.where(finite, x, 0))


def test_runs_on_the_current_stream():
    rng = np.random.default_rng(4)
    a = cupy.asarray(rng.uniform(0.9, 1, (2, 200_000)).astype(np.float32))
    x = cupy.asarray(rng.standard_normal((2, 200_000)).astype(np.float32))
    want = linscan.scan(a, x)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = linscan.scan(a, x)
        grads = linscan.scan_backward(a, got, x)
    stream.synchronize()
    cupy.testing.assert_array_equal(got, want)
    cupy.testing.assert_array_equal(grads[1], linscan.scan_backward(a, want, x)[1])


def test_first_calls_from_eight_threads():
    """Kernels compile on first use; threads racing there all get correct results."""
    rng = np.random.default_rng(8)
    problems = [
        (rng.uniform(-1, 1, (3, 9000)).astype(dt), rng.standard_normal((3, 9000)).astype(dt))
        for dt in (np.float32, np.float64) * 4
    ]

    def work(k):
        a, x = (cupy.asarray(v) for v in problems[k])
        h = linscan.scan(a, x, method=("parallel", "sequential")[k % 2])
        return host(h), host(linscan.final_state(a, x))

    results = race(work)
    for (a, x), (h, state) in zip(problems, results):
        assert_scan_close(h, a, x)
        assert_final_state_close(state, a, x)


def test_zero_sizes_on_the_gpu():
    assert linscan.scan(0.5, cupy.empty((3, 0)), axis=1).shape == (3, 0)
    state = linscan.final_state(0.5, cupy.empty((3, 0)), cupy.full(3, 2.0))
    assert isinstance(state, cupy.ndarray)
    np.testing.assert_array_equal(host(state), [2.0] * 3)
    ga, gx, gh0 = linscan.scan_backward(
        cupy.ones((3, 0)), cupy.empty((3, 0)), cupy.empty((3, 0)), cupy.ones(3)
    )
    assert ga.shape == (3, 0) and isinstance(gh0, cupy.ndarray)
    np.testing.assert_array_equal(host(gh0), np.zeros(3))


def test_ten_thousand_calls_leave_the_memory_pool_where_it_was():
    rng = np.random.default_rng(14)
    a = cupy.asarray(rng.uniform(0.5, 1.0, (4, 3000)).astype(np.float32))
    x = cupy.asarray(rng.standard_normal((4, 3000)).astype(np.float32))
    pool = cupy.get_default_memory_pool()

    def calls(n):
        for k in range(n):
            method = METHODS[k % 3]
            h = linscan.scan(a, x, method=method)
            linscan.final_state(a, x, 0.5, method=method)
            linscan.scan_backward(a, h, x, 0.5, method=method)
        cupy.cuda.get_current_stream().synchronize()

    calls(30)
    used, held = pool.used_bytes(), pool.total_bytes()
    calls(10_000)
    assert pool.used_bytes() == used  # every scratch buffer and result was returned
    assert pool.total_bytes() <= held + 2**20  # and reused, not grown


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2**31 + 3,), (5, 2**29 + 7)], ids=["one row", "5 rows"])
def test_more_than_2_to_the_31_elements(shape):
    """64-bit indexing: 8.6 and 10.7 GB of float32, scanned in place."""
    x = cupy.ones(shape, np.float32)
    h = linscan.scan(np.float32(0.5), x, out=x)
    assert h is x
    # h[t] = 2 - 2^-t: exactly 1 at t = 0, 2.0 in float32 from t = 24 on.
    assert bool(cupy.all(h[..., 0] == 1.0)) and bool(cupy.all(h[..., 24:] == 2.0))
    head = host(h[..., :30])
    assert_scan_close(head, 0.5, np.ones(shape[:-1] + (30,), np.float32))
    del x, h
    cupy.get_default_memory_pool().free_all_blocks()
