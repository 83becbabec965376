"""Symbolic answer checking (math-verify) under a HARD wall-clock limit that works from any thread.

Why a process pool: verl 0.9 calls ``compute_score`` from an asyncio executor thread, and
math-verify's own timeout relies on ``signal.alarm``, which only works in the main thread (off it,
math-verify raises or, with the timeout disabled, may run for hours on ``9^{9^{9^9}}``). A thread cannot
be stopped from outside; a process can. So each check runs in a long-lived worker process
(``_symbolic_worker.py``) and the caller waits at most ``timeout_s``; on expiry the worker is killed
(SIGKILL, which also stops C code inside sympy/GMP) and replaced, and the check counts as "not equal"
with ``status="timeout"``.

The pool is bounded (``workers`` processes); a caller takes an idle worker from a queue, so at most
``workers`` checks run at once and the others wait their turn (waiting does not count against the
limit of the check itself). Each process that calls it owns its own pool (created lazily, rebuilt after
``fork``), and the workers exit when their stdin closes, i.e. when the owner exits or dies.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Worker processes per pool when the caller does not say (``symbolic_workers`` reward kwarg).
DEFAULT_WORKERS = 2
#: Seconds a fresh worker may take to import math-verify/sympy and report ready. Not part of any
#: check's time limit; exceeded only when the machine is badly overloaded or the import is broken.
WORKER_STARTUP_TIMEOUT_S = 120.0
#: Characters of an offending answer quoted in a log message (answers can be megabytes of junk).
LOG_QUOTE_CHARS = 200

_WORKER_SCRIPT = Path(__file__).with_name("_symbolic_worker.py")
# Run the worker by path through runpy, so that the package's own __init__ (and everything it may
# import one day) stays out of the worker, and the package folder is not put on the worker's sys.path.
_WORKER_COMMAND = (sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')")


@dataclass(frozen=True)
class SymbolicResult:
    """Outcome of one check.

    ``status``: ``"ok"`` (the worker answered), ``"timeout"`` (killed after ``timeout_s``) or
    ``"error"`` (math-verify raised, or the worker died; ``detail`` says what). Only ``"ok"`` results
    carry information; ``equal`` is False and ``value`` None otherwise.
    """

    status: str
    equal: bool = False
    value: float | None = None
    detail: str = ""


def _quote(text: str) -> str:
    return repr(text if len(text) <= LOG_QUOTE_CHARS else text[:LOG_QUOTE_CHARS] + "…")


class _WorkerProcess:
    """One worker subprocess and its line-based JSON pipe."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [*_WORKER_COMMAND, str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # math-verify's own log records go to the owner's stderr
            close_fds=True,
        )
        self._buffer = b""
        self.ready = False

    def _read_line(self, timeout_s: float) -> bytes | None:
        """The next line from the worker, or None after ``timeout_s`` seconds. Raises EOFError if it died."""
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError(f"symbolic worker pid {self.proc.pid} exited with code {self.proc.poll()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def wait_ready(self) -> None:
        if self.ready:
            return
        line = self._read_line(WORKER_STARTUP_TIMEOUT_S)
        if line is None or not json.loads(line).get("ready"):
            raise RuntimeError(
                f"symbolic worker pid {self.proc.pid} did not start within {WORKER_STARTUP_TIMEOUT_S:.0f} s "
                f"(command: {' '.join(_WORKER_COMMAND)} {_WORKER_SCRIPT}); check that `import math_verify` works "
                "in this Python environment."
            )
        self.ready = True

    def request(self, payload: dict, timeout_s: float) -> dict | None:
        """Send one request; the response, or None if none came within ``timeout_s``."""
        self.proc.stdin.write((json.dumps(payload) + "\n").encode("utf-8"))
        self.proc.stdin.flush()
        line = self._read_line(timeout_s)
        return None if line is None else json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass  # the pipe is already broken: the process is gone, which is the goal

    def close(self) -> None:
        """Ask the worker to exit (EOF on stdin), then kill it if it lingers."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass  # fall through to the kill below
        self.kill()


class SymbolicChecker:
    """A bounded pool of math-verify worker processes; thread-safe.

    Args:
        workers: number of worker processes (at most this many checks run concurrently).
    """

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"symbolic_workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.owner_pid = os.getpid()
        self._idle: queue.Queue[_WorkerProcess] = queue.Queue()
        self._all: set[_WorkerProcess] = set()
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._add_worker()
        self.timeouts = 0  # running counts, for logs and benchmarks
        self.errors = 0

    def _add_worker(self) -> None:
        worker = _WorkerProcess()
        with self._lock:
            self._all.add(worker)
        self._idle.put(worker)

    def _retire(self, worker: _WorkerProcess) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            closed = self._closed
        if not closed:
            self._add_worker()

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _run(self, payload: dict, timeout_s: float, what: str) -> tuple[dict | None, str, str]:
        if self._closed:
            raise RuntimeError("SymbolicChecker is closed")
        if not timeout_s > 0:
            raise ValueError(f"symbolic_timeout_s must be > 0, got {timeout_s!r}")
        worker = self._idle.get()
        try:
            worker.wait_ready()
            started = time.monotonic()
            response = worker.request(payload, timeout_s)
        except (EOFError, BrokenPipeError, OSError, json.JSONDecodeError) as exc:
            self._count("errors")
            self._retire(worker)
            logger.error("symbolic check of %s failed, worker replaced: %s", what, exc)
            return None, "error", f"worker failed: {exc}"
        except BaseException:
            self._retire(worker)
            raise
        if response is None:
            self._count("timeouts")
            self._retire(worker)
            logger.warning(
                "symbolic check of %s exceeded %.2f s (waited %.2f s); worker killed and replaced, counted as not equal",
                what,
                timeout_s,
                time.monotonic() - started,
            )
            return None, "timeout", f"exceeded {timeout_s} s"
        self._idle.put(worker)
        if response.get("error"):
            self._count("errors")
            logger.warning("symbolic check of %s raised in math-verify: %s", what, response["error"])
            return response, "error", response["error"]
        return response, "ok", ""

    def equal(self, gold: str, pred: str, timeout_s: float) -> SymbolicResult:
        """Whether math-verify finds ``pred`` equivalent to ``gold`` (at most ``timeout_s`` seconds)."""
        what = f"pred={_quote(pred)} gold={_quote(gold)}"
        response, status, detail = self._run({"op": "equal", "gold": gold, "pred": pred}, timeout_s, what)
        if status != "ok":
            return SymbolicResult(status=status, detail=detail)
        return SymbolicResult(status="ok", equal=bool(response["equal"]))

    def numeric_value(self, expr: str, timeout_s: float) -> SymbolicResult:
        """The numeric value of a LaTeX/plain expression (``value`` None when it is not a real number)."""
        response, status, detail = self._run({"op": "numeric", "expr": expr}, timeout_s, f"expr={_quote(expr)}")
        if status != "ok":
            return SymbolicResult(status=status, detail=detail)
        value = response.get("value")
        return SymbolicResult(status="ok", value=None if value is None else float(value))

    def close(self) -> None:
        """Stop every worker. Checks after this raise."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.close()


_checker: SymbolicChecker | None = None
_checker_lock = threading.Lock()


def get_checker(workers: int = DEFAULT_WORKERS) -> SymbolicChecker:
    """This process's shared pool, created on first use with ``workers`` processes.

    A later call asking for a different size keeps the existing pool and logs that once: verl passes
    the same ``reward_kwargs`` on every call, so two sizes in one process mean two configurations.
    """
    global _checker
    with _checker_lock:
        if _checker is not None and _checker.owner_pid != os.getpid():
            _checker = None  # inherited through fork: its pipes belong to the parent
        if _checker is None:
            _checker = SymbolicChecker(workers)
        elif _checker.workers != workers and not getattr(_checker, "_size_warned", False):
            _checker._size_warned = True
            logger.warning(
                "symbolic_workers=%d requested but this process already runs a pool of %d workers; keeping %d",
                workers,
                _checker.workers,
                _checker.workers,
            )
        return _checker


class LazyChecker:
    """Stands in for this process's shared pool and creates it on the first symbolic check only, so
    that scoring which never needs math-verify never starts a worker process."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self.workers = workers

    def equal(self, gold: str, pred: str, timeout_s: float) -> SymbolicResult:
        return get_checker(self.workers).equal(gold, pred, timeout_s)

    def numeric_value(self, expr: str, timeout_s: float) -> SymbolicResult:
        return get_checker(self.workers).numeric_value(expr, timeout_s)


@atexit.register
def _close_shared_checker() -> None:
    if _checker is not None and _checker.owner_pid == os.getpid():
        _checker.close()
