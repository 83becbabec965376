"""A sync replay buffer that polls TransferQueue every 0.1 s instead of verl's fixed 2 s.

verl 0.9.1's ``ReplayBuffer.sample`` (``verl/trainer/ppo/v1/replay_buffer.py``) waits for a batch by polling
TransferQueue and sleeping ``poll_interval`` between polls; the built-in buffer is constructed with the 2.0 s
default and no config key reaches it. On a GPU job that is noise; on the CPU backend, where generating a batch
takes well under a second, it was 2 s of every ~2.5 s step. verl's documented hook for a different sampler is
``trainer.v1.sampler.custom_sampler.{path,name}``; this class is that hook, and
``trainer.v1.sampler.sampler_kwargs.poll_interval_s`` sets the interval (the CPU overrides set both).

Limits, inherited from verl's custom-sampler contract (``PPOTrainer._build_replay_buffer``): verl builds a custom
sampler without the DAPO group-filtering arguments, so ``algorithm.filter_groups`` and
``trainer.v1.sampler.sync_refill_failed_groups`` have no effect with it (to dry-run DAPO filtering, drop the two
``trainer.v1.sampler.*`` overrides and accept the 2 s poll). Only the sync trainer is supported.
"""

from __future__ import annotations

from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from calibrl_ext.cpu_backend.overrides import DEFAULT_POLL_INTERVAL_S, POLL_INTERVAL_KEY


class FastPollReplayBuffer(ReplayBuffer):
    """verl's sync ``ReplayBuffer`` with a configurable poll interval (see the module docstring)."""

    def __init__(
        self,
        trainer_mode: str,
        trainer_config: Any,
        max_off_policy_threshold: Any,
        max_off_policy_strategy: str,
        sampler_kwargs: Any,
        refill_fn: Any = None,
        **kwargs: Any,
    ):
        if trainer_mode != "sync":
            raise ValueError(
                f"calibrl_ext.cpu_backend.replay_buffer.FastPollReplayBuffer supports trainer.v1.trainer_mode=sync "
                f"only, got {trainer_mode!r}; remove trainer.v1.sampler.custom_sampler for async modes"
            )
        sampler_kwargs = dict(sampler_kwargs or {})
        unknown = sorted(set(sampler_kwargs) - {POLL_INTERVAL_KEY})
        if unknown:
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs has unknown key(s) {unknown} for FastPollReplayBuffer; "
                f"it accepts only {POLL_INTERVAL_KEY!r} (seconds between TransferQueue polls)"
            )
        poll_interval = float(sampler_kwargs.get(POLL_INTERVAL_KEY, DEFAULT_POLL_INTERVAL_S))
        if poll_interval <= 0:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs.{POLL_INTERVAL_KEY} must be > 0, got {poll_interval}")
        super().__init__(
            trainer_mode=trainer_mode,
            trainer_config=trainer_config,
            max_off_policy_threshold=max_off_policy_threshold,
            max_off_policy_strategy=max_off_policy_strategy,
            sampler_kwargs=sampler_kwargs,
            poll_interval=poll_interval,
            refill_fn=refill_fn,
            **kwargs,
        )
