"""linscan.dask on a real ``dask.distributed.LocalCluster``: two worker processes.

The second test scans an array larger than any worker's memory limit (and than both together);
with ``allowed-failures`` at 0, a worker killed for memory fails the computation at once.
"""

from __future__ import annotations

import numpy as np
import pytest

from linscan import testing

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
ld = pytest.importorskip("linscan.dask")

MEMORY_LIMIT = 2**30  # bytes per worker: about 400 MiB of it is Python, Dask and Numba's code


@pytest.fixture(scope="module")
def client():
    # No spilling to disk and no pausing: a worker over its limit is killed, and a killed
    # worker fails the computation.
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": 0.95,
    }
    with dask.config.set(settings):
        with distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=MEMORY_LIMIT,
            dashboard_address=None,
        ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
            client.run(_warm_up)
            yield client


def _warm_up():
    """Compile (or load) in this worker, while it holds no data, the kernels the tests below
    use: compiling takes a few hundred MiB for a moment, which under the memory limit and
    beside the data would get the worker killed."""
    import dask as dask_in_worker
    import dask.array as da_in_worker
    import numpy as np_in_worker

    import linscan.dask as ld_in_worker

    decay = np_in_worker.float32(0.999)
    x = da_in_worker.ones((16, 2**21), dtype=np_in_worker.float32, chunks=(16, 2**20))
    forward = ld_in_worker.scan(decay, x)
    both = ld_in_worker.scan(decay, forward, reverse=True)
    with dask_in_worker.config.set(scheduler="synchronous"):
        dask_in_worker.compute(both.max(axis=1), forward.sum(axis=1, dtype="float64"))


def test_the_cluster_gives_the_in_memory_results(client):
    rng = np.random.default_rng(3)
    a = rng.uniform(0.8, 1.0, (6, 500))
    x = rng.normal(size=(6, 500))
    h0 = rng.normal(size=6)
    resets = rng.random((6, 500)) < 0.01
    A = da.from_array(a, chunks=(3, 37))
    X = client.persist(da.from_array(x, chunks=(2, 53)))  # in the workers' memory already
    R = da.from_array(resets, chunks=(6, 100))
    for reverse in (False, True):
        kw = dict(reverse=reverse, resets=resets)
        lazy_h = ld.scan(A, X, h0, reverse=reverse, resets=R)
        h, state = client.compute([lazy_h, ld.final_state(A, X, h0, reverse=reverse, resets=R)],
                                  sync=True)  # fmt: skip
        testing.assert_scan_close(h, a, x, h0, **kw)
        testing.assert_final_state_close(state, a, x, h0, **kw)
        grads = client.compute(list(ld.scan_backward(A, lazy_h, X, h0, reverse=reverse,
                                                     resets=R)), sync=True)  # fmt: skip
        testing.assert_scan_backward_close(grads, a, h, x, h0, **kw)


def test_an_array_larger_than_a_worker_s_memory(client):
    """16 x 40 Mi float32 steps (2.5 GiB of x, 2.5 GiB of h) on two workers of 1 GiB: each
    chunk is loaded, used and released; nothing waits in memory for its carry."""
    rows, steps, chunk = 16, 40 * 2**20, 2**20
    assert rows * steps * 4 > 2 * MEMORY_LIMIT
    workers = set(client.scheduler_info()["workers"])
    decay = np.float32(0.999)
    x = da.ones((rows, steps), dtype=np.float32, chunks=(rows, chunk))
    h = ld.scan(decay, x)
    total, last = client.compute([h.sum(axis=1, dtype=np.float64), h[:, -1]], sync=True)
    # h[t] = (1 - a^(t+1)) / (1 - a): float32 rounding of a and of each step.
    a = float(decay)
    limit = 1 / (1 - a)
    expected_total = (steps - a * (1 - a**steps) / (1 - a)) / (1 - a)
    np.testing.assert_allclose(last, limit, rtol=1e-3)
    np.testing.assert_allclose(total, expected_total, rtol=1e-3)
    assert set(client.scheduler_info()["workers"]) == workers  # none was restarted


def test_a_backward_scan_of_a_forward_scan_larger_than_the_cluster(client):
    """The zero-phase filter of examples/dask_scan.py on 2.5 GiB: the backward scan's first
    carry needs the forward scan's last chunk. Were the forward scan's chunks kept for the
    second pass, all 2.5 GiB would wait in the workers' 2 x 1 GiB; they are computed again
    instead."""
    rows, steps, chunk = 16, 40 * 2**20, 2**20
    assert rows * steps * 4 > 2 * MEMORY_LIMIT
    decay = np.float32(0.999)
    x = da.ones((rows, steps), dtype=np.float32, chunks=(rows, chunk))
    forward = ld.scan(decay, x)
    both = ld.scan(decay, forward, reverse=True)
    # The maximum touches every chunk of both scans.
    first, top, last = client.compute([both[:, 0], both.max(axis=1), both[:, -1]], sync=True)
    a = float(decay)
    limit = 1 / (1 - a)
    # forward[t] = (1 - a^(t+1)) / (1 - a); both[t] = sum over s >= t of a^(s-t) forward[s]:
    # the forward limit at the end, limit^2 in the middle, limit^2 / (1 + a) at the start.
    np.testing.assert_allclose(last, limit, rtol=1e-3)
    np.testing.assert_allclose(top, limit**2, rtol=2e-3)
    np.testing.assert_allclose(first, limit**2 / (1 + a), rtol=2e-3)
