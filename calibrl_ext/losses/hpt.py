"""HPT (Hybrid Post-Training): per prompt group, GRPO where the policy already solves it, SFT on the expert row where
it does not (pure torch, no verl import).

Paper: "Towards a Unified View of Large Language Model Post-Training" (Lv et al., 2025),
https://arxiv.org/abs/2509.04419.

    P_g = on-policy pass rate of group g
    g is an SFT group  iff  P_g <= gamma
    L = mean(PPO over on-policy tokens of RL groups) + sft_coef * mean(-log p over expert tokens of SFT groups)

The switch rule and the defaults were read from the public reference code, Unify-Post-Training
(``hpt/verl/verl/mix_src/mix_trainer.py::select_on_off_ada_balance``: with ``unify_strategy=switch`` a group whose
solved-rollout count is ``<= switch_gate`` loses its rollouts and trains on its expert row, any other group trains on
its rollouts without the expert; ``mix_actor.py`` with ``offline_loss_type=sft``: ``sft_loss * sft_loss_coef +
pg_loss``, each a token-level ``masked_mean`` over its own rows; ``exp_scripts/train.sh``: ``switch_gate=0`` of
``n=8``, ``sft_loss_coef=1.0``). No code was copied. The released gate counts solved rollouts; here it is the pass
rate gamma = gate / n (0 / 8 = 0.0, the Qwen default; the LLaMA script's gate 2 of 8 is gamma = 0.25), so that it
does not change meaning with ``rollout.n``; "solved" is reward > ``pass_threshold`` (the recipe's pass sign).

In the recipe (``calibrl.mode=hpt``) the driver removes the expert row of every RL group before any forward pass (as
the released code never generates it into the batch) and tells the loss which rows belong to SFT groups.

Shapes: ``N`` rows (on-policy and expert rows of several groups), ``T`` response positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from calibrl_ext.losses.chord import chord_expert_token_loss
from calibrl_ext.losses.hybrid import mix_policy_and_sft
from calibrl_ext.losses.ppo import _as_bool, _masked_mean, _on_policy_mask, _row_vector, ppo_clip_token_loss

__all__ = ["HPT_DEFAULTS", "hpt_policy_loss", "hpt_sft_groups"]

#: Published defaults (Unify-Post-Training ``exp_scripts/train.sh``, Qwen2.5-Math-7B): switch_gate 0 solved rollouts
#: of n = 8 (gamma = 0.0) and sft_loss_coef 1.0.
HPT_DEFAULTS = {"gamma": 0.0, "sft_coef": 1.0}


def hpt_sft_groups(
    passed: torch.Tensor | Sequence[bool],
    group_codes: torch.Tensor,
    on_policy: torch.Tensor | Sequence[bool],
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HPT's switch: which rows belong to a group whose on-policy pass rate is <= ``gamma`` (an SFT group).

    Args:
        passed: ``[N]`` bool, reward > pass_threshold.
        group_codes: ``[N]`` dense group codes (``calibrl_ext.core.encode_groups``).
        on_policy: ``[N]`` bool rows that count toward the pass rate (not expert rows, not padding).
        gamma: threshold in [0, 1).

    Returns:
        ``([N]`` float pass rate of the row's group, ``[N]`` bool row is in an SFT group). A group without on-policy
        rows has pass rate 0.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    n = group_codes.numel()
    passed = _as_bool(passed, n, "passed")
    on_policy = _as_bool(on_policy, n, "on_policy")
    num_groups = int(group_codes.max().item()) + 1 if n else 0
    weights = on_policy.double()
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group_codes, weights)
    solved = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group_codes, weights * passed.double())
    rate = (solved / count.clamp(min=1))[group_codes]
    return rate.float(), rate <= gamma


def hpt_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    sft_group: torch.Tensor | Sequence[bool],
    sft_coef: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    policy_token_share: float | None = None,
    expert_token_share: float | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean(PPO over on-policy tokens of RL groups) + ``sft_coef`` * mean(NLL over expert tokens of SFT groups).

    Args:
        old_log_probs, log_probs, advantages, response_mask: ``[N, T]`` (advantages may be ``[N]``).
        is_expert: ``[N]`` bool expert rows.
        sft_group: ``[N]`` bool, the row's group is switched to SFT (:func:`hpt_sft_groups`). Its rollouts get no
            gradient; an expert row of an RL group gets none either.
        sft_coef: weight of the SFT part (released 1.0).
        clip_low, clip_high, clip_c: the PPO part (:func:`calibrl_ext.losses.ppo.ppo_clip_token_loss`).
        policy_token_share, expert_token_share, dp_size, batch_num_tokens: micro-batch normalisation, see
            :func:`calibrl_ext.losses.ppo.part_token_mean` (omit them for one batch).

    Returns:
        ``(loss, metrics)``: ``pg_loss``, ``hpt_sft_loss`` (each before its weight), ``pg_clipfrac``,
        ``pg_clipfrac_lower``, ``ppo_kl`` over the PPO part's tokens.
    """
    if not sft_coef > 0:
        raise ValueError(f"sft_coef must be > 0, got {sft_coef}")
    n = response_mask.shape[0]
    sft_rows = _as_bool(sft_group, n, "sft_group").to(response_mask.device).unsqueeze(-1)
    expert_rows = _as_bool(is_expert, n, "is_expert").to(response_mask.device).unsqueeze(-1)
    on_mask = _on_policy_mask(response_mask, is_expert)
    policy_mask = on_mask & ~sft_rows
    expert_mask = response_mask.bool() & expert_rows & sft_rows
    with torch.no_grad():
        safe_old = torch.where(policy_mask, old_log_probs, 0.0)
    safe_new = torch.where(policy_mask | expert_mask, log_probs, 0.0)
    advantages = _row_vector(advantages, log_probs, "advantages").expand_as(log_probs)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    sft_mat = chord_expert_token_loss(safe_new, enable_phi=False)
    loss, pg_loss, sft_loss = mix_policy_and_sft(
        pg_mat, sft_mat, policy_mask, expert_mask, 1.0, sft_coef, policy_token_share, expert_token_share, dp_size,
        batch_num_tokens,
    )  # fmt: skip
    metrics = {
        "pg_loss": pg_loss,
        "hpt_sft_loss": sft_loss,
        "pg_clipfrac": _masked_mean(stats["clipped"], policy_mask),
        "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], policy_mask),
        "ppo_kl": _masked_mean(-stats["log_ratio"], policy_mask),
    }
    return loss, metrics
