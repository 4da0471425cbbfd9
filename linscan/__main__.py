"""Command line: ``python -m linscan info``, ``python -m linscan bench`` and
``python -m linscan tune``."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings
from fractions import Fraction

from . import _host


def _info() -> int:
    import platform

    import numpy as np

    import linscan

    versions = f"Python {platform.python_version()}, NumPy {np.__version__}"
    print(f"linscan {linscan.__version__} ({versions})")
    try:
        import numba
    except ImportError as exc:  # a required dependency, but say so plainly
        print(f"CPU backend: unavailable, Numba does not import ({exc})")
    else:
        print(f"CPU backend: Numba {numba.__version__}, {_threads_status()}")
        print(f"CPU: {_host.summary()}")
        print(f"CPU method='auto': {_tuning_status()}")
    print(f"GPU backend: {_gpu_status()}")
    return 0


def _threads_status() -> str:
    """The CPU backend's thread count and where it comes from; a bad ``LINSCAN_NUM_THREADS``
    is reported, not raised: ``info`` is where one looks to find out what is wrong."""
    from .backends.cpu import plan as _plan

    env = os.environ.get("LINSCAN_NUM_THREADS", "").strip()
    try:
        with warnings.catch_warnings():  # the capping is said below, not warned about
            warnings.simplefilter("ignore")
            threads = _plan.num_threads()
    except ValueError as exc:
        return f"invalid setting: {exc} (CPU scans raise until it is fixed or unset)"
    if not env:
        return f"{threads} threads, one per usable CPU (set LINSCAN_NUM_THREADS to change)"
    if threads != int(env):
        return (
            f"{threads} threads (LINSCAN_NUM_THREADS={env} capped at "
            f"{_plan.MAX_THREADS_PER_CPU} per usable CPU)"
        )
    return f"{threads} threads (LINSCAN_NUM_THREADS={env})"


def _tuning_status() -> str:
    """Whether ``method="auto"`` on the CPU follows a tuning table of this machine; a bad
    thread setting is reported, not raised (a bad ``LINSCAN_TUNING`` warns and means off)."""
    from .backends.cpu import plan as _plan
    from .backends.cpu import tuning

    try:
        return tuning.status(_plan.num_threads())
    except ValueError as exc:
        return f"invalid setting: {exc}"


def _gpu_status() -> str:
    """One line on CuPy, the GPU, NVRTC and the kernel sources; the reason when something is
    missing."""
    import sys

    from ._dispatch import gpu_status

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
        from .backends.cuda import source

        parts.append(f"kernels from {source.kernel_dir()}")
    except FileNotFoundError as exc:
        parts.append(f"kernel sources missing ({exc})")
    return "; ".join(parts)


def _bench_module(args):
    """The benchmark ``bench`` runs: the CPU one, or with ``--gpu`` the GPU one."""
    from ._bench import cpu, gpu, signal

    return signal if args.signal else gpu if args.gpu else cpu


def _bench(args) -> int:
    from ._bench import common, cpu

    bench = _bench_module(args)
    progress = (
        (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not args.quiet
        else (lambda msg: None)
    )
    report = bench.run(
        size=args.size,
        repeat=args.repeat,
        cases=common.select(bench.CASE_NAMES, args.case) if args.case else None,
        peers=not args.no_peers,
        check=not args.no_check,
        progress=progress,
    )
    print(common.as_json(report) if args.json else bench.markdown(report))
    if args.plot:
        cpu.plot(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _tune_problem(args):
    """Why ``tune`` cannot run as asked, found before it measures for a minute; ``None``
    when it can."""
    from .backends.cpu import plan as _plan
    from .backends.cpu import tuning

    try:
        threads = _plan.num_threads()
    except ValueError as exc:
        return f"{exc} (or unset it to use every usable CPU)"
    why = tuning.unwritable(tuning.path(threads))
    if why:
        return f"cannot store the tuning file ({why}); set XDG_CACHE_HOME to a writable folder"
    return None


def _tune(args) -> int:
    from .backends.cpu import calibrate, tuning
    from .backends.cpu import plan as _plan

    width = 30

    def progress(done, total, probe, choice, static):
        if args.quiet:
            return
        filled = width * done // total
        changed = f"{choice} (static: {static})" if choice != static else choice
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {probe.label()}: {changed}"
        print(f"\r{line[:110]:110s}", end="" if done < total else "\n", file=sys.stderr,
              flush=True)  # fmt: skip

    print(f"CPU: {_host.summary()}; {_threads_status()}", file=sys.stderr)
    warning = calibrate.busy()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"timing every strategy of method='auto' on arrays of {args.size or calibrate.DEFAULT_SIZE}"
        f" elements, {args.repeat or calibrate.DEFAULT_REPEAT} interleaved rounds each "
        "(about a minute)",
        file=sys.stderr,
    )
    file, tiles, entries = calibrate.run(
        size=args.size or calibrate.DEFAULT_SIZE,
        repeat=args.repeat or calibrate.DEFAULT_REPEAT,
        progress=progress,
    )
    print(f"Downward walks touch (elements): {tuning.touching(tiles)} (static: {_plan.TILE}).\n")
    print("\n".join(calibrate.choices_table(entries)))
    changed = sum(e["strategy"] != e["static"] for e in entries)
    print(f"\n{changed} of {len(entries)} choices differ from the static cost model; "
          f"stored in {file}")  # fmt: skip
    return 0


#: Largest ``--size``: 2**40 float32 elements are 4 TiB per array, and the benchmark holds
#: several arrays; anything larger is a typo, refused before anything is allocated.
MAX_SIZE = 1 << 40
_SIZE_FORMS = (
    "a whole number of elements such as 1048576, 2**20, 2^20, 1e6 or 16M "
    "(K, M, G, T are powers of 2: 16M = 16 * 2**20)"
)
_POWER = re.compile(r"(?P<base>\d+)\s*(?:\*\*|\^)\s*(?P<exp>\d+)", re.ASCII)
_NUMBER = re.compile(
    r"(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?\s*(?P<suffix>[kmgt]i?)?",
    re.IGNORECASE | re.ASCII,
)
_SUFFIX_BITS = {"k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(text: str) -> int:
    """Elements per array from ``--size``: ``1048576``, ``2**20``, ``2^20``, ``1e6`` (it must
    come out whole), or a number with a binary suffix (``16M``, ``16Mi``: 16 * 2**20; ``K``,
    ``G``, ``T`` alike); from 1 to ``MAX_SIZE``.

    Parsed, never evaluated: the old ``eval`` ran any code given, and ``9**9**9`` hung.
    Raises ``argparse.ArgumentTypeError``, which argparse turns into a usage error."""
    s = text.strip()
    # Bounds the digits below: int() of a long digit string is slow, then refused.
    if len(s) > 40:
        raise argparse.ArgumentTypeError(f"expected {_SIZE_FORMS}, got {text!r}")
    if s.startswith("-"):
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    power = _POWER.fullmatch(s)
    number = _NUMBER.fullmatch(s)
    if power:
        base, exp = int(power["base"]), int(power["exp"])
        # With base >= 2 and exp > 41, base**exp exceeds MAX_SIZE = 2**40: say so without
        # computing it (9**999999999 would take minutes).
        too_big = base >= 2 and exp > MAX_SIZE.bit_length()
        value = Fraction(MAX_SIZE + 1 if too_big else base**exp)
    elif number:
        exp10 = int(number["exp"] or 0)
        # The mantissa has at most 40 digits, so clamping the exponent to +-64 changes no
        # verdict (too large, fractional, zero) and keeps 10**exp10 small.
        exp10 = max(-64, min(64, exp10))
        suffix = (number["suffix"] or "")[:1].lower()
        value = Fraction(number["mantissa"]) * Fraction(10) ** exp10
        value *= 2 ** _SUFFIX_BITS.get(suffix, 0)
    else:
        raise argparse.ArgumentTypeError(f"expected {_SIZE_FORMS}, got {text!r}")
    if value.denominator != 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of elements, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at most 2**40 (4 TiB per float32 array), got {text!r}"
        )
    return int(value)


def positive_int(text: str) -> int:
    """A count option (``--repeat``): a whole number of at least 1. Zero repeats would time
    nothing and print a table of NaN."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of at least 1, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _bench_problem(args):
    """Why ``bench`` cannot run as asked, found before it starts (a run takes minutes, and a
    failure at its end throws them away); ``None`` when it can."""
    from .backends.cpu import plan as _plan

    try:
        _plan.num_threads()
    except ValueError as exc:
        return f"{exc} (or unset it to use every usable CPU)"
    if args.plot and args.gpu:
        return "--plot draws the CPU benchmark only; drop it or --gpu"
    if args.signal and (args.gpu or args.plot or args.no_peers):
        return (
            "--signal times linscan.signal against scipy.signal on the CPU: it takes neither "
            "--gpu (benchmarks/gpu_matrix.py times it on a GPU), --plot nor --no-peers"
        )
    if args.signal:
        try:
            importlib.import_module("scipy.signal")
        except ImportError as exc:
            return f"--signal needs scipy, which does not import ({exc})"
    if args.case:
        from ._bench import common

        names = _bench_module(args).CASE_NAMES
        if not common.select(names, args.case):
            return (
                f"argument --case: {', '.join(map(repr, args.case))} matches no case"
                f"{' of --gpu' if args.gpu else ''}; cases are: {', '.join(names)}"
            )
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")  # as _bench.cpu.plot does: no display needed
            import matplotlib.pyplot  # noqa: F401
        except ImportError as exc:
            return (
                f"--plot needs matplotlib, which does not import ({exc}); install it with "
                "python -m pip install matplotlib, or run without --plot"
            )
    if args.gpu:
        from ._dispatch import gpu_status

        usable, detail = gpu_status()
        if not usable:
            return f"--gpu needs a usable GPU: {detail}"
    return None


def _cases_help() -> str:
    """The end of ``bench --help``: the case names, CPU, GPU and signal, and what ``--gpu``
    does with the options."""
    from ._bench import cpu, gpu, signal

    return "\n".join(
        [
            "cases (--case CASE runs those whose name contains CASE; give it again for more):",
            f"  CPU:   {', '.join(cpu.CASE_NAMES)} (all by default)",
            f"  --gpu: {', '.join(gpu.CASE_NAMES)}",
            f"         (by default {', '.join(gpu.DEFAULT_CASES)})",
            f"  --signal: {', '.join(signal.CASE_NAMES)} (all by default)",
            "",
            "With --gpu, --size sets the elements per array of the layout cases and of the",
            "peers, which run with 'one row' ('paper table 1' and 'small calls' have sizes of",
            "their own); --repeat sets the pairs behind every median. --plot draws the CPU",
            "benchmark only.",
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linscan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, threads, GPU status")
    bench = sub.add_parser(
        "bench",
        help="speed against the memory floor and peers",
        epilog=_cases_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog's lines as written
    )
    bench.add_argument(
        "--size",
        type=parse_size,
        help="elements per array: 1048576, 2**20, 2^20, 1e6, or with a binary suffix K, M, "
        "G, T (16M = 16 * 2**20; 16Mi alike); 1 to 2**40 (default 2**24; 2**26 with --gpu)",
    )
    bench.add_argument(
        "--repeat",
        type=positive_int,
        help="timed pairs per measurement (>= 1; default 7; with --gpu each table's own, 10 to 50)",
    )
    bench.add_argument(
        "--case", action="append", help="only cases whose name contains this (see below)"
    )
    bench.add_argument(
        "--no-peers",
        action="store_true",
        help="skip the peers (scipy, jax; with --gpu cupy, jax, torch)",
    )
    bench.add_argument("--no-check", action="store_true", help="skip the oracle check")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--plot", metavar="FILE.png", help="also write a bar chart")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.add_argument(
        "--gpu", action="store_true", help="benchmark the CUDA kernels on CuPy arrays instead"
    )
    bench.add_argument(
        "--signal",
        action="store_true",
        help="benchmark linscan.signal.sosfilt against scipy.signal.sosfilt instead (CPU)",
    )
    tune = sub.add_parser(
        "tune",
        help="time the CPU strategies on this machine; method='auto' then follows the fastest",
        description="Time each strategy of the CPU backend's method='auto' on this machine "
        "(about a minute) and store the fastest per kind of problem in a per-user cache file, "
        "which every later process on this machine reads (for the same CPU, thread count and "
        "versions). LINSCAN_TUNING=off ignores it.",
    )
    tune.add_argument(
        "--size", type=parse_size, help="elements per array (default 2**24; forms as for bench)"
    )
    tune.add_argument("--repeat", type=positive_int, help="rounds per problem (default 5)")
    tune.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    command, problem = (
        (_tune, _tune_problem) if args.command == "tune" else (_bench, _bench_problem)
    )
    why = problem(args)
    if why:
        (tune if args.command == "tune" else bench).error(why)  # usage, message; status 2
    try:
        return command(args)
    except MemoryError as exc:  # a --size this machine cannot hold
        print(f"python -m linscan {args.command}: not enough memory for --size {args.size} "
              f"({exc})", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
