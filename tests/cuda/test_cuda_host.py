"""row_scan's CUDA source (``kernels_cu/rows.cuh``) built for the host and run, each GPU thread
a host thread (``host_cuda.h``), against the serial oracle: the kernel's own index arithmetic,
exchanges, shuffles, look-back and non-finite paths execute without a GPU. What it cannot
show: blocks running at once, the GPU's memory model, speed. Needs a C++20 compiler."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linscan import reference
from linscan.backends.cuda import plan, source
from linscan.testing import POISONS, assert_final_state_close, assert_scan_close, poison

HERE = Path(__file__).resolve().parent
TYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.complex64): 2,
         np.dtype(np.complex128): 3}  # fmt: skip


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build row_scan for the host")
    kernels = source.assemble("rows.cuh")
    acquire = 'asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");'
    assert acquire in kernels, "load_acquire changed: update the host build"
    kernels = kernels.replace(acquire, "v = host_load_acquire(p);")
    text = (HERE / "host_rows.cpp").read_text()
    text = text.replace("// @KERNELS@", '#include "host_cuda.h"\n' + kernels)
    folder = tmp_path_factory.mktemp("host_rows")
    (folder / "host_rows.cpp").write_text(text)
    built = folder / "host_rows.so"
    done = subprocess.run(
        [compiler, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-I", str(HERE),
         "-o", str(built), str(folder / "host_rows.cpp")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    lib = ctypes.CDLL(str(built))
    lib.run_row_scan.restype = ctypes.c_int
    return lib


def row_scan(lib, a, x, h0=None, resets=None, *, mode="forward", down=False, hide=True, seed=0):
    """row_scan on ``(O, T)`` arrays of one channel, as the CUDA backend would launch it:
    ``a`` an array laid out as ``x`` or a scalar (by value), ``h0`` ``(O,)`` or None."""
    x = np.ascontiguousarray(x)
    O, T = x.shape
    dtype = x.dtype
    code = plan.FORWARD if mode == "forward" else plan.FINAL
    launch = plan.launch(O, T, 1, dtype.itemsize, code, "parallel", flat=True,
                         resets=resets is not None)  # fmt: skip
    assert launch.kernel == "row_scan" and launch.threads == 128
    by_value = np.ndim(a) == 0
    a_arr = None if by_value else np.ascontiguousarray(a, dtype)
    value = np.array(a if by_value else 0, dtype)
    r = None if resets is None else np.ascontiguousarray(resets, np.uint8)
    h0_arr = None if h0 is None else np.ascontiguousarray(h0, dtype)
    h0_so = 0 if h0_arr is not None and h0_arr.shape == (1,) else 1  # (1,): broadcast to rows
    y = np.full((O, T), np.nan, dtype)
    s_out = np.full(O, np.nan, dtype)
    grid = launch.grid
    status = np.zeros(1 + grid, np.uint32)
    agg_a, agg_b, incl = (np.zeros(grid, dtype) for _ in range(3))
    agg_r = np.zeros(grid, np.int32)

    def ptr(arr):
        return None if arr is None else arr.ctypes.data_as(ctypes.c_void_p)

    err = lib.run_row_scan(
        TYPES[dtype], code, ptr(a_arr), ptr(value), ptr(r), ptr(x), ptr(h0_arr),
        ctypes.c_longlong(h0_so), ptr(y), ptr(s_out), ctypes.c_longlong(O * T), ctypes.c_longlong(T),
        int(down), ctypes.c_longlong(grid), ptr(status) if launch.chained else None, ptr(agg_a),
        ptr(agg_b), ptr(agg_r), ptr(incl), ctypes.c_uint(seed), int(hide),
    )  # fmt: skip
    assert err == 0
    if launch.chained:  # every tile took a number and published its prefix
        assert status[0] == grid and np.all(status[1:] == 2)
    return y if mode == "forward" else s_out


@st.composite
def cases(draw):
    dtype = np.dtype(draw(st.sampled_from(sorted(TYPES, key=str))))
    O = draw(st.integers(1, 5))
    T = draw(st.sampled_from([1, 2, 5, 15, 16, 17, 31, 100, 1023, 1024, 2048, 2049, 5000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    real = np.float32 if dtype.itemsize <= 4 or dtype == np.complex64 else np.float64
    if draw(st.booleans()):
        a = real(rng.uniform(0.5, 1.0)) if dtype.kind == "f" else dtype.type(0.9 + 0.1j)
    else:
        a = rng.uniform(-1, 1, (O, T))
        if dtype.kind == "c":
            a = a * np.exp(1j * rng.uniform(-np.pi, np.pi, a.shape))
        a = a.astype(dtype)
    x = rng.normal(size=(O, T)) + (1j * rng.normal(size=(O, T)) if dtype.kind == "c" else 0)
    h0 = None
    if draw(st.booleans()):
        h0 = (rng.normal(size=O) + (1j if dtype.kind == "c" else 0)).astype(dtype)
    density = draw(st.sampled_from([None, 0.001, 0.05, 0.5]))
    resets = None if density is None else rng.random((O, T)) < density
    return dict(a=a, x=x.astype(dtype), h0=h0, resets=resets, down=draw(st.booleans()),
                hide=draw(st.booleans()), seed=draw(st.integers(0, 1000)))  # fmt: skip


def _oracle_args(case):
    a, x = case["a"], case["x"]
    h0 = None if case["h0"] is None else case["h0"][:, None]
    return (np.broadcast_to(a, x.shape)[..., None], x[..., None], h0), dict(
        axis=1, reverse=case["down"], resets=None if case["resets"] is None else
        case["resets"][..., None],
    )  # fmt: skip


@given(case=cases())
def test_row_scan_matches_the_oracle(library, case):
    """Every dtype row_scan computes in (16-bit storage aside), a decay array or a value,
    rows shorter and longer than a thread's items and a tile, resets, h0, both directions,
    published prefixes hidden or not: forward and final."""
    options = dict(down=case["down"], hide=case["hide"], seed=case["seed"])
    h = row_scan(library, case["a"], case["x"], case["h0"], case["resets"], **options)
    state = row_scan(library, case["a"], case["x"], case["h0"], case["resets"], mode="final",
                     **options)  # fmt: skip
    args, kwargs = _oracle_args(case)
    assert_scan_close(h[..., None], *args, **kwargs)
    assert_final_state_close(state[:, None], *args, **kwargs)


@pytest.mark.parametrize("down", [False, True])
def test_row_scan_looks_back_across_several_windows(library, down):
    """One row of 100 float64 tiles with decays near one: with prefixes hidden, look-backs
    fold maps over more than one window of 32 predecessors."""
    rng = np.random.default_rng(5)
    T = 100 * 128 * 8
    a, x = rng.uniform(0.9999, 1.0, (1, T)), rng.normal(size=(1, T))
    h = row_scan(library, a, x, down=down, hide=True, seed=3)
    want = reference.scan(a, x, axis=1, reverse=down)
    np.testing.assert_allclose(h, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_values_follow_the_serial_loop(library, seed):
    """Infinite, NaN and zero decays, infinite inputs and states, products that underflow or
    overflow: inexact maps make tiles walk their threads in turn and look-backs wait for a
    predecessor's prefix; inf and NaN land where the loop puts them."""
    rng = np.random.default_rng(seed)
    O, T = 3, 3000
    a, x = rng.uniform(0.5, 1.0, (O, T, 1)), rng.normal(size=(O, T, 1))
    for kind in rng.choice(POISONS, 4):
        poison(kind, a, x, rng)
    h0 = rng.normal(size=O)
    h0[rng.random(O) < 0.5] = np.inf
    resets = rng.random((O, T)) < 0.001
    for down in (False, True):
        kwargs = dict(down=down, hide=True, seed=seed)
        h = row_scan(library, a[..., 0], x[..., 0], h0, resets, **kwargs)
        state = row_scan(library, a[..., 0], x[..., 0], h0, resets, mode="final", **kwargs)
        options = dict(axis=1, reverse=down, resets=resets[..., None])
        assert_scan_close(h[..., None], a, x, h0[:, None], **options)
        assert_final_state_close(state[:, None], a, x, h0[:, None], **options)


@pytest.mark.parametrize("down", [False, True])
def test_a_zero_map_after_an_infinite_state_waits_for_the_prefix(library, down):
    """An infinite state, then a tile whose decays' product underflows to zero: the loop keeps
    inf (inf * 1e-200 is inf), the tile's map gives 0 * inf = NaN. A look-back that composes
    that map over the infinite state must wait for the tile's own walked prefix."""
    tile = 128 * 8
    a, x = np.ones((1, 12 * tile)), np.zeros((1, 12 * tile))
    x[0, 100] = np.inf
    a[0, 5 * tile + 10 : 5 * tile + 12] = 1e-200
    if down:
        a, x = a[:, ::-1].copy(), x[:, ::-1].copy()
    for seed in range(8):  # the prefix hidden from different readers
        h = row_scan(library, a, x, down=down, hide=True, seed=seed)
        np.testing.assert_array_equal(h, reference.scan(a, x, axis=1, reverse=down))


def test_a_broadcast_initial_state_enters_every_row(library):
    """h0 of one value for every row goes with a zero row stride, as the backend passes it."""
    rng = np.random.default_rng(9)
    a, x = rng.uniform(0.5, 1.0, (5, 700)), rng.normal(size=(5, 700))
    for down in (False, True):
        h = row_scan(library, a, x, np.array([2.5]), down=down)
        want = reference.scan(a, x, np.full(5, 2.5), axis=1, reverse=down)
        np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)
