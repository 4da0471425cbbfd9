"""``linscan.matscan`` on a GPU (opt-in: ``LINSCAN_GPU_MATRIX=1``, set here): against the
float64 serial loop over drawn cases, with the plan's chunks forced short so that every
kernel runs; long sequences against the CPU; ``out=x``; the current stream. The same kernels
built for the host are checked without a GPU in ``test_cuda_matrix.py``. Skipped without a
usable GPU."""

import numpy as np
import pytest
from helpers import skip_module_without_gpu
from hypothesis import given, settings
from hypothesis import strategies as st

import linscan
from linscan.testing import (
    assert_matscan_close,
    assert_matscan_final_state_close,
    matscan_cases,
)

pytestmark = pytest.mark.gpu
skip_module_without_gpu(__name__)

import cupy  # noqa: E402

from linscan.backends.cuda import matrix  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def opted_in():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LINSCAN_GPU_MATRIX", "1")
        yield


def _on_gpu(v):
    return None if v is None or np.isscalar(v) else cupy.asarray(v)


@settings(max_examples=min(settings.default.max_examples, 60))
@given(matscan_cases(max_steps=40), st.sampled_from([(64, 1), (1 << 16, 4)]),
       st.sampled_from(["auto", "parallel", "sequential"]))  # fmt: skip
def test_matscan_matches_the_loop(case, plan, method):
    saved = matrix.TARGET_THREADS, matrix.MIN_CHUNK
    matrix.TARGET_THREADS, matrix.MIN_CHUNK = plan
    try:
        h = linscan.matscan(_on_gpu(case.A), _on_gpu(case.x), _on_gpu(case.h0), axis=case.axis,
                            reverse=case.reverse, method=method)  # fmt: skip
        state = linscan.matscan_final_state(_on_gpu(case.A), _on_gpu(case.x), _on_gpu(case.h0),
                                            axis=case.axis, reverse=case.reverse,
                                            method=method)  # fmt: skip
    finally:
        matrix.TARGET_THREADS, matrix.MIN_CHUNK = saved
    assert isinstance(h, cupy.ndarray) and isinstance(state, cupy.ndarray)
    kw = dict(axis=case.axis, reverse=case.reverse)
    assert_matscan_close(cupy.asnumpy(h), case.A, case.x, case.h0, **kw)
    assert_matscan_final_state_close(cupy.asnumpy(state), case.A, case.x, case.h0, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("shape", [(1, 1 << 18), (64, 1 << 12)], ids=["one lane", "64 lanes"])
@pytest.mark.parametrize("form", ["constant", "per-step"])
def test_long_sequences_agree_with_the_cpu(dtype, shape, form):
    rng = np.random.default_rng(9)
    d = 3
    lanes, T = shape
    base = rng.standard_normal((d, d))
    base *= 0.99 / np.linalg.norm(base, 2)
    A = base if form == "constant" else base * rng.uniform(0.98, 1.0, (T, 1, 1))
    A = A.astype(dtype)
    x = rng.uniform(-1, 1, (lanes, T, d)).astype(dtype)
    for reverse in (False, True):
        expected = linscan.matscan(A, x, axis=1, reverse=reverse)
        got = cupy.asnumpy(linscan.matscan(cupy.asarray(A), cupy.asarray(x), axis=1,
                                           reverse=reverse))  # fmt: skip
        single = np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.complex64))
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=(1e-4 if single else 1e-10) * scale)


def test_out_may_be_x_and_the_current_stream_is_used():
    rng = np.random.default_rng(2)
    A = cupy.asarray(rng.uniform(-0.5, 0.5, (2, 2)))
    x = cupy.asarray(rng.uniform(-1, 1, (4096, 2)))
    expected = linscan.matscan(cupy.asnumpy(A), cupy.asnumpy(x), axis=0)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        result = linscan.matscan(A, x, axis=0, out=x)
    stream.synchronize()
    assert result is x
    np.testing.assert_allclose(cupy.asnumpy(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signal_on_cupy_arrays_as_scipy(dtype):
    ss = pytest.importorskip("scipy.signal")
    from linscan import signal

    rng = np.random.default_rng(6)
    sos = ss.butter(6, 0.05, output="sos").astype(dtype)  # (float64 ones make y float64)
    b, a = (v.astype(dtype) for v in ss.butter(3, 0.1))
    x = rng.standard_normal((3, 20000)).astype(dtype)
    zi = rng.standard_normal((3, 3, 2)).astype(dtype)
    gx, gzi = cupy.asarray(x), cupy.asarray(zi)
    y, zf = signal.sosfilt(sos, gx, zi=gzi)
    assert isinstance(y, cupy.ndarray) and y.dtype == dtype and zf.dtype == dtype
    wide = [v.astype(np.float64) for v in (sos, b, a, x, zi)]
    want, want_zf = ss.sosfilt(wide[0], wide[3], zi=wide[4])
    pairs = [
        (y, want),
        (zf, want_zf),
        (signal.lfilter(b, a, gx), ss.lfilter(wide[1], wide[2], wide[3])),
        (signal.sosfiltfilt(cupy.asarray(sos), gx), ss.sosfiltfilt(wide[0], wide[3])),
        (signal.filtfilt(b, a, gx), ss.filtfilt(wide[1], wide[2], wide[3])),
    ]
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    for ours, theirs in pairs:
        atol = tolerance * np.abs(theirs).max()
        np.testing.assert_allclose(cupy.asnumpy(ours), theirs, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("form", ["constant", "per-step"])
def test_backward_agrees_with_the_cpu(dtype, form):
    rng = np.random.default_rng(4)
    d, T, lanes = 3, 5000, 4
    base = rng.standard_normal((d, d)) * 0.9 / 3
    A = base if form == "constant" else base * rng.uniform(0.9, 1.0, (T, 1, 1, 1))
    A = A.astype(dtype)
    x, g = (rng.uniform(-1, 1, (T, lanes, d)).astype(dtype) for _ in range(2))
    h0 = rng.uniform(-1, 1, (lanes, d)).astype(dtype)
    single = np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.complex64))
    for reverse in (False, True):
        h = linscan.matscan(A, x, h0, axis=0, reverse=reverse)
        want = linscan.matscan_backward(A, h, g, h0, axis=0, reverse=reverse)
        got = linscan.matscan_backward(*(cupy.asarray(v) for v in (A, h, g, h0)), axis=0,
                                       reverse=reverse)  # fmt: skip
        for ours, theirs in zip(got, want):
            assert isinstance(ours, cupy.ndarray) and ours.dtype == theirs.dtype
            scale = np.abs(theirs).max()
            np.testing.assert_allclose(cupy.asnumpy(ours), theirs, rtol=0,
                                       atol=(1e-4 if single else 1e-10) * scale)  # fmt: skip


def test_the_filter_example_on_the_gpu():
    pytest.importorskip("scipy")
    from helpers import load_example

    residual, difference = load_example("filter_recording").main(["--samples", "2**18", "--gpu"])
    assert residual < 0.2 and difference < 1e-8
