"""The CPU backend's thread pool (issue 14): an interrupted call stops its workers before it
raises, forked children get a pool of their own, and calls from atexit handlers run serially.

The tests of ``pool.run`` and the CPU backend's ``_drive`` run here with tasks that block on
events. The
end-to-end checks share one fresh process, this file run as a script (Numba loads the kernels
once): scans interrupted by SIGINT, threaded scans in forked children, a scan at exit.
"""

from __future__ import annotations

import atexit
import concurrent.futures
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
from linscan import testing
from linscan.backends.cpu import backend as _cpu
from linscan.backends.cpu import plan as _plan
from linscan.backends.cpu import pool

from helpers import race

# ---------------------------------------------------------------------------------------------
# pool.run and _drive, in this process


@pytest.fixture
def one_worker(monkeypatch):
    """A private pool of one thread in place of the shared one: the second task submitted
    waits until the first has ended, so that a test knows which tasks have started."""
    executor = concurrent.futures.ThreadPoolExecutor(1, "test-pool")
    monkeypatch.setattr(pool, "get_pool", lambda workers: executor)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_a_failing_caller_waits_for_the_running_task_and_starts_no_more(one_worker):
    started, raised, log = threading.Event(), threading.Event(), []

    def worker():
        started.set()
        assert raised.wait(30)
        time.sleep(0.2)  # so that a _run that did not wait would return first
        log.append("worker")

    def caller():
        assert started.wait(30)
        raised.set()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pool.run([caller, worker, lambda: log.append("unstarted")])
    assert log == ["worker"]
    one_worker.submit(lambda: None).result(timeout=30)  # behind anything still queued
    assert log == ["worker"]


class Interrupt(BaseException):
    """What the signal handler below raises: not an ``Exception``, like KeyboardInterrupt,
    but pytest reports it as a failure instead of ending the session."""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_interrupts_while_waiting_are_held_until_the_workers_end(one_worker):
    assert threading.current_thread() is threading.main_thread()  # signals land there
    main, received, armed = threading.main_thread().ident, [], True

    def handler(signum, frame):
        if armed:
            received.append(len(received) + 1)
            raise Interrupt(received[-1])

    caller_done, worker_done, log = threading.Event(), threading.Event(), []

    def worker():
        try:
            assert caller_done.wait(30)
            for k in (1, 2):
                time.sleep(0.1)  # the caller is waiting for this task by then
                signal.pthread_kill(main, signal.SIGUSR1)
                deadline = time.monotonic() + 30
                while len(received) < k and time.monotonic() < deadline:
                    time.sleep(0.001)  # handled: the next is not merged into it
            time.sleep(0.1)
            log.append("worker")
        finally:
            worker_done.set()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(Interrupt) as caught:
            pool.run([caller_done.set, worker])
        ended_before_the_raise = list(log)
    finally:
        armed = False
        worker_done.wait(30)  # no more signals: SIGUSR1's default action ends the process
        signal.signal(signal.SIGUSR1, old)
    assert ended_before_the_raise == ["worker"]
    assert received == [1, 2] and caught.value.args == (1,)  # the second was held


def test_a_workers_exception_reaches_the_caller():
    ran = []

    def fail():
        raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        pool.run([lambda: ran.append("caller"), fail])
    assert ran == ["caller"]


def test_one_calls_interrupt_leaves_another_calls_tasks_alone(one_worker):
    """Call A is interrupted while B's task waits in the queue behind A's: B's still runs."""
    a_started, b_submitted, log = threading.Event(), threading.Event(), []

    def a_worker():
        a_started.set()
        assert b_submitted.wait(30)
        time.sleep(0.2)  # still running (B's task still queued) when A is cancelled
        log.append("A worker")

    def a_caller():
        assert b_submitted.wait(30)
        raise KeyboardInterrupt

    def work(k):
        if k == 0:
            with pytest.raises(KeyboardInterrupt):
                pool.run([a_caller, a_worker])
        else:
            assert a_started.wait(30)
            pool.run([b_submitted.set, lambda: log.append("B worker")])

    race(work, threads=2, timeout=60)
    assert sorted(log) == ["A worker", "B worker"]


@pytest.fixture
def failing_start(monkeypatch):
    """A private pool of two threads in place of the shared one, whose next thread fails to
    start ("can't start new thread"): ``ThreadPoolExecutor.submit`` raises that
    ``RuntimeError`` after it has queued the work item, which a thread of the pool runs
    later. Yields the executor and a list of the failures to make: append one to arm it."""
    executor = concurrent.futures.ThreadPoolExecutor(2, "test-failing-start")
    monkeypatch.setattr(pool, "get_pool", lambda workers: executor)
    real_start, failures = threading.Thread.start, []

    def start(self):
        if self.name.startswith("test-failing-start") and failures:
            failures.pop()
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield executor, failures
    executor.shutdown(wait=True, cancel_futures=True)


def test_a_task_queued_by_a_failing_submit_runs_once_and_never_after_return(failing_start):
    """The first submit fails after queueing its task, so ``run`` runs that task here; the
    queued copy, run by a pool thread once one starts, must do nothing (issue 14)."""
    executor, failures = failing_start
    log, returned = [], threading.Event()

    def task(name):
        return lambda: log.append((name, returned.is_set()))

    failures.append(1)
    pool.run([task("caller"), task("first"), task("second")])
    returned.set()
    assert not failures  # the start did fail
    executor.submit(lambda: None).result(timeout=30)  # starts a thread, behind the queued copy
    executor.submit(lambda: None).result(timeout=30)
    assert sorted(log) == [("caller", False), ("first", False), ("second", False)]


def test_a_task_claimed_by_its_queued_copy_is_waited_for_and_its_error_raised(failing_start):
    """Here a pool thread, busy when the submit fails, takes the queued copy first: ``run``
    must not run the task again, must wait for the copy to end, and must re-raise its
    exception (it has no future to carry it)."""
    executor, failures = failing_start
    busy, release, started, log = threading.Event(), threading.Event(), threading.Event(), []
    executor.submit(lambda: (busy.set(), release.wait(30)))  # the pool's one started thread
    assert busy.wait(30)
    failures.append(1)

    def worker():
        started.set()
        time.sleep(0.2)  # so that a run that did not wait would return first
        log.append("worker")
        raise ValueError("from the queued copy")

    def caller():
        release.set()  # the busy thread now takes the queued copy
        assert started.wait(30)

    with pytest.raises(ValueError, match="from the queued copy"):
        pool.run([caller, worker])
    assert not failures and log == ["worker"]
    executor.submit(lambda: None).result(timeout=30)
    assert log == ["worker"]


def test_split_mode_tasks_stop_between_pieces(one_worker, monkeypatch):
    calls = []

    class Recorded(pool.TaskGroup):
        def __init__(self):
            super().__init__()
            calls.append(self)

    monkeypatch.setattr(pool, "TaskGroup", Recorded)
    with _plan.forced(threads=3, min_threaded=0, min_segment=1):
        plan = _plan.make_plan(1, 9, 1, down=False, method="parallel")
    mine, theirs, queued = plan.pieces
    assert len(theirs) == 2  # the worker's task reduces two pieces
    main, started, reduced = threading.get_ident(), threading.Event(), []

    def reduce(box, t0, t1, p, f, st):
        reduced.append((t0, t1))
        if threading.get_ident() == main:
            assert started.wait(30)
            raise KeyboardInterrupt
        started.set()
        deadline = time.monotonic() + 30
        while not calls[0].cancelled and time.monotonic() < deadline:
            time.sleep(0.001)

    with pytest.raises(KeyboardInterrupt):
        _cpu._drive(plan, (1, 9, 1), np.zeros((1, 1)), None, reduce, None)
    assert len(calls) == 1 and calls[0].cancelled
    assert sorted(reduced) == sorted([(mine[0].t0, mine[0].t1), (theirs[0].t0, theirs[0].t1)])


# ---------------------------------------------------------------------------------------------
# End to end, in one fresh process (the code below ``if __name__ == "__main__"`` runs there)


@pytest.fixture(scope="module")
def child():
    """The fresh process's exit status, its report (a dict by case) and its stderr."""
    # The linscan under test, whether installed or a checkout, and tests/ for helpers (a
    # script's own folder, not the current one, starts its path).
    here = os.path.dirname(os.path.dirname(os.path.abspath(linscan.__file__)))
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [here, tests, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "LINSCAN_NUM_THREADS": "2", "PYTHONPATH": path}
    try:
        done = subprocess.run([sys.executable, __file__], capture_output=True, timeout=300,
                              env=env)  # fmt: skip
        status, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status, out, err = "timed out", exc.stdout or b"", exc.stderr or b""
    report = dict(json.loads(line) for line in out.decode().splitlines() if line.strip())
    return status, report, err.decode()


def test_interrupted_scans_write_nothing_after_raising(child):
    status, report, err = child
    outcomes = report.get("interrupts")
    assert outcomes is not None, err
    assert outcomes and set(outcomes) == {"kept"}, outcomes


def test_forked_children_run_threaded_scans(child):
    status, report, err = child
    assert report.get("parent used threads") is True, err
    assert report.get("fork pool") == ["ok"] * 4, err


def test_a_child_forked_while_a_parent_thread_holds_the_pool_lock(child):
    status, report, err = child
    assert report.get("fork with the lock held") == "ok", err


def test_a_scan_from_an_atexit_handler_runs(child):
    status, report, err = child
    assert report.get("pool refused work at exit") is True, err  # the case in question
    assert report.get("atexit") == "ok", err
    assert status == 0, err


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
    return "ok" if pool._pool is not None else "not threaded"


def _interrupted(x, method, ready):
    """Send SIGINT during a scan once ``ready(out)`` holds: "missed" if it landed after the
    call returned, else whether ``out`` was "kept" or "changed" in the half second after the
    call raised."""
    out = np.zeros_like(x)
    returned = threading.Event()

    def interrupt():
        while not (ready(out) or returned.is_set()):
            time.sleep(1e-4)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt)
    try:
        watcher.start()
        linscan.scan(0.999, x, out=out, method=method)
        returned.set()
        watcher.join()
        time.sleep(1)  # the signal lands here at the latest
    except KeyboardInterrupt:
        if returned.is_set():
            return "missed"
        before = out.copy()
        time.sleep(0.5)
        return "kept" if np.array_equal(out, before) else "changed"
    return "missed"  # pragma: no cover - the signal always comes


def _interrupts():
    """Outcomes of interrupts that landed inside a call, sent when this thread has finished
    its own share and waits for the worker's (the window of the old bug): in lanes mode (this
    thread scans one row of three, the worker two) and in split mode (this thread scans the
    first half of one row). A busy machine may finish the worker's share first, so a few
    tries may miss."""
    steps = 1 << 22
    lanes, split = np.ones((3, steps), np.float32), np.ones((1, 2 * steps), np.float32)
    linscan.scan(0.999, lanes, method="auto")  # loads the kernels
    linscan.scan(0.999, split, method="parallel")
    cases = (
        (lanes, "auto", lambda out: out[0, -1] != 0, 3),
        (split, "parallel", lambda out: out[0, steps - 1] != 0, 2),
    )
    landed = []
    for x, method, ready, wanted in cases:
        outcomes = []
        # A miss costs one scan (the signal ends the sleep at once); a machine busy with other
        # work (the test suite's other worker process) misses most tries.
        for _ in range(wanted + 40):
            outcome = _interrupted(x, method, ready)
            if outcome != "missed":
                outcomes.append(outcome)
                if len(outcomes) == wanted:
                    break
        landed += outcomes
    return landed


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
        with pool._pool_lock:
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


def _at_exit():
    # By now the interpreter has shut concurrent.futures down (before any atexit handler).
    try:
        pool.get_pool(1).submit(lambda: None)
        _report("pool refused work at exit", False)
    except RuntimeError:
        _report("pool refused work at exit", True)
    _report("atexit", _checked_scan(6))


if __name__ == "__main__":
    atexit.register(_at_exit)
    _report("interrupts", _interrupts())
    _report("parent used threads", _checked_scan(0) == "ok")
    _report("fork pool", _fork_pool())
    _report("fork with the lock held", _fork_with_the_lock_held())
