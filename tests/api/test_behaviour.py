"""Behaviour beyond the oracle comparisons: out aliasing, threads, non-finite values,
doctests."""

import doctest

import numpy as np
import pytest

import linscan
from linscan import _api
from linscan.backends.cpu import plan as _plan
from linscan.testing import (
    assert_final_state_close,
    assert_same_values,
    assert_scan_backward_close,
    assert_scan_close,
    poisoned,
)

from helpers import CONFIGS, DEVICE_CONFIGS, DEVICES, METHODS, forced, race


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ["rows", "cols"])
def test_out_may_be_x_or_a(device, config, method, layout):
    rng = np.random.default_rng(1)
    shape, axis = ((3, 7000), 1) if layout == "rows" else ((7000, 40), 0)
    a = rng.uniform(-1, 1, shape)
    x = rng.standard_normal(shape)
    for name in ("x", "a"):
        aa, xx = device.put(a.copy()), device.put(x.copy())
        target = xx if name == "x" else aa
        with forced(config):
            got = linscan.scan(aa, xx, axis=axis, out=target, method=method)
        assert got is target
        assert_scan_close(device.get(got), a, x, axis=axis)


def test_out_overlapping_an_input_partially():
    rng = np.random.default_rng(2)
    buf = rng.standard_normal(1001)
    x = buf[1:].copy()
    a = np.full(1000, 0.9)
    expected_x = buf[1:].copy()
    out = buf[:-1]  # shifted by one element against x's storage
    xs = buf[1:]
    linscan.scan(a, xs, out=out)
    assert_scan_close(out, a, expected_x)
    del x


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_non_contiguous_out(device):
    rng = np.random.default_rng(3)
    a, x = rng.uniform(-1, 1, (50, 8)), rng.standard_normal((50, 8))
    for out in (np.empty((8, 50)).T, np.empty((50, 16))[:, ::2]):
        out = device.put(out)
        assert linscan.scan(device.put(a), device.put(x), axis=0, out=out) is out
        assert_scan_close(device.get(out), a, x, axis=0)


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ["rows", "cols"])
def test_backward_out_aliasing_inputs(device, config, method, layout):
    """grad_x may be grad_h itself; grad_a or grad_x given as a, h or grad_h must still come
    out right (through scratch memory)."""
    rng = np.random.default_rng(4)
    shape, axis = ((2, 3000), 1) if layout == "rows" else ((3000, 20), 0)
    a, x = rng.uniform(0.9, 1, shape), rng.standard_normal(shape)
    h = linscan.scan(a, x, axis=axis)
    gh = rng.standard_normal(shape)
    with forced(config):  # on the device too: the aliasing, not the rounding, is in question
        on = [device.put(v) for v in (a, h, gh)]
        expected = device.get(linscan.scan_backward(*on, axis=axis, method=method))
    for slot in (0, 1):
        for target in ("a", "h", "grad_h"):
            args = {"a": a.copy(), "h": h.copy(), "grad_h": gh.copy()}
            args = {name: device.put(value) for name, value in args.items()}
            out = [device.put(np.empty(shape)), device.put(np.empty(shape)), None]
            out[slot] = args[target]
            with forced(config):
                grads = linscan.scan_backward(
                    args["a"], args["h"], args["grad_h"], axis=axis, method=method, out=tuple(out)
                )
            assert grads[slot] is out[slot]
            got = device.get(grads)
            np.testing.assert_allclose(got[0], expected[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend_threads", [1, 2, 8])
def test_concurrent_calls_from_many_threads(backend_threads):
    rng = np.random.default_rng(5)
    problems = [(rng.uniform(-1, 1, (4, 40000)), rng.standard_normal((4, 40000))) for _ in range(8)]

    def work(k):
        with _plan.forced(threads=backend_threads):
            a, x = problems[k]
            h = linscan.scan(a, x, method="parallel")
            return h, linscan.scan_backward(a, h, np.ones_like(h))

    results = race(work, timeout=120)
    for (a, x), (h, grads) in zip(problems, results):
        assert_scan_close(h, a, x)
        assert_scan_backward_close(grads, a, h, np.ones_like(h))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_non_finite_values_follow_the_serial_loop(config, method):
    """inf and NaN in x, in h0 and NaN in a land where the serial loop puts them (positive
    decays bounded away from 0). Infinite decays: the next test."""
    rng = np.random.default_rng(6)
    a = rng.uniform(0.5, 1.0, (4, 300))
    x = rng.standard_normal((4, 300))
    h0 = np.array([0.0, 0.0, 0.0, np.inf])
    x[0, 100] = np.inf
    x[1, 50] = np.nan
    a[2, 200] = np.nan
    with forced(config):
        h = linscan.scan(a, x, h0, method=method)
    assert_scan_close(h, a, x, h0)
    assert np.isinf(h[0, 100:]).all() and np.isfinite(h[0, :100]).all()
    assert np.isnan(h[1, 50:]).all() and np.isnan(h[2, 200:]).all()
    assert np.isinf(h[3]).all()


def test_float32_overflow_becomes_inf():
    a = np.full(100, 2.0, np.float32)
    x = np.full(100, 1e30, np.float32)
    h = linscan.scan(a, x)
    assert_scan_close(h, a, x)
    assert np.isinf(h[-1])


def test_zero_length_and_empty_lanes():
    assert linscan.scan(0.5, np.empty((3, 0)), axis=1).shape == (3, 0)
    assert linscan.scan(0.5, np.empty((0, 7)), axis=1).shape == (0, 7)
    np.testing.assert_array_equal(linscan.final_state(0.5, np.empty((3, 0)), 2.0), [2.0] * 3)
    ga, gx, gh0 = linscan.scan_backward(
        np.ones((3, 0)), np.empty((3, 0)), np.empty((3, 0)), np.ones(3)
    )
    assert ga.shape == (3, 0) and gx.shape == (3, 0)
    np.testing.assert_array_equal(gh0, np.zeros(3))


def test_docstring_examples():
    for name in ("scan", "final_state", "scan_backward"):
        func = getattr(_api, name)
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for test in finder.find(func, name, globs={}):
            runner.run(test)
        assert runner.failures == 0, f"doctest of {name} failed"
        assert runner.tries > 0


LONG_CONFIGS = {
    **CONFIGS,
    # tiles of two chain blocks, so that reductions compose blocks within a tile
    "split2_tile512": dict(threads=2, min_threaded=0, min_segment=1, tile=512),
    # and no touching at all: reductions walk a segment as one range
    "split2_untouched": dict(threads=2, min_threaded=0, min_segment=1, tile=0),
}


LONG_DEVICE_CONFIGS = [
    pytest.param("cpu", config, id=f"cpu-{config}") for config in LONG_CONFIGS
] + [pytest.param("cuda", "natural", id="cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device, config", LONG_DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("method", ["auto", "sequential", "parallel"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape, axis", [((2, 2000), 1), ((2000, 3), 0), ((2, 1500, 20), 1)])
@pytest.mark.parametrize("decays", [(-1.0, 1.0), (0.995, 1.0)])
def test_long_sequences_every_path(device, config, method, reverse, shape, axis, decays):
    """Deterministic coverage of the paths that need length: several 128-step chain blocks,
    touched tiles, split segments, forward and backward, both directions. Decays near 1 make
    every carry matter (with |a| spread over [0, 1] products vanish within a chain). (On the
    GPU these are a few tiles each; tests/cuda/test_gpu.py has the shapes of many tiles.)"""
    rng = np.random.default_rng(sum(shape) + axis)
    a = rng.uniform(*decays, shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    h0 = rng.standard_normal(shape[:axis] + shape[axis + 1 :]).astype(np.float32)
    gh = rng.standard_normal(shape).astype(np.float32)
    on = dict(axis=axis, reverse=reverse, method=method)
    da, dx, dh0, dgh = (device.put(v) for v in (a, x, h0, gh))
    with _plan.forced(**LONG_CONFIGS[config]):
        h = linscan.scan(da, dx, dh0, **on)
        state = linscan.final_state(da, dx, dh0, **on)
        grads = linscan.scan_backward(da, h, dgh, dh0, **on)
    kw = dict(axis=axis, reverse=reverse)
    h = device.get(h)
    assert_scan_close(h, a, x, h0, **kw)
    assert_final_state_close(device.get(state), a, x, h0, **kw)
    assert_scan_backward_close(device.get(grads), a, h, gh, h0, **kw)


@pytest.mark.parametrize("device, config", DEVICE_CONFIGS, indirect=["device"])
@pytest.mark.parametrize("layout", ["rows", "time-major"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kind_of_trouble_follows_the_serial_loop(device, config, layout, dtype):
    """Infinite, NaN and zero decays, infinite inputs and initial states, and decay products
    that underflow or overflow (helpers.poison), in both directions and with resets: the
    parallel methods' scan, final_state and scan_backward put inf and NaN where the CPU's
    serial loop does, on every thread configuration and on the GPU (whose tile kernel walks
    the tiles whose maps cannot stand for their steps: kernels_cu/affine.cuh)."""
    methods = ("parallel",) if device.name == "cpu" else METHODS
    for seed in range(12):
        rng = np.random.default_rng(seed)
        rows, steps = [(1, 60_000), (3, 20_000), (6, 3000)][seed % 3]
        a, x, h0, grad_h = poisoned(rng, (rows, steps, 1), dtype, clean_first=seed % 2 == 0)
        a, x, grad_h, h0 = a[..., 0], x[..., 0], grad_h[..., 0], h0[:, 0]
        axis = -1
        if layout == "time-major":
            a, x, grad_h, axis = a.T.copy(), x.T.copy(), grad_h.T.copy(), 0
        resets = rng.random(a.shape) < 0.001 if seed % 2 else None
        kw = dict(axis=axis, reverse=bool(seed % 4 > 1), resets=resets)
        h = linscan.scan(a, x, h0, method="sequential", **kw)
        want = [h, linscan.final_state(a, x, h0, method="sequential", **kw),
                *linscan.scan_backward(a, h, grad_h, h0, method="sequential", **kw)]  # fmt: skip
        on = [device.put(v) for v in (a, x, h0, h, grad_h)]
        for method in methods:
            options = dict(device.puts(kw), method=method)
            with forced(config):
                got = [
                    linscan.scan(*on[:3], **options),
                    linscan.final_state(*on[:3], **options),
                    *linscan.scan_backward(on[0], on[3], on[4], on[2], **options),
                ]
            for g, w in zip(got, want):
                assert_same_values(device.get(g), w, dtype)


@pytest.mark.parametrize(
    "a, x, axis, reverse",
    [(np.ones((3, 4), np.float32), np.ones((3, 4), np.float32), -1, False),
     (0.5, np.ones((3, 4)), 0, True), (0.5, np.ones(5, np.float32), -1, False),
     (np.ones((3, 4)), np.ones((3, 4)), 1, False)],
)  # fmt: skip
def test_fast_validation_agrees_with_the_full_checks(monkeypatch, a, x, axis, reverse):
    """Plain calls skip most of validation (small calls are Python-bound); the shortcut must
    describe the call exactly as the full checks do."""
    from linscan import _validate

    fast = _validate.scan_args(a, x, None, axis, reverse)
    fast_b = _validate.backward_args(a, x, x, None, axis, reverse)
    monkeypatch.setattr(_validate, "_plain_call", lambda *args: None)
    full = _validate.scan_args(a, x, None, axis, reverse)
    full_b = _validate.backward_args(a, x, x, None, axis, reverse)
    for got, want in ((fast, full), (fast_b, full_b)):
        assert (got.dtype, got.shape, got.axis, got.reverse, got.device) == (
            want.dtype, want.shape, want.axis, want.reverse, want.device
        )  # fmt: skip
        assert got.a.dtype == want.a.dtype and np.array_equal(got.a, want.a)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layout", ["rows", "time-major"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("steps", [300, 20_000])
def test_infinite_decays_follow_the_serial_loop(config, layout, reverse, steps):
    """A chunk's state from zero would hold inf * 0 (NaN) where the loop has inf * state (inf):
    chains and pieces holding an infinite decay are walked serially instead."""
    rng = np.random.default_rng(steps)
    a = rng.uniform(0.5, 1.0, (3, steps))
    x = rng.standard_normal((3, steps))
    h0 = rng.standard_normal(3)
    a[0, steps // 3], a[1, steps // 2], a[2, 10] = np.inf, -np.inf, np.inf
    # Lane 2 reaches its infinite decay from a state of exactly 0 (either way): inf * 0.
    a[2, [9, 11]], x[2, [9, 11]] = 0.0, 0.0
    axis = -1
    if layout == "time-major":
        a, x, axis = np.ascontiguousarray(a.T), np.ascontiguousarray(x.T), 0
    kw = dict(axis=axis, reverse=reverse)
    for method in ("parallel", "auto"):
        with forced(config):
            h = linscan.scan(a, x, h0, method=method, **kw)
            state = linscan.final_state(a, x, h0, method=method, **kw)
            grads = linscan.scan_backward(a, h, x, h0, method=method, **kw)
        assert_scan_close(h, a, x, h0, **kw)
        assert_final_state_close(state, a, x, h0, **kw)
        assert_scan_backward_close(grads, a, h, x, h0, **kw)
        assert np.isinf(h).any() and np.isnan(h).any()  # both kinds are exercised
