"""Command line: ``python -m linscan info`` and ``python -m linscan bench``."""

from __future__ import annotations

import argparse
import sys


def _info() -> int:
    import platform

    import numpy as np

    import linscan

    from . import _plan

    versions = f"Python {platform.python_version()}, NumPy {np.__version__}"
    print(f"linscan {linscan.__version__} ({versions})")
    try:
        import numba

        print(
            f"CPU backend: Numba {numba.__version__}, {_plan.num_threads()} threads "
            "(set LINSCAN_NUM_THREADS to change)"
        )
    except ImportError as exc:  # a required dependency, but say so plainly
        print(f"CPU backend: unavailable, Numba does not import ({exc})")
    print(f"GPU backend: {_gpu_status()}")
    return 0


def _gpu_status() -> str:
    """One line on CuPy, the GPU, NVRTC and the kernel sources; the reason when something is
    missing."""
    import sys

    from ._backend import gpu_status

    usable, detail = gpu_status()
    parts = [detail if usable else f"unavailable: {detail}"]
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return parts[0]
    try:
        major, minor = cupy.cuda.nvrtc.getVersion()
        parts.append(f"NVRTC {major}.{minor}")
    except Exception as exc:
        parts.append(f"NVRTC unavailable ({type(exc).__name__}: {exc})")
    try:
        from ._cuda import source

        parts.append(f"kernels from {source.kernel_dir()}")
    except FileNotFoundError as exc:
        parts.append(f"kernel sources missing ({exc})")
    return "; ".join(parts)


def _bench_gpu(args) -> int:
    import json

    from . import _bench_gpu

    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    report = _bench_gpu.run(progress)
    print(json.dumps(report, indent=1) if args.json else _bench_gpu.markdown(report))
    return 0


def _bench(args) -> int:
    if args.gpu:
        return _bench_gpu(args)
    from . import _bench

    cases = _bench.CASES
    if args.case:
        cases = [c for c in cases if any(sel in c.name for sel in args.case)]
        if not cases:
            names = ", ".join(c.name for c in _bench.CASES)
            print(f"--case matched nothing; cases are: {names}", file=sys.stderr)
            return 2
    progress = (
        (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not args.quiet
        else (lambda msg: None)
    )
    rows = _bench.run(
        size=args.size,
        repeat=args.repeat,
        cases=cases,
        peers=not args.no_peers,
        check=not args.no_check,
        progress=progress,
    )
    if args.json:
        print(_bench.as_json(rows))
    else:
        env = _bench.environment()
        print(
            f"\n{env['command']}: float32, {env['threads']} threads, NumPy {env['numpy']}, "
            f"Numba {env['numba']}, {env['processor']} ({env['machine']})"
        )
        print(
            "x floor: time / time of np.add(a, x, out=h) on the same arrays, measured in "
            "interleaved pairs (scan_backward: / that time x 20/12)"
        )
        print(_bench.table(rows))
    if args.plot:
        _bench.plot(rows, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linscan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, threads, GPU status")
    bench = sub.add_parser("bench", help="speed against the memory floor and peers")
    bench.add_argument(
        "--size",
        type=lambda s: int(eval(s, {}, {})) if "**" in s else int(s),
        default=1 << 24,
        help="elements per array (default 2**24)",
    )
    bench.add_argument("--repeat", type=int, default=7, help="timed pairs per measurement")
    bench.add_argument("--case", action="append", help="only cases whose name contains this")
    bench.add_argument("--no-peers", action="store_true", help="skip scipy and jax")
    bench.add_argument("--no-check", action="store_true", help="skip the oracle check")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--plot", metavar="FILE.png", help="also write a bar chart")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.add_argument(
        "--gpu", action="store_true", help="benchmark the CUDA kernels on CuPy arrays instead"
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
