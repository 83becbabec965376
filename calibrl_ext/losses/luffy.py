"""LUFFY: off-policy expert tokens trained with policy shaping (pure torch, no verl import).

Paper: "Learning to Reason under Off-Policy Guidance" (LUFFY), https://arxiv.org/abs/2504.14945. Used as a
baseline by CalibRL (https://arxiv.org/abs/2602.20197, METHOD §5). Shapes: ``N`` rows, ``T`` positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from calibrl_ext.losses.hybrid import hybrid_policy_loss
from calibrl_ext.losses.ppo import _row_vector

__all__ = ["luffy_expert_token_loss", "luffy_policy_loss"]


def luffy_expert_token_loss(
    log_probs: torch.Tensor, expert_advantages: torch.Tensor, gamma: float = 0.1
) -> torch.Tensor:
    """LUFFY policy shaping on expert tokens: -A_e * f(pi_theta), f(p) = p / (p + gamma); no ratio, no clip.

    Args:
        log_probs: ``[N, T]`` l(theta) of the expert rows (finite where the mask is set).
        expert_advantages: ``[N]`` or ``[N, T]`` A_e (already guarded).
        gamma: shaping constant (LUFFY: 0.1).

    Returns:
        ``[N, T]`` per-token loss.
    """
    p = torch.exp(log_probs)
    shaped = p / (p + gamma)
    return -_row_vector(expert_advantages, log_probs, "expert_advantages").to(log_probs.dtype) * shaped


def luffy_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    gamma: float = 0.1,
    expert_adv_clip: float | None = 5.0,
    **global_batch_info,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LUFFY baseline: PPO on on-policy tokens + policy-shaped expert tokens, aggregated together (§5).

    Args: as :func:`calibrl_ext.losses.calibrl.calibrl_policy_loss`; ``advantages`` ``[N, T]`` hold A_e on expert
    rows; ``gamma`` the shaping constant; ``expert_adv_clip`` bounds |A_e| (§7.9 guard; None disables clamping but
    still drops inf/NaN).
    """
    return hybrid_policy_loss(
        "luffy", lambda new, old, adv: luffy_expert_token_loss(new, adv, gamma),
        old_log_probs, log_probs, advantages, response_mask, is_expert, clip_low, clip_high, clip_c,
        loss_agg_mode, expert_adv_clip, global_batch_info,
    )  # fmt: skip
