"""The lean kernels' CUDA source (``kernels_cu/rows.cuh``, ``channels.cuh``) built for the host
and run, each GPU thread a fiber of one host thread (``host_cuda.h``), against the serial
oracle: the kernels' own index arithmetic, exchanges, shuffles, votes, look-back and
non-finite paths execute without a GPU. What it cannot show: blocks running at once, the
GPU's memory model, speed, and a missing barrier that neither order of the fibers exposes
(compute-sanitizer's racecheck on a GPU does). Needs a C++20 compiler."""

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
from host_build import build
from hypothesis import given, settings
from hypothesis import strategies as st

from linscan import reference
from linscan.backends.cuda import plan, source
from linscan.testing import (
    POISONS,
    assert_final_state_close,
    assert_scan_backward_close,
    assert_scan_close,
    poison,
)

HERE = Path(__file__).resolve().parent
#: Each launch on the host starts 128 threads per block: drawn cases are costly, so these
#: properties draw at most 60 (the profile's count where it is smaller); the fixed cases
#: below take the paths that matter one by one.
HOST_CASES = settings(max_examples=min(settings.default.max_examples, 60))
TYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.complex64): 2,
         np.dtype(np.complex128): 3}  # fmt: skip


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host_kernels")
    for path in source.kernel_dir().iterdir():
        (folder / path.name).write_text(path.read_text())
    (folder / "lean.cuh").write_text('#include "rows.cuh"\n#include "channels.cuh"\n')
    kernels = source.assemble("lean.cuh", folder)
    acquire = 'asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");'
    assert acquire in kernels, "load_acquire changed: update the host build"
    kernels = kernels.replace(acquire, "v = host_load_acquire(p);")
    lib = build(folder, "host_kernels.cpp", kernels)
    lib.run_row_scan.restype = lib.run_chan_scan.restype = ctypes.c_int
    return lib


def row_scan(lib, a, x, h0=None, resets=None, *, mode="forward", down=False, hide=True, seed=0,
             scratch=None, epoch=1):  # fmt: skip
    """row_scan on ``(O, T)`` arrays of one channel, as the CUDA backend would launch it:
    ``a`` an array laid out as ``x`` or a scalar (by value), ``h0`` ``(O,)`` or None;
    ``scratch`` (:func:`new_scratch`) kept from earlier calls, their epochs before ``epoch``."""
    x = np.ascontiguousarray(x)
    O, T = x.shape
    return _row_call(lib, a, x, None, h0, resets, mode, down, hide, seed, scratch, epoch)[0]


def row_backward(lib, a, h, grad_h, h0=None, resets=None, *, reverse=False, want_h0=True,
                 hide=True, seed=0):  # fmt: skip
    """row_scan's BACKWARD mode as ``scan_backward`` launches it on ``(O, T)`` arrays (walking
    against a forward scan of direction ``reverse``): ``(grad_a, grad_x, grad_h0)``."""
    grad_x, grad_a, grad_h0 = _row_call(lib, a, grad_h, h, h0, resets, "backward",
                                        not reverse, hide, seed, None, 1, want_h0)  # fmt: skip
    return grad_a, grad_x, grad_h0


def _row_call(lib, a, x, hf, h0, resets, mode, down, hide, seed, scratch, epoch, want_h0=True):
    """(the forward states, or grad_x; grad_a; the final states, or grad_h0)."""
    x = np.ascontiguousarray(x)
    O, T = x.shape
    call = _Call(x, a, resets, mode, (O, T, 1), "row_scan", scratch, epoch)
    hf = None if hf is None else np.ascontiguousarray(hf, x.dtype)
    h0_arr = None if h0 is None else np.ascontiguousarray(h0, x.dtype)
    h0_so = 0 if h0_arr is not None and h0_arr.shape == (1,) else 1  # (1,): broadcast to rows
    y = np.full((O, T), np.nan, x.dtype)
    ga = np.full((O, T), np.nan, x.dtype)
    s_out = np.full(O, np.nan, x.dtype) if want_h0 else None
    err = lib.run_row_scan(
        *call.head, _ptr(hf), _ptr(h0_arr), ctypes.c_longlong(h0_so), _ptr(y), _ptr(ga),
        _ptr(s_out), ctypes.c_longlong(O * T), ctypes.c_longlong(T), int(down),
        *call.tail(seed, hide),
    )  # fmt: skip
    assert err == 0
    call.check_published()
    if mode == "final":
        return s_out, None, None
    return y, ga, s_out


def chan_scan(lib, a, x, h0=None, resets=None, *, mode="forward", down=False, hide=True,
              seed=0, scratch=None, epoch=1):  # fmt: skip
    """chan_scan on ``(O, T, I)`` arrays, as the CUDA backend would launch it: ``a`` an array
    laid out as ``x`` or a scalar (by value), ``h0`` an array that broadcasts to ``(O, I)``
    (read through its strides) or None; ``scratch`` and ``epoch`` as for :func:`row_scan`."""
    y, _, s_out = _chan_call(lib, a, x, None, h0, resets, mode, down, hide, seed, scratch, epoch)
    return y if mode == "forward" else s_out


def chan_backward(lib, a, h, grad_h, h0=None, resets=None, *, reverse=False, want_h0=True,
                  hide=True, seed=0):  # fmt: skip
    """chan_scan's BACKWARD mode as ``scan_backward`` launches it on ``(O, T, I)`` arrays:
    ``(grad_a, grad_x, grad_h0)``."""
    grad_x, grad_a, grad_h0 = _chan_call(lib, a, grad_h, h, h0, resets, "backward",
                                         not reverse, hide, seed, None, 1, want_h0)  # fmt: skip
    return grad_a, grad_x, grad_h0


def _chan_call(lib, a, x, hf, h0, resets, mode, down, hide, seed, scratch, epoch, want_h0=True):
    """As :func:`_row_call`, on ``(O, T, I)`` arrays."""
    x = np.ascontiguousarray(x)
    O, T, I = x.shape
    call = _Call(x, a, resets, mode, (O, T, I), "chan_scan", scratch, epoch)
    hf = None if hf is None else np.ascontiguousarray(hf, x.dtype)
    h0_so = h0_si = 0
    if h0 is not None:
        h0 = np.broadcast_to(np.asarray(h0, x.dtype), (O, I))
        h0_so, h0_si = (stride // x.itemsize for stride in h0.strides)
    y = np.full((O, T, I), np.nan, x.dtype)
    ga = np.full((O, T, I), np.nan, x.dtype)
    s_out = np.full((O, I), np.nan, x.dtype) if want_h0 else None
    h0_ptr = None if h0 is None else ctypes.c_void_p(h0.__array_interface__["data"][0])
    err = lib.run_chan_scan(
        *call.head, _ptr(hf), h0_ptr, ctypes.c_longlong(h0_so), ctypes.c_longlong(h0_si),
        _ptr(y), _ptr(ga), _ptr(s_out), ctypes.c_longlong(O), ctypes.c_longlong(T),
        ctypes.c_longlong(I), int(down), *call.tail(seed, hide),
    )  # fmt: skip
    assert err == 0
    call.check_published()
    return y, ga, s_out


def _ptr(arr):
    return None if arr is None else arr.ctypes.data_as(ctypes.c_void_p)


def new_scratch(tiles: int, dtype) -> tuple:
    """status (zeroed: a fresh scratch), agg_a, agg_b, agg_r, incl, room for ``tiles`` tiles of
    up to 128 channels."""
    values = tiles * 128
    agg_a, agg_b, incl = (np.zeros(values, dtype) for _ in range(3))
    return np.zeros(1 + tiles, np.uint32), agg_a, agg_b, np.zeros(values, np.int32), incl


class _Call:
    """What both runners pass alike: the plan, decays, resets, x, and the look-back's scratch
    with the call's epoch and its first tile number (the scratch's counter so far)."""

    def __init__(self, x, a, resets, mode, shape, kernel, scratch, epoch):
        dtype = x.dtype
        self.code = {"forward": plan.FORWARD, "final": plan.FINAL, "backward": plan.BACKWARD}[mode]
        self.launch = plan.launch(*shape, dtype.itemsize, self.code, "parallel", flat=True,
                                  resets=resets is not None)  # fmt: skip
        assert self.launch.kernel == kernel and self.launch.threads == 128
        by_value = np.ndim(a) == 0
        self.a = None if by_value else np.ascontiguousarray(a, dtype)
        self.value = np.array(a if by_value else 0, dtype)
        self.r = None if resets is None else np.ascontiguousarray(resets, np.uint8)
        self.x = x
        self.scratch = new_scratch(self.launch.grid, dtype) if scratch is None else scratch
        assert len(self.scratch[0]) >= 1 + self.launch.grid
        self.epoch, self.base = epoch, int(self.scratch[0][0])
        self.head = (TYPES[dtype], self.code, _ptr(self.a), _ptr(self.value), _ptr(self.r),
                     _ptr(x))  # fmt: skip

    def tail(self, seed, hide) -> tuple:
        status, agg_a, agg_b, agg_r, incl = self.scratch
        return (
            ctypes.c_uint(self.epoch), ctypes.c_uint(self.base),
            ctypes.c_longlong(self.launch.grid), _ptr(status) if self.launch.chained else None,
            _ptr(agg_a), _ptr(agg_b), _ptr(agg_r), _ptr(incl), ctypes.c_uint(seed), int(hide),
        )  # fmt: skip

    def check_published(self):
        """Every tile took a number and published its prefix under this call's epoch."""
        status, grid = self.scratch[0], self.launch.grid
        if self.launch.chained:
            assert status[0] == (self.base + grid) % 2**32  # (the counter wraps)
            assert np.all(status[1 : 1 + grid] == (self.epoch << 2 | 2))


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


@HOST_CASES
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


@st.composite
def channel_cases(draw):
    dtype = np.dtype(draw(st.sampled_from(sorted(TYPES, key=str))))
    O = draw(st.integers(1, 3))
    T = draw(st.sampled_from([32, 33, 47, 64, 100, 257]))
    I = draw(st.sampled_from([107, 128, 214, 256, 320]))  # groups with <= 1/5 idle lanes
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    complex_ = dtype.kind == "c"
    if draw(st.booleans()):
        a = dtype.type(0.9 + 0.1j) if complex_ else dtype.type(rng.uniform(0.5, 1.0))
    else:
        a = rng.uniform(-1, 1, (O, T, I))
        if complex_:
            a = a * np.exp(1j * rng.uniform(-np.pi, np.pi, a.shape))
        a = a.astype(dtype)
    x = rng.normal(size=(O, T, I)) + (1j * rng.normal(size=(O, T, I)) if complex_ else 0)
    h0_shape = draw(st.sampled_from([None, (O, I), (I,), (O, 1), (1, 1)]))
    h0 = None
    if h0_shape is not None:
        h0 = (rng.normal(size=h0_shape) + (1j if complex_ else 0)).astype(dtype)
    density = draw(st.sampled_from([None, 0.01, 0.3]))
    resets = None if density is None else rng.random((O, T, I)) < density
    return dict(a=a, x=x.astype(dtype), h0=h0, resets=resets, down=draw(st.booleans()),
                hide=draw(st.booleans()), seed=draw(st.integers(0, 1000)))  # fmt: skip


def _channel_oracle(case):
    x = case["x"]
    O, _, I = x.shape
    h0 = None if case["h0"] is None else np.broadcast_to(case["h0"], (O, I))
    return (np.broadcast_to(case["a"], x.shape), x, h0), dict(
        axis=1, reverse=case["down"], resets=case["resets"]
    )


@HOST_CASES
@given(case=channel_cases())
def test_chan_scan_matches_the_oracle(library, case):
    """Every dtype chan_scan computes in (16-bit storage aside), decays by array or value,
    channel counts that leave idle lanes, rows shorter than a tile's steps at their end,
    resets, h0 full or broadcast either way, both directions, prefixes hidden or not."""
    options = dict(down=case["down"], hide=case["hide"], seed=case["seed"])
    h = chan_scan(library, case["a"], case["x"], case["h0"], case["resets"], **options)
    state = chan_scan(library, case["a"], case["x"], case["h0"], case["resets"], mode="final",
                      **options)  # fmt: skip
    args, kwargs = _channel_oracle(case)
    assert_scan_close(h, *args, **kwargs)
    assert_final_state_close(state, *args, **kwargs)


@pytest.mark.parametrize("down", [False, True])
def test_chan_scan_looks_back_along_a_long_row(library, down):
    """200 tiles of float64 along one row with decays near one, prefixes hidden: look-backs
    compose many published maps per channel before reaching a prefix."""
    rng = np.random.default_rng(6)
    T, I = 200 * 16, 128
    a, x = rng.uniform(0.999, 1.0, (1, T, I)), rng.normal(size=(1, T, I))
    h = chan_scan(library, a, x, down=down, hide=True, seed=4)
    want = reference.scan(a, x, axis=1, reverse=down)
    np.testing.assert_allclose(h, want, rtol=1e-9, atol=1e-9)


def _poisoned_channels(seed, shape):
    """(rng, decays, inputs, h0, resets) of time-major channels ``shape``: four kinds of
    non-finite values drawn into the decays and inputs (``linscan.testing.POISONS``), a finite
    h0, a reset at one step in 500."""
    rng = np.random.default_rng(seed)
    a, x = rng.uniform(0.5, 1.0, shape), rng.normal(size=shape)
    for kind in rng.choice(POISONS, 4):
        poison(kind, a, x, rng)
    O, _, I = shape
    return rng, a, x, rng.normal(size=(O, I)), rng.random(shape) < 0.002


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_chan_scan_puts_non_finite_values_where_the_loop_does(library, seed):
    """inf and NaN decays, inputs and states, products that underflow or overflow, in some
    channels: inexact maps make the warps walk in turn and look-backs wait for prefixes."""
    rng, a, x, h0, resets = _poisoned_channels(seed, (2, 400, 128))
    h0[rng.random(h0.shape) < 0.3] = np.inf
    for down in (False, True):
        kwargs = dict(down=down, hide=True, seed=seed)
        h = chan_scan(library, a, x, h0, resets, **kwargs)
        state = chan_scan(library, a, x, h0, resets, mode="final", **kwargs)
        options = dict(axis=1, reverse=down, resets=resets)
        assert_scan_close(h, a, x, h0, **options)
        assert_final_state_close(state, a, x, h0, **options)


@pytest.mark.parametrize("down", [False, True])
def test_chan_scan_waits_for_the_prefix_after_a_zero_map(library, down):
    """An infinite state, then a tile whose decays' product underflows to zero (in every
    channel): the loop keeps inf, composing the maps gives 0 * inf = NaN, so a look-back that
    composed that map must wait for its predecessor's walked prefix."""
    tile = 4 * 4  # float64: four warps of four steps
    a, x = np.ones((1, 12 * tile, 128)), np.zeros((1, 12 * tile, 128))
    x[0, 3] = np.inf
    a[0, 5 * tile + 2 : 5 * tile + 4] = 1e-200
    if down:
        a, x = a[:, ::-1].copy(), x[:, ::-1].copy()
    for seed in range(4):
        h = chan_scan(library, a, x, down=down, hide=True, seed=seed)
        np.testing.assert_array_equal(h, reference.scan(a, x, axis=1, reverse=down))


def test_scratch_kept_between_calls_needs_no_zeroing(library):
    """The lean kernels' scratch as the backend keeps it: never zeroed between calls, status
    words of other epochs left everywhere (flags that would read as published maps and
    prefixes), the tile counter running on from where the last call left it and wrapping
    past 2^32. Each call, row_scan and chan_scan in turn, sees only its own epoch's words."""
    rng = np.random.default_rng(11)
    scratch = new_scratch(400, np.float64)
    status = scratch[0]
    stale = rng.integers(0, 7, status.size - 1).astype(np.uint32)  # epochs 0-6, any flag
    status[1:] = stale << 2 | rng.integers(0, 4, status.size - 1).astype(np.uint32)
    status[0] = 2**32 - 150  # a counter about to wrap
    for k in range(6):
        epoch = 7 + k
        options = dict(down=bool(k % 2), hide=True, seed=k, scratch=scratch, epoch=epoch)
        if k % 3 == 2:
            a, x = rng.uniform(0.99, 1.0, (2, 300, 128)), rng.normal(size=(2, 300, 128))
            h = chan_scan(library, a, x, **options)
        else:
            a, x = rng.uniform(0.99, 1.0, (3, 9000)), rng.normal(size=(3, 9000))
            h = row_scan(library, a, x, **options)
        want = reference.scan(a, x, axis=1, reverse=options["down"])
        np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)


@HOST_CASES
@given(case=cases())
def test_row_scan_backward_matches_the_oracle(library, case):
    """The backward pass on rows: decays, flags and forward states shifted across lanes, warps
    and tiles; resets (which mute grad_a and pass nothing back), h0 and its gradient, both
    directions, published prefixes hidden or not."""
    a, x, h0, resets, reverse = case["a"], case["x"], case["h0"], case["resets"], case["down"]
    grad_h = _gradient_like(x, np.random.default_rng(case["seed"]))
    args, kwargs = _oracle_args(case)
    h = reference.scan(*args, **kwargs)[..., 0].astype(x.dtype)
    grads = row_backward(library, a, h, grad_h, h0, resets, reverse=reverse, hide=case["hide"],
                         seed=case["seed"], want_h0=h0 is not None)  # fmt: skip
    a_full = np.broadcast_to(a, x.shape)
    got = (grads[0][..., None], grads[1][..., None], None if h0 is None else grads[2][:, None])
    assert_scan_backward_close(
        got, a_full[..., None], h[..., None], grad_h[..., None], args[2], **kwargs,
    )  # fmt: skip


def _gradient_like(x, rng):
    noise = rng.normal(size=x.shape)
    if x.dtype.kind == "c":
        noise = noise + 1j * rng.normal(size=x.shape)
    return noise.astype(x.dtype)


@HOST_CASES
@given(case=channel_cases())
def test_chan_scan_backward_matches_the_oracle(library, case):
    """The backward pass on time-major channels: decays and flags read one step back and
    forward states one step on, across warps and tiles; resets (which mute grad_a and pass
    nothing back), h0 full or broadcast and its gradient, both directions, idle lanes,
    published prefixes hidden or not."""
    a, x, h0, resets, reverse = case["a"], case["x"], case["h0"], case["resets"], case["down"]
    grad_h = _gradient_like(x, np.random.default_rng(case["seed"]))
    args, kwargs = _channel_oracle(case)
    h = reference.scan(*args, **kwargs).astype(x.dtype)
    grads = chan_backward(library, a, h, grad_h, h0, resets, reverse=reverse,
                          hide=case["hide"], seed=case["seed"], want_h0=h0 is not None)  # fmt: skip
    got = grads if h0 is not None else (grads[0], grads[1], None)
    assert_scan_backward_close(got, args[0], h, grad_h, args[2], **kwargs)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_chan_scan_backward_puts_non_finite_values_where_the_loop_does(library, seed):
    """inf and NaN decays and gradients, products that underflow or overflow, resets: the
    backward pass's inexact maps walk and wait as the forward pass's do."""
    rng, a, grad_h, h0, resets = _poisoned_channels(seed, (2, 300, 128))
    for reverse in (False, True):
        options = dict(axis=1, reverse=reverse, resets=resets)
        h = reference.scan(a, rng.normal(size=a.shape), h0, **options)
        got = chan_backward(library, a, h, grad_h, h0, resets, reverse=reverse, seed=seed)
        assert_scan_backward_close(got, a, h, grad_h, h0, **options)


_SKEWED = """
import ctypes, sys
import numpy as np
sys.path.insert(0, {here!r})
import test_cuda_host as t

lib = ctypes.CDLL({library!r})
lib.run_row_scan.restype = lib.run_chan_scan.restype = ctypes.c_int
start = t._Call.__init__

def skewed(self, *args, **kwargs):  # tile0 moved off the scratch's counter
    start(self, *args, **kwargs)
    self.base = (self.base + {shift}) % 2**32

t._Call.__init__ = skewed
rng = np.random.default_rng(0)
{call}
print("returned")
"""


@pytest.mark.parametrize(
    "shift", ["0", "3", "-self.launch.grid"], ids=["in step", "never ran", "replayed"]
)
@pytest.mark.parametrize("kernel", ["row", "chan"])
def test_a_tile_number_past_the_grid_stops_the_kernel(library, kernel, shift):
    """A scratch counter out of step with the call's tile0 numbers tiles past the grid (rows
    that are not there): where a launch was counted that never ran (tile0 ahead of the
    counter) or a launch is replayed (the counter a grid ahead), the first block traps (on
    the host, the process aborts) before it reads or writes anything. In step, the call
    returns."""
    import signal
    import sys

    call = {
        "row": "t.row_scan(lib, rng.uniform(0.5, 1, (2, 5000)), rng.normal(size=(2, 5000)))",
        "chan": "t.chan_scan(lib, rng.uniform(0.5, 1, (1, 200, 128)), "
        "rng.normal(size=(1, 200, 128)))",
    }[kernel]
    script = _SKEWED.format(here=str(HERE), library=library._name, shift=shift, call=call)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if shift == "0":
        assert done.returncode == 0 and "returned" in done.stdout, done.stderr[-2000:]
    else:
        assert done.returncode == -signal.SIGABRT, (done.returncode, done.stderr[-2000:])
        assert "returned" not in done.stdout
