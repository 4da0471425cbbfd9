"""A Numba cache file that cannot be decoded (empty, truncated, overwritten) is compiled afresh
and overwritten with one warning, instead of making every call raise until someone deletes it
(issue 14, item 7). See ``linscan/backends/cpu/cache.py``.

The first process of each case reads a damaged cache in a fresh interpreter, the second reads
what the first wrote. All cases share one cache populated once with a single kernel signature
(float64, time contiguous), so that each case recompiles only ``scan_rows``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import linscan
from linscan.backends.cpu import cache as _numba_cache
from linscan.backends.cpu import kernels as _cpu_kernels

ROOT = Path(linscan.__file__).resolve().parent.parent
T = 40

CALL = f"""
import json, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import linscan
    from linscan.backends.cpu import kernels as _cpu_kernels
    rng = np.random.default_rng(7)
    a = rng.uniform(-1.0, 1.0, {T})
    x = rng.standard_normal({T})
    h = linscan.scan(a, x)
stats = _cpu_kernels.scan_rows.stats
print(json.dumps(dict(
    a=a.tolist(), x=x.tolist(), h=h.tolist(),
    warnings=[[w.category.__name__, str(w.message)] for w in caught],
    hits=sum(stats.cache_hits.values()), misses=sum(stats.cache_misses.values()),
)))
"""


def _calls(cache_dirs: list[Path]) -> list[dict]:
    """Run ``CALL`` in a fresh interpreter for each of ``cache_dirs`` (reading the Numba cache
    there). They run at once, sharing the cores: each is mostly importing and compiling."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    runs = [
        subprocess.Popen([sys.executable, "-c", CALL], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(env, NUMBA_CACHE_DIR=str(cache)))  # fmt: skip
        for cache in cache_dirs
    ]
    outs = []
    for run in runs:
        try:
            stdout, stderr = run.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            run.kill()
            stdout, stderr = run.communicate()
        outs.append(
            json.loads(stdout.splitlines()[-1])
            if run.returncode == 0
            else dict(returncode=run.returncode, stderr=stderr)
        )
    return outs


def _loop(a, x):
    h, s = [], 0.0
    for at, xt in zip(a, x):
        s = at * s + xt
        h.append(s)
    return h


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    """A cache holding ``scan_rows`` and its callees for ``CALL``'s signature."""
    cache = tmp_path_factory.mktemp("numba-cache")
    [out] = _calls([cache])
    assert "h" in out, out["stderr"]
    assert out["warnings"] == [] and out["misses"] == 1, out
    return cache


def _scan_rows_file(cache: Path, which: str) -> Path:
    pattern = "kernels.scan_rows-*." + ("nbi" if which == "index" else "1.nbc")
    found = list(cache.glob("*/" + pattern))
    assert len(found) == 1, (pattern, sorted(p.name for p in cache.glob("*/*")))
    return found[0]


DAMAGE = {
    "garbage": lambda data: np.random.default_rng(14).bytes(256),
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
}


CASES = [(which, damage) for which in ("index", "data") for damage in sorted(DAMAGE)]


@pytest.fixture(scope="module")
def outcomes(populated, tmp_path_factory) -> dict:
    """For each case: the damaged file, and what a first and a second process made of it."""
    caches, paths = [], []
    for which, damage in CASES:
        cache = tmp_path_factory.mktemp(f"{which}-{damage}") / "cache"
        shutil.copytree(populated, cache)
        path = _scan_rows_file(cache, which)
        path.write_bytes(DAMAGE[damage](path.read_bytes()))
        caches.append(cache)
        paths.append(path)
    firsts = _calls(caches)
    seconds = _calls(caches)
    return {case: run for case, run in zip(CASES, zip(paths, firsts, seconds))}


@pytest.mark.parametrize("which, damage", CASES)
def test_an_undecodable_cache_file_is_compiled_afresh_with_one_warning(outcomes, which, damage):
    path, first, second = outcomes[which, damage]
    assert "h" in first, first["stderr"]
    np.testing.assert_allclose(first["h"], _loop(first["a"], first["x"]), rtol=1e-13, atol=0)
    assert len(first["warnings"]) == 1, first["warnings"]
    category, message = first["warnings"][0]
    assert category == "CacheFileUnreadableWarning"
    assert str(path) in message and "compiled afresh" in message, message
    assert (first["hits"], first["misses"]) == (0, 1)

    # The file was rewritten: the next process loads the kernel from it, silently.
    assert "h" in second, second["stderr"]
    assert second["h"] == first["h"]
    assert second["warnings"] == []
    assert (second["hits"], second["misses"]) == (1, 0)


def test_every_cached_kernel_reads_through_the_forgiving_cache():
    """A kernel added with plain ``njit(cache=True)`` would raise on a corrupt file again."""
    dispatchers = [
        v for v in vars(_cpu_kernels).values() if isinstance(v, numba.core.dispatcher.Dispatcher)
    ]
    cached = [d for d in dispatchers if not isinstance(d._cache, numba.core.caching.NullCache)]
    assert "scan_rows" in {d.__name__ for d in cached}
    wrong = [d.__name__ for d in cached if not isinstance(d._cache, _numba_cache._FunctionCache)]
    assert wrong == []


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Kernels decorated in the test cache into ``tmp_path``; the warn-once flag is fresh."""
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_numba_cache, "_warned", False)
    return tmp_path


def test_a_kernel_that_does_not_compile_still_raises_behind_a_corrupt_file(own_cache):
    @_numba_cache.njit_cached()
    def bad(v):
        return v + "text"

    index = Path(bad._cache._cache_file._index_path)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b"")
    with pytest.warns(_numba_cache.CacheFileUnreadableWarning):
        with pytest.raises(numba.core.errors.TypingError):
            bad(1)


def test_a_cache_file_that_cannot_be_opened_still_raises(own_cache):
    """Only decoding is forgiven: an OSError reading the index is not a corrupt file."""

    @_numba_cache.njit_cached()
    def good(v):
        return v + 1

    index = Path(good._cache._cache_file._index_path)
    index.mkdir(parents=True)  # a directory where the index should be
    with pytest.raises(OSError):
        good(1)
    assert _numba_cache._warned is False


def test_a_change_to_a_module_the_kernel_inlines_makes_its_cache_stale(tmp_path):
    """A kernel inlining a function of another module (as the CPU kernels inline
    ``linscan._affine.cannot_stand``) is compiled afresh once that module's file changes."""
    (tmp_path / "rule.py").write_text("def bump(v):\n    return v + 1\n")
    (tmp_path / "kernel.py").write_text(
        "import numba, rule\n"
        "from linscan.backends.cpu.cache import njit_cached\n"
        "bump = numba.njit(inline='always')(rule.bump)\n"
        "@njit_cached(depends=(rule,))\n"
        "def kernel(v):\n"
        "    return bump(v) * 10\n"
    )
    script = (
        "import json, kernel\n"
        "value = kernel.kernel(1)\n"
        "stats = kernel.kernel.stats\n"
        "print(json.dumps([value, sum(stats.cache_hits.values())]))\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    path = [str(tmp_path), str(ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))

    def run():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    assert run() == [20, 0]  # compiled
    assert run() == [20, 1]  # from the cache
    (tmp_path / "rule.py").write_text("def bump(v):\n    return v + 22\n")
    assert run() == [230, 0]  # the kernel file is unchanged, but its cache is stale
    assert run() == [230, 1]
