"""LORA_RANK=... in the launch scripts: verl's own LoRA keys, the vision tower excluded, valid in every mode."""

from pathlib import Path

import pytest

from calibrl_ext.plan.compose import compose_script

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("mode", ["calibrl", "luffy", "rlplus", "grpo"])
def test_lora_variant_composes_and_validates(mode, tmp_path):
    """MODE=<mode> LORA_RANK=64 bash examples/run_qwen25vl_7b.sh sets lora_rank 64, alpha 128 (2 x rank),
    all-linear targets with the vision tower excluded, and passes the recipe's start-up checks (verl's
    validate_config checks the installed vLLM's LoRA support, so it runs only where vLLM is installed)."""
    import pandas as pd

    from recipe.calibrl.startup_checks import validate_startup

    train = tmp_path / "train.parquet"
    pd.DataFrame({"prompt": ["q"], "expert_solution": ["a"]}).to_parquet(train)
    env = {"MODE": mode, "LORA_RANK": "64", "TRAIN_FILES": str(train), "VAL_FILES": str(train)}
    config = compose_script(EXAMPLES / "run_qwen25vl_7b.sh", env=env)
    model = config.actor_rollout_ref.model
    assert (model.lora_rank, model.lora_alpha, model.target_modules) == (64, 128, "all-linear")
    assert "visual" in model.exclude_modules and "vision_tower" in model.exclude_modules
    assert validate_startup(config, expect_trainer_mode=True).mode == mode


def test_lora_rank_zero_is_full_fine_tuning_and_bad_rank_fails():
    """LORA_RANK unset keeps verl's lora_rank 0; a non-integer LORA_RANK stops the script naming the variable."""
    assert compose_script(EXAMPLES / "run_qwen25vl_3b.sh").actor_rollout_ref.model.lora_rank == 0
    with pytest.raises(RuntimeError, match="LORA_RANK must be a non-negative integer"):
        compose_script(EXAMPLES / "run_qwen25vl_3b.sh", env={"LORA_RANK": "big"})
