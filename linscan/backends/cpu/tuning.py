"""The CPU tuning table: which strategy ``method="auto"`` uses, as measured on this machine.

Which way of running a scan is fastest depends on the CPU, not only on the problem's shape:
on one 2-core AMD EPYC the (then 8-chain) row kernels that a long row's split mode used were twice
as slow as the plain loop, while the cost model had them faster. ``python -m linscan tune``
(:mod:`.calibrate`) therefore times the strategies on the machine itself and stores its
choices here, in a per-user cache file; ``make_plan`` looks a problem up in it and falls back
to its static cost model for what the table does not cover, or when there is no table.
Looking up never measures anything, so no call ever waits for a calibration. The table also
holds, per operation, how far a downward walk touches ahead (``tiles``, see ``kernels``; 0:
not at all), which every method follows: whether touching pays is a property of the CPU's
prefetchers, and on one Zen 4 VM the reverse scan ran 1.5 times as long touching 16384
elements ahead as touching none, while the final state and the backward pass, measured
with it as one sum, chose 16384 for all three.

A table belongs to one CPU model, thread count, linscan and Numba version and kernel code
(its *key*, which also names the file): a table measured with other settings is simply not
found. An unreadable or malformed file counts as absent, with one warning per process.

The strategies (see ``plan``): ``lanes`` (each thread walks whole lanes), ``chains`` (lanes,
rows by the blocked kernels: vector registers for real rows, chains for complex ones; the
name is older than the vectors), ``split`` (time cut into one segment per thread) and
``split+chains``. Channels (``cols``) have ``lanes``, ``whole-steps`` (lanes whose threads
never share a step: one thread for a single outer row) and ``split``.

``LINSCAN_TUNING=off`` ignores any table (the static cost model alone); ``on`` (the default)
uses the table where there is one; anything else warns once and counts as ``off``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import stat
import sys
import tempfile
import threading
import warnings
from typing import NamedTuple

from ... import _host

#: The format of the file; a file of another format is not read (format 2 held one tile for
#: every operation).
FORMAT = 3
STRATEGIES = {
    "rows": ("lanes", "chains", "split", "split+chains"),
    "cols": ("lanes", "whole-steps", "split"),
}
OPS = ("scan", "final_state", "backward")
_ENV = "LINSCAN_TUNING"
_lock = threading.Lock()
_warned = set()


class TuningFileWarning(RuntimeWarning):
    """The tuning table could not be used (an unreadable or malformed file, or a
    ``LINSCAN_TUNING`` that is neither ``on`` nor ``off``); ``method="auto"`` uses its static
    cost model."""


def enabled() -> bool:
    """Whether ``LINSCAN_TUNING`` allows the table (``on``, unset or empty: yes; ``off``:
    no). Any other setting warns once (``TuningFileWarning``, naming the variable) and counts
    as ``off``: a typo never makes a call fail, whatever its size or method."""
    raw = os.environ.get(_ENV, "")
    value = raw.strip().lower()
    if value in ("", "on"):
        return True
    if value != "off":
        _warn_once(
            f"{_ENV}={raw!r}",
            f"{_ENV} must be 'on' or 'off', got {raw!r}; method='auto' uses its static cost model",
        )
    return False


def cache_dir() -> str:
    """Where tuning files live: ``$XDG_CACHE_HOME/linscan`` (default ``~/.cache/linscan``;
    ``%LOCALAPPDATA%\\linscan`` on Windows)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = os.environ["LOCALAPPDATA"]
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative path is ignored
            base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "linscan")


#: The modules whose code a table's timings measured (beside this one; ``vectors`` and
#: ``_affine`` are inlined into the kernels): a change to any of them (a kernel rewritten
#: between releases, or in a checkout) makes older tables not found.
_MEASURED = (
    "kernels.py",
    "vectors.py",
    "plan.py",
    "backend.py",
    os.path.join("..", "..", "_affine.py"),
)


@functools.lru_cache(maxsize=1)
def _code() -> str:
    """A digest of the ``_MEASURED`` modules' source; ``"unknown"`` where a source cannot be
    read (an install without ``.py`` files): such a key still separates machines and
    versions."""
    digest = hashlib.sha256()
    try:
        for name in _MEASURED:
            with open(os.path.join(os.path.dirname(__file__), name), "rb") as f:
                digest.update(f.read())
    except OSError:
        return "unknown"
    return digest.hexdigest()[:16]


def key(threads: int) -> dict:
    """What a table is valid for: the CPU (model and vector extensions), the thread count,
    the versions of linscan and Numba, and the kernels' code itself (``_code``: one version
    number spans many changes to the kernels, and a table measured on old kernels chose for
    them)."""
    import numba

    from ... import __version__

    cpu = _host.cpu()
    return {
        "cpu": cpu["cpu"],
        "vector": cpu["vector"],
        "threads": threads,
        "linscan": __version__,
        "numba": numba.__version__,
        "code": _code(),
    }


def path(threads: int, directory: str | None = None) -> str:
    """The tuning file for ``threads`` threads on this machine (in ``directory``, default
    :func:`cache_dir`)."""
    digest = hashlib.sha256(json.dumps(key(threads), sort_keys=True).encode()).hexdigest()
    return os.path.join(directory or cache_dir(), f"cpu-tuning-{digest[:16]}.json")


def dtype_class(itemsize: int) -> str:
    """Tables are measured in float32 and float64: an element of 4 bytes or fewer is looked
    up under ``"4"``, a larger one (float64, complex) under ``"8"``."""
    return "4" if itemsize <= 4 else "8"


class Table(NamedTuple):
    """A tuning table as read: ``choices`` maps ``(layout, dtype class, op, down)`` to the
    measured ``(lanes, strategy)`` pairs, sorted by lanes; ``tiles`` maps each op to the
    number of elements its downward walks touch ahead (0: none)."""

    choices: dict
    tiles: dict


#: The largest tile a file may hold: the kernels count tiles in unsigned 64-bit offsets, and
#: one of 2^64 - 1 elements wrapped to none (a scan that scanned nothing); the calibration
#: measures 16384 at most.
MAX_TILE = 1 << 30


def _check_tiles(tiles) -> dict:
    """``tiles`` (op -> elements touched ahead, 0 to ``MAX_TILE``, every op of ``OPS``);
    ``ValueError`` on anything else."""
    if not isinstance(tiles, dict) or set(tiles) != set(OPS):
        raise ValueError(f"tiles must map each of {OPS} to a tile, got {tiles!r}")
    for op, tile in tiles.items():
        if not isinstance(tile, int) or isinstance(tile, bool) or not 0 <= tile <= MAX_TILE:
            raise ValueError(f"the tile of {op} must be an integer from 0 to {MAX_TILE}, got "
                             f"{tile!r}")  # fmt: skip
    return dict(tiles)


def _check_entries(entries) -> dict:
    """The lookup index ``(layout, dtype class, op, down) -> [(lanes, strategy), ...]``
    (sorted by lanes) of a file's entries; ``ValueError`` on anything malformed."""
    index = {}
    for e in entries:
        layout, strategy = e["layout"], e["strategy"]
        if layout not in STRATEGIES or strategy not in STRATEGIES[layout]:
            raise ValueError(f"unknown layout or strategy in {e!r}")
        if e["op"] not in OPS or e["dtype"] not in ("4", "8") or not isinstance(e["down"], bool):
            raise ValueError(f"unknown op, dtype class or direction in {e!r}")
        lanes = e["lanes"]
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer in {e!r}")
        index.setdefault((layout, e["dtype"], e["op"], e["down"]), []).append((lanes, strategy))
    return {k: sorted(v) for k, v in index.items()}


def _warn_once(what: str, message: str) -> None:
    """Warn ``message`` the first time ``what`` (a file, a setting) goes wrong in a process."""
    with _lock:
        if what in _warned:
            return
        _warned.add(what)
    warnings.warn(message, TuningFileWarning, stacklevel=3)


def _unusable(file: str, why: str) -> None:
    _warn_once(
        file,
        f"linscan's CPU tuning file {file} could not be used ({why}); method='auto' uses its "
        f"static cost model. Run `python -m linscan tune` to measure this machine again.",
    )


def _open_regular(file: str):
    """``file`` open for reading as text, if it is a regular file (``OSError`` otherwise):
    opened without blocking, so that a named pipe at its place cannot hold every scan up."""
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {file}")
        return os.fdopen(fd, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def read(file: str, expected_key: dict):
    """The ``Table`` stored in ``file`` for ``expected_key``; ``None`` if there is no such
    file or it was written for another key or format. A file that cannot be read or decoded
    warns once and counts as absent."""
    try:
        with _open_regular(file) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    # Unreadable, not JSON (UnicodeDecodeError too), or nested too deep for the decoder.
    except (OSError, ValueError, RecursionError) as exc:
        _unusable(file, f"{type(exc).__name__}: {exc}")
        return None
    try:
        if data["format"] != FORMAT or data["key"] != expected_key:
            return None
        return Table(_check_entries(data["entries"]), _check_tiles(data["tiles"]))
    except (KeyError, TypeError, ValueError) as exc:
        _unusable(file, f"malformed: {type(exc).__name__}: {exc}")
        return None


def unwritable(file: str):
    """Why a table cannot be stored at ``file`` (its folder cannot be made or written, or a
    folder stands at its place), found by making the folder and a file in it; ``None`` when
    it can."""
    try:
        if os.path.isdir(file):
            return f"{file} is a folder"
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with tempfile.TemporaryFile(dir=os.path.dirname(file)):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def write(file: str, expected_key: dict, entries: list, tiles: dict, record: dict) -> None:
    """Store ``entries`` (dicts: layout, dtype, op, down, lanes, strategy, and what else the
    calibration recorded) and ``tiles`` for ``expected_key``, replacing ``file`` whole (a
    temporary file renamed over it: a reader sees the old table or the new one)."""
    _check_entries(entries)
    _check_tiles(tiles)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    tmp = f"{file}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "key": expected_key, **record, "tiles": tiles,
                       "entries": entries}, f, indent=1)  # fmt: skip
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    forget()


@functools.lru_cache(maxsize=4)
def _index(threads: int, directory: str):
    """Read once per thread count and directory: every threaded ``auto`` call asks."""
    return read(path(threads, directory), key(threads))


def forget() -> None:
    """Drop the tables read so far (after writing a new one, or in tests)."""
    _index.cache_clear()
    with _lock:
        _warned.clear()


def table(threads: int):
    """The ``Table`` for ``threads`` threads, or ``None`` (tuning off, or no table)."""
    if not enabled():
        return None
    return _index(threads, cache_dir())


def nearest(measured, lanes: int):
    """The strategy measured at the lane count nearest to ``lanes`` in ratio (``measured``:
    sorted ``(lanes, strategy)`` pairs); the smaller count on a tie."""
    return min(measured, key=lambda m: (abs(math.log(m[0]) - math.log(lanes)), m[0]))[1]


def lookup(table, layout: str, itemsize: int, op: str, down: bool, lanes: int):
    """The strategy the table holds for this kind of problem, or ``None`` where it has none.

    A problem is looked up by its lane count alone (``O * I``: rows, or outer rows times
    channels), not by its length: the table's probes are long (about 2^24 elements each), and
    a choice measured there is applied to shorter problems of the same lanes too (problems too
    small to be threaded never ask)."""
    measured = table.choices.get((layout, dtype_class(itemsize), op, down)) if table else None
    return nearest(measured, lanes) if measured else None


def status(threads: int) -> str:
    """One line: whether ``method="auto"`` follows a table for ``threads`` threads, and which."""
    if not enabled():
        return f"static cost model ({_ENV}={os.environ.get(_ENV, '').strip()})"
    found = table(threads)
    if found is None:
        return (
            f"static cost model (not tuned on this machine for {threads} threads: "
            "run `python -m linscan tune`)"
        )
    return f"tuned on this machine ({path(threads)}; downward walks touch {touching(found.tiles)})"


def touching(tiles: dict) -> str:
    """How far each op's downward walks touch ahead, in words."""
    return ", ".join(f"{op} {tiles[op] or 'nothing'}" for op in OPS) + " ahead"
