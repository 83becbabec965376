"""The launcher runs a module in its own session, enforces its timeout, parses verl's file-logger metrics and
leaves no process of the run behind (checked with ps)."""

import json
import textwrap
import time

import pytest

from calibrl_ext.cpu_backend import launcher

#: A stand-in entry point: logs two metric lines like verl's file logger, starts a process tree (one child in a
#: process group of its own, like Ray's reaper; one that ignores SIGTERM), records all pids, then hangs or exits.
FAKE_ENTRY = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    with open(os.environ["VERL_FILE_LOGGER_PATH"], "w") as f:
        f.write(json.dumps({"step": 1, "data": {"training/global_step": 1, "loss": 0.5}}) + "\\n")
        f.write(json.dumps({"step": 1, "data": {"val-core/x/acc/mean@1": 0.25}}) + "\\n")
    sleeper = "import time; time.sleep(600)"
    own_group = "import os, time; os.setpgrp(); time.sleep(600)"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    children = [subprocess.Popen([sys.executable, "-c", code]) for code in (sleeper, own_group, stubborn)]
    with open(os.environ["PIDS_FILE"], "w") as f:
        json.dump([os.getpid()] + [c.pid for c in children], f)
    print("fake entry ready", flush=True)
    if os.environ["MODE"] == "hang":
        time.sleep(600)
    """
)


@pytest.fixture
def fake_entry(tmp_path):
    (tmp_path / "fake_verl_entry.py").write_text(FAKE_ENTRY)
    return tmp_path


def _run(fake_entry, tmp_path, mode, timeout_s):
    pids_file = tmp_path / f"pids_{mode}.json"
    run = launcher.run_verl(
        ["ignored.key=1"],
        metrics_path=tmp_path / mode / "metrics.jsonl",
        entry_module="fake_verl_entry",
        timeout_s=timeout_s,
        use_cpu_backend=False,
        env={"PYTHONPATH": str(fake_entry), "MODE": mode, "PIDS_FILE": str(pids_file)},
    )
    return run, json.loads(pids_file.read_text())


def test_a_hanging_run_is_killed_at_the_timeout_with_its_whole_tree(fake_entry, tmp_path, session_pids, monkeypatch):
    """On timeout every process of the run (own process group and SIGTERM-ignoring ones included) is gone, the
    run reports rc 124, and the metrics logged before the hang are parsed."""
    monkeypatch.setattr(launcher, "TERMINATE_GRACE_S", 2.0)
    started = time.monotonic()
    run, pids = _run(fake_entry, tmp_path, "hang", timeout_s=8)
    assert run.timed_out and run.returncode == launcher.TIMEOUT_RETURNCODE and not run.ok
    assert time.monotonic() - started < 30
    assert run.leftover_pids == [] and session_pids(run.session_id) == []
    assert run.session_id == pids[0]
    assert run.steps() == [1]
    assert run.by_step()[1] == {"training/global_step": 1, "loss": 0.5, "val-core/x/acc/mean@1": 0.25}
    assert "fake entry ready" in run.log_path.read_text() and "timeout" in run.log_tail()
    with pytest.raises(RuntimeError, match="timed out"):
        run.raise_for_status()


def test_processes_left_by_a_finished_run_are_cleaned_up(fake_entry, tmp_path, session_pids, monkeypatch):
    """A run that exits 0 but leaves children behind (as a Ray driver killed mid-shutdown would) is ok, and its
    leftovers are terminated; the command carries the caller's overrides last."""
    monkeypatch.setattr(launcher, "SETTLE_AFTER_EXIT_S", 0.5)
    monkeypatch.setattr(launcher, "TERMINATE_GRACE_S", 2.0)
    run, pids = _run(fake_entry, tmp_path, "exit", timeout_s=60)
    assert run.ok and run.returncode == 0
    assert run.leftover_pids == [] and session_pids(run.session_id) == []
    assert run.command[-1] == "ignored.key=1" and launcher.LOGGER_OVERRIDE in run.command


def test_metrics_parsing(tmp_path):
    """read_metrics returns verl's records (null = NaN/inf kept as None), [] for a missing file, and names the file
    and line of a malformed record."""
    path = tmp_path / "m.jsonl"
    assert launcher.read_metrics(path) == []
    path.write_text('{"step": 2, "data": {"a": 1.5, "b": null}}\n\n')
    assert launcher.read_metrics(path) == [{"step": 2, "data": {"a": 1.5, "b": None}}]
    assert not launcher.is_finite_number(None) and launcher.is_finite_number(1.5)
    assert not launcher.is_finite_number(float("nan")) and not launcher.is_finite_number(True)
    path.write_text('{"step": 1, "data": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        launcher.read_metrics(path)


def test_output_lines_reach_the_callback_and_a_failing_one_does_not_stall_the_run(fake_entry, tmp_path, monkeypatch):
    """on_line sees each output line with its arrival time; a callback that raises is dropped while the output keeps
    flowing to the log (a stalled pipe would block the child until the timeout)."""
    monkeypatch.setattr(launcher, "SETTLE_AFTER_EXIT_S", 0.5)
    monkeypatch.setattr(launcher, "TERMINATE_GRACE_S", 2.0)
    seen = []
    pids_file = tmp_path / "pids.json"
    common = dict(
        entry_module="fake_verl_entry",
        timeout_s=60,
        use_cpu_backend=False,
        env={"PYTHONPATH": str(fake_entry), "MODE": "exit", "PIDS_FILE": str(pids_file)},
    )
    record = lambda elapsed, line: seen.append((elapsed, line))  # noqa: E731
    run = launcher.run_verl([], metrics_path=tmp_path / "a" / "m.jsonl", on_line=record, **common)
    assert run.ok and any("fake entry ready" in line and t >= 0 for t, line in seen)

    def broken(elapsed, line):
        raise RuntimeError("boom")

    run = launcher.run_verl([], metrics_path=tmp_path / "b" / "m.jsonl", on_line=broken, **common)
    assert run.ok and "fake entry ready" in run.log_path.read_text()
