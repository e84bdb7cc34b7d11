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

A `Spare` is a process forked at the very start of a sweep, before Hydra composes anything: it
does the warm-up every worker needs (numba's registries and compiled passes, matplotlib) on the
second core while the sweep's process is still starting, then, asked by the launcher with the
sweep's state (pickled) and the workers' pipe ends (passed as file descriptors), forks the
workers from itself. The launcher adopts them as a `WarmPool`; the spare stays their parent and
reaps them. A sweep then starts its jobs ~0.3 s sooner on 2 cores; if the spare is gone or
fails, the launcher forks its workers itself as before.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import pickle
import signal
import socket
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


def _fork(child: Callable[[], None]) -> int:
    """Fork; the child runs child() and exits (code 0, or 1 if it raised) without returning into
    the caller's code. Returns the child's pid (in this process)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child()
        except BaseException:  # noqa: BLE001 - nothing of the parent's may run in the child
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return pid


def _worker_loop(conn: Connection, run_job: JobFn, parent_pid: int, quiet: bool) -> None:
    _die_with_parent(parent_pid)
    _keep_freed_memory()
    # Ctrl-C reaches the whole process group: the parent decides what stops (it ends the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the sweep's own (mmrun.launch): a worker just ends
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
        self.adopted = False  # the workers are another process's children (a Spare's)
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

            def worker(parent_end=parent_end, child_end=child_end) -> None:
                parent_end.close()
                for other, _ in self.workers.values():
                    other.close()
                _worker_loop(child_end, run_job, self.parent_pid, quiet)

            pid = _fork(worker)
            child_end.close()
            self.workers[slot] = (parent_end, pid)

    @classmethod
    def adopt(cls, workers: Sequence[Tuple[Connection, int]]) -> "WarmPool":
        """A pool of running workers forked by another process (a Spare): [(connection, pid)].
        Their parent reaps them; this pool feeds them, and kills them if they outstay close()."""
        pool = cls.__new__(cls)
        pool.parent_pid = os.getpid()
        pool.workers = dict(enumerate(workers))
        pool.adopted = True
        return pool

    @property
    def pids(self) -> List[int]:
        return [pid for _, pid in self.workers.values()]

    def _exited(self, pid: int, block: bool = False) -> Optional[str]:
        """How worker pid ended, or None while it runs (block: wait for it, own children only)."""
        if not self.adopted:
            return _reap(pid, block)
        return None if _running(pid) else "ended"

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
        status = self._exited(pid, block=True) or "its pipe closed"
        for idx in inflight.pop(slot):
            yield idx, False, f"WorkerError: the worker process running this job died ({status})"

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the workers: an end message, then SIGKILL for any still alive after timeout_s."""
        import time

        for conn, _ in list(self.workers.values()):
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self._end(time.monotonic() + timeout_s)

    def kill(self) -> None:
        """End the workers at once (Ctrl-C, an error in the parent)."""
        self._end(None)

    def terminate(self) -> None:
        """SIGKILL every worker and nothing else: a thread iterating `run` sees them end (their
        jobs fail) while the pool's bookkeeping stays that thread's; close or kill it after."""
        for _, pid in list(self.workers.values()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _end(self, deadline: Optional[float]) -> None:
        """Reap every worker, waiting for it until deadline (time.monotonic(); None = no wait),
        then SIGKILL whatever is still alive; close the pipes and forget the workers."""
        import time

        for conn, pid in list(self.workers.values()):
            while deadline is not None and self._exited(pid) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._exited(pid) is None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if not self.adopted:
                    _reap(pid)
            conn.close()
        self.workers.clear()
        if not self.adopted:
            gc.unfreeze()


def _running(pid: int) -> bool:
    """True while process pid exists and is not a zombie (Linux: /proc; else a signal 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


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


# ---------------------------------------------------------------- the spare

SPARE_FDS_MAX = 256  # workers a spare can fork in one request (one pipe end each)


class Spare:
    """A process forked now that runs warm() and then waits to fork a pool's workers.

    warm: what every worker needs, done once in the spare (imports, compiled code); it must not
    start Polars' thread pool (see the module's docstring), and its failure only means a colder
    start. The spare dies with this process (PR_SET_PDEATHSIG), and ends by itself when this
    process closes its socket (at exit, or after a pool was made) and its workers have ended.
    """

    def __init__(self, warm: Callable[[], None]):
        self.parent_pid = os.getpid()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()

        def spare() -> None:
            ours.close()
            _spare_main(theirs, self.parent_pid, warm)

        pid = _fork(spare)
        theirs.close()
        self.pid: Optional[int] = pid
        self.forked = False  # the spare has forked a pool's workers
        self.sock: Optional[socket.socket] = ours
        atexit.register(self.close)

    def pool(self, factory: Callable[[], JobFn], n: int, quiet: bool = True,
             before_reply: Optional[Callable[[], None]] = None, timeout_s: float = 600.0) -> Optional[WarmPool]:
        """n workers forked by the spare, each running factory()'s job function; None if the spare
        cannot (gone, factory not picklable, factory failed, no reply within timeout_s), after
        which the spare is closed. before_reply: run here while the spare forks (this process's
        own warm-up). factory is called in the spare, once, before the workers are forked."""
        if self.sock is None or not 1 <= n <= SPARE_FDS_MAX:
            self.close()
            return None
        try:
            payload = pickle.dumps((factory, n, quiet))
        except Exception:  # noqa: BLE001 - e.g. a closure: the launcher forks its workers itself
            self.close()
            return None
        pipes = [Pipe(duplex=True) for _ in range(n)]
        try:
            _send_message(self.sock, payload)
            socket.send_fds(self.sock, [b"fds"], [child.fileno() for _, child in pipes])
        except OSError:
            for a, b in pipes:
                a.close()
                b.close()
            self.close()
            return None
        for _, child in pipes:
            child.close()
        if before_reply is not None:
            try:
                before_reply()
            except Exception:  # noqa: BLE001 - only a warm-up
                pass
        reply = None
        try:
            self.sock.settimeout(timeout_s)
            reply = pickle.loads(_recv_message(self.sock))
        except (OSError, EOFError, pickle.UnpicklingError, socket.timeout):
            pass
        if not (isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "ok" and len(reply[1]) == n):
            for conn, _ in pipes:
                conn.close()
            self.close()
            return None
        self._forget()
        self.forked = True
        return WarmPool.adopt([(conn, pid) for (conn, _), pid in zip(pipes, reply[1])])

    def _forget(self) -> None:
        """Close the socket (the spare then ends once its workers have; close() at exit reaps it)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self, timeout_s: float = 2.0) -> None:
        """End the spare and reap it. One that forked a pool (its workers told to end by
        WarmPool.close) is given timeout_s to reap them and exit, so that their CPU time is
        counted in this process's children's; otherwise, or after that, SIGKILL (any worker
        still running dies with it: PR_SET_PDEATHSIG)."""
        import time

        self._forget()
        if self.pid is None:
            return
        deadline = time.monotonic() + (timeout_s if self.forked else 0.0)
        while _reap(self.pid, block=False) is None:
            if time.monotonic() >= deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(self.pid)
                break
            time.sleep(0.005)
        self.pid = None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise EOFError("the other end closed the socket")
        data += part
    return bytes(data)


def _recv_message(sock: socket.socket) -> bytes:
    """One length-prefixed message (8 bytes little-endian length, then the bytes)."""
    return _recv_exact(sock, int.from_bytes(_recv_exact(sock, 8), "little"))


def _send_message(sock: socket.socket, data: bytes) -> None:
    sock.sendall(len(data).to_bytes(8, "little") + data)


def _spare_main(sock: socket.socket, parent_pid: int, warm: Callable[[], None]) -> None:
    """The spare: warm up, take one request (a job-function factory and n pipe ends), fork the
    n workers, reply with their pids, then reap them and end."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the sweep's process decides
    try:
        warm()
    except Exception:  # noqa: BLE001 - a colder start for the workers, nothing more
        pass
    try:
        factory, n, quiet = pickle.loads(_recv_message(sock))
        _, fds, _, _ = socket.recv_fds(sock, 16, n)
    except (OSError, EOFError, pickle.UnpicklingError):
        return  # the sweep's process ended, or forked its workers itself
    try:
        if len(fds) != n:
            raise ValueError(f"expected {n} pipe ends, got {len(fds)}")
        run_job = factory()
    except Exception:  # noqa: BLE001 - the launcher forks its own workers instead
        for fd in fds:
            os.close(fd)
        _send_message(sock, pickle.dumps(("failed", traceback.format_exc())))
        return
    me = os.getpid()
    gc.collect(1)  # as WarmPool: the workers share what is alive now, untouched
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    pids = []
    for i, fd in enumerate(fds):

        def worker(i: int = i, fd: int = fd) -> None:
            sock.close()
            for j, other in enumerate(fds):
                if j != i:
                    os.close(other)
            _worker_loop(Connection(fd), run_job, me, quiet)

        pids.append(_fork(worker))
    for fd in fds:
        os.close(fd)
    try:
        _send_message(sock, pickle.dumps(("ok", pids)))
    except OSError:
        pass
    sock.close()
    while True:  # the workers end when the sweep closes the pool, or with this process
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


_spare: Optional[Spare] = None


def start_spare(warm: Callable[[], None]) -> Optional[Spare]:
    """Fork this process's spare (once); None where fork is not available."""
    global _spare
    if _spare is None and hasattr(os, "fork") and hasattr(socket, "send_fds"):
        _spare = Spare(warm)
    return _spare


def take_spare() -> Optional[Spare]:
    """The spare started by start_spare, handed out once; None if there is none or it has ended."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and (spare.pid is None or _reap(spare.pid, block=False) is not None):
        spare.pid = None
        spare.close()
        return None
    return spare
