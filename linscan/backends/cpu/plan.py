"""How the CPU backend splits a scan over threads: plain Python, testable without Numba.

A problem in the canonical layout ``(O, T, I)`` runs in one of two modes:

* **lanes**: the lanes (rows when ``I == 1``, else channel blocks of outer rows) are split into
  one box per thread; each thread walks its box over the whole time axis. Memory sees each
  byte once. Its variant **whole steps** (channels only; the strategy ``whole-steps``) cuts
  boxes of whole outer rows only, so that no two threads share a step's channels: one box
  on one thread for a single outer row. On a 2-core Zen 4 VM two threads each walking half
  of every step of 1024 float32 channels took 1.3 to 1.8 times as long as one thread
  walking all of it (rows split between threads scaled); the tuning measures whether that
  holds on the machine (with one outer row: a table applies it by lane count, also to a few
  outer rows on many threads).
* **split**: time is cut into one segment per thread. A first phase reduces the segments but
  the last (in walk order) to ``(decay product, partial state)`` pairs, spread evenly over all
  threads as "pieces"; the pairs are composed into each segment's start state; a second phase
  scans every segment from its true start state. This reads ``a`` and ``x`` of all but one
  segment twice (20 bytes per float32 step instead of 12) and is worth it only when there are
  too few lanes to keep the threads busy.

``method="sequential"`` is the paper's serial baseline (lanes, one plain loop per lane);
``"parallel"`` always chunks time (blocks within a row: vector registers for real rows,
chains for complex ones, ``kernels``; and split mode when there is more than one thread);
``"auto"`` takes the strategy this machine's tuning table holds for the problem (``tuning``,
written by ``python -m linscan tune``), and without one picks lanes or split mode with the
static cost model below, and blocks for real rows walked upwards, and for others only for
upward walks in split mode. Every method touches downward walks ahead by the table's tile
for the operation (``TILE`` without a table).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass

from ... import _validate
from . import tuning

#: Below this many elements a call runs on the calling thread alone (thread hand-off costs
#: tens of microseconds).
MIN_THREADED = 1 << 16
#: Split mode needs at least this many steps per segment.
MIN_SEGMENT = 1 << 12
#: Channel blocks handed to different threads are multiples of this (64 bytes of float32), so
#: that no two threads write the same cache line.
CHANNEL_ALIGN = 16
#: Elements a downward walk touches ahead (see ``kernels``) where no tuning table says
#: otherwise; a multiple of the 128-step row block.
TILE = 4096
#: Cost of a reduce step relative to a scan step (it reads 8 of the 12 bytes and writes none).
REDUCE_COST = 0.67

_overrides = threading.local()


@contextlib.contextmanager
def forced(**settings):
    """Private test knob: override ``threads``, ``min_threaded``, ``min_segment``, ``tile``,
    ``strategy`` (what ``"auto"`` uses, one of ``tuning.STRATEGIES``; the calibration times
    each this way) or ``tuned`` (``False``: the tuning table is ignored) on this
    thread, e.g. to force split mode with three segments on a ten-step problem."""
    old = dict(getattr(_overrides, "settings", {}))
    _overrides.settings = {**old, **settings}
    try:
        yield
    finally:
        _overrides.settings = old


def _setting(name: str, default):
    return getattr(_overrides, "settings", {}).get(name, default)


#: ``LINSCAN_NUM_THREADS`` is capped at this many threads per usable CPU. The kernels are
#: memory or latency bound and gain nothing from threads beyond the CPUs, yet a large enough
#: problem gets one task per thread: a long row split under a setting of 100000 would start
#: 100000 OS threads, which stay in the pool for the life of the process (it grows, never
#: shrinks), each segment adding a float64 (product, partial state) pair per lane and a step
#: to the serial composition. A few per CPU still lets one try oversubscription, or force
#: split mode with more segments than a small machine has cores.
MAX_THREADS_PER_CPU = 4


def num_threads() -> int:
    """Threads the CPU backend uses: ``LINSCAN_NUM_THREADS`` (at most
    ``MAX_THREADS_PER_CPU`` per usable CPU), else the CPUs this process may run on.

    Raises ``ValueError`` naming the variable when it is set to anything but a positive
    integer."""
    forced_threads = _setting("threads", None)
    if forced_threads is not None:
        return forced_threads
    env = os.environ.get("LINSCAN_NUM_THREADS", "").strip()
    if env:
        return _threads_from_env(env, _usable_cpus())
    return _usable_cpus()


@functools.lru_cache(maxsize=8)
def _threads_from_env(env: str, cpus: int) -> int:
    """``LINSCAN_NUM_THREADS`` (stripped, non-empty) as a thread count for ``cpus`` usable CPUs.

    Cached: every scan asks, and the warning on capping should come once per setting, not
    once per call (``lru_cache`` does not cache the ``ValueError``, so a bad setting raises
    every time)."""
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"LINSCAN_NUM_THREADS must be a positive integer, got {env!r}")
    cap = MAX_THREADS_PER_CPU * cpus
    if value > cap:
        _validate._warn(
            f"LINSCAN_NUM_THREADS={value} is more than {MAX_THREADS_PER_CPU} threads per usable "
            f"CPU ({cpus} usable); using {cap} threads"
        )
        return cap
    return value


@functools.lru_cache(maxsize=1)
def _usable_cpus() -> int:
    """CPUs this process may run on (read once: the system call is not free per scan)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Box:
    """Lanes ``[o0, o1) x [i0, i1)`` of the canonical layout."""

    o0: int
    o1: int
    i0: int
    i1: int


@dataclass(frozen=True)
class Piece:
    """Time range ``[t0, t1)`` reduced in the first phase of split mode, part of ``segment``."""

    segment: int
    t0: int
    t1: int


@dataclass(frozen=True)
class Plan:
    """``blocked``: rows use the blocked kernels (vectors or chains); ``tile``: elements
    touched ahead of a downward walk (0: none). Lanes mode: ``boxes``, one per thread.
    Split mode: ``segments`` (time ranges in walk order, one per thread, all lanes each) and
    ``pieces`` (per first-phase task, its pieces in walk order; together they cover every
    segment but the last in walk order, or all of them for a pass that writes nothing)."""

    blocked: bool
    tile: int = TILE
    boxes: tuple = ()
    segments: tuple = ()
    pieces: tuple = ()

    @property
    def split(self) -> bool:
        return bool(self.segments)

    @property
    def flat_pieces(self) -> list:
        """Every first-phase piece, in walk order."""
        return [piece for task in self.pieces for piece in task]


def _even(n: int, parts: int) -> list:
    """Boundaries cutting ``range(n)`` into ``parts`` near-equal ranges."""
    return [n * k // parts for k in range(parts + 1)]


def _lane_boxes(O: int, I: int, threads: int, whole_steps: bool = False) -> tuple:
    """At most ``threads`` boxes of near-equal size covering all lanes; with ``whole_steps``
    boxes of whole outer rows only, so that no two threads share a step's channels (fewer
    boxes than threads where there are fewer outer rows)."""
    if O >= threads or I == 1 or whole_steps:
        cuts = _even(O, min(threads, O))
        return tuple(Box(lo, hi, 0, I) for lo, hi in zip(cuts, cuts[1:]) if hi > lo)
    # Few outer rows: split each row's channels into aligned blocks.
    per_row = max(1, min(threads // O, I // CHANNEL_ALIGN))
    units = -(-I // CHANNEL_ALIGN)
    cuts = [min(I, c * CHANNEL_ALIGN) for c in _even(units, per_row)]
    return tuple(
        Box(o, o + 1, lo, hi) for o in range(O) for lo, hi in zip(cuts, cuts[1:]) if hi > lo
    )


def _split(T: int, down: bool, threads: int, writes: bool) -> tuple:
    """Segments (time ranges in walk order) and first-phase pieces for split mode. Without
    ``writes`` (a final state only) the first phase covers every segment and the second phase
    has nothing to do."""
    walk = _even(T, threads)  # segment k covers walk positions [walk[k], walk[k+1])
    reduce_end = walk[-2] if writes else T  # the last segment needs no reduction if rescanned
    work = _even(reduce_end, threads)

    def to_time(w0, w1):
        return (T - w1, T - w0) if down else (w0, w1)

    segments = tuple(to_time(w0, w1) for w0, w1 in zip(walk, walk[1:]))
    tasks = []
    for lo, hi in zip(work, work[1:]):
        pieces = []
        for seg, (s0, s1) in enumerate(zip(walk, walk[1:])):
            p0, p1 = max(lo, s0), min(hi, s1)
            if p1 > p0:
                pieces.append(Piece(seg, *to_time(p0, p1)))
        if pieces:
            tasks.append(tuple(pieces))
    return segments, tuple(tasks)


def _split_pays(O: int, I: int, boxes: tuple, segments: int, writes: bool, down: bool) -> bool:
    """The cost model of ``method="auto"``: is split mode faster than lanes mode?

    A row (``I == 1``) is latency bound, so threads speed it up in proportion: compare the
    largest lane box with a segment's share, the first phase included. With channels the
    kernels are memory bound and extra threads add less bandwidth than split mode adds bytes,
    except when walking down with fewer outer rows than threads: lanes mode would then hand
    each thread a slice of every step, and short descending runs are the slowest access
    pattern (``benchmarks/cpu-kernel-design-2026-11-26.md``).
    """
    if I > 1:
        return down and O < segments
    lanes_time = max((b.o1 - b.o0) * (b.i1 - b.i0) for b in boxes) / (O * I)
    extra = REDUCE_COST * (segments - 1) / segments if writes else 0.0
    return (1 + extra) / segments < lanes_time


def strategy(plan: Plan) -> str:
    """The name of ``plan``'s strategy (``tuning.STRATEGIES``; a plan of whole steps is
    named ``lanes``: its boxes are those of lanes mode on fewer threads)."""
    name = "split" if plan.split else "lanes"
    if plan.blocked:
        return "chains" if name == "lanes" else "split+chains"
    return name


def _static(O, I, boxes, segments, op, down, real) -> str:
    """The strategy of ``method="auto"`` without a tuning table."""
    split = segments >= 2 and _split_pays(O, I, boxes, segments, op != "final_state", down)
    # Real rows walk their blocks in vector registers: on a Zen 4, walking up, as fast as the
    # plain loop or faster for every row count and op measured, and steadier (the paired
    # loop's backward pass over 16 rows ran at 0.8 to 2.7 times the floor from one process
    # to the next; benchmarks/cpu-2core-cols-2026-12-07.md). Not walking down: without a
    # table the blocks touch each tile ahead (``TILE``), which cost twice the time there.
    # Complex rows' chains pay only when a thread owns one long row walked upwards (split);
    # with many rows per thread memory is the bottleneck, and walking down the chains'
    # interleaved descending streams per array lost to the plain loop
    # (benchmarks/cpu-kernel-design-2026-11-26.md).
    if I == 1 and not down and (real or split):
        return "split+chains" if split else "chains"
    return "split" if split else "lanes"


def _table(threads: int):
    """The tuning table ``make_plan`` follows, or ``None``."""
    return tuning.table(threads) if _setting("tuned", True) else None


def _tile(table, op: str) -> int:
    """Elements a downward walk of ``op`` touches ahead: the forced setting, ``table``'s, or
    ``TILE``."""
    return _setting("tile", table.tiles[op] if table else TILE)


def make_plan(
    O: int,
    T: int,
    I: int,
    *,
    down: bool,
    method: str,
    op: str = "scan",
    itemsize: int = 4,
    real: bool = False,
) -> Plan:
    """Choose how to run a problem of canonical shape ``(O, T, I)`` (all sizes positive) of
    ``itemsize``-byte elements.

    ``down``: time is walked downwards. ``op``: ``"scan"``, ``"backward"`` or
    ``"final_state"`` (which writes no result per step, so its split mode needs one reducing
    phase only). ``real``: the elements are float32 or float64, whose rows the blocked
    kernels walk in vector registers."""
    threads = num_threads()
    if O * T * I < _setting("min_threaded", MIN_THREADED):  # small: this thread, one box
        # Only the chained kernels touch in lanes mode: a small call reads no table otherwise
        # (finding the tuning file costs about 10 us, a small call about 40).
        blocked = method == "parallel" and I == 1
        tile = _tile(_table(threads), op) if blocked else TILE
        return Plan(blocked, tile, boxes=(Box(0, O, 0, I),))
    table = _table(threads)
    tile = _tile(table, op)
    boxes = _lane_boxes(O, I, threads)
    segments = min(threads, T // _setting("min_segment", MIN_SEGMENT))
    if method == "auto":
        layout = "rows" if I == 1 else "cols"
        name = _setting("strategy", None) or tuning.lookup(table, layout, itemsize, op, down, O * I)
        name = name or _static(O, I, boxes, segments, op, down, real)
    else:
        name = "split+chains" if method == "parallel" else "lanes"
    split = "split" in name and segments >= 2
    blocked = I == 1 and "chains" in name
    if not split:
        if name == "whole-steps":
            boxes = _lane_boxes(O, I, threads, whole_steps=True)
        return Plan(blocked, tile, boxes=boxes)
    segs, pieces = _split(T, down, segments, op != "final_state")
    return Plan(blocked, tile, segments=segs, pieces=pieces)
