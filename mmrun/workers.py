"""Warm worker processes for sweeps: forked once from a parent that has imported everything, fed jobs in chunks.

A `WarmPool` forks `n` workers from the calling process (fork: the workers start with the
parent's imported modules, composed config templates and any compiled code, at no cost). Each
worker reads chunks of jobs from its pipe, runs them one after the other with the function it
was given, and sends one result per job back as soon as it is done. The parent keeps up to two
chunks queued per worker, so a worker never waits for its next chunk; chunks shrink towards the
end of the sweep so that both cores finish together.

Workers die with the parent: `prctl(PR_SET_PDEATHSIG, SIGKILL)` on Linux (the kernel kills the
worker when the parent thread exits, whatever killed it), a check that the parent is still the
one that forked it (in case it died before the prctl), and the end of the worker's pipe.

Polars must not have started its thread pool in the parent before the fork (a forked child
would wait forever for threads it does not have): the parent imports Polars but reads no data;
each worker reads the sweep's data file once and keeps it (mmrun.market.history's cache).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

PR_SET_PDEATHSIG = 1  # linux/prctl.h

# (job index, payload) -> result; runs in a worker. A raised exception becomes WorkerError.
JobFn = Callable[[int, Any], Any]


class WorkerError(Exception):
    """A job raised in a worker (the message carries the worker's traceback), or its worker died."""


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the parent-pid check and the pipe's end remain
    if os.getppid() != parent_pid:
        os._exit(1)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 1 << 30


def _keep_freed_memory() -> None:
    """Let glibc's malloc serve blocks below 512 MiB from its heap and keep up to 1 GiB of freed
    memory for reuse instead of returning it to the kernel: a worker allocates the same large
    arrays (a million-row backtest's columns) job after job, and mapping them anew costs page
    faults on every job. The worker's resident memory then stays near its largest job's instead
    of falling between jobs. No-op off glibc.

    NumPy's transparent-huge-page advice (madvise(MADV_HUGEPAGE) on every array of 4 MB or more)
    is switched off in the worker: on reused heap memory it buys nothing, and with the kernel's
    THP defrag set to `madvise` (a common default) each advised fault may compact memory first.
    Measured on a 1M-bar backtest job, 8 in a row: 13-17 ms of system time a job without the
    advice, 42-58 ms with it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core  # NumPy 2 / 1
        core.multiarray._set_madvise_hugepage(False)  # NUMPY_MADVISE_HUGEPAGE=0, after the import
    except AttributeError:
        pass
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(KEEP_FREED_BYTES // 2))
        libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        pass


def _worker_loop(conn: Connection, run_job: JobFn, parent_pid: int, quiet: bool) -> None:
    _die_with_parent(parent_pid)
    _keep_freed_memory()
    # Ctrl-C reaches the whole process group: the parent decides what stops (it ends the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if quiet:
        # jobs print nothing on the console: the parent shows progress and the leaderboard
        devnull = open(os.devnull, "w")
        sys.stdout = devnull
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone or closed the pipe
        if chunk is None:
            return
        for idx, payload in chunk:
            try:
                result: Tuple[int, bool, Any] = (idx, True, run_job(idx, payload))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, the worker goes on
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                result = (idx, False, f"{type(exc).__name__}: {exc}\n{text}")
            try:
                conn.send(result)
            except (BrokenPipeError, OSError):
                return
            if os.getppid() != parent_pid:
                return


class WarmPool:
    """n worker processes forked from this one, each running run_job(idx, payload) for its jobs.

    run_job must be reachable from the forked child (a closure is fine: nothing is pickled but
    the payloads and results). quiet: the workers' standard output goes to /dev/null.
    """

    def __init__(self, n: int, run_job: JobFn, quiet: bool = True):
        if n < 1:
            raise ValueError(f"a pool needs at least one worker, got {n}")
        self.parent_pid = os.getpid()
        self.workers: Dict[int, Tuple[Connection, int]] = {}  # slot -> (connection, pid)
        # Objects alive now stay untouched by the children's garbage collector, so their memory
        # pages stay shared with the parent instead of being copied on the first collection. The
        # young generations are collected first; a full collection (about 0.1 s here, before any
        # job can start) would find little more, and what it misses only stays allocated.
        gc.collect(1)
        gc.freeze()
        sys.stdout.flush()
        sys.stderr.flush()
        for slot in range(n):
            parent_end, child_end = Pipe(duplex=True)
            pid = os.fork()
            if pid == 0:  # the worker
                code = 0
                try:
                    parent_end.close()
                    for other, _ in self.workers.values():
                        other.close()
                    _worker_loop(child_end, run_job, self.parent_pid, quiet)
                except BaseException:  # noqa: BLE001
                    code = 1
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            child_end.close()
            self.workers[slot] = (parent_end, pid)

    @property
    def pids(self) -> List[int]:
        return [pid for _, pid in self.workers.values()]

    def run(self, jobs: Sequence[Tuple[int, Any]], chunk: Optional[int] = None) -> Iterator[Tuple[int, bool, Any]]:
        """Run jobs [(idx, payload)]; yield (idx, ok, result or error text) as each job ends.

        chunk: jobs per message to a worker; None = about an eighth of a worker's share, at most
        16, shrinking to 1 towards the end. A worker that dies fails its unfinished jobs (ok
        False) and the others go on; if all die, the remaining jobs fail.
        """
        pending = list(jobs)[::-1]  # popped from the end: first job first
        n = len(self.workers)
        inflight: Dict[int, List[int]] = {slot: [] for slot in self.workers}
        queued: Dict[int, int] = {slot: 0 for slot in self.workers}  # chunks sent, not yet finished

        def size() -> int:
            if chunk is not None:
                return max(1, chunk)
            return max(1, min(16, len(pending) // (8 * n)))

        def feed(slot: int) -> None:
            conn, _ = self.workers[slot]
            while pending and queued[slot] < 2:
                part = [pending.pop() for _ in range(min(size(), len(pending)))]
                try:
                    conn.send(part)
                except (BrokenPipeError, OSError):
                    pending.extend(reversed(part))
                    return
                inflight[slot].extend(i for i, _ in part)
                queued[slot] += 1
                self._chunk_ends.setdefault(slot, []).append(part[-1][0])

        self._chunk_ends: Dict[int, List[int]] = {}
        for slot in list(self.workers):
            feed(slot)
        while any(inflight.values()):
            conns = {self.workers[s][0]: s for s in self.workers if inflight.get(s)}
            for conn in wait(list(conns)):
                slot = conns[conn]
                try:
                    idx, ok, result = conn.recv()
                except (EOFError, OSError):
                    yield from self._lost(slot, inflight)
                    continue
                inflight[slot].remove(idx)
                ends = self._chunk_ends[slot]
                if ends and ends[0] == idx:
                    ends.pop(0)
                    queued[slot] -= 1
                    feed(slot)
                yield idx, ok, result
            if pending and not self.workers:
                while pending:
                    idx, _ = pending.pop()
                    yield idx, False, "WorkerError: every worker process died"

    def _lost(self, slot: int, inflight: Dict[int, List[int]]) -> Iterator[Tuple[int, bool, Any]]:
        conn, pid = self.workers.pop(slot)
        conn.close()
        status = _reap(pid)
        for idx in inflight.pop(slot):
            yield idx, False, f"WorkerError: the worker process running this job died ({status})"

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the workers: an end message, then SIGKILL for any still alive after timeout_s."""
        import time

        for conn, _ in self.workers.values():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self._end(time.monotonic() + timeout_s)

    def kill(self) -> None:
        """End the workers at once (Ctrl-C, an error in the parent)."""
        self._end(None)

    def _end(self, deadline: Optional[float]) -> None:
        """Reap every worker, waiting for it until deadline (time.monotonic(); None = no wait),
        then SIGKILL whatever is still alive; close the pipes and forget the workers."""
        import time

        for conn, pid in self.workers.values():
            while deadline is not None and _reap(pid, block=False) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if _reap(pid, block=False) is None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(pid)
            conn.close()
        self.workers.clear()
        gc.unfreeze()


def _reap(pid: int, block: bool = True) -> Optional[str]:
    """Collect a child's exit; its description, or None if it is still running (block False)."""
    try:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return "already collected"
    if done == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"
