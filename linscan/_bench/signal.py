"""``python -m linscan bench --signal``: ``linscan.signal.sosfilt`` against
``scipy.signal.sosfilt`` on the same arrays, in the same run.

A 4th-order Butterworth low-pass (two second-order sections) filters one long signal, many
time-major channels and many rows, in float64 and float32. Each figure is the median over
pairs timed back to back (scipy first in each pair), so that both see the same machine; the
memory floor is ``np.copyto(y, x)`` of the same arrays (a filter reads ``x`` and writes ``y``),
timed the same way. Results are checked against scipy before they are timed. The GPU
(``cupyx.scipy.signal.sosfilt``) is not measured here: ``benchmarks/gpu_matrix.py`` times
linscan.signal on CuPy arrays (opt-in GPU kernels) against it on a GPU machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import common
from .cpu import environment

DEFAULT_SIZE = 1 << 24
DEFAULT_REPEAT = 5
#: ``name -> (shape of size elements, axis)``.
CASES = {
    "one signal": (lambda n: (n,), -1),
    "64 channels, time-major": (lambda n: (n // 64, 64), 0),
    "64 rows": (lambda n: (64, n // 64), -1),
}
CASE_NAMES = tuple(CASES)


@dataclass
class Row:
    case: str
    shape: tuple
    dtype: str
    ms: float
    floor_ratio: float
    scipy_ms: float
    speedup: float


def run(size=None, repeat=None, cases=None, peers=True, check=True, progress=print) -> dict:
    """Time ``sosfilt`` on every case at ``size`` elements (default 2**24), ``repeat`` pairs
    per figure (default 5). ``peers=False`` is refused: scipy is the point."""
    from scipy import signal as scipy_signal

    from .. import signal

    size = size or DEFAULT_SIZE
    repeat = repeat or DEFAULT_REPEAT
    sos = scipy_signal.butter(4, 0.01, output="sos")
    rng = np.random.default_rng(0)
    rows = []
    for name in cases or CASE_NAMES:
        make, axis = CASES[name]
        shape = make(size)
        for dtype in (np.float64, np.float32):
            x = rng.standard_normal(shape).astype(dtype)
            coefficients = sos.astype(dtype)
            progress(f"{name} {shape} {np.dtype(dtype).name}")
            if check:
                got = signal.sosfilt(coefficients, x, axis=axis)
                want = scipy_signal.sosfilt(coefficients, x, axis=axis)
                tol = 1e-9 if dtype == np.float64 else 1e-3
                if not np.allclose(got, want, rtol=tol, atol=tol * np.abs(want).max()):
                    raise AssertionError(f"{name} {np.dtype(dtype).name}: linscan.signal.sosfilt "
                                         "differs from scipy's")  # fmt: skip
            y = np.empty_like(x)

            def ours():
                signal.sosfilt(coefficients, x, axis=axis)

            def theirs():
                scipy_signal.sosfilt(coefficients, x, axis=axis)

            def floor():
                np.copyto(y, x)

            mine, scipys = common.interleaved(ours, theirs, repeat)
            again, floors = common.interleaved(ours, floor, repeat)
            row = Row(
                name,
                shape,
                np.dtype(dtype).name,
                common.median(mine) * 1e3,
                common.median([t / f for t, f in zip(again, floors)]),
                common.median(scipys) * 1e3,
                common.median([s / t for s, t in zip(scipys, mine)]),
            )
            progress(f"  linscan {row.ms:.1f} ms ({row.floor_ratio:.1f}x copy), scipy "
                     f"{row.scipy_ms:.1f} ms: {row.speedup:.2f}x")  # fmt: skip
            rows.append(row)
    return {"environment": environment(), "rows": rows}


def markdown(report: dict) -> str:
    from .. import _host

    env = report["environment"]
    head = ["case", "shape", "dtype", "linscan ms", "x copy", "scipy ms", "speedup vs scipy"]
    cells = [
        [r.case, "x".join(map(str, r.shape)), r.dtype, f"{r.ms:.1f}", f"{r.floor_ratio:.1f}",
         f"{r.scipy_ms:.1f}", f"{r.speedup:.2f}x"]
        for r in report["rows"]
    ]  # fmt: skip
    return "\n".join(
        [
            f"\n{env['command']}: sosfilt, 4th-order Butterworth (2 sections), "
            f"{env['threads']} threads, NumPy {env['numpy']}, Numba {env['numba']}",
            f"CPU: {_host.summary(env)}",
            "x copy: time / time of np.copyto(y, x) on the same arrays; speedup: scipy's time "
            "/ linscan's, in interleaved pairs. GPU (cupyx.scipy.signal.sosfilt): not measured "
            "here (benchmarks/gpu_matrix.py on a GPU machine)",
        ]
        + common.markdown_table(head, cells)
    )
