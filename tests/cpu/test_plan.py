"""The CPU work partitioning (plain Python)."""

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linscan.backends.cpu import plan as _plan


def _cells(plan, O, T, I):
    """Every (o, t, i) the scan phase of ``plan`` writes, with multiplicity."""
    cells = {}
    ranges = plan.segments if plan.split else [(0, T)]
    boxes = [_plan.Box(0, O, 0, I)] if plan.split else plan.boxes
    for box in boxes:
        for t0, t1 in ranges:
            for o in range(box.o0, box.o1):
                for i in range(box.i0, box.i1):
                    for t in range(t0, t1):
                        cells[(o, t, i)] = cells.get((o, t, i), 0) + 1
    return cells


sizes = st.integers(1, 40)


@given(
    O=sizes,
    T=st.integers(1, 200),
    I=sizes,
    threads=st.integers(1, 9),
    method=st.sampled_from(["auto", "sequential", "parallel"]),
    down=st.booleans(),
    op=st.sampled_from(["scan", "backward", "final_state"]),
    min_segment=st.integers(1, 64),
    strategy=st.sampled_from([None, "whole-steps"]),
)
def test_plan_covers_every_cell_once(O, T, I, threads, method, down, op, min_segment, strategy):
    writes = op != "final_state"
    settings = dict(threads=threads, min_threaded=0, min_segment=min_segment, strategy=strategy)
    with _plan.forced(**settings):
        plan = _plan.make_plan(O, T, I, down=down, method=method, op=op)
    cells = _cells(plan, O, T, I)
    assert len(cells) == O * T * I and set(cells.values()) == {1}
    if not plan.split:
        assert 1 <= len(plan.boxes) <= threads
        if strategy == "whole-steps" and method == "auto":
            assert all(b.i0 == 0 and b.i1 == I for b in plan.boxes)
        return
    assert method != "sequential" and 2 <= len(plan.segments) <= threads
    # Segments are in walk order and tile [0, T).
    starts = [t0 for t0, _ in plan.segments]
    assert starts == (sorted(starts, reverse=True) if down else sorted(starts))
    assert sum(t1 - t0 for t0, t1 in plan.segments) == T
    # Pieces lie inside their segments, in walk order, and cover all but the last segment
    # (all of them for a pass that writes nothing).
    flat = [p for task in plan.pieces for p in task]
    covered = {}
    for p in flat:
        s0, s1 = plan.segments[p.segment]
        assert s0 <= p.t0 < p.t1 <= s1
        covered[p.segment] = covered.get(p.segment, 0) + p.t1 - p.t0
    reduced = len(plan.segments) - (1 if writes else 0)
    assert covered == {k: plan.segments[k][1] - plan.segments[k][0] for k in range(reduced)}
    assert [p.segment for p in flat] == sorted(p.segment for p in flat)
    # The first phase is balanced: task lengths differ by at most one step per piece.
    lengths = [sum(p.t1 - p.t0 for p in task) for task in plan.pieces]
    assert max(lengths) - min(lengths) <= 2


def test_sequential_never_splits_time():
    with _plan.forced(threads=8, min_threaded=0, min_segment=1):
        plan = _plan.make_plan(1, 10**6, 1, down=False, method="sequential")
    assert not plan.split and not plan.blocked and len(plan.boxes) == 1


def test_parallel_splits_a_long_row_and_uses_chains():
    with _plan.forced(threads=4):
        plan = _plan.make_plan(1, 1 << 24, 1, down=False, method="parallel")
    assert plan.split and plan.blocked and len(plan.segments) == 4


def test_auto_splits_few_long_rows_but_not_many():
    with _plan.forced(threads=2):
        assert _plan.make_plan(1, 1 << 24, 1, down=False, method="auto").split
        many = _plan.make_plan(1024, 1 << 14, 1, down=False, method="auto")
    assert not many.split and not many.blocked and len(many.boxes) == 2


def test_auto_walks_real_rows_up_in_blocks():
    with _plan.forced(threads=2, tuned=False):
        for O, down, op in ((1, False, "scan"), (16, False, "backward"), (1024, False, "scan"),
                            (1, True, "scan"), (16, True, "backward")):  # fmt: skip
            T = (1 << 24) // O
            real = _plan.make_plan(O, T, 1, down=down, method="auto", op=op, real=True)
            other = _plan.make_plan(O, T, 1, down=down, method="auto", op=op)
            assert real.split == other.split  # the same split either way
            # Real rows walked up in blocks; walked down (which touches ahead without a
            # table), and complex rows, as before: blocks only for upward split mode.
            assert real.blocked == (not down)
            assert other.blocked == (other.split and not down)


def test_auto_channels():
    with _plan.forced(threads=2):
        up = _plan.make_plan(1, 1 << 14, 1024, down=False, method="auto")
        down = _plan.make_plan(1, 1 << 14, 1024, down=True, method="auto")
        batch = _plan.make_plan(8, 1 << 14, 1024, down=True, method="auto")
    assert not up.split and [(b.i0, b.i1) for b in up.boxes] == [(0, 512), (512, 1024)]
    assert down.split  # short descending runs per thread are slow: split time instead
    assert not batch.split and [(b.o0, b.o1) for b in batch.boxes] == [(0, 4), (4, 8)]


def test_channel_blocks_are_cache_line_aligned():
    with _plan.forced(threads=3, min_threaded=0):
        plan = _plan.make_plan(1, 100, 100, down=False, method="sequential")
    for box in plan.boxes:
        assert box.i0 % _plan.CHANNEL_ALIGN == 0


def test_small_problems_stay_on_one_thread():
    with _plan.forced(threads=8):
        plan = _plan.make_plan(4, 100, 4, down=False, method="parallel")
    assert not plan.split and len(plan.boxes) == 1


def test_num_threads_env(monkeypatch):
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "3")
    assert _plan.num_threads() == 3
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv("LINSCAN_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="LINSCAN_NUM_THREADS"):
            _plan.num_threads()


def test_num_threads_caps_a_setting_far_above_the_cpus(monkeypatch):
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 2)
    cap = 2 * _plan.MAX_THREADS_PER_CPU
    _plan._threads_from_env.cache_clear()  # the warning comes once per setting per process
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "100000")
    with pytest.warns(RuntimeWarning, match=f"LINSCAN_NUM_THREADS=100000.*using {cap} threads"):
        assert _plan.num_threads() == cap
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only: every scan asks
        assert _plan.num_threads() == cap
        # At and below the cap the setting stands, without a word.
        for ok in (cap, 1, 3):
            monkeypatch.setenv("LINSCAN_NUM_THREADS", str(ok))
            assert _plan.num_threads() == ok
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 1)
    monkeypatch.setenv("LINSCAN_NUM_THREADS", str(cap))  # fine on 2 CPUs, too many on 1
    with pytest.warns(RuntimeWarning, match="1 usable"):
        assert _plan.num_threads() == _plan.MAX_THREADS_PER_CPU


def test_the_cap_warning_names_the_callers_line(monkeypatch):
    """The cap warning comes from deep inside a scan; like linscan's other warnings it is
    attributed to the first caller outside linscan (issue 14)."""
    np = pytest.importorskip("numpy")
    linscan = pytest.importorskip("linscan")
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 1)
    _plan._threads_from_env.cache_clear()
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "999")
    with pytest.warns(RuntimeWarning, match="LINSCAN_NUM_THREADS=999") as record:
        linscan.scan(0.5, np.ones((4, _plan.MIN_THREADED)))
    assert [w.filename for w in record] == [__file__]


def test_capped_setting_bounds_the_plan(monkeypatch):
    # A long row would otherwise be cut into one segment (one pool thread) per thread asked.
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 2)
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "1000")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = _plan.make_plan(1, 1 << 24, 1, down=False, method="parallel")
        lanes = _plan.make_plan(4096, 1 << 12, 1, down=False, method="sequential")
    assert len(split.segments) == 2 * _plan.MAX_THREADS_PER_CPU
    assert len(lanes.boxes) == 2 * _plan.MAX_THREADS_PER_CPU


def test_forced_restores_settings():
    before = _plan.num_threads()
    with _plan.forced(threads=before + 5):
        assert _plan.num_threads() == before + 5
        with _plan.forced(min_segment=3):
            assert _plan.num_threads() == before + 5
    assert _plan.num_threads() == before


def test_whole_steps_never_share_a_step_between_threads():
    with _plan.forced(threads=2, strategy="whole-steps"):
        one = _plan.make_plan(1, 1 << 14, 1024, down=False, method="auto")
        assert one.boxes == (_plan.Box(0, 1, 0, 1024),)  # one thread walks the single row
        many = _plan.make_plan(4, 1 << 14, 64, down=True, method="auto", op="backward")
        assert many.boxes == (_plan.Box(0, 2, 0, 64), _plan.Box(2, 4, 0, 64))
    with _plan.forced(threads=2, strategy="lanes"):  # lanes mode cuts the channels instead
        assert _plan.make_plan(1, 1 << 14, 1024, down=False, method="auto").boxes == (
            _plan.Box(0, 1, 0, 512),
            _plan.Box(0, 1, 512, 1024),
        )
