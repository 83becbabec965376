"""Run a verl entry point (``python -m <module> <overrides>``) under a timeout, parse its metrics, leave nothing behind.

Generic on purpose (the CPU demo, the recipe's and the eval's e2e tests reuse it)::

    from calibrl_ext.cpu_backend.launcher import run_verl
    run = run_verl(
        ["data.train_files=...", "actor_rollout_ref.model.path=...", "trainer.total_training_steps=2"],
        metrics_path="outputs/x/metrics.jsonl",      # verl's `file` logger writes here (VERL_FILE_LOGGER_PATH)
        entry_module="verl.trainer.main_ppo",        # or a recipe's module
        timeout_s=600,
    )
    run.raise_for_status()                           # RuntimeError with the log tail unless rc == 0
    run.steps(), run.values("critic/score/mean")     # parsed metrics

What it guarantees:

- The child runs in its own session (``start_new_session``); every process Ray starts for it (GCS, raylet,
  workers, agents) stays in that session. After the child exits, or when the timeout expires, every process of
  the session still alive gets SIGTERM, then SIGKILL after a grace period, each by its pid.
  :attr:`VerlRun.leftover_pids` lists any that survived (none expected; the e2e tests check it with ``ps``).
  Nothing else on the host is touched, so concurrent runs of other users are safe.
- Environment: ``os.environ``, then the CPU backend's :func:`~calibrl_ext.cpu_backend.overrides.cpu_env` (with
  ``use_cpu_backend``), then the caller's ``env``; ``PYTHONPATH`` gains the directory holding ``calibrl_ext`` so
  Ray workers import it even when the package is not installed.
- Overrides: the CPU set (with ``use_cpu_backend``), ``trainer.logger=[console,file]``, then the caller's
  overrides, which win. The ``file`` logger OPENS ITS FILE FOR WRITING: a resumed run must use another
  ``metrics_path`` or it erases the first run's metrics.
- Output (stdout and stderr) goes to ``log_path`` (default: ``<metrics_path>.log``), and to the console with
  ``echo=True``.
- Fail fast: verl does not stop when a rollout server dies or a weight push raises inside vLLM (it waits on the
  dead server for many minutes). Every output line is matched against :data:`FATAL_ROLLOUT_PATTERNS`; on a
  match the run gets ``fatal_grace_s`` seconds to exit on its own, then it is terminated and the result
  carries ``returncode == ROLLOUT_FAILED_RETURNCODE`` and ``fatal_error`` (the matching line and the lines
  after it: the underlying traceback), which :meth:`VerlRun.raise_for_status` puts first in its message.
- Shared memory: ``/dev/shm`` segments that the run's processes map or hold open (verl's weight-push buckets
  ``verl_weights_*``, vLLM's ``psm_*`` message queues) are recorded while it runs and the ones still present
  after cleanup are removed (:attr:`VerlRun.removed_shm`); segments of other runs are never touched.

CLI (used by ``examples/run_tiny_cpu_grpo.sh``)::

    python -m calibrl_ext.cpu_backend.launcher --metrics outputs/run/metrics.jsonl --timeout 600 -- key=value ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import re

import psutil

from calibrl_ext.cpu_backend.overrides import CpuRunShape, cpu_env, cpu_overrides, repo_root

#: Seconds between SIGTERM and SIGKILL for processes left in the run's session.
TERMINATE_GRACE_S = 10.0
#: Seconds to let Ray's own shutdown (after the driver exits) finish before cleanup starts sending signals.
SETTLE_AFTER_EXIT_S = 5.0
#: Exit code reported when the timeout expired (the convention of coreutils ``timeout``).
TIMEOUT_RETURNCODE = 124
#: Override that makes verl log metrics to the file read here (the caller may override it).
LOGGER_OVERRIDE = "trainer.logger=[console,file]"
#: Exit code reported when a fatal rollout-server error was seen and the run was stopped (EX_SOFTWARE).
ROLLOUT_FAILED_RETURNCODE = 70
#: Output lines after which verl's run cannot succeed but verl itself does not stop: a vLLM engine or worker
#: process died or raised (``EngineDeadError``, vLLM's "EngineCore encountered a fatal error", a failed weight
#: load inside vLLM as in docs/vllm_cpu.md, blocker 4), or a Ray actor of the run died.
FATAL_ROLLOUT_PATTERNS: tuple[str, ...] = (
    r"EngineDeadError",
    r"EngineCore encountered a fatal error",
    r"Engine core initialization failed",
    r"WorkerProc hit an exception",
    r"WorkerProc failed to start",
    r"AttributeError: .*has no attribute 'weight_loader'",
    r"ActorDiedError",
    r"The actor died unexpectedly",
)
#: Default seconds a run may go on after a fatal line before it is stopped (verl's own error path, when it has
#: one, exits well within this).
DEFAULT_FATAL_GRACE_S = 30.0
#: Output lines kept after the first fatal line (the traceback that explains it).
FATAL_CONTEXT_LINES = 60
#: Seconds between two scans of the run's processes for shared-memory segments.
SHM_SCAN_INTERVAL_S = 2.0
#: Directory of POSIX shared-memory segments.
SHM_DIR = Path("/dev/shm")


@dataclass
class VerlRun:
    """Outcome of :func:`run_verl`.

    Attributes:
        command: the argv that ran.
        returncode: the child's exit code (TIMEOUT_RETURNCODE when the timeout expired).
        timed_out: whether the timeout expired.
        wall_s: seconds from start to the child's exit (or kill).
        metrics_path: verl's file-logger output.
        log_path: stdout + stderr of the run.
        records: one dict per file-logger line, ``{"step": int, "data": {metric: value}}``; NaN and inf were
            written as null by verl's logger and are kept as None.
        leftover_pids: processes of the run's session still alive after cleanup (expected empty).
        session_id: the run's session id (the pid of the child it started).
        fatal_error: the first output line matching FATAL_ROLLOUT_PATTERNS and the lines after it ("" if none).
        removed_shm: /dev/shm segments of this run that were still present after it and were removed.
    """

    command: list[str]
    returncode: int
    timed_out: bool
    wall_s: float
    metrics_path: Path
    log_path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    leftover_pids: list[int] = field(default_factory=list)
    session_id: int = -1
    fatal_error: str = ""
    removed_shm: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def by_step(self) -> dict[int, dict[str, Any]]:
        """Metrics merged per step (verl logs training and validation metrics of a step separately)."""
        merged: dict[int, dict[str, Any]] = {}
        for record in self.records:
            merged.setdefault(int(record["step"]), {}).update(record["data"])
        return merged

    def steps(self, key: str = "training/global_step") -> list[int]:
        """Steps whose metrics contain ``key`` (default: the training steps that completed), ascending."""
        return sorted(step for step, data in self.by_step().items() if key in data)

    def values(self, key: str) -> list[Any]:
        """Values of ``key`` in step order (steps without it skipped)."""
        return [data[key] for _, data in sorted(self.by_step().items()) if key in data]

    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError as exc:
            return f"<no log: {exc}>"

    def raise_for_status(self) -> None:
        """Raise RuntimeError with the end of the log unless the run exited 0 within its timeout."""
        if not self.ok:
            reason = "timed out" if self.timed_out else f"exited with {self.returncode}"
            if self.fatal_error:
                raise RuntimeError(
                    f"verl run stopped after {self.wall_s:.0f} s: a rollout server failed (log: {self.log_path})\n"
                    f"{self.fatal_error}"
                )
            raise RuntimeError(f"verl run {reason} after {self.wall_s:.0f} s (log: {self.log_path})\n{self.log_tail()}")


def read_metrics(metrics_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse verl's file-logger jsonl; a missing file gives []. A malformed line raises, naming file and line."""
    path = Path(metrics_path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line of verl's file logger ({exc})") from exc
        if not isinstance(record, dict) or "step" not in record or "data" not in record:
            raise ValueError(f"{path}:{number}: expected {{'step': ..., 'data': {{...}}}}, got {line[:120]!r}")
        records.append(record)
    return records


def is_finite_number(value: Any) -> bool:
    """True for an int/float that is neither NaN nor inf (verl's logger writes NaN/inf as null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def session_pids(session_id: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session_id``."""
    pids = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.info["pid"]) == session_id:
                pids.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return pids


def terminate_session(session_id: int, grace_s: float = TERMINATE_GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, every live process of the session, one pid at a time.

    Returns the pids still alive afterwards (expected empty).
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        pids = session_pids(session_id)
        if not pids:
            return []
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and session_pids(session_id):
            time.sleep(0.2)
    return session_pids(session_id)


def _wait_for_session_to_empty(session_id: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and session_pids(session_id):
        time.sleep(0.2)


def session_shm_segments(session_id: int) -> set[str]:
    """Names of /dev/shm entries that live processes of the session map or hold open."""
    found: set[str] = set()
    prefix = str(SHM_DIR) + "/"
    for pid in session_pids(session_id):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    idx = line.find(prefix)
                    if idx >= 0:
                        found.add(line[idx + len(prefix) :].split()[0])
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith(prefix):
                    found.add(target[len(prefix) :].split()[0])
        except (OSError, ValueError):
            continue
    return {name for name in found if name and "/" not in name}


def remove_shm_segments(names: set[str], keep: set[str] = frozenset()) -> list[str]:
    """Unlink the named /dev/shm entries that still exist, except those in ``keep`` (present before the run
    started, so not the run's own); returns those removed."""
    removed = []
    for name in sorted(names - set(keep)):
        try:
            (SHM_DIR / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            sys.stderr.write(f"[launcher] could not remove /dev/shm/{name}: {exc}\n")
    return removed


def _shm_listing() -> set[str]:
    try:
        return {entry.name for entry in os.scandir(SHM_DIR)}
    except OSError:
        return set()


class _FatalWatch:
    """Matches output lines against FATAL_ROLLOUT_PATTERNS; keeps the first match and the lines after it."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        self.lines: list[str] = []
        self.seen_at: float | None = None

    def feed(self, line: str) -> None:
        if self.regex is None:
            return
        if self.seen_at is None:
            if self.regex.search(line):
                self.seen_at = time.monotonic()
                self.lines.append(line.rstrip("\n"))
        elif len(self.lines) < FATAL_CONTEXT_LINES:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _build_env(
    use_cpu_backend: bool, env: dict[str, str] | None, metrics_path: Path, shape: CpuRunShape | None = None
) -> dict[str, str]:
    merged = dict(os.environ)
    if use_cpu_backend:
        merged.update(cpu_env(shape))
    merged.update(env or {})
    merged["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    root = str(repo_root())
    paths = [p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p != root])
    return merged


def run_verl(
    overrides: Sequence[str],
    *,
    metrics_path: str | os.PathLike,
    log_path: str | os.PathLike | None = None,
    entry_module: str = "verl.trainer.main_ppo",
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
    shape: CpuRunShape | None = None,
    use_cpu_backend: bool = True,
    echo: bool = False,
    cwd: str | os.PathLike | None = None,
    on_line: Callable[[float, str], None] | None = None,
    fatal_patterns: Sequence[str] = FATAL_ROLLOUT_PATTERNS,
    fatal_grace_s: float = DEFAULT_FATAL_GRACE_S,
) -> VerlRun:
    """Run ``python -m entry_module <CPU overrides> trainer.logger=[console,file] <overrides>`` (module docstring).

    Args:
        overrides: the caller's Hydra overrides (applied last, so they win).
        metrics_path: where verl's ``file`` logger writes (the file is replaced).
        log_path: stdout + stderr of the run; default ``<metrics_path>.log``.
        entry_module: module run with ``python -m``.
        timeout_s: wall-clock limit; on expiry the run's processes are terminated and ``timed_out`` is set.
        env: extra environment variables (override the CPU ones).
        shape: the CPU run shape (training processes, Ray slots, poll interval); default ``CpuRunShape()``.
        use_cpu_backend: prepend the CPU environment and overrides (False: run the command as given).
        echo: also copy the output to this process's stdout, line by line.
        cwd: working directory of the run (default: the current one).
        on_line: called with (seconds since start, decoded line) for every output line as it arrives (the
            benchmark times start-up milestones with it); if it raises, it is reported and not called again.
        fatal_patterns: regexes of output lines after which the run cannot succeed (module docstring); ``()``
            turns the watch off.
        fatal_grace_s: seconds the run may go on after a fatal line before it is stopped.
    """
    metrics_path = Path(metrics_path).resolve()
    log_path = Path(log_path).resolve() if log_path else metrics_path.with_name(metrics_path.name + ".log")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if metrics_path.exists():
        metrics_path.unlink()  # a stale file would pass for this run's metrics if verl fails before logging
    cpu_part = cpu_overrides(shape) if use_cpu_backend else []
    shm_before = _shm_listing()
    command = [sys.executable, "-m", entry_module, *cpu_part, LOGGER_OVERRIDE, *overrides]
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=_build_env(use_cpu_backend, env, metrics_path, shape),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: the cleanup below finds every process Ray starts for it
        )
        session_id = proc.pid
        watch = _FatalWatch(fatal_patterns)
        copier = threading.Thread(
            target=_copy_output, args=(proc.stdout, log_file, echo, on_line, started, watch), daemon=True
        )
        copier.start()
        timed_out = stopped = False
        shm_seen: set[str] = set()
        next_scan = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_scan:
                    shm_seen |= session_shm_segments(session_id)
                    next_scan = now + SHM_SCAN_INTERVAL_S
                try:
                    returncode = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - started > timeout_s:
                    timed_out, returncode = True, TIMEOUT_RETURNCODE
                    break
                if watch.seen_at is not None and now - watch.seen_at > fatal_grace_s:
                    stopped, returncode = True, ROLLOUT_FAILED_RETURNCODE
                    break
        except BaseException:  # KeyboardInterrupt included: never leave the run behind
            terminate_session(session_id)
            remove_shm_segments(shm_seen, keep=shm_before)
            raise
        wall_s = time.monotonic() - started
        if not (timed_out or stopped):
            _wait_for_session_to_empty(session_id, SETTLE_AFTER_EXIT_S)
        shm_seen |= session_shm_segments(session_id)
        leftover = terminate_session(session_id)
        if timed_out or stopped:
            proc.wait(timeout=TERMINATE_GRACE_S)
        copier.join(timeout=5.0)
        removed_shm = remove_shm_segments(shm_seen, keep=shm_before)
        if timed_out:
            log_file.write(f"\n[launcher] timeout after {timeout_s:.0f} s: terminated the run\n".encode())
        if stopped:
            log_file.write(
                f"\n[launcher] fatal rollout-server error, run still alive {fatal_grace_s:.0f} s later: "
                f"terminated it\n".encode()
            )
        if removed_shm:
            log_file.write(f"[launcher] removed shared memory left by the run: {removed_shm}\n".encode())
    return VerlRun(
        command=command,
        returncode=returncode,
        timed_out=timed_out,
        wall_s=wall_s,
        metrics_path=metrics_path,
        log_path=log_path,
        records=read_metrics(metrics_path),
        leftover_pids=leftover,
        session_id=session_id,
        fatal_error=watch.text,
        removed_shm=removed_shm,
    )


def _copy_output(stream, log_file, echo: bool, on_line, started: float, watch: _FatalWatch) -> None:
    for line in iter(stream.readline, b""):
        log_file.write(line)
        log_file.flush()
        watch.feed(line.decode(errors="replace"))
        if echo:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        if on_line is not None:
            try:
                on_line(time.monotonic() - started, line.decode(errors="replace"))
            except Exception as exc:  # keep draining the pipe: a stalled pipe would block the run
                sys.stderr.write(f"[launcher] on_line callback failed, no longer called: {exc!r}\n")
                on_line = None
    stream.close()


#: Metrics the CLI prints after a run (those present).
SUMMARY_KEYS: tuple[str, ...] = (
    "critic/score/mean",
    "actor/entropy",
    "actor/pg_loss",
    "actor/grad_norm",
    "training/rollout_probs_diff_max",
    "response_length/mean",
    "timing_s/step",
)


def format_summary(run: VerlRun, keys: Sequence[str] = SUMMARY_KEYS) -> str:
    """A few lines for humans: outcome, steps, wall time, last value of each summary key."""
    steps = run.steps()
    lines = [
        f"run: {'ok' if run.ok else ('TIMEOUT' if run.timed_out else f'FAILED rc={run.returncode}')} "
        f"in {run.wall_s:.1f} s; training steps logged: {steps or 'none'}",
        f"metrics: {run.metrics_path}",
        f"log: {run.log_path}",
        f"session: {run.session_id} (processes left after cleanup: {len(run.leftover_pids)})",
    ]
    by_step = run.by_step()
    validation = sorted(k for data in by_step.values() for k in data if k.startswith("val-core/"))
    for key in [*keys, *dict.fromkeys(validation)]:
        values = run.values(key)
        if values:
            last = values[-1]
            shown = f"{last:.4g}" if is_finite_number(last) else repr(last)
            lines.append(f"  {key:<40} {shown}")
    if run.leftover_pids:
        lines.append(f"WARNING: processes of the run still alive after cleanup: {run.leftover_pids}")
    if run.fatal_error:
        lines.append(f"rollout server failed:\n{run.fatal_error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calibrl_ext.cpu_backend.launcher",
        description="Run a verl entry point on the CPU backend under a timeout; print a metrics summary.",
        epilog="Overrides after `--` go to the entry point (Hydra key=value), after the CPU set.",
    )
    parser.add_argument("--metrics", required=True, help="metrics jsonl path (verl's file logger; replaced)")
    parser.add_argument("--log", default=None, help="stdout+stderr of the run (default: <metrics>.log)")
    parser.add_argument("--entry", default="verl.trainer.main_ppo", help="module run with python -m")
    parser.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit in seconds (default 600)")
    parser.add_argument("--n-procs", type=int, default=1, help="training processes (FSDP ranks), default 1")
    parser.add_argument("--rollout", default="hf", choices=("hf", "vllm"), help="rollout backend (default hf)")
    parser.add_argument("--quiet", action="store_true", help="do not copy the run's output to the console")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the entry point")
    args = parser.parse_args(argv)
    try:
        shape = CpuRunShape(n_procs=args.n_procs, rollout=args.rollout)
    except ValueError as exc:
        parser.error(str(exc))
    run = run_verl(
        args.overrides,
        metrics_path=args.metrics,
        log_path=args.log,
        entry_module=args.entry,
        timeout_s=args.timeout,
        shape=shape,
        echo=not args.quiet,
    )
    print(format_summary(run), flush=True)
    return run.returncode if run.returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main())
