"""The CalibRL recipe through verl's real vLLM rollout on the CPU backend: expert rows next to real vLLM rollouts,
images (some prompts with two), 2 training processes (two vLLM server replicas), validation at the end.

One run (costs: docs/vllm_cpu.md). It also checks that expert rows built by recipe/calibrl/expert_agent_loop.py
are accepted by TransferQueue and every metric next to rows with vLLM's own extra_fields (num_cached_tokens).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl
from calibrl_ext.cpu_backend.overrides import CpuRunShape

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
TOY_REWARD = REPO / "tests" / "recipe" / "toy_reward.py"
N_ROLLOUTS = 2
PROMPTS_PER_STEP = 3
STEPS = 2


@pytest.fixture(scope="module")
def calibrl_vllm_run(tmp_path_factory, vllm_tiny_model):
    import pandas as pd

    root = tmp_path_factory.mktemp("calibrl_vllm")
    data_dir = root / "data"
    subprocess.run([sys.executable, "data_prep/build_parquet.py", "--out", str(data_dir)], check=True, cwd=REPO,
                   capture_output=True)  # fmt: skip
    train = data_dir / "train.parquet"
    frame = pd.read_parquet(train)
    for i in range(0, len(frame), 3):  # every 3rd prompt gets a second image: multi-image through vLLM too
        frame.at[i, "images"] = list(frame.at[i, "images"]) + list(frame.at[i, "images"])[:1]
        messages = [dict(m) for m in frame.at[i, "prompt"]]
        messages[0]["content"] = "<image>" + messages[0]["content"]
        frame.at[i, "prompt"] = messages
    frame.to_parquet(train)
    out = root / "run"
    overrides = [
        f"data.train_files={train}",
        f"data.val_files={data_dir / 'val.parquet'}",
        "data.val_max_samples=4",
        f"data.train_batch_size={PROMPTS_PER_STEP}",
        "data.max_prompt_length=256",
        "data.max_response_length=96",
        f"actor_rollout_ref.model.path={vllm_tiny_model('qwen2_5_vl')}",
        f"actor_rollout_ref.rollout.n={N_ROLLOUTS}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS_PER_STEP}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "trainer.val_before_train=False",
        f"trainer.total_training_steps={STEPS}",
        f"trainer.test_freq={STEPS}",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"trainer.validation_data_dir={out / 'validation'}",
        "trainer.experiment_name=e2e_vllm",
    ]
    run = run_verl(
        overrides,
        metrics_path=out / "metrics.jsonl",
        entry_module="recipe.calibrl.main_calibrl",
        timeout_s=900,
        shape=CpuRunShape(n_procs=2, rollout="vllm"),
    )
    run.raise_for_status()
    return run, out


def test_calibrl_trains_through_vllm_with_expert_rows(calibrl_vllm_run):
    """Both steps complete with vLLM rollouts and expert rows in the same groups on 2 training processes: expert
    rows were scored (the expert passes the toy reward) and got old log-probs; all logged metrics are finite."""
    run, _ = calibrl_vllm_run
    assert run.steps() == list(range(1, STEPS + 1))
    for step, m in run.by_step().items():
        if "training/global_step" not in m:
            continue
        assert m["calibrl/expert_rows"] >= 1 and m["calibrl/expert_pass_rate"] == 1.0, step
        assert m["calibrl/expert_log_prob"] < 0
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS
        for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "critic/score/mean"):
            assert is_finite_number(m[key]), key


def test_vllm_rollouts_match_the_actor_on_policy(calibrl_vllm_run):
    """On the on-policy rows, vLLM's log-probs agree with the FSDP actor's (the weight push reaches both
    replicas); the stock metric that includes the expert rows is far off, as it must be."""
    run, _ = calibrl_vllm_run
    for m in run.by_step().values():
        if "training/global_step" in m:
            assert m["training/rollout_probs_diff_max"] < 1e-3
            assert m["calibrl/stock_training_rollout_probs_diff_max_incl_expert"] > 0.5


def test_validation_through_vllm(calibrl_vllm_run):
    """Validation ran after the last step through vLLM (4 prompts) and reported accuracy."""
    run, out = calibrl_vllm_run
    assert any(key.startswith("val-core/") for key in run.by_step()[STEPS])
    dumps = list((out / "validation").glob("*.jsonl"))
    assert dumps and len([ln for ln in dumps[0].read_text().splitlines() if ln.strip()]) == 4
    assert run.leftover_pids == []
