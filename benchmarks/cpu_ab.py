"""Two versions of linscan's CPU path in one process, on the same arrays, interleaved.

On the shared 2-core VMs a whole ``python -m linscan bench`` run moves 20-40% from one process
to the next, and the same code can run at 1.2 or 2.5 times the floor depending on where its
pages landed: run-to-run noise larger than most kernel changes. Here the version before a
change (a checkout of it, imported under another name) and the working tree's run in the
same process, on the same arrays (so the same pages), in interleaved rounds, each against
``np.add(a, x, out=h)`` timed in the same round; the tables give medians over the rounds.
Each version's ``method="auto"`` follows its own tuning table, if one was written for it.

    git worktree add /tmp/before <commit>
    python benchmarks/cpu_ab.py /tmp/before [--size 2**24] [--rounds 7] [--case "one row"]

prints, as ``python -m linscan bench`` does (x floor: time / that of ``np.add``; the backward
pass / that time x 20/12), each case's rows before and after, and ``auto`` against the faster
of sequential and parallel.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAME = "linscan_before"


def load_before(tree: str):
    """The ``linscan`` package of the checkout ``tree``, imported as ``linscan_before`` (a
    copy without caches; the package's own imports are relative)."""
    folder = Path(tempfile.mkdtemp(prefix="linscan-ab-"))
    shutil.copytree(
        Path(tree) / "linscan", folder / NAME, ignore=shutil.ignore_patterns("__pycache__")
    )
    sys.path.insert(0, str(folder))
    return importlib.import_module(NAME)


def calls(lib, a, x, h, grad_h, hs, grads, axis) -> dict:
    """``{(op, method): call}`` for one version."""
    out = {}
    for method in ("sequential", "parallel", "auto"):
        out["scan", method] = lambda m=method: lib.scan(a, x, axis=axis, out=h, method=m)
        out["backward", method] = lambda m=method: lib.scan_backward(
            a, hs, grad_h, axis=axis, out=grads, method=m
        )
    out["reverse", "auto"] = lambda: lib.scan(a, x, axis=axis, reverse=True, out=h)
    out["final_state", "auto"] = lambda: lib.final_state(a, x, axis=axis)
    return out


def measure(case, size: int, rounds: int, versions: dict, rng) -> dict:
    """``{(version, op, method): x floor}`` for one bench case, medians over ``rounds``."""
    shape = case.shape(size)
    a = rng.uniform(0.9, 1.0, shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    grad_h = rng.standard_normal(shape).astype(np.float32)
    h = np.empty_like(x)
    hs = versions["after"].scan(a, x, axis=case.axis)
    grads = (np.empty_like(a), np.empty_like(x), None)
    fns = {}
    for name, lib in versions.items():
        for key, fn in calls(lib, a, x, h, grad_h, hs, grads, case.axis).items():
            fns[(name, *key)] = fn
    times = {key: [] for key in fns}
    for fn in fns.values():  # compile and warm up
        fn()
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            np.add(a, x, out=h)
            t2 = time.perf_counter()
            times[key].append((t1 - t0) / (t2 - t1))
    return {
        key: float(np.median(v)) / (20 / 12 if key[1] == "backward" else 1.0)
        for key, v in times.items()
    }


def tables(results: dict) -> str:
    lines = [
        "| case | scan seq / par / auto | scan reverse | final_state "
        "| backward seq / par / auto |",
        "|---|---|---|---|---|",
    ]
    for version in ("before", "after"):
        lines.append(f"| **{version}** | | | | |")
        for case, m in results.items():
            v = lambda op, method: f"{m[version, op, method]:.2f}"  # noqa: E731
            lines.append(
                f"| {case} | {v('scan', 'sequential')} / {v('scan', 'parallel')} / "
                f"**{v('scan', 'auto')}** | {v('reverse', 'auto')} | {v('final_state', 'auto')} | "
                f"{v('backward', 'sequential')} / {v('backward', 'parallel')} / "
                f"**{v('backward', 'auto')}** |"
            )
    lines += ["", "| case | op | before: auto / fastest | after: auto / fastest |"]
    lines.append("|---|---|---|---|")
    for case, m in results.items():
        for op in ("scan", "backward"):
            cells = [
                m[version, op, "auto"]
                / min(m[version, op, "sequential"], m[version, op, "parallel"])
                for version in ("before", "after")
            ]
            lines.append(f"| {case} | {op} | {cells[0]:.2f} | {cells[1]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import linscan
    from linscan.__main__ import parse_size
    from linscan._bench import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a checkout of the version to compare against")
    parser.add_argument("--size", type=parse_size, default=2**24)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--case", action="append", help="cases whose name contains this")
    args = parser.parse_args(argv)
    names = [c.name for c in common.CASES]
    if args.case:
        names = common.select(names, args.case)
    versions = {"before": load_before(args.before), "after": linscan}
    rng = np.random.default_rng(0)
    results = {}
    for name in names:
        print(name, file=sys.stderr)
        results[name] = measure(common.case(name), args.size, args.rounds, versions, rng)
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
