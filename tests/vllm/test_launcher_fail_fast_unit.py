"""The launcher's fail-fast watch and shared-memory cleanup on a stand-in child (no Ray, no vLLM: seconds).

The child prints a line vLLM prints when its engine dies, holds a /dev/shm segment open and then hangs, as verl
does after a vLLM worker error (docs/vllm_cpu.md, blocker 4)."""

from __future__ import annotations

from pathlib import Path

from calibrl_ext.cpu_backend.launcher import ROLLOUT_FAILED_RETURNCODE, run_verl

CHILD = '''
import mmap, os, sys, time
# a mapped segment without Python's resource tracker (which would unlink it on SIGTERM): like verl's workers'
fd = os.open("/dev/shm/" + sys.argv[-1], os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, 4096)
buf = mmap.mmap(fd, 4096)
print("(vLLMHttpServer pid=1) vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.", flush=True)
print("AttributeError: 'Parameter' object has no attribute 'weight_loader'", flush=True)
time.sleep(600)
'''


def test_a_hanging_run_after_a_fatal_line_is_stopped_and_its_segment_removed(tmp_path):
    """After a fatal line the run is stopped once fatal_grace_s has passed (long before its timeout), with
    ROLLOUT_FAILED_RETURNCODE and the error text; the segment it created is removed, another one is kept."""
    (tmp_path / "fatal_child.py").write_text(CHILD)
    name = f"verl_weights_calibrl_test_{tmp_path.name}"
    foreign = Path("/dev/shm") / f"verl_weights_calibrl_test_foreign_{tmp_path.name}"
    foreign.write_bytes(b"x")  # present before the run: never the run's own
    try:
        run = run_verl(
            [name],
            metrics_path=tmp_path / "metrics.jsonl",
            entry_module="fatal_child",
            use_cpu_backend=False,
            timeout_s=300,
            fatal_grace_s=3,
            cwd=tmp_path,
        )
        assert not run.timed_out
        assert run.returncode == ROLLOUT_FAILED_RETURNCODE
        assert "EngineDeadError" in run.fatal_error and "weight_loader" in run.fatal_error
        assert name in run.removed_shm and not (Path("/dev/shm") / name).exists()
        assert foreign.exists() and foreign.name not in run.removed_shm
        assert run.leftover_pids == []
    finally:
        foreign.unlink(missing_ok=True)
        (Path("/dev/shm") / name).unlink(missing_ok=True)


def test_a_clean_run_is_not_stopped(tmp_path):
    """Without a fatal line nothing is stopped: the child's own exit code is the run's."""
    (tmp_path / "ok_child.py").write_text("print('all good')\n")
    run = run_verl([], metrics_path=tmp_path / "m.jsonl", entry_module="ok_child", use_cpu_backend=False,
                   timeout_s=120, cwd=tmp_path)  # fmt: skip
    assert run.ok and run.fatal_error == ""
