"""The matrix kernels (``kernels_cu/matrix.cu``) without a GPU: built for the host, each GPU
thread a fiber (``host_cuda.h``), and run by the CUDA backend's own plan and launches
(``linscan.backends.cuda.matrix.run``) under ``linscan.matscan`` itself, against the float64
serial loop; their NVRTC build; the opt-in gate. What it cannot show: the kernels on a GPU
(memory model, speed), which ``tests/cuda/test_gpu.py`` checks where there is one."""

import contextlib
import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
from host_build import build
from hypothesis import given, settings
from hypothesis import strategies as st

import linscan
from linscan import _matrix
from linscan.backends.cuda import matrix, source
from linscan.testing import (
    assert_matscan_close,
    assert_matscan_final_state_close,
    matscan_cases,
)

HERE = Path(__file__).resolve().parent
TYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.complex64): 2,
         np.dtype(np.complex128): 3}  # fmt: skip
#: Each launch starts blocks of 128 fibers: drawn cases are costly.
HOST_CASES = settings(max_examples=min(settings.default.max_examples, 60))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host_matrix")
    lib = build(folder, "host_matrix.cpp", source.assemble(matrix.FILE))
    for kernel in matrix.KERNELS:
        getattr(lib, f"run_{kernel}").restype = ctypes.c_int
    return lib


def _c(arg):
    """A launch argument as ctypes passes it: arrays by address, scalars by their C type."""
    if isinstance(arg, np.ndarray):
        return ctypes.c_void_p(arg.__array_interface__["data"][0])
    if isinstance(arg, np.int64):
        return ctypes.c_longlong(int(arg))
    if isinstance(arg, np.int32):
        return ctypes.c_int(int(arg))
    raise TypeError(f"a launch argument of type {type(arg).__name__}: not an exact C type")


def host_launcher(lib, launches=None):
    """``matrix.run``'s ``launch`` on the host build (``launches``: a list the kernels' names
    are appended to)."""

    def launch(kernel, dtype, d, threads, *args):
        if launches is not None:
            launches.append(kernel)
        if threads:
            run = getattr(lib, f"run_{kernel}")
            err = run(ctypes.c_int(TYPES[np.dtype(dtype)]), ctypes.c_int(d),
                      ctypes.c_longlong(threads), *map(_c, args))  # fmt: skip
            assert err == 0

    return launch


@contextlib.contextmanager
def on_host(lib, target=matrix.TARGET_THREADS, min_chunk=matrix.MIN_CHUNK, launches=None):
    """``linscan.matscan`` and ``matscan_final_state`` on NumPy arrays running the GPU's plan
    and kernels (built for the host), with ``target`` threads a call aims for and chunks of at
    least ``min_chunk`` steps (small ones force many chunks on short sequences)."""

    class Kernels:
        @staticmethod
        def scan(A5, x4, h4, s, reverse, method, write=True):
            matrix.run(A5, x4, h4, s, reverse, method, write, host_launcher(lib, launches), np)

        @staticmethod
        def backward(A5, h4, gh4, hb, gx4, gA, reverse, method):
            launch = host_launcher(lib, launches)
            return matrix.run_backward(A5, h4, gh4, hb, gx4, gA, reverse, method, launch, np)

    saved = _matrix._kernels, matrix.TARGET_THREADS, matrix.MIN_CHUNK
    _matrix._kernels = lambda args: (Kernels, contextlib.nullcontext())
    matrix.TARGET_THREADS, matrix.MIN_CHUNK = target, min_chunk
    try:
        yield
    finally:
        _matrix._kernels, matrix.TARGET_THREADS, matrix.MIN_CHUNK = saved


# --- the plan --------------------------------------------------------------------------------


@given(st.integers(1, 5000), st.integers(1, 100000), st.sampled_from(["auto", "parallel"]))
def test_chunks_cover_the_steps_without_an_empty_one(lanes, T, method):
    C, L = matrix.chunks(lanes, T, method)
    assert 1 <= C and (C - 1) * L < T <= C * L
    assert C == 1 or L >= matrix.MIN_CHUNK
    assert lanes * C <= max(matrix.TARGET_THREADS + lanes, lanes)  # no more than it aims for
    assert matrix.chunks(lanes, T, "sequential") == (1, T)


def test_chunks_fill_the_gpu_with_few_lanes_and_leave_many_whole():
    C, L = matrix.chunks(1, 1 << 20, "auto")
    assert C >= matrix.TARGET_THREADS // 2 or L == matrix.MIN_CHUNK
    assert matrix.chunks(1 << 17, 1 << 10, "auto") == (1, 1 << 10)


# --- against the loop ------------------------------------------------------------------------


@HOST_CASES
@given(matscan_cases(max_steps=24), st.sampled_from([(64, 1), (1 << 16, 4), (1 << 16, 64)]),
       st.sampled_from(["parallel", "sequential"]))  # fmt: skip
def test_matscan_matches_the_loop(library, case, plan, method):
    target, min_chunk = plan
    with on_host(library, target, min_chunk):
        h = linscan.matscan(case.A, case.x, case.h0, axis=case.axis, reverse=case.reverse,
                            method=method)  # fmt: skip
    assert_matscan_close(h, case.A, case.x, case.h0, axis=case.axis, reverse=case.reverse)


@HOST_CASES
@given(matscan_cases(max_steps=24), st.sampled_from([(64, 1), (1 << 16, 3)]))
def test_final_state_matches_the_loop(library, case, plan):
    with on_host(library, *plan):
        state = linscan.matscan_final_state(case.A, case.x, case.h0, axis=case.axis,
                                            reverse=case.reverse, method="parallel")  # fmt: skip
    assert_matscan_final_state_close(state, case.A, case.x, case.h0, axis=case.axis,
                                     reverse=case.reverse)  # fmt: skip


@pytest.mark.parametrize("form", ["per-step", "constant"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_many_chunks_of_a_long_sequence(library, form, dtype):
    """Three lanes of 3000 steps in 22 chunks each (the maps reduced and scanned, in chunks
    of chunks, and the chunks walked; a constant matrix raised to the chunk's length on the
    host), both directions, a Butterworth-like pair of poles near the unit circle (the
    composed maps' accuracy)."""
    rng = np.random.default_rng(5)
    d, T = 2, 3000
    r, w = 0.999, 0.01
    rotation = r * np.array([[np.cos(w), -np.sin(w)], [np.sin(w), np.cos(w)]])
    A = rotation if form == "constant" else rotation * rng.uniform(0.99, 1.0, (T, 1, 1))
    A = A.astype(dtype)
    x = rng.uniform(-1, 1, (3, T, d)).astype(dtype)
    h0 = rng.uniform(-1, 1, (3, d)).astype(dtype)
    launches = []
    for reverse in (False, True):
        with on_host(library, 64, 8, launches):
            h = linscan.matscan(A, x, h0, axis=1, reverse=reverse)
        assert_matscan_close(h, A, x, h0, axis=1, reverse=reverse)
    # In each direction: the 21 maps of a lane scanned in 2 chunks, whose one map is walked
    # alone, then those 2 chunks walked, then the lanes' 22 chunks.
    reduce = "mat_reduce" if form == "constant" else "mat_reduce_product"
    assert launches == [reduce, reduce, "mat_walk", "mat_walk", "mat_walk"] * 2


def test_a_non_finite_map_walks_its_lane_whole(library):
    """An inf in one chunk of one lane: that lane's composed state is not finite, so it is
    walked in one piece from its entering state, giving the loop's infs and NaNs where the
    loop has them; the other lane keeps its chunks."""
    rng = np.random.default_rng(3)
    A = rng.uniform(-0.5, 0.5, (2, 200, 2, 2))
    x = rng.uniform(-1, 1, (2, 200, 2))
    A[0, 50, 0, 1] = np.inf
    with on_host(library, 8, 4):
        h = linscan.matscan(A, x, axis=1)
    expected = linscan.matscan(A, x, axis=1, method="sequential")  # the CPU's loop
    assert np.array_equal(np.isnan(h), np.isnan(expected))
    assert np.array_equal(np.isinf(h), np.isinf(expected))
    finite = np.isfinite(expected)
    assert not finite[0].all() and finite[1].all()
    np.testing.assert_allclose(h[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_a_state_that_overflows_once_rounded_walks_its_lane_whole(library):
    """float32 states past its range at the end of a chunk (16 steps) that shrink back later:
    composed in float64 the later chunks' entering states are finite, but the loop's are inf
    from the overflow on, and so must ours be (a review found the chunks after it
    restarting finite). A state that overflows inside a chunk and is back in range by its
    end stays the documented difference (README, "inf and NaN")."""
    A = np.ones((64, 1, 1), np.float32)
    A[:21], A[21:42] = 1e3, 1e-3  # past float32's range from t = 12, back to 1 at t = 41
    x = np.zeros((64, 1), np.float32)
    h0 = np.ones(1, np.float32)
    expected = linscan.matscan(A, x, h0, axis=0, method="sequential")  # the CPU's loop
    assert np.isinf(expected[12:]).all() and np.isfinite(expected[:12]).all()
    with on_host(library, 4, 8):
        h = linscan.matscan(A, x, h0, axis=0)
    assert np.array_equal(np.isinf(h), np.isinf(expected))
    np.testing.assert_allclose(h[:12], expected[:12], rtol=1e-6)


def test_out_may_be_x_itself(library):
    rng = np.random.default_rng(4)
    A = rng.uniform(-0.5, 0.5, (3, 3))
    x = rng.uniform(-1, 1, (500, 3))
    expected = linscan.matscan(A, x, axis=0)
    with on_host(library, 8, 16):
        result = linscan.matscan(A, x, axis=0, out=x)
    assert result is x
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-13)


# --- the build and the gate ------------------------------------------------------------------


def test_every_instantiation_compiles_with_nvrtc():
    """All four work types and state sizes 1 to 8, for sm_90, without warnings; the walks
    spill a few bytes at most (ptxas spilled 8 bytes in one). The reduction with a matrix
    product per step holds two d x d matrices of the wide type and may spill at d = 8 (real)
    or from d = 5 (complex: 0.9 to 6.8 KB at d = 6 to 8), a cost not measured yet on a GPU;
    the reduction without products (a matrix constant in time, as a filter's) does not."""
    pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed to compile kernels")
    cubin, log = source.compile_offline("sm_90", matrix.all_name_expressions(), matrix.FILE)
    assert cubin[:4] == b"\x7fELF"
    quiet = ("ptxas info", "ptxas         .")
    noise = [line for line in log.splitlines() if line.strip() and not line.startswith(quiet)]
    assert not noise, "\n".join(noise)
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    assert len(entries) == len(matrix.all_name_expressions())
    stores = dict(
        re.findall(r"Function properties for (\w+)\n[^\n]*?(\d+) bytes spill stores", log)
    )
    spilled = {name: int(stores[name]) for name in entries if stores[name] != "0"}
    products = {name for name in spilled if "ELb1EE" in name}  # mat_reduce<S, D, true>
    assert all(n <= 64 for name, n in spilled.items() if name not in products), spilled
    # The reduction with products may spill only for real d = 8 or complex d >= 5.
    allowed = re.compile(r"mat_reduceI(fLi8|dLi8|NS_7ComplexI[fd]EELi[5-8])ELb1E")
    assert all(allowed.search(name) for name in products), spilled


def test_cupy_arrays_need_the_opt_in(monkeypatch):
    cupy = pytest.importorskip("cupy")
    from fake_gpu import FakeGPU

    assert cupy
    gpu = FakeGPU()  # CuPy arrays over fake memory: nothing here may launch
    x, A_on_gpu = gpu.empty((4, 2), np.float64), gpu.empty((2, 2), np.float64)
    A = np.eye(2)
    monkeypatch.delenv("LINSCAN_GPU_MATRIX", raising=False)
    opt_in = "must be a NumPy array: on CuPy arrays linscan.{} runs the GPU kernels of the " + (
        r"matrix recurrences, .* opt-in \(LINSCAN_GPU_MATRIX=1 in the environment\)"
    )
    for call in (linscan.matscan, linscan.matscan_final_state):
        with pytest.raises(TypeError, match="^A " + opt_in.format("matscan")):
            call(A_on_gpu, x)
    with pytest.raises(TypeError, match="^h0 " + opt_in.format("matscan")):
        linscan.matscan(A, np.zeros((4, 2)), h0=gpu.empty((2,), np.float64))
    with pytest.raises(TypeError, match="LINSCAN_GPU_MATRIX=1"):
        linscan.matscan_backward(A_on_gpu, x, x)
    monkeypatch.setenv("LINSCAN_GPU_MATRIX", "1")
    with pytest.raises(TypeError, match="must be a CuPy array or a scalar"):
        linscan.matscan(A, x)  # host A beside device x
    with pytest.raises(TypeError, match="must be a CuPy array or a scalar"):
        linscan.matscan_backward(A_on_gpu, x, np.zeros((4, 2)))
    from linscan import signal

    sos = [[1.0, 0.0, 0.0, 1.0, -0.5, 0.0]]
    with pytest.raises(TypeError, match="must be a CuPy array or a scalar"):
        signal.sosfilt(sos, x, axis=0, zi=np.zeros((1, 2, 2)))  # host zi beside device x
    monkeypatch.delenv("LINSCAN_GPU_MATRIX")
    with pytest.raises(TypeError, match="^x " + opt_in.format("signal")):
        signal.sosfilt(sos, x, axis=0)
    with pytest.raises(TypeError, match="x must be a CuPy array or a scalar"):
        signal.sosfilt(sos, np.zeros((4, 2)), axis=0, zi=gpu.empty((1, 2, 2)))  # device zi


def test_signal_stages_beyond_the_matrix_scan_s_state_are_refused(monkeypatch):
    from linscan import signal

    monkeypatch.setattr(signal, "_BY_MATSCAN", True)
    b, a = np.ones(10), np.r_[1.0, np.zeros(9)] + 0.01
    with pytest.raises(ValueError, match="a stage of order 9 on CuPy arrays"):
        signal.lfilter(b, a, np.ones(20))


@pytest.mark.parametrize(
    "test",
    [
        "test_matscan_matches_the_loop",
        "test_matscan_final_state_matches_the_loop",
        "test_matscan_backward_matches_the_loop",
        "test_backward_is_the_gradient",
        "test_split_time_with_a_constant_matrix_is_exact",
        "test_split_time_backward_is_the_loops",
        "test_non_finite_values_as_in_the_loop",
        "test_out_may_be_x_and_other_outs",
        "test_empty_inputs",
    ],
)
@pytest.mark.parametrize("plan", [(16, 2), (1 << 16, 64)], ids=["short chunks", "natural"])
def test_the_matscan_suite_on_the_gpu_kernels(library, test, plan):
    """``tests/api/test_matscan.py``'s tests of results (against the loop, the gradient by
    finite differences, non-finite values, aliasing, empty inputs) on the GPU's kernels built
    for the host: every call of ``matscan``, ``matscan_final_state`` and ``matscan_backward``
    in them runs the GPU's plan and kernels."""
    suite = _api_tests("test_matscan")
    function = getattr(suite, test)
    launches = []
    with on_host(library, *plan, launches):
        if test == "test_non_finite_values_as_in_the_loop":
            for poison in ("inf x", "nan x", "inf A", "inf grad_h", "nan grad_h"):
                function(poison)
        elif "matches_the_loop" in test:
            for method in ("auto", "sequential", "parallel"):
                if test == "test_matscan_matches_the_loop":
                    function(config="natural", method=method)
                else:
                    function(config="natural")
                    break  # (these draw the method)
        else:
            function()
    assert launches or test == "test_empty_inputs"


# --- linscan.signal as matrix scans (its path on CuPy arrays) ---------------------------------


def _api_tests(name):
    """The module ``tests/api/<name>.py`` (its tests, run again here on another path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_api_{name}", HERE.parent / "api" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "test", ["test_lfilter_as_scipy", "test_sosfilt_as_scipy", "test_forward_backward_as_scipy"]
)
def test_signal_by_matscan_as_scipy(library, test, monkeypatch):
    """``linscan.signal``'s property tests against scipy, every stage a matrix scan (the path
    of CuPy arrays) on the GPU's kernels built for the host, with short chunks; and an inf
    or NaN sample spreading as in scipy (a review found infs where scipy has NaNs)."""
    pytest.importorskip("scipy")
    from linscan import signal

    monkeypatch.setattr(signal, "_BY_MATSCAN", True)
    launches = []
    suite = _api_tests("test_signal")
    with on_host(library, 16, 2, launches):
        getattr(suite, test)()
        if test == "test_sosfilt_as_scipy":  # and inf or NaN spreading as in scipy
            for where in (5, 3000, 9000, -1):
                for value in (np.nan, np.inf):
                    suite.test_non_finite_samples_in_pieces_as_scipy(where, value)
    assert {"mat_reduce", "mat_walk"} <= set(launches)
