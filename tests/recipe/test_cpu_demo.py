"""The main job's command (README: `make demo` -> examples/run_cpu_demo.sh) runs as documented."""

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_cpu_demo_script_trains_validates_and_summarises(tmp_path):
    """examples/run_cpu_demo.sh builds what it needs, trains CalibRL on the CPU backend, validates, writes verl's
    file-logger metrics and prints the per-step summary, the validation accuracy before and after RL and the path of
    its curves PNG (1 step and 8 validation prompts here to keep the suite short; the default task, shape_colour)."""
    out = tmp_path / "demo"
    result = subprocess.run(
        ["bash", "examples/run_cpu_demo.sh", "--steps", "1", "--out", str(out), "--data-dir", str(tmp_path / "data"),
         "--", "data.val_max_samples=8"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "calibration loss" in line)
    assert lines[header + 1].split()[0] == "1"  # the row of step 1
    assert any(line.startswith("validation val-core/") for line in lines)
    assert (out / "metrics.jsonl").stat().st_size > 0
    assert any(line.startswith("validation accuracy: before RL ") for line in lines)
    assert f"curves: {out / 'curves.png'}" in lines and (out / "curves.png").stat().st_size > 0
