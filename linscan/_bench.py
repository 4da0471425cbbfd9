"""``python -m linscan bench``: how fast the scans run, as ratios measured in the same run.

Every time is reported against the memory floor of the same arrays, ``np.add(a, x, out=h)``
(reads ``a`` and ``x`` and writes ``h``: the 12 bytes per float32 element a forward scan must
move), timed in interleaved pairs with the operation so that both see the same machine; the
ratio is the median over the pairs. The backward pass moves 20 bytes per element (reads
``a``, ``h``, ``grad_h``; writes ``grad_x``, ``grad_a``), so its floor is the same ``np.add``
time scaled by 20/12. Peers, where installed, run on the same arrays: ``scipy.signal.lfilter``
(constant decay, against linscan with the same scalar decay) and ``jax.lax.associative_scan``
(jit-compiled, CPU). Outputs are preallocated and reused (``out=``), as a training loop would;
fresh memory from the OS costs about as much again at these sizes. Every result is checked
against the float64 serial oracle (on two lanes of each case, over the whole time axis)
before it is timed.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import testing
from .backends.cpu import plan as _plan
from ._api import final_state, scan, scan_backward

METHODS = ("sequential", "parallel", "auto")


@dataclass(frozen=True)
class Case:
    name: str
    layout: str
    rows: int  # time-contiguous: rows of T steps; time-major: channels
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


@dataclass
class Row:
    case: str
    shape: tuple
    layout: str
    op: str
    method: str
    ms: float
    elements_per_s: float
    floor_ratio: float
    peers: dict = field(default_factory=dict)


def _pairs(op, floor, repeat):
    """Median time of ``op`` and median of ``op / floor`` over interleaved pairs."""
    op()
    floor()
    times, ratios = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        floor()
        t1 = time.perf_counter()
        op()
        t2 = time.perf_counter()
        times.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return float(np.median(times)), float(np.median(ratios))


def _timed(op, repeat):
    op()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        op()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _lanes(case: Case, arr: np.ndarray) -> np.ndarray:
    """The first and last lane of ``arr`` (a row, or a channel), time axis kept."""
    pick = [0, case.rows - 1] if case.rows > 1 else [0]
    return arr[pick] if case.axis == -1 else arr[:, pick]


def _check(case, a, x, grad_h, progress):
    """Every method's forward (both directions) and backward results on the first and last
    lane, against the float64 oracle."""
    la, lx, lg = _lanes(case, a), _lanes(case, x), _lanes(case, grad_h)
    for reverse in (False, True):
        oracle = testing.scan_oracle(la, lx, axis=case.axis, reverse=reverse)
        for method in METHODS:
            h = scan(a, x, axis=case.axis, reverse=reverse, method=method)
            oracle.check(f"{method} scan (reverse={reverse})", _lanes(case, h))
    h = scan(a, x, axis=case.axis)
    grad_a, grad_x, _ = testing.backward_oracles(la, _lanes(case, h), lg, axis=case.axis)
    for method in METHODS:
        grads = scan_backward(a, h, grad_h, axis=case.axis, method=method)
        grad_a.check(f"{method} grad_a", _lanes(case, grads[0]))
        grad_x.check(f"{method} grad_x", _lanes(case, grads[1]))
    progress("  every method checked against the float64 oracle")


def _jax_scan(axis):
    import jax

    def combine(left, right):
        return right[0] * left[0], right[0] * left[1] + right[1]

    return jax.jit(lambda a, x: jax.lax.associative_scan(combine, (a, x), axis=axis)[1])


def _peers(case, a, x, ours_auto, decay, repeat, progress):
    """Speedups of linscan over the peers that are installed (peer time / linscan time)."""
    found = {}
    try:
        from scipy.signal import lfilter
    except ImportError:
        lfilter = None
    if lfilter is not None:
        ours = _timed(lambda: scan(decay, x, axis=case.axis), repeat)
        theirs = _timed(lambda: lfilter([1.0], [1.0, -decay], x, axis=case.axis), repeat)
        found["scipy.signal.lfilter"] = theirs / ours
        progress(f"  scipy lfilter: {theirs * 1e3:.1f} ms, linscan {ours * 1e3:.1f} ms")
    try:
        import jax
    except ImportError:
        return found
    fn = _jax_scan(case.axis)
    # Inputs committed to the CPU device keep the computation there, also where JAX sees a GPU.
    cpu = jax.devices("cpu")[0]
    ja, jx = jax.device_put(a, cpu), jax.device_put(x, cpu)
    theirs = _timed(lambda: fn(ja, jx).block_until_ready(), max(3, repeat // 2))
    found["jax.lax.associative_scan"] = theirs / ours_auto
    progress(f"  jax associative_scan: {theirs * 1e3:.1f} ms ({jax.__version__})")
    return found


def run(size=1 << 24, repeat=7, cases=CASES, peers=True, check=True, progress=print):
    """Benchmark every case at ``size`` float32 elements; return a list of :class:`Row`."""
    rng = np.random.default_rng(0)
    rows = []
    for case in cases:
        shape = case.shape(size)
        a = rng.uniform(0.9, 1.0, shape).astype(np.float32)
        x = rng.standard_normal(shape).astype(np.float32)
        grad_h = rng.standard_normal(shape).astype(np.float32)
        progress(f"{case.name} {shape} ({case.layout}, axis {case.axis})")
        if check:
            _check(case, a, x, grad_h, progress)
        rows += _time_case(case, a, x, grad_h, repeat, progress)
        if peers:
            auto = next(
                r for r in rows if r.case == case.name and r.op == "scan" and r.method == "auto"
            )
            auto.peers = _peers(case, a, x, auto.ms / 1e3, 0.95, repeat, progress)
    return rows


def _time_case(case, a, x, grad_h, repeat, progress):
    """Rows for every operation of one case; outputs are preallocated and reused."""
    h = np.empty_like(x)
    grads = (np.empty_like(a), np.empty_like(x), None)
    axis = case.axis
    rows = []

    def floor():
        np.add(a, x, out=h)

    def record(op, method, fn, bytes_factor=1.0):
        seconds, ratio = _pairs(fn, floor, repeat)
        row = Row(
            case.name,
            a.shape,
            case.layout,
            op,
            method,
            seconds * 1e3,
            a.size / seconds,
            ratio / bytes_factor,
        )
        rows.append(row)
        progress(f"  {op:14s} {method:10s} {row.ms:8.2f} ms  {row.floor_ratio:5.2f}x floor")

    for method in METHODS:
        record("scan", method, lambda m=method: scan(a, x, axis=axis, out=h, method=m))
    record("scan reverse", "auto", lambda: scan(a, x, axis=axis, reverse=True, out=h))
    record("final_state", "auto", lambda: final_state(a, x, axis=axis))
    hs = scan(a, x, axis=axis)
    for method in METHODS:
        record(
            "scan_backward",
            method,
            lambda m=method: scan_backward(a, hs, grad_h, axis=axis, method=m, out=grads),
            bytes_factor=20 / 12,
        )
    return rows


def environment() -> dict:
    import numba

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "threads": _plan.num_threads(),
        "command": " ".join(["python -m linscan"] + sys.argv[1:]),
    }


def table(rows) -> str:
    """A Markdown table of the rows."""
    peer_names = sorted({p for r in rows for p in r.peers})
    head = ["case", "shape", "layout", "op", "method", "ms", "Melem/s", "x floor"]
    head += [f"speedup vs {p}" for p in peer_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.case,
            "x".join(map(str, r.shape)),
            r.layout,
            r.op,
            r.method,
            f"{r.ms:.2f}",
            f"{r.elements_per_s / 1e6:.0f}",
            f"{r.floor_ratio:.2f}",
        ]
        cells += [f"{r.peers[p]:.1f}x" if p in r.peers else "" for p in peer_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def as_json(rows) -> str:
    return json.dumps({"environment": environment(), "rows": [asdict(r) for r in rows]}, indent=2)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.case}\n{r.op} {r.method}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.45), 5))
    ax.bar(range(len(rows)), [r.floor_ratio for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("time / memory floor (np.add of the same arrays)")
    ax.set_title("linscan CPU backend, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
