"""Guarantees beyond correctness on good input: determinism, memory, first calls racing from
threads, accuracy over long sequences, an unusable GPU stack, and (opt-in) more than 2^31
elements. Each test here is one line of the README's "Guarantees" section."""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import linscan
from helpers import DEVICES
from linscan import testing


def _calls(rng, dtype, steps=5000):
    a = rng.uniform(0.9, 1.0, (3, steps)).astype(dtype)
    x = rng.standard_normal((3, steps)).astype(dtype)
    resets = rng.random((3, steps)) < 0.001
    return a, x, resets


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("method", ["sequential", "parallel", "auto"])
def test_the_same_inputs_give_bitwise_the_same_outputs(device, method):
    rng = np.random.default_rng(11)
    # Many GPU tiles: the look-back's order of arrival must not change a bit.
    a, x, resets = (device.put(v) for v in _calls(rng, np.float32, steps=70_000))

    def run():
        h = linscan.scan(a, x, 1.0, method=method, resets=resets)
        grads = linscan.scan_backward(a, h, x, 1.0, method=method, resets=resets)
        return [device.get(v).tobytes() for v in (h, linscan.final_state(a, x, method=method),
                                                   *grads)]  # fmt: skip

    first = run()
    for _ in range(5):
        assert run() == first


def test_the_same_outputs_in_another_process():
    script = textwrap.dedent(
        """
        import hashlib, numpy as np, linscan
        rng = np.random.default_rng(11)
        a = rng.uniform(0.9, 1.0, (3, 50000)).astype(np.float32)
        x = rng.standard_normal((3, 50000)).astype(np.float32)
        h = linscan.scan(a, x, method="parallel")
        print(hashlib.sha256(h.tobytes()).hexdigest())
        """
    )
    digests = {_python(script).strip() for _ in range(2)}
    assert len(digests) == 1


def _python(script, timeout=600, env=None):
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc (Linux)")
def test_ten_thousand_calls_leave_memory_where_it_was():
    rng = np.random.default_rng(12)
    a, x, resets = _calls(rng, np.float32)
    a, x, resets = a[:, :200], x[:, :200], resets[:, :200]

    def calls(n):
        for k in range(n):
            method = ("sequential", "parallel")[k % 2]
            h = linscan.scan(a, x, method=method, resets=resets if k % 3 == 0 else None)
            linscan.final_state(a, x, 0.5, method=method)
            linscan.scan_backward(a, h, x, 0.5, method=method)

    calls(200)  # compile, fill caches
    gc.collect()
    tracemalloc.start()
    traced, resident = tracemalloc.get_traced_memory()[0], _resident_bytes()
    calls(10_000)
    gc.collect()
    traced_growth = tracemalloc.get_traced_memory()[0] - traced
    resident_growth = _resident_bytes() - resident
    tracemalloc.stop()
    # Python and NumPy allocations come back to within a few KiB; the process's resident
    # size (which the allocator may round up) stays within a few MiB.
    assert traced_growth < 64 * 1024, traced_growth
    assert resident_growth < 16 * 2**20, resident_growth


def test_eight_threads_making_their_first_calls_at_once(tmp_path):
    """In a fresh process with an empty Numba cache, so that the compilations race."""
    script = textwrap.dedent(
        """
        import threading, numpy as np, linscan
        from linscan import testing
        barrier = threading.Barrier(8)
        failures = []
        def work(k):
            dtype = (np.float32, np.float64)[k % 2]
            rng = np.random.default_rng(k)
            a = rng.uniform(0.5, 1.0, (4, 3000)).astype(dtype)
            x = rng.standard_normal((4, 3000)).astype(dtype)
            method = ("sequential", "parallel", "auto", "parallel")[k % 4]
            barrier.wait()
            try:
                h = linscan.scan(a, x, method=method)
                testing.assert_scan_close(h, a, x)
                grads = linscan.scan_backward(a, h, x, method=method)
                testing.assert_scan_backward_close(grads, a, h, x)
            except BaseException as exc:
                failures.append(repr(exc))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads: t.start()
        for t in threads: t.join(timeout=900)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert not failures, failures
        print("ok")
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    assert _python(script, timeout=1200, env=env).strip() == "ok"


def _accuracy():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["rows", "time-major"])
@pytest.mark.parametrize("op", ["scan", "scan_backward"])
@pytest.mark.parametrize("T", [10**5, 10**6])
def test_long_sequences_parallel_no_worse_than_twice_the_serial_loop(T, op, layout):
    """Decays near 1, float32, against float64 (benchmarks/accuracy.py: the README's figures
    up to T = 10^7 come from it)."""
    err = _accuracy().errors(T, seed=T, layout=layout, op=op)
    assert err["parallel"] <= 2 * err["sequential"], err


def test_info_says_why_the_gpu_is_unavailable():
    usable, detail = linscan._dispatch.gpu_status()
    if usable:
        pytest.skip("a GPU is usable here")
    out = _python("import runpy, sys; sys.argv = ['linscan', 'info']; "
                  "runpy.run_module('linscan', run_name='__main__')")  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("GPU backend:"))
    assert line.startswith("GPU backend: unavailable: ") and detail in line


def test_cupy_installed_without_a_gpu_leaves_numpy_calls_working():
    pytest.importorskip("cupy")
    if linscan._dispatch.gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    out = _python(
        "import cupy, numpy as np, linscan\n"
        "h = linscan.scan(0.5, np.ones(4))\n"
        "print(h.tolist(), linscan.final_state(0.5, np.ones(4)))"
    )
    assert out.strip() == "[1.0, 1.5, 1.75, 1.875] 1.875"


BIG = pytest.mark.skipif(
    os.environ.get("LINSCAN_BIG_TESTS") != "1",
    reason="opt-in: LINSCAN_BIG_TESTS=1 (about 20 GiB of memory)",
)


@BIG
@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2**31 + 3,), (5, 2**29 + 7)], ids=["one row", "5 rows"])
def test_more_than_2_to_the_31_elements(shape):
    """More than 2^31 elements (and, for one row, steps): 64-bit indexing on the CPU."""
    x = np.ones(shape, np.float32)
    h = linscan.scan(np.float32(0.5), x, out=x)  # in place: 8 GiB, not 16
    assert h is x
    # h[t] = 2 - 2^-t: 2.0 in float32 from t = 24 on, exactly 1 at t = 0.
    assert np.all(h[..., 0] == 1.0)
    assert np.all(h[..., 24:] == 2.0)
    testing.assert_scan_close(h[..., :30], 0.5, np.ones(shape[:-1] + (30,), np.float32))
