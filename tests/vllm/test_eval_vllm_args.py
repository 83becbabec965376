"""examples/eval.sh's rollout selection (--rollout hf|vllm) refuses bad combinations before anything starts."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cpu", "--rollout", "sglang"), "--rollout must be hf or vllm, got sglang"),
        (("--rollout", "hf"), "--rollout hf needs --cpu"),
    ],
)
def test_bad_rollout_selection_exits_2(tmp_path, args, message):
    """Exit 2 with a message naming the fix, before the model is even looked at."""
    command = ["bash", str(REPO / "examples" / "eval.sh"), *args, "--model", str(tmp_path / "none")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
