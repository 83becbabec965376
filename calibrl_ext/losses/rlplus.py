"""RL-PLUS (as released): expert tokens trained with multiple importance sampling and an exploration bonus.

Paper: "RL-PLUS: Countering Capability Boundary Collapse of LLMs in Reinforcement Learning with Hybrid-policy
Optimization", https://arxiv.org/abs/2508.00222. Used as a baseline by CalibRL (https://arxiv.org/abs/2602.20197,
METHOD §5). Pure torch, no verl import. Shapes: ``N`` rows, ``T`` positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from calibrl_ext.losses.hybrid import hybrid_policy_loss
from calibrl_ext.losses.ppo import _row_vector

__all__ = ["rlplus_expert_token_loss", "rlplus_policy_loss"]


def rlplus_expert_token_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, expert_advantages: torch.Tensor
) -> torch.Tensor:
    """RL-PLUS (as released) on expert tokens: -A_e * [2p / (p_old + 0.5 (p_old + 1))] * (1 - sg(p))^0.5.

    Args:
        log_probs, old_log_probs: ``[N, T]`` l(theta), l^old of the expert rows.
        expert_advantages: ``[N]`` or ``[N, T]`` A_e (already guarded).

    Returns:
        ``[N, T]`` per-token loss.
    """
    p = torch.exp(log_probs)
    p_old = torch.exp(old_log_probs.detach())
    importance = 2.0 * p / (p_old + 0.5 * (p_old + 1.0))
    exploration = torch.clamp(1.0 - p.detach(), min=0.0).sqrt()
    return -_row_vector(expert_advantages, log_probs, "expert_advantages").to(log_probs.dtype) * importance * exploration


def rlplus_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    expert_adv_clip: float | None = 5.0,
    **global_batch_info,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RL-PLUS baseline (as released): PPO on on-policy tokens + the RL-PLUS expert-token loss (§5)."""
    return hybrid_policy_loss(
        "rlplus", lambda new, old, adv: rlplus_expert_token_loss(new, old, adv),
        old_log_probs, log_probs, advantages, response_mask, is_expert, clip_low, clip_high, clip_c,
        loss_agg_mode, expert_adv_clip, global_batch_info,
    )  # fmt: skip
