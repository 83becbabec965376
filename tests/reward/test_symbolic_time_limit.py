"""The symbolic check's hard time limit holds in the main thread, in other threads and under concurrency.

verl calls compute_score from executor threads (loop.run_in_executor), where math-verify's own
signal-based timeout cannot work; these tests call it the same ways.
"""

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from calibrl_ext.reward import compute_score
from calibrl_ext.symbolic import SymbolicChecker

# sympy evaluates this power tower in C (GMP): no Python signal can interrupt it, only killing the process.
PATHOLOGICAL = "9^{9^{9^{9}}}"
LIMIT_S = 1.5
#: Slack over the limit for pipe I/O and killing the worker on a loaded 2-core machine.
SLACK_S = 2.0


def _score_pathological(respond):
    started = time.monotonic()
    result = compute_score("t", respond(PATHOLOGICAL), "3", symbolic_timeout_s=LIMIT_S)
    return result, time.monotonic() - started


def test_pathological_answer_returns_within_limit_in_main_thread(respond):
    """A power tower that math-verify would evaluate for hours returns after ~the limit (well under 10 s),
    scored wrong and flagged timeout=1."""
    result, elapsed = _score_pathological(respond)
    assert elapsed < LIMIT_S + SLACK_S < 10
    assert (result["acc"], result["timeout"], result["score"]) == (0.0, 1.0, pytest.approx(0.1))


def test_pathological_answer_returns_within_limit_off_main_thread(respond):
    """The same limit holds when compute_score runs in a non-main thread, as in verl's reward workers."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(zip(("result", "elapsed"), _score_pathological(respond))))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert box["elapsed"] < LIMIT_S + SLACK_S
    assert box["result"]["timeout"] == 1.0


def test_limit_holds_through_asyncio_executor_like_verl(respond):
    """Called as verl's NaiveRewardManager does (await loop.run_in_executor(None, fn)), a pathological
    answer beside normal ones returns in bounded time and the normal ones keep their correct scores."""

    async def score_all():
        loop = asyncio.get_running_loop()
        jobs = [
            (PATHOLOGICAL, "3"),
            ("2\\sqrt{3}", "\\sqrt{12}"),
            ("\\frac{\\pi}{2}", "\\pi/2"),
            ("7", "7"),
        ]
        calls = [
            loop.run_in_executor(
                None, lambda a=a, g=g: compute_score("t", respond(a), g, symbolic_timeout_s=LIMIT_S)
            )
            for a, g in jobs
        ]
        return await asyncio.gather(*calls)

    started = time.monotonic()
    results = asyncio.run(score_all())
    elapsed = time.monotonic() - started
    assert [r["acc"] for r in results] == [0.0, 1.0, 1.0, 1.0]
    assert [r["timeout"] for r in results] == [1.0, 0.0, 0.0, 0.0]
    assert elapsed < LIMIT_S + 2 * SLACK_S


def test_many_threads_share_a_bounded_pool():
    """Eight threads on a two-worker pool, two of them pathological: every call returns, each within
    (its queue wait +) the limit, the normal checks are right, and the pool keeps exactly two workers."""
    checker = SymbolicChecker(workers=2)
    try:
        inputs = [(PATHOLOGICAL, "3"), ("10^{10^{10^{10}}}", "2")] + [("2\\sqrt{3}", "\\sqrt{12}")] * 6
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda pair: checker.equal(pair[1], pair[0], LIMIT_S), inputs))
        elapsed = time.monotonic() - started
        assert [r.status for r in results[:2]] == ["timeout", "timeout"]
        assert all(r.status == "ok" and r.equal for r in results[2:])
        # Worst case: both workers busy with the two pathological checks, then a restart, then the rest.
        assert elapsed < 2 * LIMIT_S + 2 * SLACK_S
        assert checker.timeouts == 2
        assert len(checker._all) == 2
    finally:
        checker.close()


def test_pool_recovers_after_a_timeout():
    """After a worker is killed for a timeout, the next check succeeds on its replacement."""
    checker = SymbolicChecker(workers=1)
    try:
        assert checker.equal("3", PATHOLOGICAL, LIMIT_S).status == "timeout"
        after = checker.equal("\\sqrt{12}", "2\\sqrt{3}", 30.0)
        assert after.status == "ok" and after.equal
    finally:
        checker.close()


def test_worker_error_is_reported_not_silent(caplog):
    """An unknown request is answered with an error that is logged and counted (never a silent 0)."""
    checker = SymbolicChecker(workers=1)
    try:
        response, status, detail = checker._run({"op": "nonsense"}, 30.0, "test input")
        assert status == "error" and "unknown op" in detail
        assert checker.errors == 1
        assert any("unknown op" in record.getMessage() for record in caplog.records)
    finally:
        checker.close()


def test_exact_path_starts_no_worker_process():
    """Scoring that never needs math-verify creates no worker pool (checked in a fresh interpreter)."""
    code = (
        "from calibrl_ext.reward import compute_score\n"
        "import calibrl_ext.symbolic as s\n"
        "r = compute_score('t', '<think>x</think><answer>(B)</answer>', 'B')\n"
        "r2 = compute_score('t', '<think>x</think><answer>1,000</answer>', '1000')\n"
        "assert r['acc'] == r2['acc'] == 1.0\n"
        "assert s._checker is None, 'a worker pool was created'\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 0, completed.stderr
