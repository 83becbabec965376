"""CalibRL with verl's LoRA (``actor_rollout_ref.model.lora_rank``) through the real v1 trainer on the CPU backend.

Two runs (module-scoped, shared by the assertions), tiny random Qwen2.5-VL, one training process:

1. LoRA rank 4 on every linear layer of the language model (the launch scripts' exclusion keeps the vision tower
   out; verl's ``freeze_vision_tower`` on), 2 steps on the SAME 3 prompts (``data.train_max_samples=3``, no
   shuffle), checkpoint at step 2. The hf rollout server receives what verl's engine sends: the base weights once,
   then the adapter tensors and the PEFT config after every update.
2. Resumed from that checkpoint for steps 3 and 4 with the push skipped after the resume's first sync round (the
   negative control): step 3 still runs on the synced adapter, step 4 on a stale one.
"""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

RECIPE_ENTRY = "recipe.calibrl.main_calibrl"
TOY_REWARD = Path(__file__).with_name("toy_reward.py")
PROMPTS = 3
#: The launch scripts' LoRA settings (examples/calibrl_gpu.sh), at a tiny rank.
LORA = (
    "actor_rollout_ref.model.lora_rank=4",
    "actor_rollout_ref.model.lora_alpha=8",
    "actor_rollout_ref.model.target_modules=all-linear",
    "actor_rollout_ref.model.exclude_modules='.*(visual|vision_tower|vision_model|multi_modal_projector|mlp1).*'",
)
#: rollout-vs-actor probability difference allowed with a synced adapter (fp32 on both sides: measured 4e-10 to 6e-10)
SYNCED_MAX_DIFF = 1e-6
#: ... and required with a stale one (one lr 5e-2 update of the adapter behind: measured 3.8e-4).
STALE_MIN_DIFF = 1e-5
SKIP_PUSH = "+actor_rollout_ref.rollout.engine_kwargs.hf.debug_skip_weight_sync=True"
#: verl's frozen-tower key, on in the first run: under LoRA it changes no weight (PEFT freezes every base weight), but
#: the run shows calibrl_ext.vision_freeze acting inside verl's real actor worker (tests/core/test_vision_freeze.py
#: proves the freeze itself on an optimizer step).
FROZEN_TOWER = "actor_rollout_ref.actor.freeze_vision_tower=True"


def _overrides(data_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        f"data.train_max_samples={PROMPTS}",
        "data.shuffle=False",
        f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=256",
        "data.max_response_length=48",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.n=2",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.actor.optim.lr=5e-2",
        *LORA,
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.total_epochs=10",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        "trainer.experiment_name=e2e_lora",
        *extra,
    ]


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """(first run, resumed control run, output dir)."""
    import subprocess
    import sys

    from calibrl_ext.cpu_backend.launcher import run_verl
    from calibrl_ext.tiny_models import cached_tiny_model

    root = tmp_path_factory.mktemp("lora_e2e")
    data_dir = root / "data"
    subprocess.run([sys.executable, "data_prep/build_parquet.py", "--out", str(data_dir)], check=True,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True)  # fmt: skip
    model = cached_tiny_model("qwen2_5_vl")
    out = root / "run"
    first = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=2", "trainer.save_freq=2", FROZEN_TOWER),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=600,
    )  # fmt: skip
    first.raise_for_status()
    resumed = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=4", "trainer.save_freq=-1",
                   "trainer.resume_mode=auto", SKIP_PUSH),
        metrics_path=out / "resumed_metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=600,
    )  # fmt: skip
    resumed.raise_for_status()
    return first, resumed, out


def test_lora_trains_and_the_rollout_serves_the_adapter(lora_runs):
    """Both LoRA steps complete with finite losses and expert rows; the rollout pushed the base once and the adapter
    after every update (log lines), and its log-probs match the LoRA actor's on every step (synced weights). The
    frozen-tower key reached the actor worker's model build."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    first, _, _ = lora_runs
    assert first.steps() == [1, 2]
    for m in first.by_step().values():
        assert m["calibrl/expert_rows"] == PROMPTS
        for key in ("actor/pg_loss", "actor/calibration_loss", "actor/grad_norm", "actor/entropy"):
            assert is_finite_number(m[key]), key
        assert m["actor/grad_norm"] > 0
        assert m["training/rollout_probs_diff_max"] < SYNCED_MAX_DIFF
    log = first.log_path.read_text(errors="replace")
    assert "actor_rollout_ref.actor.freeze_vision_tower: froze" in log  # the key reached verl's actor worker
    assert log.count("LoRA base tensors") == 1
    assert log.count("LoRA adapter tensors") >= 3  # the initial sync and one after each of the 2 updates


def test_expert_baseline_comes_from_the_lora_policy(lora_runs):
    """The expert rows' old log-probs (the calibration baseline) come from the LoRA policy: step 2 scores the same
    3 expert solutions as step 1, and the base weights are frozen under LoRA, so only the adapter trained in step 1
    can change them."""
    first, _, _ = lora_runs
    steps = first.by_step()
    assert steps[1]["calibrl/expert_log_prob"] != pytest.approx(steps[2]["calibrl/expert_log_prob"], abs=1e-4)


def test_resume_restores_the_adapter_and_skipping_the_push_desyncs(lora_runs):
    """The resumed run continues at step 3 from global_step_2, on the checkpoint's adapter (rollout and actor agree at
    step 3, after the resume's sync); with every later push skipped, step 4's rollout still serves the step-2 adapter
    and its log-probs drift from the actor's: the adapter push is what keeps them in sync."""
    _, resumed, out = lora_runs
    assert (out / "checkpoints" / "global_step_2").is_dir()
    assert resumed.steps() == [3, 4]
    assert "global_step_2" in resumed.log_path.read_text(errors="replace")
    steps = resumed.by_step()
    assert steps[3]["training/rollout_probs_diff_max"] < SYNCED_MAX_DIFF
    assert steps[4]["training/rollout_probs_diff_max"] > STALE_MIN_DIFF
    assert steps[4]["training/rollout_probs_diff_max"] > 100 * steps[3]["training/rollout_probs_diff_max"]
    assert resumed.leftover_pids == []
