"""Stock verl GRPO on a tiny HF-native InternVL3 with images, through the CPU backend, with 2 training processes
(FSDP ranks, each with its own rollout server); about 2 minutes.

verl 0.9.1 alone cannot run it (no InternVL processor, image tokens lost in the agent loop, ranks out of step on
micro-batches without images); calibrl_ext.internvl fixes all three. The data mixes image and text-only rows, so
some micro-batches have no image on one rank while the other rank's have.
"""

import re

import pytest

from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl
from calibrl_ext.cpu_backend.overrides import CpuRunShape

pytestmark = pytest.mark.e2e

#: Same bound as the Qwen e2e test; test_internvl.py shows that dropping the pixels moves log-probs by > 1e-3.
SYNCED_MAX_DIFF = 1e-5


@pytest.fixture(scope="module")
def internvl_run(tmp_path_factory, tiny_model, color_parquet, toy_reward_path):
    root = tmp_path_factory.mktemp("internvl_run")
    train = color_parquet(root / "train.parquet", 12, text_only_every=3)
    val = color_parquet(root / "val.parquet", 4, split="val")
    overrides = [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.shuffle=False",  # each batch of 3 prompts holds 2 image rows and 1 text-only row
        "data.image_key=images",
        "data.train_batch_size=3",
        "data.max_prompt_length=256",
        "data.max_response_length=16",
        f"actor_rollout_ref.model.path={tiny_model('internvl3')}",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=3",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        f"reward.custom_reward_function.path={toy_reward_path}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=False",
        "trainer.test_freq=2",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={root / 'checkpoints'}",
    ]
    run = run_verl(overrides, metrics_path=root / "metrics.jsonl", timeout_s=600, shape=CpuRunShape(n_procs=2))
    run.raise_for_status()
    return run


def test_internvl_trains_two_steps_and_validates(internvl_run):
    """Two GRPO steps with finite reward, entropy, loss and a non-zero gradient, then a validation pass."""
    assert internvl_run.steps() == [1, 2]
    for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/grad_norm"):
        assert all(is_finite_number(v) for v in internvl_run.values(key)), key
    assert all(v > 0 for v in internvl_run.values("actor/grad_norm"))
    validation = {k: v for k, v in internvl_run.by_step()[2].items() if k.startswith("val-core/")}
    assert validation and all(is_finite_number(v) for v in validation.values())


def test_every_group_survives_and_the_actor_sees_the_images(internvl_run):
    """No rollout group is dropped by the agent loop (12 rows per step), and rollout log-probs (computed by the
    server with the pixels) equal the actor's after an update, so the actor's forward received the same pixels."""
    log = internvl_run.log_path.read_text(errors="replace")
    assert "Error in _run_prompt" not in log and "Number of image placeholders" not in log
    assert "No model-specific Continuous Token builder" not in log
    assert not re.search(r"Upsampled batch from \d+", log)  # 12 rows: nothing missing, nothing padded
    diffs = internvl_run.values("training/rollout_probs_diff_max")
    assert len(diffs) == 2 and max(diffs) < SYNCED_MAX_DIFF, diffs


def test_no_process_of_the_internvl_run_is_left(internvl_run, session_pids):
    """ps finds nothing left in the run's session."""
    assert internvl_run.leftover_pids == [] and session_pids(internvl_run.session_id) == []
