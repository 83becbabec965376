"""The study command end to end: a 2-mode x 2-step grid through the real recipe on the CPU backend, then resumed.

One study (2 runs of about a minute each on 2 cores) serves every assertion; the resume costs no verl run.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 2
#: The smallest run shape that still has real groups: 2 prompts x 2 rollouts, short responses, 4 val prompts;
#: the random tiny model (no warm start) keeps the test independent of the warm-start cache; one sampled validation
#: response per prompt (the preset's task, sampled validation, at a quarter of its validation cost).
GRID = ["modes=calibrl,grpo", "activations=", "seeds=0", f"steps={STEPS}", f"val_every={STEPS}",
        "train_batch_size=2", "rollout_n=2", "micro_batch_size=2", "max_response_length=32", "val_max_samples=4",
        "val_n=1", "warm_start=false", "run_timeout_s=900"]  # fmt: skip
RUN_NAMES = ("calibrl-leaky_relu-a0.5-l0.1-s0", "grpo-leaky_relu-a0.5-l0.1-s0")


def _study(out: Path, data_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recipe.calibrl.study", "--preset", "quick", "--out", str(out),
               "--data-dir", str(data_dir)] + [f"--set={a}" for a in GRID]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    first = _study(root / "out", root / "data")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    mtimes = {n: (root / "out" / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in RUN_NAMES}
    second = _study(root / "out", root / "data")
    return root / "out", first, second, mtimes


def test_study_runs_every_arm_and_writes_figure_table_json(study):
    """Both modes ran STEPS steps with a final validation, through a bounded run that left no process behind;
    the PNG, the table (one row per mode) and the JSON are written."""
    out, first, _, _ = study
    assert "run 1/2" in first.stdout and "run 2/2" in first.stdout and "ETA" in first.stdout
    for name in RUN_NAMES:
        record = json.loads((out / "runs" / name / "run.json").read_text())
        assert record["status"] == "ok" and record["leftover_pids"] == [] and not record["timed_out"]
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "table.md").read_text()
    assert "| calibrl | 1 |" in table and "| grpo | 1 |" in table
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == sorted(RUN_NAMES) and results["missing_runs"] == []
    for run in results["runs"].values():
        assert sorted(int(s) for s in run["curves"]["reward"]) == [1, 2]
        assert str(STEPS) in run["curves"]["val_acc"]


def test_resume_skips_finished_runs(study):
    """Rerunning the same command skips both finished runs (their metrics files untouched) and rebuilds the report."""
    out, _, second, mtimes = study
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert second.stdout.count("complete, skipped") == 2 and "0 to run" in second.stdout
    for name, mtime in mtimes.items():
        assert (out / "runs" / name / "metrics.jsonl").stat().st_mtime_ns == mtime
