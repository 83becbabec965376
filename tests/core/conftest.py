"""Fixtures for the verl-glue tests: an actor config and micro-batches shaped like verl's engine hands them."""

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict


def _nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def build_actor_config(loss_mode="calibrl", loss_agg_mode="token-mean", **policy_loss):
    """verl FSDPActorConfig with the calibrl policy-loss dataclass, built the way verl builds it (hydra _target_)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(
        OmegaConf.create(
            {
                "_target_": "verl.workers.config.FSDPActorConfig",
                "strategy": "fsdp",
                "ppo_mini_batch_size": 4,
                "ppo_micro_batch_size_per_gpu": 2,
                "rollout_n": 1,
                "loss_agg_mode": loss_agg_mode,
                "policy_loss": {
                    "_target_": "calibrl_ext.config.CalibRLPolicyLossConfig",
                    "loss_mode": loss_mode,
                    **policy_loss,
                },
            }
        )
    )


def build_micro_batch(rows: dict, prompt_lens, global_info: dict):
    """A micro-batch TensorDict + model output as verl's engine passes them to the loss function.

    Args:
        rows: padded ``[bs, T]`` tensors ``log_probs`` (with grad), ``old_log_probs``, ``advantages``,
            ``response_mask``, optional ``calibrl_*`` fields (``[bs, T]`` become nested, ``[bs]`` stay dense).
        prompt_lens: prompt length per row (> 0).
        global_info: dp_size, batch_num_tokens, global_batch_size.

    Returns:
        ``(data, model_output)``; ``model_output["log_probs"]`` is the full-sequence nested tensor verl's
        ``no_padding_2_padding`` slices back to the response.
    """
    from verl.utils import tensordict_utils as tu

    mask = rows["response_mask"]
    lengths = mask.sum(-1).long().tolist()
    fields = {
        "prompts": _nested([torch.ones(p, dtype=torch.long) for p in prompt_lens]),
        "responses": _nested([torch.ones(n, dtype=torch.long) for n in lengths]),
    }
    for name, value in rows.items():
        if name == "log_probs":
            continue
        if value.ndim == 2:
            fields[name] = _nested([value[i, :n].detach() for i, n in enumerate(lengths)])
        else:
            fields[name] = value
    data = TensorDict(fields, batch_size=[mask.shape[0]])
    tu.assign_non_tensor(data, **global_info)
    full = [
        torch.cat([torch.zeros(p - 1), rows["log_probs"][i, :n], torch.zeros(1)])
        for i, (p, n) in enumerate(zip(prompt_lens, lengths))
    ]
    return data, {"log_probs": _nested(full)}


@pytest.fixture
def actor_config():
    return build_actor_config


@pytest.fixture
def micro_batch():
    return build_micro_batch
