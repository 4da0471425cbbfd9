"""Accuracy over long sequences: float32 scans with decays near 1 against float64.

    python benchmarks/accuracy.py [--steps 1e5 1e6 1e7]

Two lanes of ``T`` steps, decays ``1 - 10^-u`` with ``u`` uniform in ``[3, 6]`` (timescales of
a thousand to a million steps), inputs standard normal, in float32; the reference is the same
float32 inputs scanned in float64. The error is the largest absolute difference divided by
the largest state, for the serial loop (``method="sequential"``) and the parallel method, in
both layouts (time-contiguous rows, and time-major with the lanes as channels), forward
(``h``) and backward (``grad_x`` of ``scan_backward`` with ``grad_h = x``).
"""

from __future__ import annotations

import argparse
import subprocess
import time

import numpy as np

import linscan


def problem(T, seed):
    rng = np.random.default_rng(seed)
    a = (1.0 - 10.0 ** -rng.uniform(3, 6, (2, T))).astype(np.float32)
    x = rng.standard_normal((2, T)).astype(np.float32)
    return a, x


def errors(T, seed=0, layout="rows", op="scan"):
    """``{method: relative error}`` for one problem."""
    a, x = problem(T, seed)
    axis = -1
    if layout == "time-major":
        a, x, axis = np.ascontiguousarray(a.T), np.ascontiguousarray(x.T), 0

    def run(a, x, method):
        if op == "scan":
            return linscan.scan(a, x, axis=axis, method=method)
        h = linscan.scan(a, x, axis=axis, method="sequential")
        return linscan.scan_backward(a, h, x, axis=axis, method=method)[1]

    exact = run(a.astype(np.float64), x.astype(np.float64), "sequential")
    scale = float(np.max(np.abs(exact)))
    return {m: float(np.max(np.abs(run(a, x, m) - exact))) / scale
            for m in ("sequential", "parallel")}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    print(f"# float32 accuracy, {time.strftime('%Y-%m-%d')}, commit {commit}\n")
    print("| T | layout | op | sequential error | parallel error | parallel / sequential |")
    print("|---|---|---|---|---|---|")
    for T in (int(t) for t in args.steps):
        for layout in ("rows", "time-major"):
            for op in ("scan", "scan_backward"):
                e = errors(T, seed=T, layout=layout, op=op)
                print(f"| {T:.0e} | {layout} | {op} | {e['sequential']:.2e} | "
                      f"{e['parallel']:.2e} | {e['parallel'] / e['sequential']:.2f} |",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
