"""``linscan.matscan`` on a GPU (the opt-in kernels of ``kernels_cu/matrix.cu``;
``LINSCAN_GPU_MATRIX=1`` is set here): each case first checked against the CPU's result on the
same inputs, then timed with device events (median of ``--repeat``) against a device copy
of the same bytes (``x`` read, ``h`` written) and against the CPU backend in the same run,
and so its backward pass (``matscan_backward``, against the CPU); then
``linscan.signal.sosfilt`` of one long signal against ``cupyx.scipy.signal.sosfilt``.

    PYTHONPATH=. python benchmarks/gpu_matrix.py [--quick] [--repeat 10] [--json FILE]

``--quick``: sizes 256 times smaller, two timings (for compute-sanitizer, gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

#: (name, lanes, steps, d, A per step?)
CASES = (
    ("one long lane, constant 2x2", 1, 1 << 24, 2, False),
    ("one long lane, 2x2 per step", 1, 1 << 22, 2, True),
    ("4096 lanes, constant 4x4", 4096, 1 << 12, 4, False),
    ("64 lanes, constant 8x8", 64, 1 << 16, 8, False),
)


def _inputs(lanes, T, d, per_step, dtype, rng):
    base = rng.standard_normal((d, d))
    base *= 0.999 / np.linalg.norm(base, 2)
    A = base * rng.uniform(0.99, 1.0, (T, 1, 1)) if per_step else base
    x = rng.uniform(-1, 1, (lanes, T, d))
    return A.astype(dtype), x.astype(dtype)


def _gpu_time(fn, repeat):
    import cupy

    fn()  # compile or load, warm up
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def _backward(A, x, h, gA, gx, gh, tol, repeat, row) -> list:
    """``matscan_backward`` of the case (``grad_h = x``) on the GPU against the CPU: its cells
    (difference, GPU time, CPU time / GPU time); ``row`` takes them too."""
    import cupy

    import linscan

    gh.set(h)  # the forward result, on the GPU
    cpu = []
    for _ in range(2):  # the first call may compile the CPU's kernels
        t0 = time.perf_counter()
        want = linscan.matscan_backward(A, h, x, axis=1)
        cpu.append(time.perf_counter() - t0)
    cpu = min(cpu)
    got = linscan.matscan_backward(gA, gh, gx, axis=1)
    diff = max(float(np.abs(cupy.asnumpy(g) - w).max() / max(np.abs(w).max(), 1e-300))
               for g, w in zip(got[:2], want[:2]))  # fmt: skip
    row.update(backward_diff=diff, backward_ok=bool(diff <= tol))
    if diff > tol:
        row["ok"] = False
        return [f"{diff:.1e} FAILED (tolerance {tol:g})", "", ""]
    ours = _gpu_time(lambda: linscan.matscan_backward(gA, gh, gx, axis=1), repeat)
    row.update(backward_gpu_ms=ours * 1e3, backward_cpu_ms=cpu * 1e3)
    return [f"{diff:.1e}", f"{ours * 1e3:.3f}", f"{cpu / ours:.1f}"]


#: ``scipy.signal.butter(4, 0.01, output="sos")`` (the device machine may have no scipy).
BUTTER_4_001 = np.array([
    [5.845142433144487e-08, 1.1690284866288973e-07, 5.845142433144487e-08, 1.0,
     -1.9426382305401135, 0.9435972784703671],
    [1.0, 2.0, 1.0, 1.0, -1.975269634851873, 0.9762447923594398],
])  # fmt: skip


def _sosfilt(quick, repeat, rng) -> list:
    """``linscan.signal.sosfilt`` of one long signal (a 4th-order Butterworth low-pass at 0.01
    of Nyquist: two sections, each a 2-state matrix scan) against
    ``cupyx.scipy.signal.sosfilt`` and a copy, after a check against the CPU's result."""
    import cupy

    from linscan import signal

    try:
        from cupyx.scipy import signal as peer
    except Exception:  # an older CuPy, or one whose signal module wants scipy
        peer = None
    n = (1 << 24) >> (8 if quick else 0)
    sos = BUTTER_4_001
    rows = []
    print("\n| sosfilt, one signal | dtype | max diff / max, vs the CPU | linscan ms | of copy | "
          "cupyx ms | cupyx / linscan |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(n).astype(dtype)
        gx = cupy.asarray(x)
        want = signal.sosfilt(sos, x.astype(np.float64))  # the CPU's, in float64
        got = cupy.asnumpy(signal.sosfilt(sos, gx))
        diff = float(np.abs(got - want).max() / np.abs(want).max())
        ok = diff <= (1e-4 if dtype == np.float32 else 1e-10)
        row = dict(case="sosfilt one signal", dtype=np.dtype(dtype).name, n=n, diff=diff, ok=ok)
        cells = [str(n), row["dtype"], f"{diff:.1e}" + ("" if ok else " FAILED: not timed")]
        if ok:
            gy = cupy.empty_like(gx)
            ours = _gpu_time(lambda: signal.sosfilt(sos, gx), repeat)
            copy = _gpu_time(lambda: cupy.copyto(gy, gx), repeat)
            theirs = (
                _gpu_time(lambda: peer.sosfilt(cupy.asarray(sos), gx), repeat) if peer else None
            )
            row.update(gpu_ms=ours * 1e3, of_copy=copy / ours,
                       cupyx_ms=None if theirs is None else theirs * 1e3)  # fmt: skip
            cells += [f"{ours * 1e3:.3f}", f"{copy / ours:.3f}",
                      "not installed" if theirs is None else f"{theirs * 1e3:.3f}",
                      "" if theirs is None else f"{theirs / ours:.2f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
        rows.append(row)
    return rows


def main(argv=None) -> int:
    os.environ["LINSCAN_GPU_MATRIX"] = "1"
    import cupy

    import linscan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    rng = np.random.default_rng(0)
    rows = []
    head = ["case", "dtype", "shape", "max diff / max, GPU vs CPU", "GPU ms", "of copy", "CPU ms",
            "CPU / GPU", "backward: max diff / max", "GPU ms", "CPU / GPU"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, lanes, T, d, per_step in CASES:
        if args.quick:
            T = max(T // 256, 64)
        for dtype in (np.float32, np.float64):
            A, x = _inputs(lanes, T, d, per_step, dtype, rng)
            gA, gx = cupy.asarray(A), cupy.asarray(x)
            gh = cupy.empty_like(gx)
            got = cupy.asnumpy(linscan.matscan(gA, gx, axis=1))
            cpu = []
            for _ in range(2):  # the first call may compile the CPU's kernels
                t0 = time.perf_counter()
                expected = linscan.matscan(A, x, axis=1)
                cpu.append(time.perf_counter() - t0)
            cpu = min(cpu)
            diff = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-300))
            tol = 1e-4 if dtype == np.float32 else 1e-10
            row = dict(case=name, dtype=np.dtype(dtype).name, shape=x.shape, diff=diff,
                       ok=bool(diff <= tol))  # fmt: skip
            cells = [name, row["dtype"], "x".join(map(str, x.shape)), f"{diff:.1e}"]
            if row["ok"]:
                ours = _gpu_time(lambda: linscan.matscan(gA, gx, axis=1, out=gh), repeat)
                copy = _gpu_time(lambda: cupy.copyto(gh, gx), repeat)
                row.update(gpu_ms=ours * 1e3, of_copy=copy / ours, cpu_ms=cpu * 1e3)
                cells += [f"{ours * 1e3:.3f}", f"{copy / ours:.2f}", f"{cpu * 1e3:.1f}",
                          f"{cpu / ours:.1f}"]  # fmt: skip
                cells += _backward(A, x, expected, gA, gx, gh, tol, repeat, row)
            else:
                cells[-1] += f" FAILED (tolerance {tol:g}): not timed"
                cells += ["", "", "", "", "", ""]
            print("| " + " | ".join(cells) + " |")
            rows.append(row)
    rows += _sosfilt(args.quick, repeat, rng)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} cases agree with the CPU")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
