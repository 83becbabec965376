"""Stock verl GRPO (``verl.trainer.main_ppo``) with verl's real vLLM rollout on the CPU backend, on a tiny
Qwen2.5-VL (``variant="vllm"``) with images, in .venv-vllm/.

Two runs shared by the assertions (costs: docs/vllm_cpu.md):

1. synced: 3 steps, graded toy reward (varies inside every group) and lr 1e-2 so the weights really move,
   validation at the end;
2. control: the same run with ``calibrl_ext.cpu_backend.vllm_stale_weights`` imported, so vLLM ignores every
   weight push and generates with the checkpoint's weights: the weight-push check must tell the two apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl
from calibrl_ext.cpu_backend.overrides import PLUGIN_MODULE, CpuRunShape

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600
STEPS = 3
#: Bound on training/rollout_probs_diff_mean when the pushes arrive (fp32 on both sides: 1e-6..1.8e-5 measured).
SYNCED_MEAN_DIFF = 5e-5
#: The stale control's mean difference must exceed the synced run's by this factor at every step after the first
#: update (about 5-50x measured: docs/vllm_cpu.md).
STALE_FACTOR = 3.0


def grpo_overrides(root: Path, model: Path, train: Path, val: Path, reward: Path) -> list[str]:
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.shuffle=False",
        "data.image_key=images",
        "data.train_batch_size=3",
        "data.max_prompt_length=256",
        "data.max_response_length=16",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=3",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"reward.custom_reward_function.path={reward}",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={STEPS}",
        "trainer.val_before_train=False",
        f"trainer.test_freq={STEPS}",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={root / 'checkpoints'}",
    ]


def _run(tmp_path_factory, name, vllm_tiny_model, color_parquet, toy_reward_path, env=None):
    root = tmp_path_factory.mktemp(name)
    train = color_parquet(root / "train.parquet", 12, text_only_every=3)
    val = color_parquet(root / "val.parquet", 4, split="val")
    overrides = grpo_overrides(root, vllm_tiny_model("qwen2_5_vl"), train, val, toy_reward_path)
    run = run_verl(
        overrides,
        metrics_path=root / "metrics.jsonl",
        timeout_s=RUN_TIMEOUT_S,
        shape=CpuRunShape(rollout="vllm"),
        env=env,
    )
    run.raise_for_status()
    return run


@pytest.fixture(scope="module")
def synced_run(tmp_path_factory, vllm_tiny_model, color_parquet, toy_reward_path):
    return _run(tmp_path_factory, "vllm_synced", vllm_tiny_model, color_parquet, toy_reward_path)


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory, vllm_tiny_model, color_parquet, toy_reward_path):
    env = {"VERL_USE_EXTERNAL_MODULES": f"{PLUGIN_MODULE},calibrl_ext.cpu_backend.vllm_stale_weights"}
    return _run(tmp_path_factory, "vllm_stale", vllm_tiny_model, color_parquet, toy_reward_path, env=env)


def test_grpo_trains_through_vllm_with_finite_metrics(synced_run):
    """All steps complete through verl's vLLM server replicas with finite reward, entropy, loss and grad norm."""
    assert synced_run.steps() == list(range(1, STEPS + 1))
    for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/grad_norm", "response_length/mean"):
        values = synced_run.values(key)
        assert len(values) == STEPS and all(is_finite_number(v) for v in values), (key, values)
    assert all(v > 0 for v in synced_run.values("actor/grad_norm"))
    log = synced_run.log_path.read_text(errors="replace")
    assert "calibrl: vLLM CPU linear layers compute on the live weight" in log or "vLLMHttpServer" in log


def test_validation_runs_through_vllm(synced_run):
    """The validation pass at the last step reports accuracy for the colour data."""
    validation = {k: v for k, v in synced_run.by_step()[STEPS].items() if k.startswith("val-core/")}
    assert validation and all(is_finite_number(v) for v in validation.values()), validation


def test_weight_pushes_reach_vllm(synced_run):
    """Rollout (vLLM) and actor (FSDP) log-probs agree at every step, including those generated after lr-1e-2
    updates: the pushed weights are the ones vLLM computes with."""
    means = synced_run.values("training/rollout_probs_diff_mean")
    assert len(means) == STEPS and max(means) < SYNCED_MEAN_DIFF, means


def test_a_stale_rollout_fails_the_weight_push_check(synced_run, stale_run):
    """Negative control: with every push ignored, step 1 still agrees (same checkpoint weights), and every later
    step's mean difference is STALE_FACTOR x the synced run's, so the check above can fail."""
    stale = stale_run.values("training/rollout_probs_diff_mean")
    synced = synced_run.values("training/rollout_probs_diff_mean")
    assert len(stale) == STEPS
    for step in range(1, STEPS):
        assert stale[step] > STALE_FACTOR * synced[step], (stale, synced)
    assert "ignoring a weight push into vLLM" in stale_run.log_path.read_text(errors="replace")


def test_no_process_or_shared_memory_of_the_runs_is_left(synced_run, stale_run, session_pids):
    """After each run, ps finds no live process of its session, and no /dev/shm segment it mapped survives."""
    for run in (synced_run, stale_run):
        assert run.leftover_pids == [] and session_pids(run.session_id) == []
        for name in run.removed_shm:
            assert not (Path("/dev/shm") / name).exists()
