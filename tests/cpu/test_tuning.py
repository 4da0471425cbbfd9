"""The CPU tuning table and its calibration: decisions from injected timings, the cache file
(key, absence, corruption), ``LINSCAN_TUNING``, and every strategy computing the same
recurrence. Nothing here times anything."""

import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linscan
from linscan import testing
from linscan.backends.cpu import calibrate, tuning
from linscan.backends.cpu import plan as _plan


@pytest.fixture
def tuned_home(tmp_path, monkeypatch):
    """Tuning enabled, with its cache directory in ``tmp_path``; no table read before."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LINSCAN_TUNING", "on")
    tuning.forget()
    yield tmp_path / "linscan"
    tuning.forget()


# --- decisions from timings -------------------------------------------------------------------


def test_decide_takes_the_fastest_beyond_the_margin():
    times = {"lanes": [10, 11, 9], "split": [6, 7, 5], "chains": [8, 8, 8]}
    choice, ratios = calibrate.decide("lanes", times, margin=0.05)
    assert choice == "split"
    assert ratios["lanes"] == 1.0 and ratios["split"] == pytest.approx(0.6, abs=0.05)


def test_decide_keeps_the_static_choice_within_the_margin():
    times = {"lanes": [10, 10, 10], "split": [9.7, 9.6, 9.8]}
    assert calibrate.decide("lanes", times, margin=0.05)[0] == "lanes"
    assert calibrate.decide("lanes", times, margin=0.01)[0] == "split"


def test_decide_compares_within_rounds():
    # The machine slowed down in the last two rounds: split beats lanes in every round,
    # although its overall median time is above lanes' overall median.
    times = {"lanes": [10, 30, 30], "split": [8, 24, 24]}
    assert calibrate.decide("lanes", times)[0] == "split"


def test_measure_interleaves_rotating_rounds(monkeypatch):
    order = []

    def fake_call(probe, v):
        return lambda: order.append(_plan._setting("strategy", None))

    monkeypatch.setattr(calibrate, "_call", fake_call)
    probe = calibrate.Probe("rows", 1, "scan", False, "4")
    times = calibrate.measure(probe, ("lanes", "split", "chains"), [{}], repeat=3)
    assert {s: len(t) for s, t in times.items()} == {"lanes": 3, "split": 3, "chains": 3}
    # One warm-up round, then three timed ones; each round runs every strategy once and the
    # first of a round is a different strategy each time.
    rounds = [order[k : k + 3] for k in range(0, 12, 3)]
    assert all(sorted(r) == ["chains", "lanes", "split"] for r in rounds)
    assert [r[0] for r in rounds] == ["lanes", "split", "chains", "lanes"]


def _measured_on_placements(monkeypatch, strategies, repeat):
    """``measure`` over placements ``p``, ``q``, ``r`` with a call that records, in order,
    each (placement, strategy) it runs: those records, and the times."""
    used = []

    def fake_call(probe, v):
        return lambda: used.append((v["name"], _plan._setting("strategy", None)))

    monkeypatch.setattr(calibrate, "_call", fake_call)
    probe = calibrate.Probe("rows", 1, "scan", False, "4")
    placements = [{"name": n} for n in "pqr"]
    return used, calibrate.measure(probe, strategies, placements, repeat=repeat)


def test_rounds_take_the_placements_in_turn(monkeypatch):
    """Each timed round runs every strategy on one placement of the arrays, the next
    placement the next round; the warm-up round uses the first."""
    used, times = _measured_on_placements(monkeypatch, ("lanes", "split"), repeat=4)
    assert {s: len(t) for s, t in times.items()} == {"lanes": 4, "split": 4}
    rounds = [used[k : k + 2] for k in range(0, len(used), 2)]
    assert [{n for n, _ in r} for r in rounds] == [{"p"}, {"p"}, {"q"}, {"r"}, {"p"}]
    assert all(sorted(s for _, s in r) == ["lanes", "split"] for r in rounds)


def test_no_placement_always_sees_the_same_strategy_first(monkeypatch):
    """As many strategies as placements: the rotation must not lock each placement to one
    strategy in first place."""
    used, _ = _measured_on_placements(monkeypatch, ("lanes", "split", "chains"), repeat=6)
    firsts = {}
    for k in range(3, len(used), 3):  # the timed rounds' first calls
        name, strategy = used[k]
        firsts.setdefault(name, []).append(strategy)
    assert all(len(set(s)) == len(s) == 2 for s in firsts.values()), firsts


def test_placements_are_distinct_arrays_with_outputs_faulted_in():
    probe = calibrate.Probe("rows", 2, "backward", True, "4")
    sets = calibrate._placements(probe, 1 << 12, np.random.default_rng(0))
    assert len(sets) == calibrate.PLACEMENTS
    names = ("a", "x", "h", "gh", "ga", "gx")
    addresses = {v[k].ctypes.data for v in sets for k in names}
    assert len(addresses) == len(names) * len(sets)  # no array shared or reused
    assert all((v[k] == 0).all() for v in sets for k in ("h", "ga", "gx"))


def test_measure_tiles_walks_down_one_row_with_each_tile(monkeypatch):
    walked = []

    def fake_call(probe, v):
        setting = _plan._setting
        return lambda: walked.append(
            (probe.op, probe.layout, probe.lanes, probe.down, setting("strategy", None),
             setting("tile", None))
        )  # fmt: skip

    monkeypatch.setattr(calibrate, "_call", fake_call)
    times = calibrate.measure_tiles((0, 4096), [{}], repeat=2)
    assert {op: {t: len(v) for t, v in by_tile.items()} for op, by_tile in times.items()} == {
        op: {0: 2, 4096: 2} for op in tuning.OPS
    }  # fmt: skip
    # Each walk down in rounds of its own: three rounds (one warm-up), two tiles each.
    assert [w[:5] for w in walked] == [
        (op, "rows", 1, True, "split+chains") for op in tuning.OPS for _ in range(3 * 2)
    ]  # fmt: skip
    assert [w[5] for w in walked] == [0, 4096, 4096, 0, 0, 4096] * 3


def test_each_op_takes_its_own_tile():
    """The walks down prefer different tiles: each op gets the one that won for it, and the
    static tile where none won by the margin."""
    times = {
        "scan": {0: [0.7, 0.7], 4096: [1.0, 1.0], 16384: [1.2, 1.2]},
        "final_state": {0: [1.1, 1.1], 4096: [1.0, 1.0], 16384: [0.8, 0.8]},
        "backward": {0: [0.97, 0.97], 4096: [1.0, 1.0], 16384: [1.05, 1.05]},
    }
    tiles, ratios = calibrate.choose_tiles(times, margin=0.05)
    assert tiles == {"scan": 0, "final_state": 16384, "backward": _plan.TILE}
    assert ratios["scan"] == {"0": 0.7, "4096": 1.0, "16384": 1.2}


def test_busy_warns_above_half_a_load_per_cpu(monkeypatch):
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 2)
    for load, warns in [(0.2, False), (1.0, False), (1.1, True), (2.7, True)]:
        monkeypatch.setattr(calibrate.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        message = calibrate.busy()
        assert (message is not None) == warns
        if warns:
            assert f"load average {load:.1f}" in message and "2 CPUs" in message

    def unknown():
        raise OSError("no load average here")

    monkeypatch.setattr(calibrate.os, "getloadavg", unknown)
    assert calibrate.busy() is None and calibrate.load() is None


def test_candidates_drop_strategies_with_the_same_plan():
    with _plan.forced(threads=2):
        probe = calibrate.Probe("cols", 16, "scan", False, "4")
        static, strategies = calibrate.candidates(probe, 1 << 16)
        assert static == "lanes" and set(strategies) == {"lanes", "split"}  # one box already
        probe = calibrate.Probe("cols", 1024, "scan", False, "4")
        static, strategies = calibrate.candidates(probe, 1 << 16)
        assert set(strategies) == {"lanes", "whole-steps", "split"}
    with _plan.forced(threads=1):  # one thread: no split mode
        probe = calibrate.Probe("rows", 1, "scan", False, "4")
        static, strategies = calibrate.candidates(probe, 1 << 16)
        assert set(strategies) == {"lanes", "chains"}


def test_probes_cover_layouts_ops_directions_and_dtypes():
    found = calibrate.probes(threads=2)
    kinds = {(p.layout, p.op, p.down, p.dtype) for p in found}
    assert len(kinds) == 2 * 3 * 2 * 2
    assert sorted({p.lanes for p in found if p.layout == "rows"}) == [1, 2, 16, 1024]
    # Enough steps for split mode, also for 1024 channels of a small size.
    O, T, I = calibrate.Probe("cols", 1024, "scan", True, "4").shape(1 << 12, threads=2)
    assert (O, I) == (1, 1024) and T >= 2 * _plan.MIN_SEGMENT
    # and enough elements to be threaded at all (smaller calls run on the calling thread)
    for lanes in (1, 16, 1024):
        O, T, I = calibrate.Probe("rows", lanes, "scan", True, "4").shape(1000, threads=1)
        assert O * T * I >= _plan.MIN_THREADED


def _fake_timer(fastest):
    """Timings where ``fastest(probe)`` (a strategy, or None for none) takes half the time
    of every other strategy."""

    def timer(probe, strategies, arrays, repeat):
        win = fastest(probe)
        return {s: [0.5 if s == win else 1.0] * repeat for s in strategies}

    return timer


def test_a_choice_against_the_static_model_must_be_measured_twice(monkeypatch):
    """A strategy that wins once (a stall slowed the others) and not when measured again
    leaves the static choice; one that wins both times replaces it."""
    probe = calibrate.Probe("rows", 1, "backward", True, "4")
    strategies = ("split+chains", "chains", "lanes")
    for second, want in ((0.95, "split+chains"), (0.5, "chains")):
        calls = []

        def timer(probe, options, arrays, repeat, second=second):
            calls.append(tuple(options))
            win = 0.6 if len(calls) == 1 else second
            return {s: [win if s == "chains" else 1.0] * repeat for s in options}

        monkeypatch.setattr(calibrate, "measure", timer)
        choice, ratios = calibrate.confirmed(probe, "split+chains", strategies, [{}], 3, 0.05)
        assert choice == want and ratios["chains"] == pytest.approx(second)
        assert calls == [strategies, ("split+chains", "chains")]


def _fake_tiles(fastest):
    """Tile timings where ``fastest[op]`` (a tile, or None) takes 0.9 of the others' time;
    ``fastest`` a tile or None alone: that one for every op."""
    if not isinstance(fastest, dict):
        fastest = dict.fromkeys(tuning.OPS, fastest)

    def timer(tiles, arrays, repeat):
        return {
            op: {t: [0.9 if t == fastest[op] else 1.0] * repeat for t in tiles} for op in tuning.OPS
        }

    return timer


def _small_calibration(monkeypatch, fastest, tile=None):
    monkeypatch.setattr(calibrate, "measure", _fake_timer(fastest))
    monkeypatch.setattr(calibrate, "measure_tiles", _fake_tiles(tile))
    monkeypatch.setattr(calibrate, "CHANNELS", (16,))
    monkeypatch.setattr(calibrate, "row_counts", lambda threads: (1, 16))


# --- the table, end to end --------------------------------------------------------------------


def test_calibration_is_what_auto_then_does(tuned_home, monkeypatch):
    # Lanes for a long row walked up, and split for 16 channels walked up, contrary to the
    # static model; everything else keeps the static choice.
    def fastest(p):
        if p.layout == "rows" and p.lanes == 1 and not p.down:
            return "lanes"
        if p.layout == "cols" and not p.down:
            return "split"
        return None

    tiles = {"scan": 0, "final_state": 16384, "backward": None}
    _small_calibration(monkeypatch, fastest, tile=tiles)
    with _plan.forced(threads=2):
        assert tuning.table(2) is None
        assert _plan.make_plan(1, 1 << 24, 1, down=True, method="auto").tile == _plan.TILE
        file, tile, entries = calibrate.run(size=1 << 14, repeat=3)
        assert file.startswith(str(tuned_home))
        # Touching ahead was slower than not for the scan: every method's downward scans,
        # large or small, now touch nothing. (Small calls of the other methods run the plain
        # loop, which never touches: they read no table.) The final state touches 16384
        # elements ahead, and the backward pass, where no tile won, the static tile.
        assert tile == {"scan": 0, "final_state": 16384, "backward": _plan.TILE}
        for op, want in tile.items():
            for method in ("auto", "sequential", "parallel"):
                assert _plan.make_plan(1, 1 << 24, 1, down=True, method=method, op=op).tile == want
            small = _plan.make_plan(1, 100, 1, down=True, method="parallel", op=op)
            assert small.blocked and small.tile == want
        for method in ("auto", "sequential"):
            assert not _plan.make_plan(1, 100, 1, down=True, method=method).blocked
        assert len(entries) == 2 * (2 + 1) * 3 * 2  # dtypes x (row counts, channels) x ops x walks
        row = _plan.make_plan(1, 1 << 24, 1, down=False, method="auto", op="backward")
        assert _plan.strategy(row) == "lanes"
        wide = _plan.make_plan(1, 1 << 16, 64, down=False, method="auto", itemsize=8)
        assert _plan.strategy(wide) == "split"  # 64 channels: nearest probed is 16
        down = _plan.make_plan(1, 1 << 24, 1, down=True, method="auto", real=True)
        assert _plan.strategy(down) == "split"  # unchanged from the static model
        # Other methods do not consult the table.
        assert _plan.strategy(_plan.make_plan(1, 1 << 24, 1, down=False,
                                              method="parallel")) == "split+chains"  # fmt: skip
        assert "tuned on this machine" in tuning.status(2)
        # Another thread count is another machine as far as the table is concerned.
        assert tuning.table(3) is None
    data = json.loads(open(file).read())
    assert data["key"] == tuning.key(2) and data["key"]["cpu"]
    assert data["tiles"] == tile
    assert data["tile_ratios"]["scan"] == {"0": 0.9, "1024": 1.0, "4096": 1.0, "16384": 1.0}
    assert data["tile_ratios"]["final_state"]["16384"] == 0.9
    changed = [e for e in data["entries"] if e["strategy"] != e["static"]]
    assert {(e["layout"], e["down"]) for e in changed} == {("rows", False), ("cols", False)}


def test_the_static_tile_stays_unless_another_is_faster_by_the_margin(tuned_home, monkeypatch):
    _small_calibration(monkeypatch, lambda p: None, tile=None)  # all tiles alike
    with _plan.forced(threads=2):
        assert calibrate.run(size=1 << 14, repeat=1)[1] == dict.fromkeys(tuning.OPS, _plan.TILE)
        assert _plan.make_plan(1, 1 << 24, 1, down=True, method="auto").tile == _plan.TILE
        assert "touch scan 4096, final_state 4096, backward 4096 ahead" in tuning.status(2)


def test_tuning_off_ignores_the_table(tuned_home, monkeypatch):
    _small_calibration(monkeypatch, lambda p: "lanes" if p.layout == "rows" else None, tile=0)
    with _plan.forced(threads=2):
        calibrate.run(size=1 << 14, repeat=1)
        tuned = _plan.make_plan(1, 1 << 24, 1, down=False, method="auto")
        assert _plan.strategy(tuned) == "lanes" and tuned.tile == 0
        assert "touch scan nothing, final_state nothing, backward nothing ahead" in (
            tuning.status(2)
        )
        monkeypatch.setenv("LINSCAN_TUNING", "off")
        static = _plan.make_plan(1, 1 << 24, 1, down=False, method="auto")
        assert _plan.strategy(static) == "split+chains" and static.tile == _plan.TILE
        assert "LINSCAN_TUNING=off" in tuning.status(2)


def test_a_bad_tuning_setting_warns_once_and_means_off(monkeypatch):
    """A typo never makes a call fail, small or large: one warning naming the variable, and
    the static cost model."""
    monkeypatch.setenv("LINSCAN_TUNING", "sometimes")
    tuning.forget()
    big, small = 1 << 17, 10
    with pytest.warns(tuning.TuningFileWarning, match="LINSCAN_TUNING must be 'on' or 'off', "
                      "got 'sometimes'"):  # fmt: skip
        h = linscan.scan(np.full(big, 0.5, np.float32), np.ones(big, np.float32))
    assert h[-1] == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        linscan.scan(np.full(big, 0.5, np.float32), np.ones(big, np.float32))
        linscan.scan(np.full(small, 0.5, np.float32), np.ones(small, np.float32))
    assert tuning.table(2) is None
    assert "static cost model (LINSCAN_TUNING=sometimes)" in tuning.status(2)


def _write_table(directory, threads, text):
    directory.mkdir(parents=True, exist_ok=True)
    path = tuning.path(threads, str(directory))
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
        '{"format": 3}',
        "[]",
        "[" * 100000 + "]" * 100000,
    ],
    ids=["empty", "truncated", "not-utf8", "no-key", "not-a-dict", "nested-too-deep"],
)
def test_an_unreadable_file_warns_once_and_auto_falls_back(tuned_home, text):
    path = _write_table(tuned_home, 2, text)
    with _plan.forced(threads=2):
        with pytest.warns(tuning.TuningFileWarning, match="could not be used") as caught:
            plan = _plan.make_plan(1, 1 << 24, 1, down=False, method="auto")
            _plan.make_plan(1, 1 << 24, 1, down=True, method="auto")
    assert len([w for w in caught if w.category is tuning.TuningFileWarning]) == 1
    assert path in str(caught[0].message)
    assert _plan.strategy(plan) == "split+chains"  # the static model's


@pytest.mark.parametrize(
    "entry",
    [
        dict(layout="rows", dtype="4", op="scan", down=False, lanes=1, strategy="sideways"),
        dict(layout="cols", dtype="4", op="scan", down=False, lanes=1, strategy="chains"),
        dict(layout="rows", dtype="4", op="scan", down=False, lanes=0, strategy="lanes"),
        dict(layout="rows", dtype="2", op="scan", down=False, lanes=1, strategy="lanes"),
        dict(layout="rows", dtype="4", op="scan", down="no", lanes=1, strategy="lanes"),
        dict(layout="rows", dtype="4", op="scan", lanes=1, strategy="lanes"),
        dict(tiles={"scan": -1, "final_state": 0, "backward": 0}),
        dict(tiles={"scan": 2**64 - 1, "final_state": 0, "backward": 0}),
        dict(tiles={"scan": 2**64, "final_state": 0, "backward": 0}),
        dict(tiles={"scan": "4096", "final_state": 0, "backward": 0}),
        dict(tiles={"scan": 0, "final_state": True, "backward": 0}),
        dict(tiles={"scan": 0, "final_state": 0}),
        dict(tiles={"scan": 0, "final_state": 0, "backward": 0, "sideways": 0}),
        dict(tiles=0),
        dict(tiles=None),
    ],
    ids=[
        "strategy",
        "chains-for-cols",
        "lanes",
        "dtype",
        "down",
        "missing",
        "tile-negative",
        "tile-wrapping-to-none",
        "tile-beyond-64-bits",
        "tile-string",
        "tile-bool",
        "tile-of-an-op-missing",
        "tile-of-no-op",
        "one-tile",
        "tiles-missing",
    ],  # fmt: skip
)
def test_a_malformed_entry_warns_and_auto_falls_back(tuned_home, entry):
    good = dict(layout="rows", dtype="4", op="scan", down=False, lanes=1, strategy="lanes")
    tiles = dict.fromkeys(tuning.OPS, 0)
    table = {"format": tuning.FORMAT, "key": tuning.key(2), "tiles": tiles, "entries": [good]}
    if "tiles" in entry:  # the entry is fine, the tiles are not
        table["tiles"] = entry["tiles"]
        if entry["tiles"] is None:
            del table["tiles"]
    else:
        table["entries"] = [entry]
    text = json.dumps(table)
    _write_table(tuned_home, 2, text)
    with _plan.forced(threads=2):
        with pytest.warns(tuning.TuningFileWarning, match="malformed"):
            assert tuning.table(2) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_at_the_table_s_place_warns_and_does_not_block(tuned_home):
    """Opened without blocking and read only as a regular file: a FIFO there held every
    threaded scan up forever (a helper's probe)."""
    path = tuning.path(2, str(tuned_home))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    with _plan.forced(threads=2):
        with pytest.warns(tuning.TuningFileWarning, match="not a regular file"):
            assert tuning.table(2) is None


def test_a_relative_cache_home_is_ignored(monkeypatch, tmp_path):
    """The XDG spec: a relative ``XDG_CACHE_HOME`` is ignored (it named a folder below
    whatever the current one was)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert tuning.cache_dir() == os.path.join(str(tmp_path), ".cache", "linscan")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "abs"))
    assert tuning.cache_dir() == os.path.join(str(tmp_path / "abs"), "linscan")


def test_unwritable_says_why_a_table_cannot_be_stored(tmp_path):
    assert tuning.unwritable(str(tmp_path / "new" / "t.json")) is None
    (tmp_path / "file").write_text("")
    assert "Error: " in tuning.unwritable(str(tmp_path / "file" / "t.json"))  # a file, no folder
    (tmp_path / "dir.json").mkdir()
    assert tuning.unwritable(str(tmp_path / "dir.json")).endswith("is a folder")


def test_a_table_for_another_key_or_format_is_not_used(tuned_home):
    entry = dict(layout="rows", dtype="4", op="scan", down=False, lanes=1, strategy="lanes")
    stale = [{**tuning.key(2), "linscan": "0.0.1"}, {**tuning.key(2), "code": "0" * 16}]
    fmt = tuning.FORMAT
    # Format 1 had no tile, format 2 one for every op: such a file is another format, not a
    # malformed one.
    tiles = dict.fromkeys(tuning.OPS, 0)
    for key, fmt, tile in [(stale[0], fmt, tiles), (stale[1], fmt, tiles),
                           (tuning.key(2), 99, tiles), (tuning.key(2), 1, None),
                           (tuning.key(2), 2, 0)]:  # fmt: skip
        table = {"format": fmt, "key": key, "entries": [entry]}
        if tile is not None:
            table["tiles" if fmt == tuning.FORMAT or fmt == 99 else "tile"] = tile
        _write_table(tuned_home, 2, json.dumps(table))
        tuning.forget()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a stale table is no cause for alarm
            assert tuning.table(2) is None


def test_the_key_follows_the_kernels_code(monkeypatch, tmp_path):
    """A table measured on other kernels (same version) is keyed apart: ``_code`` digests the
    measured modules' source."""
    before = tuning.key(2)["code"]
    for name in tuning._MEASURED:
        (tmp_path / name).write_text("# other kernels\n")
    monkeypatch.setattr(tuning, "__file__", str(tmp_path / "tuning.py"))
    tuning._code.cache_clear()
    try:
        assert tuning.key(2)["code"] != before
    finally:
        monkeypatch.undo()
        tuning._code.cache_clear()
    assert tuning.key(2)["code"] == before


def test_write_refuses_a_malformed_entry(tmp_path):
    bad = [dict(layout="rows", dtype="4", op="scan", down=False, lanes=1, strategy="up")]
    tiles = dict.fromkeys(tuning.OPS, 0)
    with pytest.raises(ValueError, match="unknown layout or strategy"):
        tuning.write(str(tmp_path / "t.json"), tuning.key(2), bad, tiles, {})
    good = [{**bad[0], "strategy": "lanes"}]
    with pytest.raises(
        ValueError, match="tile of scan must be an integer from 0 to 1073741824, got -1"
    ):
        tuning.write(str(tmp_path / "t.json"), tuning.key(2), good, {**tiles, "scan": -1}, {})
    with pytest.raises(ValueError, match="tiles must map each of"):
        tuning.write(str(tmp_path / "t.json"), tuning.key(2), good, 0, {})
    assert not (tmp_path / "t.json").exists()


def test_nearest_lane_count_is_by_ratio():
    measured = [(1, "a"), (16, "b"), (1024, "c")]
    assert [tuning.nearest(measured, n) for n in (1, 3, 5, 100, 127, 129, 10**6)] == [
        "a", "a", "b", "b", "b", "c", "c",
    ]  # fmt: skip
    assert tuning.nearest([(1, "a"), (4, "b")], 2) == "a"  # a tie: the smaller count


def test_dtype_classes():
    assert [tuning.dtype_class(n) for n in (2, 4, 8, 16)] == ["4", "4", "8", "8"]


# --- every strategy computes the recurrence -----------------------------------------------


@given(
    layout=st.sampled_from(["rows", "cols"]),
    strategy=st.sampled_from(sorted({*tuning.STRATEGIES["rows"], *tuning.STRATEGIES["cols"]})),
    op=st.sampled_from(tuning.OPS),
    reverse=st.booleans(),
    steps=st.integers(1, 60),
    lanes=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_every_strategy_matches_the_oracle(layout, strategy, op, reverse, steps, lanes, seed):
    if layout == "cols" and "chains" in strategy:
        strategy = strategy.replace("chains", "").strip("+") or "lanes"
    rng = np.random.default_rng(seed)
    shape, axis = ((lanes, steps), -1) if layout == "rows" else ((steps, lanes + 1), 0)
    a = rng.uniform(-1.1, 1.1, shape)
    x = rng.standard_normal(shape)
    settings = dict(threads=3, min_threaded=0, min_segment=1, tile=96, strategy=strategy)
    with _plan.forced(**settings):
        if op == "scan":
            h = linscan.scan(a, x, axis=axis, reverse=reverse)
            testing.assert_scan_close(h, a, x, axis=axis, reverse=reverse)
        elif op == "final_state":
            state = linscan.final_state(a, x, axis=axis, reverse=reverse)
            testing.assert_final_state_close(state, a, x, axis=axis, reverse=reverse)
        else:
            h = testing.reference.scan(a, x, axis=axis, reverse=reverse)
            gh = rng.standard_normal(shape)
            grads = linscan.scan_backward(a, h, gh, axis=axis, reverse=reverse)
            testing.assert_scan_backward_close(grads, a, h, gh, axis=axis, reverse=reverse)
