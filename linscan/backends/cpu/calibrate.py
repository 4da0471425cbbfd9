"""``python -m linscan tune``: time every strategy of ``method="auto"`` on this machine and
store the fastest per kind of problem in the tuning table (``tuning``).

A *probe* is one kind of problem: a layout (``rows``: time-contiguous rows, ``cols``:
time-major channels), a lane count (rows, or channels), an operation (``scan``,
``final_state``, ``backward``), a walk direction and a dtype class (float32 for elements of 4
bytes or fewer, float64 for the rest). Each probe runs the real API call on arrays of ``size``
elements under each strategy that gives it a different plan, in interleaved rounds (every
strategy once per round, the order rotating), so that all of them see the same machine, and
on ``PLACEMENTS`` sets of arrays in turn, so that no one placement in memory decides. A
strategy replaces the static choice only when the median over the rounds of its time divided
by the static choice's time in the same round is below ``1 - margin``, and again in a
second measurement of the two alone (``confirmed``): noise alone should not move ``auto``
away from the cost model.

Before the probes, the same rule picks, per operation, how far downward walks touch ahead
(``TILES``; see ``kernels``): ahead of a walk down one long float32 row (its scan, final
state and backward pass in split mode with chains, whose kernels touch). On the Xeon the
kernels were designed on, descending store streams ran at 60% of the speed of ascending ones
and touching paid; on a Zen 3 walking down ran as fast as walking up, and touching made it
1.1 to 1.8 times slower; on a Zen 4 VM the three walks preferred different tiles. The probes
are then timed with the tiles chosen.

Measuring takes about a minute on a 2-core machine; nothing else in linscan ever measures.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import plan as _plan
from . import tuning

#: Elements per array of a probe: beyond the last-level caches of the machines we run on, and
#: the size ``python -m linscan bench`` measures. At 2**22 (three float32 arrays: 48 MiB) a
#: Zen 4 VM's 32 MiB L3 still held much of a probe: one row's final state (two arrays, 32
#: MiB) took one thread there, which ran 1.9 times as long as two threads at 2**24.
DEFAULT_SIZE = 1 << 24
DEFAULT_REPEAT = 5
#: Placements a probe is timed on, the rounds taking them in turn: sets of its arrays
#: allocated one after another and all held, so that each lies elsewhere in memory. On the
#: Zen 4 VM one long float32 row's backward pass ran 1.4-2.4 times as long under one
#: strategy on one set as on another in the same process (the others alike, by different
#: factors), and a table measured on one set chose by its luck: the static model's split
#: mode, at twice the time of the chains in most later processes.
PLACEMENTS = 3
#: A strategy must beat the static choice by this fraction to replace it.
MARGIN = 0.05
#: Channel counts probed for the time-major layout.
CHANNELS = (16, 1024)
DTYPES = {"4": np.float32, "8": np.float64}
#: ``busy`` warns above this 1-minute load average per usable CPU.
BUSY = 0.5
#: Tiles timed for downward walks (elements; 0: no touching); ``plan.TILE`` is the static one.
TILES = (0, 1024, _plan.TILE, 4 * _plan.TILE)


@dataclass(frozen=True)
class Probe:
    layout: str
    lanes: int
    op: str
    down: bool
    dtype: str  # dtype class, "4" or "8"

    def shape(self, size: int, threads: int) -> tuple:
        """``(O, T, I)``: rows are ``(lanes, T, 1)``, channels ``(1, T, lanes)``; about
        ``size`` elements, but at least as many as a call needs to be threaded at all, and
        steps enough for split mode to cut time into segments (up to 4 of them, so that many
        threads do not make the arrays huge)."""
        least = max(-(-_plan.MIN_THREADED // self.lanes), min(threads, 4) * _plan.MIN_SEGMENT)
        steps = max(size // self.lanes, least)
        return (self.lanes, steps, 1) if self.layout == "rows" else (1, steps, self.lanes)

    def label(self) -> str:
        kind = "rows" if self.layout == "rows" else "channels"
        walk = "down" if self.down else "up"
        return f"{self.lanes} {kind}, {self.op} {walk}, {np.dtype(DTYPES[self.dtype]).name}"


def row_counts(threads: int) -> tuple:
    """Row counts probed: one row, one per thread, and many (16 and 1024)."""
    return tuple(sorted({1, threads, 16, 1024}))


def probes(threads: int, dtypes=("4", "8")) -> list:
    """Every probe, grouped by arrays (layout, lanes, dtype) so that each group allocates once."""
    found = []
    for dtype in dtypes:
        for layout, counts in (("rows", row_counts(threads)), ("cols", CHANNELS)):
            for lanes in counts:
                for op in tuning.OPS:
                    for down in (False, True):
                        found.append(Probe(layout, lanes, op, down, dtype))
    return found


def candidates(probe: Probe, size: int) -> tuple:
    """``(static choice, strategies)``: the strategy ``auto`` takes without a table, and
    every strategy whose plan for the probe's shape differs from the others' (a split that
    the shape does not allow is the same plan as lanes)."""
    O, T, I = probe.shape(size, _plan.num_threads())
    itemsize = np.dtype(DTYPES[probe.dtype]).itemsize

    def plan_of(strategy):
        with _plan.forced(strategy=strategy):
            return _plan.make_plan(O, T, I, down=probe.down, method="auto", op=probe.op,
                                   itemsize=itemsize, real=True)  # fmt: skip

    with _plan.forced(tuned=False):
        static = _plan.strategy(_plan.make_plan(O, T, I, down=probe.down, method="auto",
                                                op=probe.op, itemsize=itemsize,
                                                real=True))  # fmt: skip
    plans = {static: plan_of(static)}
    for strategy in tuning.STRATEGIES[probe.layout]:
        p = plan_of(strategy)
        if p not in plans.values():
            plans[strategy] = p
    return static, tuple(plans)


def decide(static: str, times: dict, margin: float = MARGIN) -> tuple:
    """``(choice, ratios)``: ``times`` maps each strategy to its times over the same rounds;
    ``ratios`` each strategy's median over the rounds of its time / the static choice's time.
    The fastest by ratio wins if its ratio is below ``1 - margin``, else ``static`` stays."""
    base = times[static]
    ratios = {s: float(np.median([t / b for t, b in zip(ts, base)])) for s, ts in times.items()}
    best = min(ratios, key=lambda s: (ratios[s], s != static))
    return (best if ratios[best] < 1 - margin else static), ratios


def confirmed(probe: Probe, static: str, strategies, placements, repeat: int, margin: float):
    """``decide`` on the probe's times (``measure``); a choice other than ``static`` is kept
    only if a second measurement of the two alone makes it again, else ``static`` stays.
    ``(choice, ratios)``: the first measurement's, the challenger's replaced by the second's
    where it was measured again (so that the table shows why it was not taken).

    On the shared VMs a stall of a few seconds (the other vCPU taken away) slowed every
    two-thread strategy of one probe alike: a tune chose one thread for one long row's
    backward pass (0.63 of split mode's time there), which ran 1.1 to 1.3 times as long as
    split mode in every later process."""
    choice, ratios = decide(static, measure(probe, strategies, placements, repeat), margin)
    if choice != static:
        again, second = decide(static, measure(probe, (static, choice), placements, repeat),
                               margin)  # fmt: skip
        ratios = {**ratios, choice: second[choice]}
        choice = again if again == choice else static
    return choice, ratios


def _arrays(probe: Probe, size: int, rng) -> dict:
    """Inputs and preallocated outputs of a probe's shape, as the user would pass them:
    rows ``(lanes, T)`` scanned along ``axis=-1``, channels ``(T, lanes)`` along ``axis=0``."""
    O, T, I = probe.shape(size, _plan.num_threads())
    shape, axis = ((O, T), -1) if probe.layout == "rows" else ((T, I), 0)
    dtype = DTYPES[probe.dtype]
    a = rng.uniform(0.9, 1.0, shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    outputs = [np.empty_like(x) for _ in range(3)]
    for out in outputs:  # their pages faulted in now, not in a timed call
        out.fill(0)
    h, ga, gx = outputs
    return dict(a=a, x=x, h=h, gh=x.copy(), ga=ga, gx=gx, axis=axis)


def _placements(probe: Probe, size: int, rng) -> list:
    """``PLACEMENTS`` sets of the probe's arrays (``_arrays``)."""
    return [_arrays(probe, size, rng) for _ in range(PLACEMENTS)]


def _call(probe: Probe, v: dict):
    """The API call a probe times. ``down`` is the walk: the backward pass walks against its
    forward scan, so a backward probe walking down is ``scan_backward`` of a forward scan."""
    from ..._api import final_state, scan, scan_backward

    a, x, axis = v["a"], v["x"], v["axis"]
    if probe.op == "scan":
        return lambda: scan(a, x, axis=axis, reverse=probe.down, out=v["h"])
    if probe.op == "final_state":
        return lambda: final_state(a, x, axis=axis, reverse=probe.down)
    return lambda: scan_backward(a, x, v["gh"], axis=axis, reverse=not probe.down,
                                 out=(v["ga"], v["gx"], None))  # fmt: skip


def load() -> float | None:
    """The 1-minute load average, or ``None`` where the system does not report one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy() -> str | None:
    """A warning if other work is running (the load average above ``BUSY`` per usable CPU),
    else ``None``. The timings would measure it too: a run at a load of 2.7 on two CPUs chose
    the single-thread loop for one long float32 row, half as fast as split mode when idle."""
    now, cpus = load(), _plan._usable_cpus()
    if now is None or now <= BUSY * cpus:
        return None
    return (
        f"the machine is busy (load average {now:.1f} over the last minute, {cpus} CPUs): "
        "the timings measure that work too and may choose wrongly; tune again when it is idle"
    )


def _rounds(calls, options, settings, repeat: int) -> dict:
    """Times under each of ``options`` (run with ``plan.forced(**settings(option))``) of
    ``calls``, the same call on each placement: one warm-up round, then ``repeat`` rounds,
    each on the next placement in turn and running every option once, in an order that
    rotates from round to round, and once more after each turn of the placements (else, as
    many options as placements, each placement would see the same option first)."""
    times = {o: [] for o in options}
    order = list(options)
    for r in range(repeat + 1):
        call = calls[max(r - 1, 0) % len(calls)]
        for option in order:
            with _plan.forced(**settings(option)):
                t0 = time.perf_counter()
                call()
                elapsed = time.perf_counter() - t0
            if r:  # round 0 warms up (first calls compile or load kernels)
                times[option].append(elapsed)
        turn = 2 if len(calls) > 1 and r and r % len(calls) == 0 else 1
        order = order[turn:] + order[:turn]
    return times


def measure(probe: Probe, strategies, placements, repeat: int) -> dict:
    """Times of the probe's call on ``placements`` (``_placements``) under each strategy
    (``_rounds``)."""
    calls = [_call(probe, v) for v in placements]
    return _rounds(calls, strategies, lambda s: {"strategy": s}, repeat)


#: The probe whose arrays ``measure_tiles`` walks down.
TILE_PROBE = Probe("rows", 1, "scan", True, "4")


def measure_tiles(tiles, placements, repeat: int) -> dict:
    """Per op, times under each tile of the walk down ``TILE_PROBE``'s row that touches ahead:
    its scan, final state and backward pass in split mode with chains, each in rounds of its
    own (``_rounds``, on ``placements``): ``{op: {tile: times}}``."""
    return {
        op: _rounds(
            [_call(replace(TILE_PROBE, op=op), v) for v in placements],
            tiles,
            lambda t: {"strategy": "split+chains", "tile": t},
            repeat,
        )  # fmt: skip
        for op in tuning.OPS
    }


def choose_tiles(times: dict, margin: float = MARGIN) -> tuple:
    """``(tiles, ratios)`` per op from ``measure_tiles``'s times: each op's tile by ``decide``
    against the static ``plan.TILE``."""
    tiles, ratios = {}, {}
    for op, by_tile in times.items():
        tiles[op], found = decide(_plan.TILE, by_tile, margin)
        ratios[op] = {str(t): round(r, 3) for t, r in found.items()}
    return tiles, ratios


def calibrate(size=DEFAULT_SIZE, repeat=DEFAULT_REPEAT, margin=MARGIN, dtypes=("4", "8"),
              progress=None) -> tuple:  # fmt: skip
    """Choose each op's tile (``measure_tiles``), then time every probe with its op's tile
    (``measure``) and return ``(tiles, their ratios, entries)``: per probe its choice, the
    static choice and the ratios."""
    rng = np.random.default_rng(0)
    placements = _placements(TILE_PROBE, size, rng)
    tiles, tile_ratios = choose_tiles(measure_tiles(TILES, placements, repeat), margin)
    placements = None
    entries = _probe_all(size, repeat, margin, dtypes, progress, rng, tiles)
    return tiles, tile_ratios, entries


def _probe_all(size, repeat, margin, dtypes, progress, rng, tiles) -> list:
    threads = _plan.num_threads()
    todo = probes(threads, dtypes)
    entries, arrays, group = [], None, None
    for n, probe in enumerate(todo):
        if (probe.layout, probe.lanes, probe.dtype) != group:
            group = (probe.layout, probe.lanes, probe.dtype)
            arrays = None  # free the last group's arrays before allocating the next
            arrays = _placements(probe, size, rng)
        with _plan.forced(tile=tiles[probe.op]):
            static, strategies = candidates(probe, size)
            if len(strategies) > 1:
                choice, ratios = confirmed(probe, static, strategies, arrays, repeat, margin)
            else:
                choice, ratios = static, {static: 1.0}
        entries.append({**asdict(probe), "strategy": choice, "static": static,
                        "ratios": {s: round(r, 3) for s, r in ratios.items()}})  # fmt: skip
        if progress:
            progress(n + 1, len(todo), probe, choice, static)
    return entries


def run(size=DEFAULT_SIZE, repeat=DEFAULT_REPEAT, margin=MARGIN, progress=None) -> tuple:
    """Calibrate and store the table for this machine: ``(file, tiles, entries)``."""
    threads = _plan.num_threads()
    t0 = time.perf_counter()
    tiles, tile_ratios, entries = calibrate(size, repeat, margin, progress=progress)
    record = {
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - t0, 1),
        "size": size,
        "repeat": repeat,
        "margin": margin,
        "load_average": load(),
        "tile_ratios": tile_ratios,
    }
    file = tuning.path(threads)
    tuning.write(file, tuning.key(threads), entries, tiles, record)
    return file, tiles, entries


def choices_table(entries) -> list:
    """Markdown lines: per probe the choice, the static one, and each strategy's ratio."""
    from ..._bench import common

    rows = []
    for e in entries:
        probe = Probe(e["layout"], e["lanes"], e["op"], e["down"], e["dtype"])
        ratios = ", ".join(f"{s} {r:.2f}" for s, r in sorted(e["ratios"].items(),
                                                              key=lambda kv: kv[1]))  # fmt: skip
        mark = "" if e["strategy"] == e["static"] else " (changed)"
        rows.append([probe.label(), e["strategy"] + mark, e["static"], ratios])
    head = ["problem", "auto uses", "static model", "time / static model's (median)"]
    return common.markdown_table(head, rows)
