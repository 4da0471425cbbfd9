"""Shared test helpers."""

import copy
import threading

import numpy as np

from linscan import _plan

#: Plans the property tests force, besides whatever the library picks by itself: split mode
#: over three threads with tiny segments and tiles (every chunking path at small sizes), and
#: lanes mode over two threads.
CONFIGS = {
    "natural": {},
    "split3": dict(threads=3, min_threaded=0, min_segment=1, tile=96),
    "lanes2": dict(threads=2, min_threaded=0, min_segment=10**9, tile=96),
}
METHODS = ("auto", "sequential", "parallel")


def forced(config):
    return _plan.forced(**CONFIGS[config])


class Unchanged:
    """Snapshot arguments; ``check()`` asserts that none of them changed (values and flags)."""

    def __init__(self, *args):
        self.args = args
        self.copies = [copy.deepcopy(arg) for arg in args]

    def check(self):
        for arg, before in zip(self.args, self.copies):
            _same(arg, before)


def _same(arg, before):
    if isinstance(arg, np.ndarray):
        assert arg.dtype == before.dtype and arg.shape == before.shape
        np.testing.assert_array_equal(arg, before, strict=True)
    elif isinstance(arg, (tuple, list)):
        assert type(arg) is type(before) and len(arg) == len(before)
        for item, item_before in zip(arg, before):
            _same(item, item_before)
    else:
        assert arg == before or (arg is None and before is None)


def race(work, threads=8, timeout=300):
    """Run ``work(k)`` for k in range(threads) on as many threads, released together by a
    barrier; return the results in order. Re-raises the first exception a thread met, and
    fails if a thread has not finished within ``timeout`` seconds (a deadlock)."""
    results, errors = [None] * threads, []
    barrier = threading.Barrier(threads)

    def run(k):
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in pool), "a thread did not finish: deadlock?"
    if errors:
        raise errors[0]
    return results
