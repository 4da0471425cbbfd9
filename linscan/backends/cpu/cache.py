"""Numba's on-disk cache for the CPU kernels, made to survive a file it cannot read.

Numba (0.68) keeps one index per kernel, ``<module>.<kernel>-<line>.pyXY.nbi``, and one data
file per compiled signature, ``<...>.pyXY.<n>.nbc``, in ``NUMBA_CACHE_DIR`` or else in the
``__pycache__`` beside the module (or a user-wide directory when that one is not writable).
It decodes both with ``pickle`` and lets any decoding error escape, so an empty, truncated or
overwritten file (a full disk, a crash before the data reached the disk, a bad copy) made
every call that needed the kernel raise ``EOFError`` or ``pickle.UnpicklingError`` until
someone deleted the file by hand.

Here a file whose bytes cannot be decoded counts as absent: the kernel is compiled afresh
and Numba's own writer replaces the file (it writes a temporary file and renames it over the
old one, so other processes reading the directory see the old file or the new one, never
half of one). Nothing is deleted: a file another process has just repaired is never removed.
The first such file in a process gives one :class:`CacheFileUnreadableWarning`.

Numba invalidates a cached kernel when its own source file changes, not when a function it
inlined from another module does: ``depends`` names such modules, whose files' modification
times and sizes join the stamp that a cached kernel must match.

Several processes sharing a cache directory may each find the same bad file: each compiles
and warns once, and the last rename wins, a whole file either way. A directory that is not
writable is never read: Numba passes over it when it picks the cache directory (for
``NUMBA_CACHE_DIR`` and ``__pycache__`` alike), so the rewrite does not fail for want of
permission there.

Only decoding is guarded. Opening and reading a file, compiling a kernel and running it raise
as before, so compile errors and errors in the caller's input are never mistaken for a bad
cache file.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings

import numba
from numba.core import caching
from numba.core.dispatcher import Dispatcher

__all__ = ["CacheFileUnreadableWarning", "njit_cached"]


class CacheFileUnreadableWarning(RuntimeWarning):
    """A Numba cache file of a linscan kernel could not be decoded; the kernel was compiled
    afresh and the file overwritten."""


# What ``pickle.load`` raises on bytes that are not a pickle of what Numba wrote. Empty and
# truncated files give EOFError or UnpicklingError; random bytes also give ValueError
# (UnicodeDecodeError, "unsupported pickle protocol"), OverflowError and MemoryError (a length
# or memo index far beyond the file's size, whose allocation fails at once), TypeError, and,
# from a global's name, AttributeError or ImportError; an index that decodes to something other than
# Numba's (stamp, entries) pair fails to unpack with TypeError or ValueError. The pickle
# documentation names IndexError too.
_UNDECODABLE = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    OverflowError,
    MemoryError,
    AttributeError,
    ImportError,
    IndexError,
)

_warned = False
_warned_lock = threading.Lock()


def _warn_once(path: str, exc: BaseException) -> None:
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    detail = str(exc)
    if len(detail) > 120:  # random bytes can end up quoted in the message
        detail = detail[:117] + "..."
    warnings.warn(
        f"linscan: could not read the Numba cache file {path} ({type(exc).__name__}: "
        f"{detail}); its kernel is compiled afresh and the file overwritten. Other unreadable "
        "cache files in this process are treated the same way without another warning.",
        CacheFileUnreadableWarning,
        stacklevel=2,
    )


class _IndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's index and data files, where a file that does not decode is a cache miss."""

    def _load_index(self):
        # Also called by ``save`` before it writes the new index: returning no entries there
        # makes it overwrite the bad index instead of raising again.
        try:
            return super()._load_index()
        except _UNDECODABLE as exc:
            _warn_once(self._index_path, exc)
            return {}

    def _load_data(self, name):
        # ``load`` treats None as a miss; ``save`` then rewrites the entry under the same name.
        try:
            return super()._load_data(name)
        except _UNDECODABLE as exc:
            _warn_once(self._data_path(name), exc)
            return None


class _FunctionCache(caching.FunctionCache):
    """Numba's per-kernel cache with the forgiving file reader above."""

    def __init__(self, py_func, depends=()):
        super().__init__(py_func)
        stamp = self._impl.locator.get_source_stamp()
        if depends:
            stamp = (stamp, tuple(_file_stamp(module) for module in depends))
        self._cache_file = _IndexDataCacheFile(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=stamp,
        )


def _file_stamp(module) -> tuple:
    """The modification time and size of ``module``'s source file, as Numba stamps its own."""
    st = os.stat(module.__file__)
    return st.st_mtime, st.st_size


def njit_cached(*, depends=(), **options):
    """``numba.njit(cache=True, **options)``, except that a cache file that cannot be decoded
    is compiled afresh and overwritten, with one warning, instead of raising on every call,
    and that a change to a module of ``depends`` (whose functions the kernel inlines) makes
    the cached kernel stale, as a change to its own module does."""

    def decorate(func):
        dispatcher = numba.njit(cache=False, **options)(func)
        if isinstance(dispatcher, Dispatcher):  # not the plain function NUMBA_DISABLE_JIT gives
            # What ``Dispatcher.enable_caching`` (``cache=True``) does, with our cache class.
            dispatcher._cache = _FunctionCache(dispatcher.py_func, depends)
        return dispatcher

    return decorate
