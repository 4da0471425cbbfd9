"""The CPU backend's per-thread buffers (``backend.private``): the states, products and
carries that the kernels update at every step each own their cache lines, so that threads
never write a line another thread writes (false sharing)."""

import numpy as np
import pytest

import linscan
from linscan.backends.cpu import backend
from linscan.backends.cpu import plan as _plan


def _lines(arr):
    """The cache lines ``arr``'s bytes touch."""
    first = arr.ctypes.data // backend.LINE
    last = (arr.ctypes.data + arr.nbytes - 1) // backend.LINE
    return set(range(first, last + 1))


@pytest.mark.parametrize("shape", [(1, 1), (1, 16), (3, 5), (2, 7, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, bool])
def test_private_buffers_own_their_cache_lines(shape, dtype):
    like = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    made = [backend.private(shape, dtype, like) for _ in range(8)] + [
        backend.private(shape, dtype) for _ in range(8)
    ]
    for arr in made:
        assert arr.shape == shape and arr.dtype == dtype and arr.flags.writeable
        assert arr.flags.c_contiguous and arr.ctypes.data % backend.LINE == 0
    np.testing.assert_array_equal(made[0], like)
    assert not made[-1].any()
    # Their own lines (a line wholly inside the padding of one allocation, never another's).
    for k, arr in enumerate(made):
        for other in made[k + 1 :]:
            assert not _lines(arr) & _lines(other)


def test_segments_of_a_split_scan_start_from_private_states(monkeypatch):
    """Split mode hands every segment's walk its own entering state (time-major channels update
    it in memory at every step)."""
    seen = []
    original = backend._segment_starts

    def spy(*args):
        starts = original(*args)
        seen.append(starts)
        return starts

    monkeypatch.setattr(backend, "_segment_starts", spy)
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, (400, 16)).astype(np.float32)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    with _plan.forced(threads=3, min_threaded=0, min_segment=1, strategy="split"):
        h = linscan.scan(a, x, axis=0)
    np.testing.assert_allclose(h, linscan.scan(a, x, axis=0, method="sequential"), rtol=1e-5)
    (starts,) = seen
    assert len(starts) == 3
    lines = [_lines(s) for s in starts]
    assert all(s.ctypes.data % backend.LINE == 0 for s in starts)
    assert not (lines[0] & lines[1] or lines[0] & lines[2] or lines[1] & lines[2])


def test_lane_states_own_their_lines_where_boxes_could_meet(monkeypatch):
    """A call's states, which lanes mode splits into boxes: ``private`` beyond one cache line
    (two boxes of 16 channels), a plain array within one (one box of channels at most)."""
    made = []
    original = backend.private
    monkeypatch.setattr(backend, "private", lambda *a, **k: made.append(a) or original(*a, **k))
    big = backend._lane_states((1, 32), np.float32, np.arange(32.0))
    small = backend._lane_states((2, 8), np.float32)
    assert [args[:2] for args in made] == [((1, 32), np.float32)]
    assert big.ctypes.data % backend.LINE == 0 and big[0, 31] == 31.0
    assert small.shape == (2, 8) and not small.any()
