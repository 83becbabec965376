"""A vLLM worker error stops the run with the underlying error instead of hanging (launcher fail-fast), and the
run's shared-memory segments are removed.

Induced failure: vLLM's ``VLLM_PLUGINS=""`` keeps calibrl's reloadable-linear plugin from loading, so vLLM's CPU
linear layers drop their weights and verl's first weight push raises ``AttributeError: 'Parameter' object has no
attribute 'weight_loader'`` inside vLLM: without the launcher's watch verl then waits on the dead server for
11+ minutes and leaves a /dev/shm/verl_weights_* segment (docs/vllm_cpu.md, blocker 4).
"""

from __future__ import annotations

import pytest

from calibrl_ext.cpu_backend.launcher import ROLLOUT_FAILED_RETURNCODE, run_verl
from calibrl_ext.cpu_backend.overrides import CpuRunShape

pytestmark = pytest.mark.e2e

#: The bound: the run must end by itself (launcher stop) well before this; the documented hang is 11+ minutes.
RUN_TIMEOUT_S = 420
#: Seconds the run may go on after the fatal line: verl never exits by itself here (the test pins that), so a
#: longer grace only adds to the test's cost.
FATAL_GRACE_S = 5.0


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory, vllm_tiny_model, color_parquet, shm_listing):
    root = tmp_path_factory.mktemp("vllm_fail_fast")
    train = color_parquet(root / "train.parquet", 6)
    before = shm_listing()
    run = run_verl(
        [
            "algorithm.adv_estimator=grpo",
            f"data.train_files={train}",
            f"data.val_files={train}",
            "data.image_key=images",
            "data.train_batch_size=2",
            "data.max_prompt_length=256",
            "data.max_response_length=8",
            f"actor_rollout_ref.model.path={vllm_tiny_model('qwen2_5_vl')}",
            "actor_rollout_ref.rollout.n=2",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.actor.use_kl_loss=False",
            "trainer.total_training_steps=1",
            "trainer.val_before_train=False",
            "trainer.test_freq=-1",
            "trainer.save_freq=-1",
            f"trainer.default_local_dir={root / 'checkpoints'}",
        ],
        metrics_path=root / "metrics.jsonl",
        timeout_s=RUN_TIMEOUT_S,
        shape=CpuRunShape(rollout="vllm"),
        env={"VLLM_PLUGINS": ""},
        fatal_grace_s=FATAL_GRACE_S,
    )
    return run, before


def test_the_run_stops_with_the_underlying_error(failed_run):
    """The run ends within its bound (no timeout) and fails, and the error names the failed weight load."""
    run, _ = failed_run
    assert not run.timed_out, run.log_tail()
    assert not run.ok
    assert "weight_loader" in run.fatal_error, run.log_tail()
    with pytest.raises(RuntimeError, match="weight_loader"):
        run.raise_for_status()


def test_the_launcher_stopped_the_run_itself(failed_run):
    """verl does not exit on this error: the launcher's watch stopped it (ROLLOUT_FAILED_RETURNCODE)."""
    run, _ = failed_run
    assert run.returncode == ROLLOUT_FAILED_RETURNCODE, (run.returncode, run.log_tail())


def test_no_process_and_no_weight_segment_of_the_run_is_left(failed_run, session_pids, shm_listing):
    """No process of the run survives, and every verl_weights_* segment that appeared during the run was the
    run's own and is gone (segments that existed before are left alone)."""
    run, before = failed_run
    assert run.leftover_pids == [] and session_pids(run.session_id) == []
    assert any(name.startswith("verl_weights_") for name in run.removed_shm), run.removed_shm
    assert not {n for n in run.removed_shm if n.startswith("verl_weights_")} & shm_listing()
    assert not (set(run.removed_shm) & before)
