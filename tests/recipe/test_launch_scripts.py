"""The GPU launch scripts compose a valid recipe config (they cannot train here: no GPU).

Each script runs for real with ``PYTHON`` pointing at a recorder that writes the command line it would start; the
recorded command must be ``-m recipe.calibrl.main_calibrl <overrides>``, and the overrides, composed by Hydra with
the recipe's yaml exactly as that entry point composes them, pass the recipe's start-up checks and verl's own
config validation, for CalibRL and every baseline mode.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECIPE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "calibrl" / "config"
SCRIPTS = ["run_qwen25vl_3b.sh", "run_qwen25vl_7b.sh", "run_internvl3_8b.sh", "run_qwen25vl_32b.sh"]


VERL_CONFIG_DIR = Path(__import__("verl").__file__).parent / "trainer" / "config"


def record_launch(script: str, args: list[str], env: dict, entry: str, tmp_path: Path, tag: str) -> list[str]:
    """Run ``examples/<script> <args>`` with ``PYTHON`` pointing at a recorder: the call ``$PYTHON -m <entry> ...``
    is recorded (not run) and its Hydra overrides returned; ``-m calibrl_ext.eval report`` (nothing to report) is
    skipped; every other Python call the script makes (argument checks, manifests) runs for real."""
    recorder = tmp_path / f"record_python.{tag}.sh"
    recorded = tmp_path / f"{script}.{tag}.args"
    recorder.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1 $2" = "-m {entry}" ]; then shift 2; printf "%s\\n" "$@" > "{recorded}"; exit 0; fi\n'
        'if [ "$1 $2 $3" = "-m calibrl_ext.eval report" ]; then exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    recorder.chmod(0o755)
    out = subprocess.run(["bash", str(EXAMPLES / script), *args], env={**os.environ, **env, "PYTHON": str(recorder)},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert recorded.exists(), f"{script} never started `python -m {entry}`:\n{out.stderr[-3000:]}"
    return recorded.read_text().splitlines()


def compose_overrides(config_dir: Path, config_name: str, overrides: list[str]):
    """Compose the overrides with the entry point's yaml exactly as its @hydra.main does, and resolve them."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (the calibrl_loss_mode resolver)

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name=config_name, overrides=overrides)
    OmegaConf.resolve(config)
    return config


def compose_script(script: str, mode: str, train_file: Path, tmp_path: Path, extra_env: dict | None = None):
    env = {"MODE": mode, "TRAIN_FILES": str(train_file), "VAL_FILES": str(train_file), **(extra_env or {})}
    argv = record_launch(script, [], env, "recipe.calibrl.main_calibrl", tmp_path, mode)
    return compose_overrides(RECIPE_CONFIG_DIR, "calibrl_trainer", argv)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("mode", ["calibrl", "luffy", "rlplus", "grpo", "entropy_reg", "chord", "hpt", "sft_then_grpo"])
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


def test_sft_settings_reach_the_sft_stage(train_parquet, tmp_path):
    """MODE=sft_then_grpo: the script's SFT_* variables become the calibrl.sft keys the stage reads, and the
    checkpoint directory defaults to one derived under the run's CKPT_DIR."""
    from recipe.calibrl.sft_stage import SftStageSettings

    env = {"SFT_EPOCHS": "2", "SFT_LR": "2e-5", "SFT_BATCH_SIZE": "16", "SFT_MICRO_BATCH_SIZE": "2"}
    config = compose_script("run_qwen25vl_7b.sh", "sft_then_grpo", train_parquet("train.parquet"), tmp_path, env)
    settings = SftStageSettings.from_config(config)
    assert (settings.epochs, settings.lr, settings.train_batch_size, settings.micro_batch_size_per_gpu) == (
        2, 2e-5, 16, 2)  # fmt: skip
    assert settings.checkpoint_dir is None
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"


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


def test_seven_b_script_matches_the_release_where_verl_can(train_parquet, tmp_path):
    """run_qwen25vl_7b.sh: data.shuffle false, validation every 5 / checkpoint every 10 steps, 18 steps (9k prompts
    / 480, the released subset's length) unless TOTAL_TRAINING_STEPS says otherwise; token-mean stays verl's (the
    script documents the difference with its key)."""
    c = compose_script("run_qwen25vl_7b.sh", "calibrl", train_parquet("train.parquet"), tmp_path)
    assert c.data.shuffle is False and (c.trainer.test_freq, c.trainer.save_freq) == (5, 10)
    assert c.trainer.total_training_steps == 18 and c.actor_rollout_ref.actor.loss_agg_mode == "token-mean"
    text = (EXAMPLES / "run_qwen25vl_7b.sh").read_text()
    for key in ("trainer.total_training_steps", "actor_rollout_ref.actor.loss_agg_mode=token-mean", "use_dynamic_bsz"):
        assert key in text
    whole = compose_script("run_qwen25vl_7b.sh", "calibrl", train_parquet("train.parquet"), tmp_path,
                           {"TOTAL_TRAINING_STEPS": "null"})  # fmt: skip
    assert whole.trainer.total_training_steps is None


@pytest.mark.parametrize("script", SCRIPTS)
def test_default_logger_needs_no_account(script, train_parquet, tmp_path, monkeypatch):
    """Default logger: console + file + tensorboard (as released), no wandb; LOGGER=wandb adds wandb; asking for wandb
    without a key fails at start-up naming WANDB_API_KEY."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a wandb key
    c = compose_script(script, "calibrl", train_parquet("train.parquet"), tmp_path)
    assert list(c.trainer.logger) == ["console", "file", "tensorboard"]
    c = compose_script(script, "calibrl", train_parquet("train.parquet"), tmp_path,
                       {"LOGGER": "wandb", "WANDB_MODE": "offline"})  # fmt: skip
    assert list(c.trainer.logger) == ["console", "file", "tensorboard", "wandb"]
    env = {**os.environ, "PYTHON": "false", "LOGGER": "console,wandb", "TRAIN_FILES": "x", "VAL_FILES": "x"}
    out = subprocess.run(["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "WANDB_API_KEY" in out.stderr


def test_default_train_files_are_where_data_prep_writes_virl39k():
    """calibrl_gpu.sh's default TRAIN_FILES/VAL_FILES are the files docs/data_prep.md's ViRL39K command writes."""
    import re

    doc = (EXAMPLES.parent / "docs" / "data_prep.md").read_text()
    out_dir = re.search(r"--preset virl39k.*?--out (\S+)", doc, re.DOTALL).group(1)
    script = (EXAMPLES / "calibrl_gpu.sh").read_text()
    assert f"TRAIN_FILES=${{TRAIN_FILES:-{out_dir}/train.parquet}}" in script
    assert f"VAL_FILES=${{VAL_FILES:-{out_dir}/val.parquet}}" in script


def test_thirty_two_b_script_is_one_node_with_offload(train_parquet, tmp_path):
    """run_qwen25vl_32b.sh defaults to the smallest layout that fits, 1 node x 8 GPUs with parameter and optimizer
    offload (its memory arithmetic is in comments), starting its own Ray; NNODES > 1 joins an existing cluster."""
    c = compose_script("run_qwen25vl_32b.sh", "calibrl", train_parquet("train.parquet"), tmp_path)
    fsdp = c.actor_rollout_ref.actor.fsdp_config
    assert (c.trainer.nnodes, c.trainer.n_gpus_per_node) == (1, 8) and fsdp.param_offload and fsdp.optimizer_offload
    assert "address" not in c.get("ray_kwargs", {}).get("ray_init", {})
    assert "67 GB" in (EXAMPLES / "run_qwen25vl_32b.sh").read_text()
    shared = tmp_path / "shared"
    c = compose_script("run_qwen25vl_32b.sh", "calibrl", train_parquet("train.parquet"), tmp_path,
                       {"NNODES": "2", "CKPT_DIR": str(shared / "ckpt")})  # fmt: skip
    assert c.trainer.nnodes == 2 and c.ray_kwargs.ray_init.address == "auto"
    assert c.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "calibrl_ext.plugin"
    assert c.trainer.default_local_dir == str(shared / "ckpt")


@pytest.mark.parametrize("relative", ["TRAIN_FILES", "VAL_FILES", "CKPT_DIR"])
def test_several_nodes_refuse_relative_paths(relative, tmp_path):
    """With NNODES > 1 every data and checkpoint path must be absolute (verl's TaskRunner has no node affinity):
    a relative one fails at start-up naming the variable and saying why."""
    paths = {"TRAIN_FILES": "/shared/train.parquet", "VAL_FILES": "/shared/val.parquet", "CKPT_DIR": "/shared/ckpt"}
    paths[relative] = "data/relative"
    env = {**os.environ, "PYTHON": "false", "NNODES": "2", **paths}
    out = subprocess.run(["bash", str(EXAMPLES / "calibrl_gpu.sh")], env={**env, "MODEL_PATH": "m"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert f"{relative}=data/relative must be an absolute path on storage every node mounts" in out.stderr


def test_calibrl_gpu_sh_cites_the_checked_verl_example():
    """calibrl_gpu.sh cites examples/grpo_trainer/run_qwen2_5_vl-7b.sh (found in verl's repository by hand: the pip
    wheel ships no examples, so a test cannot check that the file exists) and no longer the name that does not exist."""
    text = (EXAMPLES / "calibrl_gpu.sh").read_text()
    assert "examples/grpo_trainer/run_qwen2_5_vl-7b.sh" in text
    assert "run_qwen2_5_vl_7b_vllm_fsdp.sh" not in text


@pytest.fixture
def eval_parquet(tmp_path):
    """An evaluation parquet built by the real builder (AMC's schema) with 8 rows: one prompt per GPU at 8 GPUs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calibrl_ext.eval.build import BenchmarkBuildConfig, build_benchmark

    source = tmp_path / "amc" / "train-00000-of-00001.parquet"
    source.parent.mkdir()
    pq.write_table(pa.table({"id": pa.array(range(8), pa.int64()), "problem": [f"Find {i}." for i in range(8)],
                             "answer": pa.array([float(i) for i in range(8)], pa.float64()),
                             "url": ["https://a"] * 8}), source)  # fmt: skip
    return build_benchmark(BenchmarkBuildConfig(benchmark="amc", input=str(source), out_dir=str(tmp_path / "bench"))).parquet


@pytest.mark.parametrize(("gpus", "tp"), [(1, 1), (2, 1), (8, 2)])
def test_eval_sh_config_is_valid_on_several_gpus(gpus, tp, eval_parquet, tmp_path):
    """examples/eval.sh --gpus G composes a config that passes verl's validate_config for 1, 2 and 8 GPUs (its
    training batch was fixed at 1 prompt, which no G > 1 divides), with G and TP reaching verl."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = ["--model", str(model), "--val-files", str(eval_parquet), "--gpus", str(gpus), "--tp", str(tp),
            "--out", str(tmp_path / "out")]  # fmt: skip
    argv = record_launch("eval.sh", args, {}, "verl.trainer.main_ppo", tmp_path, f"gpus{gpus}")
    config = compose_overrides(VERL_CONFIG_DIR, "ppo_trainer", argv)
    assert (config.trainer.n_gpus_per_node, config.actor_rollout_ref.rollout.tensor_model_parallel_size) == (gpus, tp)
    assert config.trainer.val_only and config.actor_rollout_ref.rollout.name == "vllm"
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def test_eval_sh_refuses_a_tp_that_does_not_divide_the_gpus(eval_parquet, tmp_path):
    """--tp must divide --gpus (vLLM engines of TP GPUs each); refused with exit 2 before verl starts."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = subprocess.run(["bash", str(EXAMPLES / "eval.sh"), "--model", str(model), "--val-files", str(eval_parquet),
                          "--gpus", "2", "--tp", "4", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "--tp must be a positive integer dividing --gpus (2)" in out.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_freeze_vision_tower_is_a_script_variable(script, train_parquet, tmp_path):
    """verl's actor_rollout_ref.actor.freeze_vision_tower is False by default (the release trains the whole model)
    and FREEZE_VISION_TOWER=1 sets it in every launch script; with LORA_RANK as well the config still validates."""
    from recipe.calibrl.startup_checks import validate_startup

    train = train_parquet("train.parquet")
    assert compose_script(script, "calibrl", train, tmp_path).actor_rollout_ref.actor.freeze_vision_tower is False
    frozen = compose_script(script, "calibrl", train, tmp_path, {"FREEZE_VISION_TOWER": "1", "LORA_RANK": "16"})
    assert frozen.actor_rollout_ref.actor.freeze_vision_tower is True
    assert frozen.actor_rollout_ref.model.lora_rank == 16
    assert validate_startup(frozen, expect_trainer_mode=True).mode == "calibrl"


def test_freeze_vision_tower_refuses_other_values(train_parquet, tmp_path):
    """FREEZE_VISION_TOWER=yes stops the script naming the variable and the values it takes."""
    env = {**os.environ, "FREEZE_VISION_TOWER": "yes", "TRAIN_FILES": str(train_parquet("train.parquet")),
           "PYTHON": "/bin/false"}  # fmt: skip
    out = subprocess.run(["bash", str(EXAMPLES / "run_qwen25vl_7b.sh")], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 2 and "FREEZE_VISION_TOWER must be 0 or 1" in out.stderr
