"""What the CPU and GPU benchmarks share: the layout cases, timing against a yardstick in
interleaved pairs, the oracle's lanes, the environment record, the peers' plumbing and the
report's rendering (Markdown tables, JSON).

Times are seconds. A *clock* is a function that runs ``fn`` once and returns how long it took:
:func:`wall_clock` on the host; the GPU benchmark passes one that reads device events.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import _host


@dataclass(frozen=True)
class Case:
    """A layout of ``size`` float32 elements: ``rows`` rows of time-contiguous steps
    (``axis=-1``), or ``rows`` channels of a time-major array (``axis=0``)."""

    name: str
    layout: str
    rows: int
    axis: int

    def shape(self, size: int) -> tuple:
        steps = max(1, size // self.rows)
        return (self.rows, steps) if self.axis == -1 else (steps, self.rows)


CASES = (
    Case("one row", "time-contiguous", 1, -1),
    Case("16 rows", "time-contiguous", 16, -1),
    Case("1024 rows", "time-contiguous", 1024, -1),
    Case("16 channels", "time-major", 16, 0),
    Case("1024 channels", "time-major", 1024, 0),
)


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def select(names, patterns) -> list:
    """The names that contain any of ``patterns``, in their order (``--case``)."""
    return [name for name in names if any(p in name for p in patterns)]


def wall_clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn, repeat: int, clock=wall_clock, warmup: int = 1) -> float:
    """Median of ``repeat`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return float(np.median([clock(fn) for _ in range(repeat)]))


def interleaved(op, yardstick, repeat: int, clock=wall_clock, warmup: int = 1) -> tuple:
    """``(op times, yardstick times)`` over ``repeat`` pairs, yardstick first in each pair, so
    that both see the same machine (clock boost, other load); ``warmup`` untimed pairs first."""
    for _ in range(warmup):
        op()
        yardstick()
    ops, yards = [], []
    for _ in range(repeat):
        yards.append(clock(yardstick))
        ops.append(clock(op))
    return ops, yards


def median(values) -> float:
    return float(np.median(values))


def lanes(arr, axis: int):
    """The first and last lane of ``arr`` along every axis but ``axis`` (kept whole): what the
    benchmarks check against the float64 oracle, cheap even for rows of 2**26 steps."""
    axis %= arr.ndim
    for d in range(arr.ndim):
        if d != axis and arr.shape[d] > 1:
            arr = arr.take([0, arr.shape[d] - 1], axis=d)
    return arr


def environment(versions: dict, hardware: dict) -> dict:
    """The record of where and how a benchmark ran: Python and NumPy, then ``versions`` (the
    backend's libraries), the host's CPU (model, CPUs, vector extensions: see
    :func:`linscan._host.cpu`), ``hardware`` (threads, or the GPU), and the command."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        **versions,
        **_host.cpu(),
        **hardware,
        "command": " ".join(["python -m linscan"] + sys.argv[1:]),
    }


# Peers: other libraries computing the same recurrence on the same data.


def combine(left, right, mul=lambda p, q: p * q, add=lambda p, q: p + q):
    """The recurrence's associative operator on ``(decay, value)`` pairs: ``left``'s steps,
    then ``right``'s."""
    a_left, x_left = left
    a_right, x_right = right
    return mul(a_right, a_left), add(mul(a_right, x_left), x_right)


def jax_scan(axis: int):
    """``(a, x) -> h`` by ``jax.lax.associative_scan`` over ``axis``, jit-compiled."""
    import jax

    return jax.jit(lambda a, x: jax.lax.associative_scan(combine, (a, x), axis=axis)[1])


class PeerFailed(str):
    """Why a peer has no figure (not installed, no GPU backend for it): ``"Type: message"``."""


def peers(measures: dict, failures=(ImportError,)) -> dict:
    """Run each peer's measurement (``name -> function``) in order: ``name -> its result``, or
    ``name ->`` :class:`PeerFailed` where it raised one of ``failures``."""
    found = {}
    for name, measure in measures.items():
        try:
            found[name] = measure()
        except failures as exc:
            found[name] = PeerFailed(f"{type(exc).__name__}: {exc}")
    return found


# Rendering.


def markdown_table(head, rows) -> list:
    """Lines of a Markdown table: ``head`` and one line per sequence of cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, cells)) + " |" for cells in rows]
    return lines


def _plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(report: dict) -> str:
    """A report (``environment`` and its tables; rows as dicts or dataclasses) as JSON."""
    return json.dumps(report, indent=2, default=_plain)
