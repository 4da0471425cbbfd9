"""The CPU backend's thread pool: one pool shared by every call, grown on demand.

The kernels are serial functions that release the GIL; parallelism comes from this pool, so
there is no Numba threading layer to configure, and calls from several user threads at once
are safe (their tasks share the pool). A call ends (returns, or raises when interrupted) only
once all of its tasks have: nothing writes into the caller's arrays after it is over. A
forked child makes a pool of its own; once the interpreter is shutting down (atexit
handlers) the tasks run on the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

_pool = None
_pool_workers = 0
_pool_lock = threading.Lock()


def get_pool(workers: int):
    """The shared pool, grown (never shrunk) to at least ``workers`` threads."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool_workers < workers:
            # A smaller old pool is left alone: another call may still be submitting to it.
            _pool = concurrent.futures.ThreadPoolExecutor(workers, "linscan")
            _pool_workers = workers
        return _pool


def _forget_pool_in_child() -> None:
    """After ``fork``: the child inherits the pool without its threads (a task submitted to it
    would never run), and the lock as it was, perhaps held by a parent thread that does not
    exist here. Start afresh."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)


class TaskGroup:
    """One call's tasks on the shared pool. Once ``cancelled`` is set none of them starts and
    the task loops of ``backend._drive`` stop at their next piece; it is per call because
    calls from several user threads share the pool, and one being interrupted must not stop
    another."""

    def __init__(self):
        self.cancelled = False
        self._running = 0
        self._idle = None  # made by the first guard: most calls run on one thread alone

    def guard(self, task):
        """``task`` for the pool, as a :class:`Guarded` (called on the calling thread, before
        the task is submitted)."""
        if self._idle is None:
            self._idle = threading.Condition(threading.Lock())
        return Guarded(self, task)

    def wait_idle(self) -> None:
        """Return once no task of the group is running."""
        if self._idle is None:
            return
        with self._idle:
            while self._running:
                self._idle.wait()

    def cancel(self, futures) -> None:
        """Start no more tasks and return once the running ones have ended."""
        if self._idle is None:  # nothing was submitted
            self.cancelled = True
            return
        while True:
            try:
                with self._idle:
                    self.cancelled = True
                for future in futures:
                    future.cancel()  # unstarted tasks leave the shared queue now
                self.wait_idle()
                return
            except BaseException:
                # A second Ctrl-C (or whatever a signal handler raises) while waiting: workers
                # still write the caller's arrays, so keep waiting; the caller re-raises the
                # first exception.
                pass


class Guarded:
    """A task of a :class:`TaskGroup` that runs at most once, wherever it is called: the first
    call claims it (unless the group is cancelled) and the group counts it while it runs
    (``cancel`` and ``run`` wait on the count, not on futures: a task queued by a ``submit``
    that raised has no future here, but it runs through this guard); a later call does
    nothing. ``error`` is the exception it raised, if any (a worker's, for the caller)."""

    __slots__ = ("group", "task", "claimed", "error")

    def __init__(self, group: TaskGroup, task):
        self.group, self.task, self.claimed, self.error = group, task, False, None

    def __call__(self) -> None:
        group = self.group
        with group._idle:
            if group.cancelled or self.claimed:
                return
            self.claimed = True
            group._running += 1
        try:
            self.task()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            with group._idle:
                group._running -= 1
                group._idle.notify_all()


def run(tasks, group: TaskGroup | None = None) -> None:
    """Run zero-argument callables, the first on this thread; return when all have ended.

    Each runs once: if the pool takes no more work, the rest run on this thread. If this
    thread fails or is interrupted (KeyboardInterrupt) meanwhile, the tasks not yet started
    never start and the exception is re-raised once the running ones have ended: nothing
    writes into the caller's arrays after the call is over. ``group`` is the ``TaskGroup``
    whose ``cancelled`` the tasks check between pieces (a fresh one if not given)."""
    if len(tasks) == 1:
        tasks[0]()
        return
    group = TaskGroup() if group is None else group
    guarded = [group.guard(task) for task in tasks[1:]]
    futures, here = [], []
    try:
        pool = get_pool(len(tasks) - 1)
        for k, task in enumerate(guarded):
            try:
                futures.append(pool.submit(task))
            except RuntimeError:
                # The executor takes no new work once the interpreter has begun to shut down
                # (a call from an atexit handler), or it queued the task but could not start
                # a thread for it ("can't start new thread"): run the rest on this thread,
                # through their guards, so that a queued copy runs the task only if it comes
                # first (and is waited for below), and is a no-op otherwise.
                here = guarded[k:]
                break
        tasks[0]()
        for task in here:
            task()
        concurrent.futures.wait(futures)
        group.wait_idle()  # a queued copy without a future may have claimed a task
    except BaseException:
        group.cancel(futures)
        raise
    for task in guarded:
        if task.error is not None:
            raise task.error  # a worker's exception
