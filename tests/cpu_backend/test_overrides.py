"""The CPU override set composes against verl's own ppo_trainer config, and the CLI prints it for shell scripts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.overrides import CpuRunShape, cpu_env, cpu_overrides

VERL_CONFIG_DIR = Path(__import__("verl").__file__).parent / "trainer" / "config"


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(VERL_CONFIG_DIR), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def test_every_override_names_a_real_key_of_verls_config():
    """Hydra composes verl's ppo_trainer with the whole set (a misspelt key without '+' would raise), and the
    values land where verl reads them."""
    config = _compose(cpu_overrides(CpuRunShape(n_procs=2)))
    rollout = config.actor_rollout_ref.rollout
    assert rollout.name == "hf" and rollout.tensor_model_parallel_size == 1 and rollout.agent.num_workers == 1
    assert config.trainer.device == "cpu" and config.trainer.n_gpus_per_node == 2
    assert config.ray_kwargs.ray_init.num_gpus == 2 and config.ray_kwargs.ray_init.num_cpus >= 8
    assert config.actor_rollout_ref.model.use_remove_padding is False
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype == "fp32"
    assert config.data.dataloader_num_workers == 0 and config.reward.num_workers == 1
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    sampler = config.trainer.v1.sampler
    assert sampler.custom_sampler.name == "FastPollReplayBuffer" and sampler.sampler_kwargs.poll_interval_s == 0.1


def test_caller_overrides_placed_after_the_set_win():
    """Hydra applies overrides left to right, so a caller can change any CPU default (documented contract)."""
    config = _compose([*cpu_overrides(), "actor_rollout_ref.model.use_remove_padding=True", "reward.num_workers=2"])
    assert config.actor_rollout_ref.model.use_remove_padding is True and config.reward.num_workers == 2


def test_cpu_env_selects_the_platform_and_stays_offline():
    """The environment selects the CPU platform and FSDP engine, loads the plugin and forbids hub access."""
    env = cpu_env()
    assert env["VERL_PLATFORM"] == "cpu" and env["VERL_ENGINE_DEVICE"] == "cuda"
    assert env["VERL_USE_EXTERNAL_MODULES"] == "calibrl_ext.plugin"
    assert env["HF_HUB_OFFLINE"] == "1" and all(isinstance(v, str) for v in env.values())


@pytest.mark.parametrize("kwargs", [{"n_procs": 0}, {"ray_num_cpus": 2}, {"poll_interval_s": 0}])
def test_impossible_shapes_are_rejected(kwargs):
    """Values that would hang or break a run raise at once, naming the field."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CpuRunShape(**kwargs)


def test_cli_prints_overrides_and_an_evaluable_environment(repo_env):
    """`python -m calibrl_ext.cpu_backend.overrides` prints the list one per line; `--env` prints export lines
    that bash can eval (the example scripts do both)."""
    module = [sys.executable, "-m", "calibrl_ext.cpu_backend.overrides"]
    lines = subprocess.run(module + ["--n-procs", "2"], capture_output=True, text=True, check=True, timeout=60)
    assert lines.stdout.splitlines() == cpu_overrides(CpuRunShape(n_procs=2))
    script = f'eval "$({" ".join(module)} --env)"; echo "$VERL_PLATFORM|$HF_HUB_OFFLINE|$PYTHONPATH"'
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=repo_env())
    platform, offline, pythonpath = shown.stdout.strip().split("|")
    assert platform == "cpu" and offline == "1"
    assert pythonpath.split(os.pathsep)[0] == str(Path(__file__).resolve().parents[2])
