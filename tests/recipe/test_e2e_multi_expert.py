"""Several expert rows per prompt through verl's real v1 trainer on the CPU backend (one run, 2 steps).

Demo data built by the project's CLI with 2 correct, differently worded experts per prompt (``--demo-experts 2
--max-experts 2``); CalibRL with ``calibrl.max_experts_per_prompt=2`` and ``expert_combine=max``. The smallest
shapes of tests/recipe/test_e2e_recipe.py (one training process, no validation, no checkpoint).
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

RECIPE_ENTRY = "recipe.calibrl.main_calibrl"
TOY_REWARD = Path(__file__).with_name("toy_reward.py")
N_ROLLOUTS = 2
PROMPTS_PER_STEP = 2
EXPERTS = 2


@pytest.fixture(scope="module")
def multi_expert_run(tmp_path_factory):
    """2 steps of CalibRL with 2 expert rows per prompt; returns the run and its metrics per step."""
    from calibrl_ext.cpu_backend.launcher import run_verl
    from calibrl_ext.tiny_models import cached_tiny_model

    root = tmp_path_factory.mktemp("multi_expert_e2e")
    data_dir = root / "data"
    subprocess.run(
        [sys.executable, "data_prep/build_parquet.py", "--out", str(data_dir), "--demo-rows", "12",
         "--demo-val-rows", "2", "--demo-experts", str(EXPERTS), "--max-experts", str(EXPERTS), "--no-progress"],
        check=True, cwd=Path(__file__).resolve().parents[2], capture_output=True,
    )  # fmt: skip
    model = cached_tiny_model("qwen2_5_vl")
    out = root / "run"
    overrides = [
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        f"data.train_batch_size={PROMPTS_PER_STEP}",
        "data.max_prompt_length=256",
        "data.max_response_length=64",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={N_ROLLOUTS}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS_PER_STEP}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.total_training_steps=2",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        "trainer.experiment_name=e2e_multi_expert",
        f"calibrl.max_experts_per_prompt={EXPERTS}",
        "calibrl.expert_combine=max",
    ]
    run = run_verl(overrides, metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=600)
    run.raise_for_status()
    return run


def test_each_group_gets_one_expert_row_per_kept_expert(multi_expert_run):
    """Every prompt has 2 kept experts, so each step has 2 expert rows in each of its groups, all scored as passing
    (both wordings are correct) and with old log-probs; the calibration term is non-zero."""
    run = multi_expert_run
    assert run.steps() == [1, 2]
    for m in run.by_step().values():
        assert m["calibrl/expert_groups"] == PROMPTS_PER_STEP
        assert m["calibrl/expert_rows"] == EXPERTS * PROMPTS_PER_STEP
        assert m["calibrl/groups_without_expert"] == 0
        assert m["calibrl/expert_pass_rate"] == 1.0 and m["calibrl/expert_log_prob"] < 0
    assert any(abs(m["actor/calibration_loss"]) > 0 for m in run.by_step().values())


def test_no_expert_row_enters_the_update_and_metrics_are_finite(multi_expert_run):
    """calibrl mode: the update batch is GRPO's (n rows per prompt, no expert row); the extra expert rows only cost
    the old-log-prob pass. Prints the rows and the old-log-prob time share of each step (the cost, docs)."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    run = multi_expert_run
    for step, m in run.by_step().items():
        assert m["actor/expert_rows_seen"] == 0
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS
        for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "critic/score/mean", "actor/calibration_loss"):
            assert is_finite_number(m[key]), key
        log_prob_rows = m["calibrl/update_rows"] + m["calibrl/expert_rows"] + m["calibrl/old_log_prob_pad_rows"]
        print(
            f"step {step}: old-log-prob rows {log_prob_rows:.0f} (update rows {m['calibrl/update_rows']:.0f}), "
            f"old_log_prob {m['timing_s/old_log_prob']:.2f} s of step {m['timing_s/step']:.2f} s "
            f"({m['timing_s/old_log_prob'] / m['timing_s/step']:.1%}), update_actor {m['timing_s/update_actor']:.2f} s"
        )
    assert run.leftover_pids == []
