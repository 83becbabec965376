"""The recipe on batches whose every sequence has the same total length (verl issue 7899), on the CPU backend.

Same-length prompts (``equal_length_data``, tests/conftest.py) and responses that always reach the cap
(``rollout.ignore_eos=True``): verl 0.9.1 alone crashes at the first actor update (``split_with_sizes``) and its
log-prob path builds wrong mRoPE position ids; ``calibrl_ext/verl_fixes.py`` rebuilds them. One run per mode
(calibrl, grpo), two steps each, so step 2's rollout is generated with the weights pushed after an update.
"""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

RECIPE_ENTRY = "recipe.calibrl.main_calibrl"
TOY_REWARD = Path(__file__).with_name("toy_reward.py")
N_ROLLOUTS = 2
PROMPTS_PER_STEP = 2
#: Response cap every rollout reaches (ignore_eos) and every expert solution is cut to.
MAX_RESPONSE_LENGTH = 16
STEPS = 2
#: rollout-vs-actor probability difference of a synced run (tests/cpu_backend/test_e2e_grpo.py; measured ~5e-10).
SYNCED_MAX_DIFF = 1e-5


def _overrides(data: dict, model: Path, out: Path, mode: str) -> list[str]:
    return [
        f"calibrl.mode={mode}",
        f"data.train_files={data['train']}",
        f"data.val_files={data['val']}",
        f"data.train_batch_size={PROMPTS_PER_STEP}",
        "data.max_prompt_length=256",
        f"data.max_response_length={MAX_RESPONSE_LENGTH}",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={N_ROLLOUTS}",
        "actor_rollout_ref.rollout.ignore_eos=True",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",  # 2 mini-batches: the update's index_select path
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",  # chunked log-prob path
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        f"trainer.total_training_steps={STEPS}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        "trainer.experiment_name=e2e_equal_lengths",
    ]


@pytest.fixture(scope="module", params=["calibrl", "grpo"])
def equal_length_run(request, equal_length_data, tmp_path_factory):
    """Two steps of the recipe in ``calibrl.mode=<param>`` on equal-length batches; returns the finished run."""
    from calibrl_ext.cpu_backend.launcher import run_verl
    from calibrl_ext.tiny_models import cached_tiny_model

    mode = request.param
    out = tmp_path_factory.mktemp(f"equal_lengths_{mode}")
    run = run_verl(
        _overrides(equal_length_data, cached_tiny_model("qwen2_5_vl"), out, mode),
        metrics_path=out / "metrics.jsonl",
        entry_module=RECIPE_ENTRY,
        timeout_s=600,
    )
    run.raise_for_status()
    return mode, run


def test_equal_length_batches_train_with_synced_log_probs(equal_length_run):
    """Every step's batch had one prompt length and every response hit the cap (so all sequences had the same
    total length); both steps completed with finite losses; the rollout-vs-actor probability difference stays at
    the synced level on every step, step 2 included (wrong position ids on the log-prob path would raise it far
    above: they change every token's logits)."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    mode, run = equal_length_run
    assert run.steps() == list(range(1, STEPS + 1))
    for step, m in run.by_step().items():
        assert m["prompt_length/min"] == m["prompt_length/max"], (mode, step)
        assert m["response_length/min"] == m["response_length/max"] == MAX_RESPONSE_LENGTH, (mode, step)
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy"):
            assert is_finite_number(m[key]), (mode, step, key)
        assert m["training/rollout_probs_diff_max"] < SYNCED_MAX_DIFF, (mode, step)
        if mode == "calibrl":
            assert m["calibrl/expert_rows"] == PROMPTS_PER_STEP and is_finite_number(m["actor/calibration_loss"])
    assert run.leftover_pids == []
