"""FastPollReplayBuffer: built by verl's own custom-sampler hook from the CPU overrides, with the short poll."""

import types
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.overrides import CpuRunShape, cpu_overrides
from calibrl_ext.cpu_backend.replay_buffer import FastPollReplayBuffer

VERL_CONFIG_DIR = Path(__import__("verl").__file__).parent / "trainer" / "config"


def _config(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(VERL_CONFIG_DIR), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def _build_with_verls_hook(config, trainer_mode="sync"):
    """Call verl's PPOTrainer._build_replay_buffer exactly as the trainer does, on a stand-in trainer."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    stand_in = types.SimpleNamespace(config=config, trainer_mode=trainer_mode, _add_prompts_to_generate=lambda n: None)
    stand_in._resolve_filter_groups_metric = lambda: PPOTrainer._resolve_filter_groups_metric(stand_in)
    return PPOTrainer._build_replay_buffer(stand_in)


def test_verl_builds_it_from_the_cpu_overrides_with_the_configured_interval():
    """The CPU overrides make verl's trainer build FastPollReplayBuffer (not its 2 s ReplayBuffer) polling every
    poll_interval_s."""
    buffer = _build_with_verls_hook(_config(cpu_overrides(CpuRunShape(poll_interval_s=0.25))))
    assert type(buffer) is FastPollReplayBuffer and buffer.poll_interval == 0.25


def test_without_the_overrides_verl_keeps_its_two_second_poll():
    """Control: verl's default configuration builds its own buffer with the fixed 2 s interval."""
    buffer = _build_with_verls_hook(_config([]))
    assert type(buffer) is not FastPollReplayBuffer and buffer.poll_interval == 2.0


def test_async_trainer_modes_and_unknown_kwargs_are_rejected():
    """The sync-only buffer refuses async trainer modes and unknown sampler_kwargs at start-up, naming the key."""
    config = _config(cpu_overrides())
    with pytest.raises(ValueError, match="trainer_mode=sync"):
        _build_with_verls_hook(config, trainer_mode="colocate_async")
    bad = _config([*cpu_overrides(), "++trainer.v1.sampler.sampler_kwargs.poll_interval=1"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['poll_interval'\]"):
        _build_with_verls_hook(bad)
