"""The CPU backend's thread pool (issue 14): forked children get a pool of their own.

The end-to-end checks share one fresh process, this file run as a script (Numba loads the
kernels once): threaded scans in forked children.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import linscan
from linscan import _cpu, _plan, testing

# ---------------------------------------------------------------------------------------------
# End to end, in one fresh process (the code below ``if __name__ == "__main__"`` runs there)


@pytest.fixture(scope="module")
def child():
    """The fresh process's exit status, its report (a dict by case) and its stderr."""
    env = {**os.environ, "LINSCAN_NUM_THREADS": "2"}
    try:
        done = subprocess.run([sys.executable, __file__], capture_output=True, timeout=300,
                              env=env)  # fmt: skip
        status, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status, out, err = "timed out", exc.stdout or b"", exc.stderr or b""
    report = dict(json.loads(line) for line in out.decode().splitlines() if line.strip())
    return status, report, err.decode()


def test_forked_children_run_threaded_scans(child):
    status, report, err = child
    assert report.get("parent used threads") is True, err
    assert report.get("fork pool") == ["ok"] * 4, err


def test_a_child_forked_while_a_parent_thread_holds_the_pool_lock(child):
    status, report, err = child
    assert report.get("fork with the lock held") == "ok", err


def _report(case, value):
    print(json.dumps([case, value]), flush=True)


def _checked_scan(seed):
    """A threaded scan compared with the oracle: "ok" or what went wrong."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.0, (2, _plan.MIN_THREADED))
    x = rng.standard_normal((2, _plan.MIN_THREADED))
    try:
        testing.assert_scan_close(linscan.scan(a, x), a, x)
    except AssertionError as exc:
        return f"wrong: {exc}"
    return "ok" if _cpu._pool is not None else "not threaded"


def _fork_pool():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        try:
            return pool.map_async(_checked_scan, range(4)).get(timeout=60)
        except multiprocessing.TimeoutError:
            return "hung"


def _fork_with_the_lock_held():
    """Fork while another thread holds the pool's lock; the child makes a threaded call."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with _cpu._pool_lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            code = 0 if _checked_scan(5) == "ok" else 1
        finally:
            os._exit(code)
    release.set()
    holder.join()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


if __name__ == "__main__":
    _report("parent used threads", _checked_scan(0) == "ok")
    _report("fork pool", _fork_pool())
    _report("fork with the lock held", _fork_with_the_lock_held())
