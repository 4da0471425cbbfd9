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

from dataclasses import dataclass, field

import numpy as np

from .. import _host, testing
from .._api import final_state, scan, scan_backward
from . import common

METHODS = ("sequential", "parallel", "auto")
DEFAULT_SIZE = 1 << 24
DEFAULT_REPEAT = 7
#: What ``--case`` chooses from, and what runs without it.
CASE_NAMES = DEFAULT_CASES = tuple(c.name for c in common.CASES)


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
    ops, floors = common.interleaved(op, floor, repeat)
    return common.median(ops), common.median([t / f for t, f in zip(ops, floors)])


def _check(case, a, x, grad_h, progress):
    """Every method's forward (both directions) and backward results on the first and last
    lane, against the float64 oracle."""
    axis = case.axis
    la, lx, lg = (common.lanes(v, axis) for v in (a, x, grad_h))
    for reverse in (False, True):
        oracle = testing.scan_oracle(la, lx, axis=axis, reverse=reverse)
        for method in METHODS:
            h = scan(a, x, axis=axis, reverse=reverse, method=method)
            oracle.check(f"{method} scan (reverse={reverse})", common.lanes(h, axis))
    h = scan(a, x, axis=axis)
    grad_a, grad_x, _ = testing.backward_oracles(la, common.lanes(h, axis), lg, axis=axis)
    for method in METHODS:
        grads = scan_backward(a, h, grad_h, axis=axis, method=method)
        grad_a.check(f"{method} grad_a", common.lanes(grads[0], axis))
        grad_x.check(f"{method} grad_x", common.lanes(grads[1], axis))
    progress("  every method checked against the float64 oracle")


def _peers(case, a, x, ours_auto, decay, repeat, progress):
    """Speedups of linscan over the peers that are installed (peer time / linscan time)."""

    def lfilter():
        from scipy.signal import lfilter

        ours = common.median_time(lambda: scan(decay, x, axis=case.axis), repeat)
        theirs = common.median_time(
            lambda: lfilter([1.0], [1.0, -decay], x, axis=case.axis), repeat
        )
        progress(f"  scipy lfilter: {theirs * 1e3:.1f} ms, linscan {ours * 1e3:.1f} ms")
        return theirs / ours

    def associative_scan():
        import jax

        fn = common.jax_scan(case.axis)
        # Inputs committed to the CPU device keep the computation there, also where JAX sees
        # a GPU.
        cpu = jax.devices("cpu")[0]
        ja, jx = jax.device_put(a, cpu), jax.device_put(x, cpu)
        theirs = common.median_time(lambda: fn(ja, jx).block_until_ready(), max(3, repeat // 2))
        progress(f"  jax associative_scan: {theirs * 1e3:.1f} ms ({jax.__version__})")
        return theirs / ours_auto

    found = common.peers(
        {"scipy.signal.lfilter": lfilter, "jax.lax.associative_scan": associative_scan}
    )
    return {name: v for name, v in found.items() if not isinstance(v, common.PeerFailed)}


def run(size=None, repeat=None, cases=None, peers=True, check=True, progress=print) -> dict:
    """Benchmark the named ``cases`` (default: all) at ``size`` float32 elements (default
    2**24), ``repeat`` pairs per figure (default 7); a report: ``environment`` and ``rows``
    (a list of :class:`Row`)."""
    size = size or DEFAULT_SIZE
    repeat = repeat or DEFAULT_REPEAT
    cases = [common.case(name) for name in (cases or DEFAULT_CASES)]
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
    return {"environment": environment(), "rows": rows}


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

    from ..backends.cpu import plan as _plan  # the CPU backend's modules, imported here only
    from ..backends.cpu import tuning

    threads = _plan.num_threads()
    return common.environment(
        {"numba": numba.__version__}, {"threads": threads, "tuning": tuning.status(threads)}
    )


def markdown(report: dict) -> str:
    """The heading lines (command, machine, what "x floor" means) and the table of rows."""
    env = report["environment"]
    return "\n".join(
        [
            f"\n{env['command']}: float32, {env['threads']} threads, NumPy {env['numpy']}, "
            f"Numba {env['numba']}",
            f"CPU: {_host.summary(env)}; method='auto': {env['tuning']}",
            "x floor: time / time of np.add(a, x, out=h) on the same arrays, measured in "
            "interleaved pairs (scan_backward: / that time x 20/12)",
            table(report["rows"]),
        ]
    )


def table(rows) -> str:
    """A Markdown table of the rows."""
    peer_names = sorted({p for r in rows for p in r.peers})
    head = ["case", "shape", "layout", "op", "method", "ms", "Melem/s", "x floor"]
    head += [f"speedup vs {p}" for p in peer_names]
    cells = [
        [
            r.case,
            "x".join(map(str, r.shape)),
            r.layout,
            r.op,
            r.method,
            f"{r.ms:.2f}",
            f"{r.elements_per_s / 1e6:.0f}",
            f"{r.floor_ratio:.2f}",
        ]
        + [f"{r.peers[p]:.1f}x" if p in r.peers else "" for p in peer_names]
        for r in rows
    ]
    return "\n".join(common.markdown_table(head, cells))


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [f"{r.case}\n{r.op} {r.method}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.45), 5))
    ax.bar(range(len(rows)), [r.floor_ratio for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("time / memory floor (np.add of the same arrays)")
    ax.set_title("linscan CPU backend, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
