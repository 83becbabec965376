"""The GPU launch scripts compose a valid recipe config (they cannot train here: no GPU).

Each script runs for real with ``PYTHON`` pointing at a recorder that writes the command line it would start; the
recorded command must be ``-m recipe.calibrl.main_calibrl <overrides>``, and the overrides, composed by Hydra with
the recipe's yaml exactly as that entry point composes them, pass the recipe's start-up checks and verl's own
config validation, for CalibRL and every baseline mode.
"""

import os
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECIPE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "calibrl" / "config"
SCRIPTS = ["run_qwen25vl_3b.sh", "run_qwen25vl_7b.sh", "run_internvl3_8b.sh", "run_qwen25vl_32b.sh"]


def compose_script(script: str, mode: str, train_file: Path, tmp_path: Path):
    recorder = tmp_path / "record_python.sh"
    recorded = tmp_path / f"{script}.{mode}.args"
    recorder.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{recorded}"\n')
    recorder.chmod(0o755)
    env = {**os.environ, "PYTHON": str(recorder), "MODE": mode, "TRAIN_FILES": str(train_file),
           "VAL_FILES": str(train_file)}  # fmt: skip
    out = subprocess.run(["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    argv = recorded.read_text().splitlines()
    assert argv[:2] == ["-m", "recipe.calibrl.main_calibrl"], argv[:2]
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (the calibrl_loss_mode resolver)

    with initialize_config_dir(config_dir=str(RECIPE_CONFIG_DIR), version_base=None):
        config = compose(config_name="calibrl_trainer", overrides=argv[2:])
    OmegaConf.resolve(config)
    return config


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("mode", ["calibrl", "luffy", "rlplus", "grpo", "entropy_reg"])
def test_launch_script_config_is_valid(script, mode, train_parquet, tmp_path):
    """The script's config passes the recipe checks (mode, loss, batch arithmetic incl. (n+1)-row groups on the
    script's GPU count, expert column, reward function) and verl's validate_config."""
    from recipe.calibrl.startup_checks import validate_startup
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = compose_script(script, mode, train_parquet("train.parquet"), tmp_path)
    settings = validate_startup(config, expect_trainer_mode=True)
    assert settings.mode == mode
    assert config.actor_rollout_ref.rollout.name == "vllm"
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def test_seven_b_script_is_the_released_recipe(train_parquet, tmp_path):
    """run_qwen25vl_7b.sh reproduces the released settings (METHOD §6)."""
    c = compose_script("run_qwen25vl_7b.sh", "calibrl", train_parquet("train.parquet"), tmp_path)
    actor, rollout = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
    assert (c.data.train_batch_size, actor.ppo_mini_batch_size, rollout.n) == (480, 120, 10)
    assert (c.data.max_prompt_length, c.data.max_response_length) == (20480, 4096)
    assert (actor.optim.lr, actor.optim.weight_decay, actor.optim.clip_grad) == (1e-6, 0.01, 1.0)
    assert actor.optim.lr_scheduler_type == "constant" and c.trainer.total_epochs == 1
    assert (rollout.tensor_model_parallel_size, rollout.gpu_memory_utilization) == (2, 0.5)
    assert rollout.val_kwargs.do_sample is False and rollout.temperature == 1.0
    assert actor.entropy_coeff == 0 and not actor.use_kl_loss and not c.algorithm.use_kl_in_reward
    assert (actor.policy_loss.alpha, actor.policy_loss.lam) == (0.5, 0.1) and not c.algorithm.norm_adv_by_std_in_grpo


def test_thirty_two_b_script_joins_an_existing_ray_cluster(train_parquet, tmp_path):
    """run_qwen25vl_32b.sh spans 4 nodes, connects to a running Ray cluster and loads the plugin in its workers."""
    c = compose_script("run_qwen25vl_32b.sh", "calibrl", train_parquet("train.parquet"), tmp_path)
    assert c.trainer.nnodes == 4 and c.ray_kwargs.ray_init.address == "auto"
    assert c.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "calibrl_ext.plugin"
